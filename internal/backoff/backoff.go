// Package backoff is how flowd waits between retries: a delay that starts small, grows by a
// factor per retry up to a cap (optionally spread by jitter), and a wait that gives up when
// its context ends. Every retry loop of the roles paces itself with it, so a loop states only
// its first and longest wait.
package backoff

import (
	"context"
	"math"
	"math/rand/v2"
	"time"
)

// DefaultMultiplier is the growth of a Policy without one: each wait twice the last.
const DefaultMultiplier = 2

// uncapped bounds a Policy without Max, far above any wait, so the float arithmetic of Delay
// converts back to a Duration.
const uncapped = float64(1 << 62)

// Policy says how the wait before each retry grows: the first retry waits Initial, each later
// one Multiplier times the one before, never more than Max.
type Policy struct {
	Initial    time.Duration // the wait before the first retry
	Max        time.Duration // cap of every wait, jitter included [none]
	Multiplier float64       // growth per retry; below 1 takes DefaultMultiplier
	Jitter     float64       // spread of each wait, as a fraction: 0.1 is ±10% [none]
}

// Delay is the wait before retry n (1 for the first retry; below 1 counts as 1):
// Initial * Multiplier^(n-1), capped at Max, then spread by Jitter and capped again.
func (p Policy) Delay(n int) time.Duration {
	if p.Initial <= 0 {
		return 0
	}
	m := p.Multiplier
	if m < 1 {
		m = DefaultMultiplier
	}
	limit := uncapped
	if p.Max > 0 {
		limit = float64(p.Max)
	}
	d := min(float64(p.Initial)*math.Pow(m, float64(max(n, 1)-1)), limit) // +Inf (n large) caps too
	if p.Jitter > 0 {
		d = min(d*(1-p.Jitter+2*p.Jitter*rand.Float64()), limit)
	}
	return time.Duration(d)
}

// Backoff paces one retry loop: each Wait (or Next) takes the next delay of its Policy, and
// Reset starts over once the loop has succeeded. It is not safe for concurrent use.
type Backoff struct {
	Policy Policy
	n      int           // retries taken since the last Reset
	next   time.Duration // the next delay once drawn, so Peek and Next agree under jitter
	drawn  bool
}

// New returns a Backoff whose waits start at initial and double up to limit.
func New(initial, limit time.Duration) *Backoff {
	return &Backoff{Policy: Policy{Initial: initial, Max: limit}}
}

// Peek is the delay the next Wait or Next takes, for a log line before it.
func (b *Backoff) Peek() time.Duration {
	if !b.drawn {
		b.next, b.drawn = b.Policy.Delay(b.n+1), true
	}
	return b.next
}

// Next returns the delay of the next retry and moves on to the one after, for a loop that
// waits by other means (a timer it also selects on, say).
func (b *Backoff) Next() time.Duration {
	d := b.Peek()
	b.n++
	b.drawn = false
	return d
}

// Wait waits the next delay (see Next); it reports false, early, when ctx ends first.
func (b *Backoff) Wait(ctx context.Context) bool {
	return Sleep(ctx, b.Next())
}

// Reset makes the next wait the first one again.
func (b *Backoff) Reset() {
	b.n, b.drawn = 0, false
}

// Sleep waits d or until ctx ends; it reports whether the full wait elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Every calls fn every interval until ctx ends (the first call after one interval).
func Every(ctx context.Context, interval time.Duration, fn func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if ctx.Err() != nil { // both were ready: ending wins
				return
			}
			fn()
		}
	}
}

// UntilDue runs step until ctx ends, the loop of a due queue (delayed records, schedules,
// polls): after a step it sleeps until the next due time step returned (none: idle), at most
// idle, so work queued by another process is seen within it, or until wake fires; after an
// error, which it hands to failed with the wait, it backs off from 100ms to 5s instead.
func UntilDue(ctx context.Context, wake <-chan struct{}, idle time.Duration, step func() (time.Time, error), failed func(err error, wait time.Duration)) {
	b := New(100*time.Millisecond, 5*time.Second)
	for {
		next, err := step()
		wait := idle
		switch {
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			wait = b.Next()
			failed(err, wait)
		case !next.IsZero():
			b.Reset()
			wait = min(max(time.Until(next), 0), idle)
		default:
			b.Reset()
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}
