package router

import (
	"context"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/store"
)

// Delays is the delay queue: records held back until they are due (a step's next attempt).
type Delays interface {
	Schedule(ctx context.Context, recs ...store.Delayed) error
	TakeDue(ctx context.Context, now time.Time, lease time.Duration, n int) ([]store.Delayed, time.Time, error)
	Done(ctx context.Context, ids ...string) error
}

// Tunables of the delay queue's producer.
const (
	delayBatch = 500
	// delayLease is how long taken records wait for this router to produce them before
	// another (or this one again) takes them.
	delayLease = 30 * time.Second
	// delayIdle bounds the sleep between looks at the queue: records another router
	// scheduled are seen within it.
	delayIdle = time.Second
)

// delayQueue produces the delay queue's records when they are due. Every router runs one;
// the lease keeps two from producing the same record at once, and a record produced twice
// is harmless (runners recognise a work item they ran).
type delayQueue struct {
	r    *Router
	wake chan struct{}
}

func newDelayQueue(r *Router) *delayQueue {
	return &delayQueue{r: r, wake: make(chan struct{}, 1)}
}

// kick makes the queue look again now: a record was scheduled that may be due before the
// queue's next look.
func (q *delayQueue) kick() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

// run produces due records until ctx ends.
func (q *delayQueue) run(ctx context.Context) {
	backoff.UntilDue(ctx, q.wake, delayIdle, func() (time.Time, error) { return q.drain(ctx) }, func(err error, wait time.Duration) {
		q.r.log.Warn("delay queue: producing due records failed; retrying", "err", err, "in", wait)
	})
}

// drain produces every record due now and returns when the earliest one left is due.
func (q *delayQueue) drain(ctx context.Context) (time.Time, error) {
	for {
		recs, next, err := q.r.cfg.Store.TakeDue(ctx, q.r.now(), delayLease, delayBatch)
		if err != nil || len(recs) == 0 {
			return next, err
		}
		msgs := make([]kafka.Message, len(recs))
		ids := make([]string, len(recs))
		for i, d := range recs {
			msgs[i], ids[i] = q.r.message(d.Record), d.ID
		}
		if err := q.r.write(ctx, msgs); err != nil {
			return time.Time{}, err // taken, not done: due again when the lease runs out
		}
		if err := q.r.cfg.Store.Done(ctx, ids...); err != nil {
			return time.Time{}, err
		}
		if len(recs) < delayBatch {
			return next, nil
		}
	}
}
