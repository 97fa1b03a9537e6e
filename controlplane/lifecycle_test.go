package controlplane_test

import (
	"strings"
	"testing"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
)

// setStatus puts a flow in a status as a router would (the test env has none).
func (e *env) setStatus(id, status string, reason *flowdoc.StatusReason) {
	e.t.Helper()
	_, err := e.st.UpdateFlow(e.t.Context(), id, func(cur *flowdoc.Flow) (store.Mutation, error) {
		next := *cur
		next.Status, next.StatusReason = status, reason
		return store.Mutation{Flow: &next}, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// Start and stop follow flowdoc's lifecycle table from every status, with 409s that say
// what to wait for, and a failed flow shows its reason and is its owner's to restart, stop,
// change or delete.
func TestFlowLifecycleFromEveryStatus(t *testing.T) {
	e := newEnv(t)
	id := e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))).data()["id"].(string)

	// A start not yet confirmed can be withdrawn.
	e.setStatus(id, flowdoc.StatusStarting, nil)
	if got := e.must(200, e.call("POST", "/api/v1/flows/"+id+"/stop", e.admin, nil)).data(); got["status"] != "inactive" {
		t.Fatalf("stop while starting: %v", got)
	}

	// Start while stopping is refused, saying what to wait for; PATCH says the same.
	e.setStatus(id, flowdoc.StatusStopping, nil)
	r := e.must(409, e.call("POST", "/api/v1/flows/"+id+"/start", e.admin, nil))
	if codes := r.errCodes(); len(codes) != 1 || codes[0] != "flow_busy@/status" || !strings.Contains(string(r.raw), "once it is inactive") {
		t.Fatalf("start while stopping: %s", r.raw)
	}
	if r := e.must(409, e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"description": "x"})); !strings.Contains(string(r.raw), "once it is inactive") {
		t.Fatalf("patch while stopping: %s", r.raw)
	}
	// Stop while stopping is no new stop; the env confirms it as a router would (AutoConfirm).
	if got := e.must(200, e.call("POST", "/api/v1/flows/"+id+"/stop", e.admin, nil)).data(); got["status"] != "inactive" {
		t.Fatalf("stop while stopping: %v", got)
	}

	// A failed flow shows why, can be listed by status, changed and started again.
	reason := &flowdoc.StatusReason{Code: flowdoc.ReasonTopicDenied, Message: `flowd is not authorised to use partner topic "orders"`}
	e.setStatus(id, flowdoc.StatusFailed, reason)
	got := e.must(200, e.call("GET", "/api/v1/flows/"+id, e.admin, nil)).data()
	if sr, _ := got["statusReason"].(map[string]any); got["status"] != "failed" || sr["code"] != reason.Code || sr["message"] != reason.Message {
		t.Fatalf("failed flow: %v", got)
	}
	if list := e.must(200, e.call("GET", "/api/v1/flows?filter[status]=failed", e.admin, nil)).list(); len(list) != 1 {
		t.Fatalf("filter[status]=failed: %v", list)
	}
	// The reason is the server's: a client cannot set or clear it; the status may be echoed
	// back as it is, not changed.
	e.must(400, e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"description": "v2", "status": "active"}))
	patched := e.must(200, e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"description": "v2", "statusReason": nil, "status": "failed"})).data()
	if patched["status"] != "failed" || patched["statusReason"] == nil || patched["revision"] != float64(2) {
		t.Fatalf("patch of a failed flow: %v", patched)
	}
	started := e.must(200, e.call("POST", "/api/v1/flows/"+id+"/start", e.admin, nil)).data()
	if started["status"] != "active" || started["statusReason"] != nil {
		t.Fatalf("start of a failed flow: %v", started)
	}
	if rev := e.must(200, e.call("GET", "/api/v1/flows/"+id+"/revisions/2", e.admin, nil)).data(); rev["statusReason"] != nil || rev["status"] != nil {
		t.Fatalf("revision keeps run state: %v", rev)
	}

	// Stopping a failed flow needs no router: it runs nothing.
	e.setStatus(id, flowdoc.StatusFailed, reason)
	if got := e.must(200, e.call("POST", "/api/v1/flows/"+id+"/stop", e.admin, nil)).data(); got["status"] != "inactive" || got["statusReason"] != nil {
		t.Fatalf("stop of a failed flow: %v", got)
	}
	want := []string{"flow.created", "flow.stopping", "flow.stopped", "flow.stopped", "flow.updated", "flow.starting", "flow.started", "flow.stopped"}
	if got := e.eventsFor(id, want...); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("events: %v, want %v", got, want)
	}
	e.setStatus(id, flowdoc.StatusFailed, reason)
	e.must(204, e.call("DELETE", "/api/v1/flows/"+id, e.admin, nil))
}
