package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// runToEnd runs an execution through a start, one step and its end under pol, as the router
// does, and returns the ending transition's result.
func runToEnd(ctx context.Context, t *testing.T, st *store.Store, pol store.ExecPolicy, id, flow, status string, at time.Time) store.Advanced {
	t.Helper()
	e := runningExec(id, flow, at)
	begin := store.Transition{ExecutionID: id, MessageID: "ingest", Policy: pol}
	if _, err := st.AdvanceExecution(ctx, begin, func(*store.ExecState) (*store.ExecChange, error) {
		return &store.ExecChange{
			Execution: e, State: json.RawMessage(`{"n":1}`),
			Outputs:    map[string]json.RawMessage{"t": json.RawMessage(`{"in":1}`)},
			AddPending: map[string]json.RawMessage{"A/1": json.RawMessage(`{"node":"A"}`)},
			Steps:      []envelope.Step{{ExecutionID: id, NodeID: "A", Token: "A/1", Status: envelope.StepRunning, Input: json.RawMessage(`{"big":"` + strings.Repeat("x", 2000) + `"}`), StartedAt: at}},
		}, nil
	}); err != nil {
		t.Fatal(err)
	}
	var loaded []envelope.Step
	end := store.Transition{ExecutionID: id, MessageID: "result:A/1", Token: "A/1", Policy: pol}
	res, err := st.AdvanceExecution(ctx, end, func(cur *store.ExecState) (*store.ExecChange, error) {
		var err error
		if loaded, err = cur.LoadSteps(); err != nil {
			return nil, err
		}
		return &store.ExecChange{
			Execution: finishedExec(e, status, at.Add(time.Second)), DonePending: []string{"A/1"},
			Steps: []envelope.Step{{ExecutionID: id, NodeID: "A", Token: "A/1", Status: envelope.StepSucceeded, Input: json.RawMessage(`{"big":"` + strings.Repeat("x", 2000) + `"}`), Output: json.RawMessage(`{"ok":true}`), StartedAt: at}},
		}, nil
	})
	if err != nil || !res.Ended {
		t.Fatalf("end of %s: %+v %v", id, res, err)
	}
	if len(loaded) != 1 || len(loaded[0].Input) == 0 {
		t.Fatalf("LoadSteps at the end of %s: %+v, want the running step with its input", id, loaded)
	}
	return res
}

// What a succeeded execution keeps follows the policy; a failed one keeps everything; the
// router's working state goes at the end and the markers live for the redelivery window only.
func TestSavePolicies(t *testing.T) { onEachRedis(t, testSavePolicies) }

func testSavePolicies(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, rdb, prefix := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, tc := range []struct {
		save, status   string
		kept, payloads bool
	}{
		{store.SaveAll, envelope.StatusSucceeded, true, true},
		{store.SaveSummary, envelope.StatusSucceeded, true, false},
		{store.SaveNone, envelope.StatusSucceeded, false, false},
		{store.SaveNone, envelope.StatusFailed, true, true},
		{store.SaveSummary, envelope.StatusFiltered, true, false},
	} {
		id := tc.save + "-" + tc.status
		pol := store.ExecPolicy{Succeeded: tc.save, RedeliveryWindow: time.Minute}
		runToEnd(ctx, t, st, pol, id, "f1", tc.status, now)
		steps, err := st.ExecutionSteps(ctx, id)
		switch {
		case !tc.kept:
			if !errors.Is(err, store.ErrNotFound) {
				t.Errorf("%s: steps %+v %v, want the execution gone", id, steps, err)
			}
		case err != nil || len(steps) != 1 || steps[0].Status != envelope.StepSucceeded:
			t.Errorf("%s: steps %+v %v", id, steps, err)
		case tc.payloads != (len(steps[0].Input) > 0 && len(steps[0].Output) > 0):
			t.Errorf("%s: step payloads kept = %v, want %v", id, !tc.payloads, tc.payloads)
		}
		for _, gone := range []string{"state", "outputs", "pending"} {
			if n := rdb.Exists(ctx, prefix+"exec:{"+id+"}:"+gone).Val(); n != 0 {
				t.Errorf("%s: %s still there after the end", id, gone)
			}
		}
		if ttl := rdb.PTTL(ctx, prefix+"exec:{"+id+"}:msgs").Val(); ttl <= 0 || ttl > time.Minute {
			t.Errorf("%s: markers TTL %s, want at most the redelivery window", id, ttl)
		}
		// A redelivered ending message is a replay, whatever was kept.
		res, err := st.AdvanceExecution(ctx, store.Transition{ExecutionID: id, MessageID: "result:A/1", Token: "A/1", Policy: pol},
			func(*store.ExecState) (*store.ExecChange, error) { return nil, errors.New("decide must not run") })
		if err != nil || !res.Replayed {
			t.Errorf("%s: redelivery %+v %v", id, res, err)
		}
	}
	listed := map[string]int{}
	for _, status := range []string{"", envelope.StatusSucceeded, envelope.StatusFailed, envelope.StatusFiltered} {
		_, n, err := st.FlowExecutions(ctx, "f1", status, 0, 10)
		if err != nil {
			t.Fatal(err)
		}
		listed[status] = n
	}
	if listed[""] != 4 || listed[envelope.StatusSucceeded] != 2 || listed[envelope.StatusFailed] != 1 || listed[envelope.StatusFiltered] != 1 {
		t.Errorf("listed %v, want 4: 2 succeeded, 1 failed, 1 filtered (none is not listed)", listed)
	}
	if c, err := st.Counts(ctx, "f1"); err != nil || c.Success != 3 || c.Error != 1 || c.Ignored != 1 {
		t.Errorf("counts %+v %v, want 3 successes (none included), 1 error, 1 ignored", c, err)
	}
	u, err := st.History(ctx)
	if err != nil || u.Kept != 3 || u.Failed != 1 || u.Bytes <= 0 {
		t.Errorf("history %+v %v, want 3 kept, 1 failed, their bytes", u, err)
	}
}

// Count retention deletes the oldest succeeded executions beyond the bound and keeps every
// failure; the budget deletes the oldest succeeded ones first, failures last; counters and
// statistics never go down.
func TestCountRetentionAndBudget(t *testing.T) { onEachRedis(t, testCountRetentionAndBudget) }

func testCountRetentionAndBudget(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)

	count := store.ExecPolicy{MaxCount: 3}
	for i := range 8 {
		status := envelope.StatusSucceeded
		if i%4 == 0 {
			status = envelope.StatusFailed
		}
		runToEnd(ctx, t, st, count, fmt.Sprintf("c%d", i), "counted", status, now.Add(time.Duration(i)*time.Millisecond))
	}
	ok, _, err := st.FlowExecutions(ctx, "counted", envelope.StatusSucceeded, 0, 10)
	if err != nil || len(ok) != 3 || ok[0].ID != "c7" || ok[1].ID != "c6" || ok[2].ID != "c5" {
		t.Fatalf("succeeded after count retention: %v %v, want c7 c6 c5", ids(ok), err)
	}
	failed, _, _ := st.FlowExecutions(ctx, "counted", envelope.StatusFailed, 0, 10)
	if len(failed) != 2 {
		t.Fatalf("failed after count retention: %v, want both", ids(failed))
	}
	for _, gone := range []string{"c1", "c2", "c3"} {
		if _, err := st.Execution(ctx, gone); !errors.Is(err, store.ErrNotFound) {
			t.Errorf("%s beyond the count: %v, want deleted", gone, err)
		}
	}
	if c, _ := st.Counts(ctx, "counted"); c.Success != 6 || c.Error != 2 {
		t.Errorf("counts after pruning %+v, want 6 successes and 2 errors", c)
	}
	stats, _ := st.FlowStats(ctx, "counted", now.Add(-time.Hour), now.Add(time.Hour))
	var s, e int64
	for _, b := range stats {
		s, e = s+b.Success, e+b.Error
	}
	if s != 6 || e != 2 {
		t.Errorf("stats after pruning: %d successes, %d errors, want 6 and 2", s, e)
	}
	u, _ := st.History(ctx)
	if u.Kept != 3 || u.Failed != 2 || u.Pruned[store.PrunedByCount] != 3 {
		t.Errorf("history after count retention %+v, want 3 kept, 2 failed, 3 pruned by count", u)
	}

	// A budget of about three executions: the oldest go, succeeded before failed.
	per := u.Bytes / (u.Kept + u.Failed)
	budget := store.ExecPolicy{MaxCount: -1, Budget: 3 * per}
	for i := range 6 {
		runToEnd(ctx, t, st, budget, fmt.Sprintf("b%d", i), "budgeted", envelope.StatusSucceeded, now.Add(time.Second+time.Duration(i)*time.Millisecond))
		u, err := st.History(ctx)
		if err != nil || u.Bytes > budget.Budget {
			t.Fatalf("after b%d: history %+v %v, over the budget of %d", i, u, err, budget.Budget)
		}
	}
	u, _ = st.History(ctx)
	if u.Failed != 2 || u.Pruned[store.PrunedByBudget] == 0 {
		t.Errorf("history under the budget %+v, want both failures kept and some pruned for the budget", u)
	}
	newest, _, _ := st.FlowExecutions(ctx, "budgeted", "", 0, 1)
	if len(newest) != 1 || newest[0].ID != "b5" {
		t.Errorf("newest under the budget: %v, want b5", ids(newest))
	}
	if c, _ := st.Counts(ctx, "budgeted"); c.Success != 6 {
		t.Errorf("counts under the budget %+v, want 6 successes", c)
	}
}

func ids(execs []envelope.Execution) []string {
	out := make([]string, len(execs))
	for i, e := range execs {
		out[i] = e.ID
	}
	return out
}

// A transition's steps laid over the stored ones, in the order they started.
func TestMergeSteps(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	stored := []envelope.Step{
		{Token: "a", NodeID: "A", Status: envelope.StepSucceeded, StartedAt: t0},
		{Token: "b", NodeID: "B", Status: envelope.StepRunning, StartedAt: t0.Add(time.Second)},
	}
	newer := []envelope.Step{
		{Token: "b", NodeID: "B", Status: envelope.StepSucceeded, StartedAt: t0.Add(time.Second)},
		{Token: "c", NodeID: "C", Status: envelope.StepSkipped, StartedAt: t0.Add(2 * time.Second)},
	}
	got := store.MergeSteps(stored, newer)
	if len(got) != 3 || got[0].Token != "a" || got[1].Token != "b" || got[1].Status != envelope.StepSucceeded || got[2].Token != "c" {
		t.Fatalf("merged %+v", got)
	}
}
