package consume

import (
	"context"
	"slices"
	"sync"
)

// offsetTracker lets work items of one partition finish in any order while offsets are
// committed strictly in order: a partition's commit point only moves past an offset once that
// offset and every offset fetched before it are done. Kafka keeps one committed offset per
// partition, so committing a later offset first would silently acknowledge the earlier,
// unfinished items.
//
// Only fetched offsets are tracked, so gaps (compaction, transaction markers) need no care.
// After a rebalance kafka-go may fetch an offset again: one still pending here is reported as
// a duplicate, and one at or below the commit point was finished by this process already.
type offsetTracker struct {
	mu       sync.Mutex
	parts    map[partitionKey]*partitionOffsets
	pending  int           // offsets started and not yet committable, across partitions
	progress chan struct{} // closed (and replaced) whenever pending shrinks
}

type partitionKey struct {
	topic     string
	partition int
}

type partitionOffsets struct {
	pending   []pendingOffset // ascending
	committed int64           // highest offset handed out for commit; -1 for none yet
}

type pendingOffset struct {
	offset int64
	done   bool
}

func newOffsetTracker() *offsetTracker {
	return &offsetTracker{parts: map[partitionKey]*partitionOffsets{}, progress: make(chan struct{})}
}

// start registers a fetched offset. It returns false when the offset is already pending or
// was finished here before: the caller must not process it again.
func (t *offsetTracker) start(topic string, partition int, offset int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	key := partitionKey{topic, partition}
	p := t.parts[key]
	if p == nil {
		p = &partitionOffsets{committed: -1}
		t.parts[key] = p
	}
	if offset <= p.committed {
		return false
	}
	i, found := slices.BinarySearchFunc(p.pending, offset, func(e pendingOffset, o int64) int {
		switch {
		case e.offset < o:
			return -1
		case e.offset > o:
			return 1
		}
		return 0
	})
	if found {
		return false
	}
	p.pending = slices.Insert(p.pending, i, pendingOffset{offset: offset})
	t.pending++
	return true
}

// done marks a started offset finished. When that completes a run of finished offsets at the
// head of the partition, it returns the highest of them: everything up to and including it
// may now be committed.
func (t *offsetTracker) done(topic string, partition int, offset int64) (commit int64, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.parts[partitionKey{topic, partition}]
	if p == nil {
		return 0, false
	}
	for i := range p.pending {
		if p.pending[i].offset == offset {
			p.pending[i].done = true
			break
		}
	}
	n := 0
	for n < len(p.pending) && p.pending[n].done {
		n++
	}
	if n == 0 {
		return 0, false
	}
	commit = p.pending[n-1].offset
	p.pending = slices.Delete(p.pending, 0, n)
	p.committed = commit
	t.pending -= n
	close(t.progress)
	t.progress = make(chan struct{})
	return commit, true
}

// inFlight counts offsets started and not yet committable, across partitions.
func (t *offsetTracker) inFlight() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.pending
}

// waitBelow blocks until fewer than limit offsets are uncommittable, or ctx ends (false).
// It bounds what a slow item at the head of a partition can hold back: everything finished
// behind it would be redelivered after a crash.
func (t *offsetTracker) waitBelow(ctx context.Context, limit int) bool {
	for {
		t.mu.Lock()
		n, ch := t.pending, t.progress
		t.mu.Unlock()
		if n < limit {
			return true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return false
		}
	}
}
