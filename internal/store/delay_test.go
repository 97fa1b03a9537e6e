package store_test

import (
	"testing"
	"time"

	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

func TestDelayQueue(t *testing.T) { onEachRedis(t, testDelayQueue) }

// Records come out when due, not before; a taken record that is not done comes out again
// when its lease runs out; scheduling one again (a redelivery) keeps one copy.
func testDelayQueue(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)
	rec := func(topic string, due time.Time) store.Record {
		return store.Record{Topic: topic, Key: []byte("x"), Value: []byte(`{"n":1}`), Due: due}
	}
	if err := st.Schedule(ctx,
		store.Delayed{ID: "x/a/0", Record: rec("soon", now.Add(time.Second))},
		store.Delayed{ID: "x/b/0", Record: rec("later", now.Add(time.Minute))},
	); err != nil {
		t.Fatal(err)
	}
	// Scheduled again, as a redelivery would: still one record.
	if err := st.Schedule(ctx, store.Delayed{ID: "x/a/0", Record: rec("soon", now.Add(time.Second))}); err != nil {
		t.Fatal(err)
	}
	got, next, err := st.TakeDue(ctx, now, 30*time.Second, 10)
	if err != nil || len(got) != 0 || !next.Equal(now.Add(time.Second)) {
		t.Fatalf("before anything is due: %+v, next %s (%v)", got, next, err)
	}
	got, next, err = st.TakeDue(ctx, now.Add(2*time.Second), 30*time.Second, 10)
	if err != nil || len(got) != 1 || got[0].ID != "x/a/0" || got[0].Record.Topic != "soon" || string(got[0].Record.Value) != `{"n":1}` {
		t.Fatalf("when the first is due: %+v (%v)", got, err)
	}
	if !next.Equal(now.Add(30*time.Second + 2*time.Second)) {
		t.Fatalf("next due %s, want the taken record's lease end", next)
	}
	// Taken and leased: not handed out twice within the lease.
	if again, _, _ := st.TakeDue(ctx, now.Add(3*time.Second), 30*time.Second, 10); len(again) != 0 {
		t.Fatalf("leased record taken again: %+v", again)
	}
	// Its producer died: after the lease it comes out again.
	if again, _, _ := st.TakeDue(ctx, now.Add(33*time.Second), 30*time.Second, 10); len(again) != 1 || again[0].ID != "x/a/0" {
		t.Fatalf("after the lease: %+v", again)
	}
	if err := st.Done(ctx, "x/a/0"); err != nil {
		t.Fatal(err)
	}
	if n, err := st.DelayedCount(ctx); err != nil || n != 1 {
		t.Fatalf("%d records wait (%v), want the later one", n, err)
	}
	got, _, _ = st.TakeDue(ctx, now.Add(2*time.Minute), 30*time.Second, 10)
	if len(got) != 1 || got[0].ID != "x/b/0" {
		t.Fatalf("the later record: %+v", got)
	}
}
