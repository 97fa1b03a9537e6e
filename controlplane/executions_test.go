package controlplane_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/store"
)

// execution records an execution of flow as the router does: created running, then ended
// with status unless that is running.
func (e *env) execution(id, flow, status string, at time.Time) {
	e.t.Helper()
	e.ended(id, flow, status, nil, at)
}

// ended records an execution of flow received at at that ended (unless status is running)
// with status and error.
func (e *env) ended(id, flow, status string, fail *envelope.Error, at time.Time) {
	e.t.Helper()
	ctx := context.Background()
	ex := &envelope.Execution{ID: id, FlowID: flow, Revision: 1, Trigger: "webhook", Status: envelope.StatusRunning, ReceivedAt: at, StartedAt: at}
	if _, err := e.st.AdvanceExecution(ctx, store.Transition{ExecutionID: id, MessageID: "ingest"}, func(*store.ExecState) (*store.ExecChange, error) {
		return &store.ExecChange{Execution: ex, State: json.RawMessage(`{}`)}, nil
	}); err != nil {
		e.t.Fatal(err)
	}
	if status == envelope.StatusRunning {
		return
	}
	end := *ex
	done := at.Add(time.Second)
	end.Status, end.FinishedAt, end.Error = status, &done, fail
	if _, err := e.st.AdvanceExecution(ctx, store.Transition{ExecutionID: id, MessageID: "end"}, func(*store.ExecState) (*store.ExecChange, error) {
		return &store.ExecChange{Execution: &end}, nil
	}); err != nil {
		e.t.Fatal(err)
	}
}

// listed is the ids of a list answer, and its meta block.
func (r resp) listed() (string, map[string]any) {
	var ids []string
	for _, x := range r.list() {
		ids = append(ids, x.(map[string]any)["id"].(string))
	}
	meta, _ := r.body["meta"].(map[string]any)
	return strings.Join(ids, ","), meta
}

// GET /api/v1/executions lists the executions of every flow the caller can see, newest first,
// with the per-flow list's filter and paging, and nothing of the flows of another tenant.
func TestExecutionsOfEveryVisibleFlow(t *testing.T) {
	e := newEnv(t)
	ta, tb := e.tenant("acme"), e.tenant("globex")
	_, alice := e.user(ta, "alice")
	_, bob := e.user(ta, "bob") // alice's colleague: sees the tenant's flows too
	_, mallory := e.user(tb, "mallory")
	_, noRead := e.user(ta, "noread", "secrets.read")
	flow := func(token string) string {
		return e.must(201, e.call("POST", "/api/v1/flows", token, readmeFlow(t))).data()["id"].(string)
	}
	a1, a2, b1 := flow(alice), flow(alice), flow(mallory)

	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	// acme's executions interleave over its two flows; globex's are newer than all of them.
	e.execution("a-1", a1, envelope.StatusSucceeded, at(1))
	e.execution("a-2", a2, envelope.StatusFailed, at(2))
	e.execution("a-3", a1, envelope.StatusFailed, at(3))
	e.execution("a-4", a1, envelope.StatusRunning, at(4))
	e.execution("a-5", a2, envelope.StatusSucceeded, at(5))
	e.execution("b-1", b1, envelope.StatusFailed, at(10))
	e.execution("b-2", b1, envelope.StatusSucceeded, at(11))

	for _, tc := range []struct {
		who, token, query, want string
		total, pages            float64
	}{
		{"alice", alice, "", "a-5,a-4,a-3,a-2,a-1", 5, 1},
		{"bob", bob, "", "a-5,a-4,a-3,a-2,a-1", 5, 1},
		{"mallory", mallory, "", "b-2,b-1", 2, 1},
		{"admin", e.admin, "", "b-2,b-1,a-5,a-4,a-3,a-2,a-1", 7, 1},
		{"alice failed", alice, "filter[status]=failed", "a-3,a-2", 2, 1},
		{"mallory failed", mallory, "filter[status]=failed", "b-1", 1, 1},
		{"alice running", alice, "filter[status]=running", "a-4", 1, 1},
		{"alice filtered", alice, "filter[status]=filtered", "", 0, 0},
		{"alice page 1", alice, "page[size]=2", "a-5,a-4", 5, 3},
		{"alice page 2", alice, "page[size]=2&page[number]=2", "a-3,a-2", 5, 3},
		{"alice page 3", alice, "page[size]=2&page[number]=3&sort=-receivedAt", "a-1", 5, 3},
		{"alice past the end", alice, "page[size]=2&page[number]=4", "", 5, 3},
		{"admin page 2 of failed", e.admin, "filter[status]=failed&page[size]=2&page[number]=2", "a-2", 3, 2},
	} {
		r := e.must(200, e.call("GET", "/api/v1/executions?"+tc.query, tc.token, nil))
		ids, meta := r.listed()
		if ids != tc.want || meta["total"] != tc.total || meta["totalPages"] != tc.pages {
			t.Errorf("%s: %s %v, want %s, total %v in %v pages", tc.who, ids, meta, tc.want, tc.total, tc.pages)
		}
	}
	// The same list, flow by flow, is what the per-flow route gives.
	ids, _ := e.must(200, e.call("GET", "/api/v1/flows/"+a1+"/executions", alice, nil)).listed()
	if ids != "a-4,a-3,a-1" {
		t.Errorf("per flow: %s", ids)
	}

	for _, tc := range []struct{ query, want string }{
		{"filter[status]=done", "invalid_parameter@filter[status]"},
		{"sort=receivedAt", "invalid_parameter@sort"},
		{"page[size]=0", "invalid_parameter@page[size]"},
		{fmt.Sprintf("page[size]=100&page[number]=%d", store.MaxMergedDepth/100+1), "invalid_parameter@page[number]"},
	} {
		r := e.must(400, e.call("GET", "/api/v1/executions?"+tc.query, alice, nil))
		if got := strings.Join(r.errCodes(), " "); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.query, r.raw, tc.want)
		}
	}
	// The deepest page allowed is listed.
	if ids, meta := e.must(200, e.call("GET", fmt.Sprintf("/api/v1/executions?page[size]=100&page[number]=%d", store.MaxMergedDepth/100), alice, nil)).listed(); ids != "" || meta["total"] != float64(5) {
		t.Errorf("deepest page: %s %v", ids, meta)
	}
	e.must(403, e.call("GET", "/api/v1/executions", noRead, nil))
	e.must(401, e.call("GET", "/api/v1/executions", "", nil))
}
