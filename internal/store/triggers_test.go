package store_test

import (
	"testing"
	"time"

	"github.com/flowd/flowd/internal/testrig"
)

func TestSchedules(t *testing.T) { onEachRedis(t, testSchedules) }

// A schedule is set up once per revision (every router calls it), taken by one router at a
// time, records its ticks only for the revision it was set up for, and is gone once dropped.
func testSchedules(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	start := time.Now().UTC().Truncate(time.Millisecond)
	first := start.Add(time.Second)
	for i, want := range []bool{true, false} {
		changed, err := st.EnsureSchedule(ctx, "f1", 1, first, start)
		if err != nil || changed != want {
			t.Fatalf("ensure %d: changed %v (%v), want %v", i, changed, err, want)
		}
	}
	if due, next, err := st.TakeDueSchedules(ctx, start, 5*time.Second, 10); err != nil || len(due) != 0 || !next.Equal(first) {
		t.Fatalf("before the first tick: %+v next %s (%v)", due, next, err)
	}
	due, _, err := st.TakeDueSchedules(ctx, first, 5*time.Second, 10)
	if err != nil || len(due) != 1 || due[0].FlowID != "f1" || due[0].Revision != 1 || !due[0].Last.Equal(start) {
		t.Fatalf("at the first tick: %+v (%v)", due, err)
	}
	if again, _, _ := st.TakeDueSchedules(ctx, first, 5*time.Second, 10); len(again) != 0 {
		t.Fatalf("taken twice within the lease: %+v", again)
	}
	// A new revision meanwhile: the old revision's ticks are not recorded.
	if changed, err := st.EnsureSchedule(ctx, "f1", 2, first.Add(time.Minute), first); err != nil || !changed {
		t.Fatalf("new revision: %v %v", changed, err)
	}
	if err := st.FiredSchedule(ctx, "f1", 1, first, first.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if next, ok, _ := st.NextRun(ctx, "f1"); !ok || !next.Equal(first.Add(time.Minute)) {
		t.Fatalf("next run after a stale fire: %s %v", next, ok)
	}
	if err := st.FiredSchedule(ctx, "f1", 2, first.Add(time.Minute), first.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	due, _, _ = st.TakeDueSchedules(ctx, first.Add(2*time.Minute), 5*time.Second, 10)
	if len(due) != 1 || due[0].Revision != 2 || !due[0].Last.Equal(first.Add(time.Minute)) {
		t.Fatalf("after revision 2 fired: %+v", due)
	}
	if err := st.DropSchedule(ctx, "f1"); err != nil {
		t.Fatal(err)
	}
	if due, next, _ := st.TakeDueSchedules(ctx, first.Add(time.Hour), 5*time.Second, 10); len(due) != 0 || !next.IsZero() {
		t.Fatalf("after the drop: %+v next %s", due, next)
	}
	if _, ok, _ := st.NextRun(ctx, "f1"); ok {
		t.Fatal("a dropped schedule still has a next run")
	}
}

func TestPolls(t *testing.T) { onEachRedis(t, testPolls) }

// A poll is due in its pool only, keeps its cursor and the items it produced across a stop
// (and forgets them when the flow is deleted), and saves a cursor only for the revision it was
// set up for.
func testPolls(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)
	if _, err := st.EnsurePoll(ctx, "f1", "default", 1, now); err != nil {
		t.Fatal(err)
	}
	if due, _, _ := st.TakeDuePolls(ctx, "other", now, time.Minute, 10); len(due) != 0 {
		t.Fatalf("due in another pool: %+v", due)
	}
	due, _, err := st.TakeDuePolls(ctx, "default", now, time.Minute, 10)
	if err != nil || len(due) != 1 || due[0].Revision != 1 || due[0].Cursor != "" {
		t.Fatalf("first poll: %+v (%v)", due, err)
	}
	if err := st.PolledItems(ctx, "f1", "default", 1, "c1", []string{"a", "b"}, now, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	seen, err := st.SeenPollItems(ctx, "f1", []string{"a", "b", "c"})
	if err != nil || !seen["a"] || !seen["b"] || seen["c"] {
		t.Fatalf("seen %v (%v)", seen, err)
	}
	// Stopped and started again, in another pool: the cursor and the items are kept.
	if err := st.DropPoll(ctx, "f1", false); err != nil {
		t.Fatal(err)
	}
	if due, _, _ := st.TakeDuePolls(ctx, "default", now.Add(time.Hour), time.Minute, 10); len(due) != 0 {
		t.Fatalf("a stopped poll is due: %+v", due)
	}
	if _, err := st.EnsurePoll(ctx, "f1", "fast", 2, now); err != nil {
		t.Fatal(err)
	}
	due, _, _ = st.TakeDuePolls(ctx, "fast", now, time.Minute, 10)
	if len(due) != 1 || due[0].Revision != 2 || due[0].Cursor != "c1" {
		t.Fatalf("restarted poll: %+v", due)
	}
	// A poll of revision 1 finishing late saves no cursor.
	if err := st.PolledItems(ctx, "f1", "fast", 1, "stale", nil, now, now); err != nil {
		t.Fatal(err)
	}
	if err := st.PolledItems(ctx, "f1", "fast", 2, "c2", []string{"c"}, now, now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	due, _, _ = st.TakeDuePolls(ctx, "fast", now.Add(time.Second), time.Minute, 10)
	if len(due) != 1 || due[0].Cursor != "c2" {
		t.Fatalf("after revision 2 polled: %+v", due)
	}
	if err := st.DropPoll(ctx, "f1", true); err != nil {
		t.Fatal(err)
	}
	if seen, _ := st.SeenPollItems(ctx, "f1", []string{"a", "c"}); len(seen) != 0 {
		t.Fatalf("a deleted flow's poll remembers %v", seen)
	}
}

func TestRunnerPools(t *testing.T) { onEachRedis(t, testRunnerPools) }

// A pool is served while a runner's membership lasts: not before it joins, not after it lapses
// or leaves; another pool's runners do not count.
func testRunnerPools(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().Truncate(time.Millisecond)
	served := func(at time.Time) map[string]bool {
		t.Helper()
		got, err := st.ServedPools(ctx, []string{"default", "gpu:{x}"}, at)
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	if got := served(now); got["default"] || got["gpu:{x}"] || len(got) != 2 {
		t.Fatalf("no runner yet: %v", got)
	}
	if err := st.ServePool(ctx, "default", "r1", now, now.Add(30*time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := st.ServePool(ctx, "gpu:{x}", "r2", now, now.Add(10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := served(now.Add(5 * time.Second)); !got["default"] || !got["gpu:{x}"] {
		t.Fatalf("both served: %v", got)
	}
	if got := served(now.Add(20 * time.Second)); !got["default"] || got["gpu:{x}"] {
		t.Fatalf("r2 lapsed: %v", got)
	}
	if err := st.LeavePool(ctx, "default", "r1"); err != nil {
		t.Fatal(err)
	}
	if got := served(now); got["default"] || !got["gpu:{x}"] {
		t.Fatalf("r1 left: %v", got)
	}
}
