package router

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"
)

// handler processes one record completely: its state change committed and its output
// produced. An error means "try again" (Redis or Kafka unavailable); records that can never
// succeed are dealt with inside (the DLQ), so one bad record does not stall its partition.
type handler func(ctx context.Context, m kafka.Message) error

// consumer reads a group reader and processes each partition sequentially on its own
// goroutine: FetchMessage, handle, CommitMessages. The offset is committed only after the
// handler succeeded, so a crash anywhere means a redelivery, never a loss.
type consumer struct {
	name   string
	reader *kafka.Reader
	handle handler
	log    *slog.Logger
	drain  time.Duration // how long in-flight records may take to finish on shutdown
}

type partition struct {
	topic string
	id    int
}

// queueLen bounds how many fetched records wait per partition.
const queueLen = 64

// run consumes until ctx ends, then lets each partition finish the record it is processing
// (bounded by drain), commits it, and closes the reader. Records fetched but not started are
// left uncommitted: they are delivered again.
func (c *consumer) run(ctx context.Context) {
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	var stopping atomic.Bool
	var wg sync.WaitGroup
	queues := map[partition]chan kafka.Message{}
	backoff := newBackoff()
fetch:
	for {
		m, err := c.reader.FetchMessage(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			c.log.Warn("kafka fetch failed", "consumer", c.name, "err", err)
			if !backoff.wait(ctx) {
				break
			}
			continue
		}
		backoff.reset()
		p := partition{m.Topic, m.Partition}
		q, ok := queues[p]
		if !ok {
			q = make(chan kafka.Message, queueLen)
			queues[p] = q
			wg.Add(1)
			go func() {
				defer wg.Done()
				for m := range q {
					if stopping.Load() {
						continue // not started: it will be redelivered
					}
					c.process(workCtx, m)
				}
			}()
		}
		select {
		case q <- m:
		case <-ctx.Done():
			break fetch
		}
	}
	stopping.Store(true)
	for _, q := range queues {
		close(q)
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(c.drain)
	select {
	case <-done:
		t.Stop()
	case <-t.C:
		c.log.Warn("in-flight records did not finish in time; they will be redelivered", "consumer", c.name, "drain", c.drain)
		stopWork()
		<-done
	}
	if err := c.reader.Close(); err != nil {
		c.log.Warn("closing kafka reader", "consumer", c.name, "err", err)
	}
}

// maxCommitTries bounds commit retries: a commit that keeps failing usually means the partition
// moved to another member, which will get the record again; a later commit covers this one.
const maxCommitTries = 5

func (c *consumer) process(ctx context.Context, m kafka.Message) {
	backoff := newBackoff()
	for {
		err := c.handle(ctx, m)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return
		}
		c.log.Error("processing failed, will retry", "consumer", c.name, "topic", m.Topic,
			"partition", m.Partition, "offset", m.Offset, "err", err)
		if !backoff.wait(ctx) {
			return
		}
	}
	for try := 1; ; try++ {
		err := c.reader.CommitMessages(ctx, m)
		if err == nil {
			return
		}
		if ctx.Err() != nil || try == maxCommitTries {
			c.log.Warn("commit failed; the record may be delivered again", "consumer", c.name,
				"topic", m.Topic, "partition", m.Partition, "offset", m.Offset, "err", err)
			return
		}
		if !backoff.wait(ctx) {
			return
		}
	}
}

// backoff is a capped exponential delay that gives up when ctx ends.
type backoff struct{ d time.Duration }

func newBackoff() *backoff { return &backoff{d: 100 * time.Millisecond} }

func (b *backoff) reset() { b.d = 100 * time.Millisecond }

func (b *backoff) wait(ctx context.Context) bool {
	t := time.NewTimer(b.d)
	defer t.Stop()
	b.d = min(b.d*2, 5*time.Second)
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
