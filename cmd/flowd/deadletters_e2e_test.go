package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

// deadLettersOf polls GET /api/v1/dead-letters as token until the list has want items, and
// returns them.
func (p *pipeline) deadLettersOf(token, query string, want int) []map[string]any {
	p.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; {
		st, m := p.get("/api/v1/dead-letters"+query, token)
		items, _ := m["data"].([]any)
		if st == 200 && len(items) >= want {
			out := make([]map[string]any, len(items))
			for i, it := range items {
				out[i] = it.(map[string]any)
			}
			return out
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("dead letters%s: %d %v, want %d of them", query, st, m, want)
		}
		time.Sleep(20 * time.Millisecond) // polling the API with a deadline
	}
}

// ingestEnd is the sum of the ingest topic's end offsets: what has ever been produced to it.
func (p *pipeline) ingestEnd() int64 {
	p.t.Helper()
	var sum int64
	for part := range p.in.partitions {
		conn, err := kafka.DialLeader(context.Background(), "tcp", p.kcfg.Brokers[0], p.kcfg.Topic(envelope.TopicIngest), part)
		if err != nil {
			p.t.Fatal(err)
		}
		end, err := conn.ReadLastOffset()
		_ = conn.Close()
		if err != nil {
			p.t.Fatal(err)
		}
		sum += end
	}
	return sum
}

// A webhook accepted for a flow that Redis then lost (a failover to a replica that had not yet
// received the flow: Redis replicates asynchronously) is dead-lettered by the router, since
// the flow revision it names does not exist. Until the flow is restored only an administrator
// sees the dead letter; once the operator restored the flow from a backup under its id, its
// tenant sees it and replays it: the execution runs once. Replayed again, the API answers that
// it was replayed already and produces nothing. Another tenant can neither see nor replay it.
func TestDeadLetterReplayedAfterTheFix(t *testing.T) {
	p := startPipeline(t)
	p.kcfg.RecordKeys = testrig.RecordKeys()
	acme, alice := p.member("acme")
	_, mallory := p.member("globex")

	var mu sync.Mutex
	calls := map[string]int{}
	sink := httptest.NewServer(counterHandler(&mu, calls))
	t.Cleanup(sink.Close)

	// The record ingest produced for the flow before Redis lost it, as ingest signs it.
	flowID, execID := identity.NewID(), testrig.Unique("lost")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	rec, _ := json.Marshal(envelope.Ingest{ExecutionID: execID, FlowID: flowID, Revision: 1, Trigger: envelope.TriggerWebhook,
		ReceivedAt: time.Now().UTC(), Input: json.RawMessage(`{"order":42}`)})
	m := kafka.Message{Topic: p.kcfg.Topic(envelope.TopicIngest), Key: []byte(execID), Value: rec}
	p.kcfg.RecordKeys.Sign(&m)
	produceRaw(ctx, t, p.kcfg, m)

	dl := p.deadLettersOf(p.token, "?filter[reason]=flow%20revision%20not%20available", 1)[0]
	id := dl["id"].(string)
	if dl["flowId"] != flowID || dl["executionId"] != execID || dl["topic"] != p.kcfg.Topic(envelope.TopicIngest) ||
		dl["status"] != "open" || dl["replayable"] != true {
		t.Fatalf("dead letter: %v", dl)
	}
	// The flow is gone: its tenant is not known yet, so only administrators see the dead letter.
	if items := p.deadLettersOf(alice, "", 0); len(items) != 0 {
		t.Fatalf("alice lists %v before the flow is restored", items)
	}
	if st, _ := p.get("/api/v1/dead-letters/"+id, alice); st != 404 {
		t.Fatalf("alice shows the dead letter before the flow is restored: %d", st)
	}

	// The fix: the flow restored from a backup, under its id, owned by acme.
	now := time.Now().UTC()
	restored := &flowdoc.Flow{ID: flowID, Name: "orders", Status: flowdoc.StatusActive, Revision: 1, Type: "webhook",
		Graph: flowdoc.Graph{
			Nodes: []flowdoc.Node{{ID: "in", Type: "trigger.webhook"},
				{ID: "call", Type: "action", Connector: "http", Action: "request",
					Config: map[string]any{"method": "POST", "url": sink.URL + "/orders/{{ input.order }}"}}},
			Edges: []flowdoc.Edge{{Source: "in", Target: "call"}}},
		Owners: []flowdoc.Owner{{ID: acme, Type: flowdoc.OwnerTenant}}, CreatedAt: &now, UpdatedAt: &now}
	if err := p.st.CreateFlow(ctx, restored); err != nil {
		t.Fatal(err)
	}

	// Another tenant: nothing to list, show, replay or discard.
	if items := p.deadLettersOf(mallory, "", 0); len(items) != 0 {
		t.Fatalf("mallory lists %v", items)
	}
	for _, req := range [][2]string{{"GET", "/api/v1/dead-letters/" + id}, {"POST", "/api/v1/dead-letters/" + id + "/replay"}, {"DELETE", "/api/v1/dead-letters/" + id}} {
		if st, body := p.call(req[0], req[1], mallory, ""); st != 404 {
			t.Fatalf("mallory %s %s: %d %v", req[0], req[1], st, body)
		}
	}
	if st, body := p.call("POST", "/api/v1/dead-letters/replay", mallory, `{"filter":{"flowId":"`+flowID+`"}}`); st != 200 || body["data"].(map[string]any)["matched"] != float64(0) {
		t.Fatalf("mallory replays acme's flow: %d %v", st, body)
	}

	// acme's user sees it now, and replays it: the execution runs, once.
	if items := p.deadLettersOf(alice, "?filter[flowId]="+flowID, 1); len(items) != 1 || items[0]["id"] != id {
		t.Fatalf("alice lists %v", items)
	}
	st, body := p.call("POST", "/api/v1/dead-letters/"+id+"/replay", alice, "")
	if st != 200 || body["data"].(map[string]any)["status"] != "replayed" {
		t.Fatalf("replay: %d %v", st, body)
	}
	ex, steps := p.finished(execID)
	if ex.Status != envelope.StatusSucceeded || ex.FlowID != flowID || len(stepsByNode(steps)["call"]) != 1 {
		t.Fatalf("the replayed execution: %s %v, steps %+v", ex.Status, ex.Error, steps)
	}

	// Replayed again, one by one or as a set: answered, not produced.
	before := p.ingestEnd()
	st, body = p.call("POST", "/api/v1/dead-letters/"+id+"/replay", alice, "")
	if st != 409 || !problemAt(body, "already_replayed", "") {
		t.Fatalf("second replay: %d %v", st, body)
	}
	st, body = p.call("POST", "/api/v1/dead-letters/replay", alice, `{"filter":{"flowId":"`+flowID+`","status":"replayed"}}`)
	if d, _ := body["data"].(map[string]any); st != 200 || d["matched"] != float64(1) || d["alreadyReplayed"] != float64(1) || d["replayed"] != float64(0) {
		t.Fatalf("replay of the replayed set: %d %v", st, body)
	}
	if after := p.ingestEnd(); after != before {
		t.Fatalf("%d record(s) produced to the ingest topic by replays of a replayed dead letter", after-before)
	}
	mu.Lock()
	defer mu.Unlock()
	if calls["/orders/42"] != 1 || len(calls) != 1 {
		t.Fatalf("the partner saw %v, want one call", calls)
	}
	execs, total, err := p.st.FlowExecutions(ctx, flowID, "", 0, 10)
	if err != nil || total != 1 || execs[0].ID != execID {
		t.Fatalf("the flow's executions: %d %v", total, err)
	}
}

// The api role on its own indexes dead letters and serves them.
func TestAPIRoleIndexesDeadLetters(t *testing.T) {
	p := newPipeline(t, 1, connectorPolicy{})
	p.kcfg.RecordKeys = testrig.RecordKeys()
	p.startAPIRole()

	// A runner refused a work item: its dead letter shows in the API.
	w := kafkax.NewProducer(p.kcfg)
	t.Cleanup(func() { _ = w.Close() })
	work := kafka.Message{Topic: p.kcfg.Topic(envelope.PoolTopic("")), Key: []byte("x1"), Value: []byte(`{"executionId":"x1","flowId":"f1"}`)}
	p.kcfg.RecordKeys.Sign(&work)
	sendCtx, stop := context.WithTimeout(context.Background(), 30*time.Second)
	defer stop()
	if err := p.kcfg.NewDeadLetters(w, p.kcfg.Topic(envelope.TopicDLQ), slog.Default()).Send(sendCtx, work, "work item refused: no such activation"); err != nil {
		t.Fatal(err)
	}
	dl := p.deadLettersOf(p.token, "?filter[topic]="+envelope.PoolTopic(""), 1)[0]
	if dl["executionId"] != "x1" || dl["flowId"] != "f1" || dl["reason"] != "work item refused: no such activation" {
		t.Fatalf("dead letter: %v", dl)
	}
}

// counterHandler answers 200 and counts requests by path.
func counterHandler(mu *sync.Mutex, calls map[string]int) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls[r.URL.Path]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}
}

// A flow that says retry.exhausted: deadLetter parks a step whose retries ran out on
// flowd.dlq: the execution keeps running, the dead letter names it and its step, replaying it
// after the fix runs the step once more and the execution succeeds (a second replay runs
// nothing), and discarding another one fails its execution with the discard as its error.
func TestExhaustedRetriesParkTheStepAsADeadLetter(t *testing.T) {
	p := startPipeline(t)
	var broken atomic.Bool
	broken.Store(true)
	var mu sync.Mutex
	calls := map[string]int{}
	ok := counterHandler(&mu, calls)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !broken.Load() {
			ok(w, r)
			return
		}
		mu.Lock()
		calls[r.URL.Path]++
		mu.Unlock()
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(sink.Close)
	callsOf := func(path string) int {
		mu.Lock()
		defer mu.Unlock()
		return calls[path]
	}

	id := p.flow(`{"name":"parking","retry":{"maxAttempts":2,"initialInterval":"50ms","jitter":0,"exhausted":"deadLetter"},
	  "graph":{"nodes":[{"id":"in","type":"trigger.webhook"},
	    {"id":"call","type":"action","connector":"http","action":"request",
	     "config":{"method":"POST","url":"` + sink.URL + `/orders/{{ input.n }}"}}],
	  "edges":[{"source":"in","target":"call"}]}}`)
	accept := func(n int) string {
		st, body := p.post("/hooks/"+id, fmt.Sprintf(`{"n":%d}`, n))
		if st != 202 {
			t.Fatalf("webhook: %d %v", st, body)
		}
		return body["data"].(map[string]any)["executionId"].(string)
	}
	x1, x2 := accept(1), accept(2)
	parked := func(exec string) map[string]any {
		dl := p.deadLettersOf(p.token, "?filter[executionId]="+exec, 1)[0]
		step, _ := dl["parkedStep"].(map[string]any)
		if dl["flowId"] != id || dl["topic"] != p.kcfg.Topic(envelope.PoolTopic("")) || dl["replayable"] != true ||
			!strings.Contains(dl["reason"].(string), "retries exhausted") || step["nodeId"] != "call" || step["attempt"] != float64(3) {
			t.Fatalf("dead letter of %s: %v", exec, dl)
		}
		return dl
	}
	dl1, dl2 := parked(x1), parked(x2)
	ctx := context.Background()
	for _, x := range []string{x1, x2} {
		ex, err := p.st.Execution(ctx, x)
		if err != nil || ex.Status != envelope.StatusRunning {
			t.Fatalf("execution %s while its step is parked: %+v %v", x, ex, err)
		}
		steps, _ := p.st.ExecutionSteps(ctx, x)
		if call := stepsByNode(steps)["call"]; len(call) != 1 || call[0].Status != envelope.StepDeadLettered || len(call[0].Attempts) != 2 {
			t.Fatalf("parked step of %s: %+v", x, call)
		}
	}

	// The fix, then the replay: the step runs once more and the execution succeeds.
	broken.Store(false)
	st, body := p.call("POST", "/api/v1/dead-letters/"+dl1["id"].(string)+"/replay", p.token, "")
	if st != 200 || body["data"].(map[string]any)["status"] != "replayed" {
		t.Fatalf("replay: %d %v", st, body)
	}
	ex, steps := p.finished(x1)
	call := stepsByNode(steps)["call"]
	if ex.Status != envelope.StatusSucceeded || len(call) != 1 || call[0].Status != envelope.StepSucceeded || call[0].Attempt != 3 || len(call[0].Attempts) != 2 {
		t.Fatalf("the replayed execution: %s %v, step %+v", ex.Status, ex.Error, call)
	}
	if st, body := p.call("POST", "/api/v1/dead-letters/"+dl1["id"].(string)+"/replay", p.token, ""); st != 409 || !problemAt(body, "already_replayed", "") {
		t.Fatalf("second replay: %d %v", st, body)
	}

	// Discarded: the parked step fails, and with it the execution.
	if st, body := p.call("DELETE", "/api/v1/dead-letters/"+dl2["id"].(string), p.token, ""); st != 200 || body["data"].(map[string]any)["status"] != "discarded" {
		t.Fatalf("discard: %d %v", st, body)
	}
	ex, steps = p.finished(x2)
	call = stepsByNode(steps)["call"]
	if ex.Status != envelope.StatusFailed || ex.Error == nil || ex.Error.Code != envelope.CodeDeadLetterDiscarded ||
		len(call) != 1 || call[0].Status != envelope.StepFailed || call[0].Attempt != 3 {
		t.Fatalf("the discarded execution: %s %v, step %+v", ex.Status, ex.Error, call)
	}
	if n1, n2 := callsOf("/orders/1"), callsOf("/orders/2"); n1 != 3 || n2 != 2 {
		t.Fatalf("the partner saw %d calls for order 1 (want 2 failed and the replay) and %d for order 2 (want the 2 failed)", n1, n2)
	}
}
