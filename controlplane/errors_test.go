package controlplane_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
)

// failed records a failed execution of flow with the error code.
func (e *env) failed(id, flow, code string, at time.Time) {
	e.t.Helper()
	e.ended(id, flow, envelope.StatusFailed, &envelope.Error{Code: code, Message: code + " at " + id}, at)
}

// A flow's open errors are grouped by code, largest first; resolving them, one by one or by
// code, takes them off the list without touching the flow's counters; another tenant sees none.
func TestFlowErrorsGroupedAndResolved(t *testing.T) {
	e := newEnv(t)
	ta, tb := e.tenant("acme"), e.tenant("globex")
	_, alice := e.user(ta, "alice")
	_, mallory := e.user(tb, "mallory")
	_, reader := e.user(ta, "reader", "flows.read")
	id := e.must(201, e.call("POST", "/api/v1/flows", alice, readmeFlow(t))).data()["id"].(string)
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	e.failed("x1", id, "http_5xx", at(1))
	e.failed("x2", id, "http_5xx", at(2))
	e.failed("x3", id, "http_5xx", at(3))
	e.failed("x4", id, "connection_not_found", at(4))
	e.execution("ok1", id, envelope.StatusSucceeded, at(5))

	groups := func(token string) (map[string]any, []any) {
		d := e.must(200, e.call("GET", "/api/v1/flows/"+id+"/errors", token, nil)).data()
		return d, d["groups"].([]any)
	}
	d, g := groups(alice)
	if len(g) != 2 || d["open"] != float64(4) || d["resolved"] != float64(0) {
		t.Fatalf("errors %v", d)
	}
	first := g[0].(map[string]any)
	if first["code"] != "http_5xx" || first["count"] != float64(3) || first["lastExecutionId"] != "x3" || first["lastMessage"] != "http_5xx at x3" {
		t.Fatalf("largest group %v", first)
	}
	if second := g[1].(map[string]any); second["code"] != "connection_not_found" || second["count"] != float64(1) {
		t.Fatalf("second group %v", second)
	}

	e.must(404, e.call("GET", "/api/v1/flows/"+id+"/errors", mallory, nil))
	e.must(404, e.call("POST", "/api/v1/flows/"+id+"/errors/resolve", mallory, map[string]any{"code": "http_5xx"}))
	e.must(403, e.call("POST", "/api/v1/flows/"+id+"/errors/resolve", reader, map[string]any{"code": "http_5xx"}))
	e.must(400, e.call("POST", "/api/v1/flows/"+id+"/errors/resolve", alice, map[string]any{}))

	// One by one: ids that are not failures of the flow are ignored.
	r := e.must(200, e.call("POST", "/api/v1/flows/"+id+"/errors/resolve", alice, map[string]any{"executionIds": []string{"x4", "ok1", "nope"}}))
	if r.data()["resolved"] != float64(1) {
		t.Fatalf("resolved %v, want 1", r.data())
	}
	// By code, twice: the second finds nothing open.
	for _, want := range []float64{3, 0} {
		r = e.must(200, e.call("POST", "/api/v1/flows/"+id+"/errors/resolve", alice, map[string]any{"code": "http_5xx"}))
		if r.data()["resolved"] != want {
			t.Fatalf("resolved %v, want %v", r.data(), want)
		}
	}
	if d, g := groups(alice); len(g) != 0 || d["open"] != float64(0) || d["resolved"] != float64(4) {
		t.Fatalf("after resolving: %v", d)
	}
	// The counters still say what happened.
	c, err := e.st.Counts(context.Background(), id)
	if err != nil || c.Error != 4 || c.Success != 1 {
		t.Fatalf("counts %+v (%v)", c, err)
	}
}

// Only a visible failed execution is retried; asking twice gives the same retry.
func TestRetryExecutionRequest(t *testing.T) {
	e := newEnv(t)
	ta, tb := e.tenant("acme"), e.tenant("globex")
	_, alice := e.user(ta, "alice")
	_, mallory := e.user(tb, "mallory")
	_, reader := e.user(ta, "reader", "flows.read")
	id := e.must(201, e.call("POST", "/api/v1/flows", alice, readmeFlow(t))).data()["id"].(string)
	at := time.Now().UTC().Add(-time.Minute)
	e.failed("x1", id, "http_5xx", at)
	e.execution("ok1", id, envelope.StatusSucceeded, at)

	e.must(404, e.call("POST", "/api/v1/executions/x1/retry", mallory, nil))
	e.must(403, e.call("POST", "/api/v1/executions/x1/retry", reader, nil))
	e.must(404, e.call("POST", "/api/v1/executions/nope/retry", alice, nil))
	e.must(409, e.call("POST", "/api/v1/executions/ok1/retry", alice, nil))
	e.must(400, e.call("POST", "/api/v1/executions/x1/retry", alice, map[string]any{"revision": "yesterday"}))
	first := e.must(202, e.call("POST", "/api/v1/executions/x1/retry", alice, nil)).data()
	second := e.must(202, e.call("POST", "/api/v1/executions/x1/retry", alice, map[string]any{"revision": "current"})).data()
	if first["retryId"] == "" || first["retryId"] != second["retryId"] || first["alreadyRetried"] != false || second["alreadyRetried"] != true {
		t.Fatalf("retries %v then %v, want one retry id", first, second)
	}
	// The router is asked through the outbox and flowd.events, once per request (it starts
	// the retry once).
	got := e.eventsFor(id, "flow.created", "execution.retry", "execution.retry")
	if strings.Join(got, ",") != "flow.created,execution.retry,execution.retry" {
		t.Fatalf("events of the flow: %v", got)
	}
}
