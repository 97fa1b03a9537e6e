package consume

import (
	"testing"

	"github.com/segmentio/kafka-go"
)

// Records of one key on one partition run one after another in fetch order; other keys and
// the same key on another partition do not wait.
func TestLanesOrderPerKeyAndPartition(t *testing.T) {
	t.Parallel()
	l := &lanes{busy: map[string][]kafka.Message{}}
	rec := func(part int, key string, off int64) kafka.Message {
		return kafka.Message{Topic: "t", Partition: part, Key: []byte(key), Offset: off}
	}
	if !l.enter(rec(0, "a", 1)) {
		t.Fatal("first record of a lane must run at once")
	}
	if l.enter(rec(0, "a", 2)) || l.enter(rec(0, "a", 3)) {
		t.Fatal("later records of a busy lane must queue")
	}
	if !l.enter(rec(0, "b", 4)) || !l.enter(rec(1, "a", 5)) {
		t.Fatal("another key, or the same key on another partition, must not wait")
	}
	for _, want := range []int64{2, 3} {
		m, ok := l.next(laneOf(rec(0, "a", 0)))
		if !ok || m.Offset != want {
			t.Fatalf("next: %d %v, want offset %d", m.Offset, ok, want)
		}
	}
	if _, ok := l.next(laneOf(rec(0, "a", 0))); ok {
		t.Fatal("an empty lane handed out a record")
	}
	if !l.enter(rec(0, "a", 6)) {
		t.Fatal("a freed lane must run its next record at once")
	}
	l.enter(rec(0, "a", 7))
	l.abandon(laneOf(rec(0, "a", 0)))
	if !l.enter(rec(0, "a", 8)) {
		t.Fatal("an abandoned lane must be free")
	}
}
