package ingest

import (
	"sync"
	"time"
)

// breaker stops feeding the Kafka writer while the broker is failing. kafka-go cannot cancel
// a queued batch: every request enqueued during an outage would sit in the partition's queue,
// retrying, and land late (after its caller got a 503) or delay the records behind it. So after
// a failure requests are refused at once for a cooldown; then one request at a time probes the
// broker, and the first success lets everyone through again.
type breaker struct {
	cooldown time.Duration

	mu        sync.Mutex
	openUntil time.Time // zero: closed
	probing   bool
}

// allow reports whether a request may produce now.
func (b *breaker) allow(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.openUntil.IsZero():
		return true
	case now.Before(b.openUntil) || b.probing:
		return false
	default:
		b.probing = true // half-open: this request is the probe
		return true
	}
}

// success closes the breaker.
func (b *breaker) success() {
	b.mu.Lock()
	b.openUntil, b.probing = time.Time{}, false
	b.mu.Unlock()
}

// failure opens the breaker for a cooldown (again, if a probe failed).
func (b *breaker) failure(now time.Time) {
	b.mu.Lock()
	b.openUntil, b.probing = now.Add(b.cooldown), false
	b.mu.Unlock()
}

// open reports whether requests are being refused (for readiness).
func (b *breaker) open() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.openUntil.IsZero()
}
