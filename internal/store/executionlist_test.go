package store_test

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

func TestExecutionsOfFlowsMergesTheFlowsIndexes(t *testing.T) {
	onEachRedis(t, testExecutionsOfFlowsMergesTheFlowsIndexes)
}

// Every page of the merged list, with and without a status filter, is the page of all the
// flows' executions sorted newest first (then by id), however unevenly the executions are
// spread: one busy flow holds most of the newest, others a few, some at the same millisecond.
func testExecutionsOfFlowsMergesTheFlowsIndexes(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, rdb, prefix := newExecStore(t, b)
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	var all []envelope.Execution
	add := func(id, flow string, at time.Time, status string) {
		e := runningExec(id, flow, at)
		createExec(ctx, t, st, e)
		if status != envelope.StatusRunning {
			end(ctx, t, st, id, status, at.Add(time.Second))
			e = finishedExec(e, status, at.Add(time.Second))
		}
		all = append(all, *e)
	}
	statuses := []string{envelope.StatusRunning, envelope.StatusSucceeded, envelope.StatusFailed, envelope.StatusFiltered}
	for i := range 30 { // the busy flow: the newest, of every status
		add(fmt.Sprintf("busy%02d", i), "busy", base.Add(time.Duration(100+i)*time.Second), statuses[i%4])
	}
	for f := range 4 { // quiet flows, older, some at the very same millisecond
		for i := range 4 {
			add(fmt.Sprintf("q%d-%d", f, i), fmt.Sprintf("quiet%d", f), base.Add(time.Duration(10*i+f%2)*time.Second), statuses[(f+i)%4])
		}
	}
	add("unseen", "foreign", base.Add(time.Hour), envelope.StatusSucceeded) // a flow not asked for
	flows := []string{"busy", "quiet0", "quiet1", "quiet2", "quiet3", "empty"}

	want := func(status string) []string {
		var ids []string
		sorted := slices.Clone(all)
		slices.SortFunc(sorted, func(a, b envelope.Execution) int {
			if c := b.ReceivedAt.Compare(a.ReceivedAt); c != 0 {
				return c
			}
			return cmp.Compare(b.ID, a.ID)
		})
		for _, e := range sorted {
			if e.FlowID != "foreign" && (status == "" || e.Status == status) {
				ids = append(ids, e.ID)
			}
		}
		return ids
	}
	for _, status := range append([]string{""}, statuses...) {
		expect := want(status)
		for _, size := range []int{1, 3, 7, 25, 100} {
			for page := 0; page*size <= len(expect); page++ {
				list, total, err := st.ExecutionsOfFlows(ctx, flows, status, page*size, size)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]string, len(list))
				for i, e := range list {
					got[i] = e.ID
				}
				exp := expect[min(page*size, len(expect)):min((page+1)*size, len(expect))]
				if total != len(expect) || strings.Join(got, ",") != strings.Join(exp, ",") {
					t.Fatalf("status %q, size %d, page %d: total %d, %v; want total %d, %v", status, size, page, total, got, len(expect), exp)
				}
			}
		}
	}

	if _, _, err := st.ExecutionsOfFlows(ctx, flows, "", store.MaxMergedDepth-10, 11); err == nil {
		t.Fatal("a page beyond MaxMergedDepth was listed")
	}
	if list, total, err := st.ExecutionsOfFlows(ctx, nil, "", 0, 10); err != nil || total != 0 || len(list) != 0 {
		t.Fatalf("no flows: %v %d %v", list, total, err)
	}

	// A record that expired leaves its flow's index when it is next listed.
	if err := rdb.Del(ctx, prefix+"exec:{busy29}").Err(); err != nil {
		t.Fatal(err)
	}
	list, total, err := st.ExecutionsOfFlows(ctx, flows, "", 0, 2)
	if err != nil || total != len(all)-2 || len(list) != 1 || list[0].ID != "busy28" {
		t.Fatalf("after expiry: %v total %d, %v", list, total, err)
	}
	if _, total, _ := st.FlowExecutions(ctx, "busy", "", 0, 10); total != 29 {
		t.Fatalf("busy's index after expiry: total %d, want 29", total)
	}
}

func end(ctx context.Context, t *testing.T, st *store.Store, id, status string, at time.Time) {
	t.Helper()
	e, err := st.Execution(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	_, err = st.AdvanceExecution(ctx, store.Transition{ExecutionID: id, MessageID: "end"}, func(*store.ExecState) (*store.ExecChange, error) {
		return &store.ExecChange{Execution: finishedExec(e, status, at)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
