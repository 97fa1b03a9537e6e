// Package outbox publishes the events that internal/store committed together with the changes
// they announce. A change and its event are one Redis transaction; the relay then moves events
// to Kafka (acks=all) and drops them only after the broker acknowledged, so an event is never
// lost when the broker is down (it is delivered at least once, when the broker returns).
package outbox

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/store"
)

const (
	batch   = 100
	lockTTL = 15 * time.Second
	idle    = time.Second
	maxWait = 30 * time.Second
)

// Store is the outbox as the relay reads it (*store.Store provides it): events committed with
// the changes that caused them, drained by one relay at a time under a lock.
type Store interface {
	OutboxPeek(ctx context.Context, n int) (store.OutboxBatch, error)
	OutboxDrop(ctx context.Context, b store.OutboxBatch) error
	OutboxLen(ctx context.Context) (int64, error)
	OutboxLock(ctx context.Context, owner string, ttl time.Duration) (bool, error)
	OutboxUnlock(ctx context.Context, owner string) error
}

var _ Store = (*store.Store)(nil)

// Relay drains the outbox to a publisher.
type Relay struct {
	st   Store
	pub  events.Publisher
	log  *slog.Logger
	id   string
	mu   sync.Mutex // one local drain at a time; the Redis lock covers other processes
	kick chan struct{}
}

// New builds a relay; call Run in a goroutine.
func New(st Store, pub events.Publisher, log *slog.Logger) *Relay {
	return &Relay{st: st, pub: pub, log: log, id: identity.NewID(), kick: make(chan struct{}, 1)}
}

// Kick asks the relay to drain soon without waiting for it.
func (r *Relay) Kick() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

// Flush drains the outbox now and returns once it is empty (or ctx ends). While another
// process holds the drain lock, it waits for that process to finish.
func (r *Relay) Flush(ctx context.Context) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	poll := backoff.New(10*time.Millisecond, 500*time.Millisecond)
	for {
		n, err := r.drainOnce(ctx)
		if err != nil {
			return err
		}
		if n > 0 {
			continue
		}
		left, err := r.st.OutboxLen(ctx)
		if err != nil || left == 0 {
			return err
		}
		// Someone else is draining: poll until they are done or their lock lapses.
		if !poll.Wait(ctx) {
			return fmt.Errorf("%d events wait for another drainer: %w", left, ctx.Err())
		}
	}
}

// Run drains on every kick and at least once a second until ctx ends, backing off while the
// broker is unreachable.
func (r *Relay) Run(ctx context.Context) {
	retry := backoff.New(2*idle, maxWait) // failures space drains from twice idle up to maxWait
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		case <-t.C:
		}
		wait := idle
		if err := r.Flush(ctx); err != nil && ctx.Err() == nil {
			wait = retry.Next()
			r.log.Warn("event outbox: publish failed, will retry", "err", err, "retry_in", wait)
		} else {
			retry.Reset()
		}
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

func (r *Relay) drainOnce(ctx context.Context) (int, error) {
	ok, err := r.st.OutboxLock(ctx, r.id, lockTTL)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, nil // another process is draining
	}
	b, err := r.st.OutboxPeek(ctx, batch)
	if err != nil || len(b.Events) == 0 {
		return 0, err
	}
	if err := r.pub.Publish(ctx, b.Events...); err != nil {
		// Let another process try at once rather than after the lock expires.
		if uerr := r.st.OutboxUnlock(context.WithoutCancel(ctx), r.id); uerr != nil {
			r.log.Warn("event outbox: unlock failed", "err", uerr)
		}
		return 0, fmt.Errorf("publish %d events: %w", len(b.Events), err)
	}
	if err := r.st.OutboxDrop(ctx, b); err != nil {
		return 0, err
	}
	return len(b.Events), nil
}
