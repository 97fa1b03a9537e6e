package store

import (
	"context"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// autoPipe sends the commands of concurrent callers in one pipeline: a runner or router with
// dozens of work items in flight makes one round trip (one write and one read system call)
// for all of their independent commands instead of one each. Whoever finds no pipeline in
// progress sends, and keeps sending what queued up meanwhile until the queue is empty.
type autoPipe struct {
	rdb redis.UniversalClient

	mu      sync.Mutex
	queue   []*pipeCall
	sending bool
}

type pipeCall struct {
	fill func(p redis.Pipeliner)
	done chan struct{}
}

// pipeTimeout bounds one shared pipeline, whatever its callers' contexts say.
const pipeTimeout = 10 * time.Second

// maxPipe bounds the calls one pipeline carries.
const maxPipe = 256

// do queues fill's commands and returns once they have run; their results and errors are in
// the commands fill created. ctx bounds only the wait.
func (a *autoPipe) do(ctx context.Context, fill func(p redis.Pipeliner)) error {
	c := &pipeCall{fill: fill, done: make(chan struct{})}
	a.mu.Lock()
	a.queue = append(a.queue, c)
	send := !a.sending
	a.sending = true
	a.mu.Unlock()
	if send {
		a.send()
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (a *autoPipe) send() {
	for {
		a.mu.Lock()
		batch := a.queue
		if len(batch) > maxPipe {
			batch = batch[:maxPipe]
		}
		a.queue = a.queue[len(batch):]
		if len(batch) == 0 {
			a.sending = false
			a.queue = nil
			a.mu.Unlock()
			return
		}
		a.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), pipeTimeout)
		// Errors stay with each command; a failed connection fails them all.
		_, _ = a.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for _, c := range batch {
				c.fill(p)
			}
			return nil
		})
		cancel()
		for _, c := range batch {
			close(c.done)
		}
	}
}
