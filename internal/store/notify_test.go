package store_test

import (
	"testing"
	"time"

	"github.com/flowd/flowd/internal/testrig"
)

func TestNotifyThrottle(t *testing.T) { onEachRedis(t, testNotifyThrottle) }

// The first failure of a window is sent at once; the rest are kept and counted for one digest,
// which one caller takes when it is due.
func testNotifyThrottle(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC()
	if first, err := st.NotifyGate(ctx, "f1", time.Minute); err != nil || !first {
		t.Fatalf("first failure: %v %v", first, err)
	}
	for i := range 60 {
		if first, err := st.NotifyGate(ctx, "f1", time.Minute); err != nil || first {
			t.Fatalf("failure %d within the window: first %v (%v)", i, first, err)
		}
		if err := st.NotifyDefer(ctx, "f1", []byte(`{"n":1}`), now.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
	}
	if due, err := st.NotifyDue(ctx, now); err != nil || len(due) != 0 {
		t.Fatalf("due before the window ends: %v %v", due, err)
	}
	due, err := st.NotifyDue(ctx, now.Add(2*time.Minute))
	if err != nil || len(due) != 1 || due[0] != "f1" {
		t.Fatalf("due after the window: %v %v", due, err)
	}
	kept, count, ok, err := st.NotifyTake(ctx, "f1")
	if err != nil || !ok || count != 60 || len(kept) != 50 {
		t.Fatalf("digest: %d kept, count %d, ok %v (%v)", len(kept), count, ok, err)
	}
	if _, _, ok, _ := st.NotifyTake(ctx, "f1"); ok {
		t.Fatal("the digest was taken twice")
	}
}
