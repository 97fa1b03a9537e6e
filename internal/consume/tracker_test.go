package consume

import (
	"context"
	"testing"
	"time"
)

func TestOffsetTrackerCommitsInOrder(t *testing.T) {
	t.Parallel()
	tr := newOffsetTracker()
	for _, o := range []int64{10, 11, 13, 14} { // 12 is a gap (a compacted record)
		if !tr.start("steps", 0, o) {
			t.Fatalf("start(%d) refused", o)
		}
	}
	if !tr.start("steps", 1, 10) {
		t.Fatal("same offset on another partition refused")
	}

	type step struct {
		offset int64
		commit int64 // -1: nothing committable yet
	}
	for _, s := range []step{
		{14, -1}, // finishes first, but 10, 11 and 13 are still running
		{11, -1},
		{10, 11}, // head done: 10 and 11 committable; 13 still blocks 14
		{13, 14}, // and now through 14 (the gap does not block)
	} {
		got, ok := tr.done("steps", 0, s.offset)
		if s.commit < 0 {
			if ok {
				t.Fatalf("done(%d) committed %d, want nothing yet", s.offset, got)
			}
			continue
		}
		if !ok || got != s.commit {
			t.Fatalf("done(%d) = %d, %v; want %d", s.offset, got, ok, s.commit)
		}
	}
	if n := tr.inFlight(); n != 1 {
		t.Fatalf("inFlight = %d, want 1 (partition 1)", n)
	}
	if c, ok := tr.done("steps", 1, 10); !ok || c != 10 {
		t.Fatalf("partition 1: %d %v", c, ok)
	}
}

func TestOffsetTrackerRefetch(t *testing.T) {
	t.Parallel()
	tr := newOffsetTracker()
	tr.start("steps", 0, 5)
	tr.start("steps", 0, 6)
	if _, ok := tr.done("steps", 0, 5); !ok {
		t.Fatal("5 not committable")
	}
	// A rebalance makes kafka-go fetch from the group's committed offset again.
	if tr.start("steps", 0, 5) {
		t.Fatal("offset at or below the commit point accepted again")
	}
	if tr.start("steps", 0, 6) {
		t.Fatal("pending offset accepted twice")
	}
	if !tr.start("steps", 0, 7) {
		t.Fatal("new offset refused")
	}
	if tr.start("steps", 0, 3) {
		t.Fatal("offset below the commit point accepted")
	}
	if _, ok := tr.done("steps", 0, 7); ok {
		t.Fatal("7 committable while 6 runs")
	}
	if c, ok := tr.done("steps", 0, 6); !ok || c != 7 {
		t.Fatalf("done(6) = %d %v, want 7", c, ok)
	}
	if _, ok := tr.done("other", 0, 1); ok {
		t.Fatal("unknown partition committable")
	}
}

func TestOffsetTrackerInsertsOutOfOrderFetches(t *testing.T) {
	t.Parallel()
	tr := newOffsetTracker()
	tr.start("steps", 0, 20)
	// Another consumer owned the partition meanwhile and the group's offset moved back below
	// ours: offsets we never saw arrive after higher ones.
	if !tr.start("steps", 0, 15) {
		t.Fatal("unseen lower offset refused")
	}
	if _, ok := tr.done("steps", 0, 20); ok {
		t.Fatal("20 committable before 15")
	}
	if c, ok := tr.done("steps", 0, 15); !ok || c != 20 {
		t.Fatalf("done(15) = %d %v, want 20", c, ok)
	}
}

func TestOffsetTrackerWaitBelow(t *testing.T) {
	t.Parallel()
	tr := newOffsetTracker()
	tr.start("steps", 0, 1)
	tr.start("steps", 0, 2)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if !tr.waitBelow(ctx, 3) {
		t.Fatal("waitBelow(3) with 2 pending blocked")
	}
	released := make(chan bool, 1)
	go func() { released <- tr.waitBelow(ctx, 2) }()
	// 2 finishing first frees nothing: 1 still holds the partition.
	tr.done("steps", 0, 2)
	if n := tr.inFlight(); n != 2 {
		t.Fatalf("inFlight = %d, want 2", n)
	}
	tr.done("steps", 0, 1)
	if ok := <-released; !ok {
		t.Fatal("waitBelow did not return true once offsets were committable")
	}
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	tr.start("steps", 0, 3)
	if tr.waitBelow(short, 1) {
		t.Fatal("waitBelow returned true with the limit reached and ctx done")
	}
}
