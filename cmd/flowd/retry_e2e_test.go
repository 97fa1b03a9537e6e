package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
)

// flakySink answers 503 to the first `failures` requests of each /flaky/<n> path and 200 to
// everything else; it counts requests per path.
type flakySink struct {
	failures int
	mu       sync.Mutex
	seen     map[string]int
	total    atomic.Int64
}

func (s *flakySink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.total.Add(1)
	s.mu.Lock()
	s.seen[r.URL.Path]++
	n := s.seen[r.URL.Path]
	s.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/flaky/") && n <= s.failures {
		http.Error(w, "busy", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = fmt.Fprintf(w, `{"path":%q}`, r.URL.Path)
}

func (s *flakySink) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seen[path]
}

// A step that fails twice with 503 succeeds on attempt 3 with both errors in its record, and
// while it waits out its backoff, 200 other executions of the same flow, on the same
// partitions, run to their end: the retry holds no partition.
func TestRetryWaitsWithoutBlockingThePartition(t *testing.T) {
	p := startPipeline(t)
	sink := &flakySink{failures: 2, seen: map[string]int{}}
	srv := httptest.NewServer(sink)
	t.Cleanup(srv.Close)

	id := p.flow(`{"name":"retrying","retry":{"maxAttempts":4,"initialInterval":"5s","jitter":0},
	  "graph":{"nodes":[{"id":"in","type":"trigger.webhook"},
	    {"id":"call","type":"action","connector":"http","action":"request",
	     "config":{"method":"GET","url":"` + srv.URL + `/{{ input.kind }}/{{ input.n }}"}}],
	  "edges":[{"source":"in","target":"call"}]}}`)

	accept := func(kind string, n int) string {
		st, body := p.post("/hooks/"+id, fmt.Sprintf(`{"kind":%q,"n":%d}`, kind, n))
		if st != 202 {
			t.Fatalf("webhook: %d %v", st, body)
		}
		return body["data"].(map[string]any)["executionId"].(string)
	}
	flaky := accept("flaky", 0)
	others := make([]string, 200)
	for i := range others {
		others[i] = accept("ok", i)
	}

	fx, fsteps := p.finished(flaky)
	if fx.Status != envelope.StatusSucceeded {
		t.Fatalf("the retried execution: %s %v", fx.Status, fx.Error)
	}
	call := stepsByNode(fsteps)["call"]
	if len(call) != 1 || call[0].Status != envelope.StepSucceeded || call[0].Attempt != 3 || len(call[0].Attempts) != 2 {
		t.Fatalf("the retried step: %+v", call)
	}
	for i, a := range call[0].Attempts {
		if a.Attempt != i+1 || a.Error == nil || a.Error.Code != "http_5xx" || !a.Error.Retryable {
			t.Fatalf("attempt %d recorded as %+v", i+1, a)
		}
	}
	// 5s, then 10s: the second retry cannot start before 15s after the first failure.
	if gap := call[0].Attempts[1].FinishedAt.Sub(call[0].Attempts[0].FinishedAt); gap < 5*time.Second {
		t.Fatalf("attempts 1 and 2 ended %s apart, want the 5s backoff between them", gap)
	}
	if c := sink.count("/flaky/0"); c != 3 {
		t.Fatalf("the sink saw the flaky call %d times, want 3", c)
	}

	// Every other execution ended before the retried one: none waited behind its backoff.
	ctx := context.Background()
	for _, eid := range others {
		ex, _ := p.finished(eid)
		if ex.Status != envelope.StatusSucceeded {
			t.Fatalf("execution %s: %s %v", eid, ex.Status, ex.Error)
		}
		if !ex.FinishedAt.Before(*fx.FinishedAt) {
			t.Fatalf("execution %s ended at %s, after the retried one (%s): it waited behind the retry",
				eid, ex.FinishedAt, fx.FinishedAt)
		}
	}
	if n, err := p.st.DelayedCount(ctx); err != nil || n != 0 {
		t.Fatalf("%d records left in the delay queue (%v)", n, err)
	}
}

// keyedSink answers 503 until fixed, then 200; it counts the requests of each
// Idempotency-Key.
type keyedSink struct {
	fixed atomic.Bool
	mu    sync.Mutex
	keys  map[string]int
}

func (s *keyedSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.keys[r.Header.Get("Idempotency-Key")]++
	s.mu.Unlock()
	if !s.fixed.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"ok":true}`))
}

// 50 executions fail on a partner's 503 (the flow does not retry); once the partner is fixed, one bulk retry by error
// code runs each again from its failed step, with the step that succeeded replayed, not run:
// 50 retries succeed, none runs twice, and the flow has no open errors left.
func TestBulkRetryOfFailedExecutions(t *testing.T) {
	p := startPipeline(t)
	sink := &keyedSink{keys: map[string]int{}}
	srv := httptest.NewServer(sink)
	t.Cleanup(srv.Close)
	id := p.flow(`{"name":"bulk-retry","retry":{"maxAttempts":1},"graph":{"nodes":[{"id":"in","type":"trigger.webhook"},
	    {"id":"shape","type":"action","connector":"transform","action":"map","config":{"fields":{"n":"input.n"}}},
	    {"id":"send","type":"action","connector":"http","action":"request",
	     "config":{"method":"POST","url":"` + srv.URL + `/orders","body":{"n":"{{ input.n }}"}}}],
	  "edges":[{"source":"in","target":"shape"},{"source":"shape","target":"send"}]}}`)

	var failed []string
	for i := range 50 {
		st, body := p.post("/hooks/"+id, fmt.Sprintf(`{"n":%d}`, i))
		if st != 202 {
			t.Fatalf("webhook: %d %v", st, body)
		}
		failed = append(failed, body["data"].(map[string]any)["executionId"].(string))
	}
	for _, eid := range failed {
		if ex, _ := p.finished(eid); ex.Status != envelope.StatusFailed || ex.Error == nil || ex.Error.Code != "http_5xx" {
			t.Fatalf("execution %s: %s %+v, want failed with http_5xx", eid, ex.Status, ex.Error)
		}
	}
	st, errs := p.call(http.MethodGet, "/api/v1/flows/"+id+"/errors", p.token, "")
	if g := errs["data"].(map[string]any)["groups"].([]any); st != 200 || len(g) != 1 || g[0].(map[string]any)["count"] != float64(50) {
		t.Fatalf("open errors: %d %v", st, errs)
	}

	sink.fixed.Store(true)
	st, body := p.post("/api/v1/flows/"+id+"/errors/retry", `{"code":"http_5xx"}`)
	if st != 202 || body["data"].(map[string]any)["retried"] != float64(50) {
		t.Fatalf("bulk retry: %d %v", st, body)
	}
	// Asked again: nothing is open any more.
	if st, body := p.post("/api/v1/flows/"+id+"/errors/retry", `{"code":"http_5xx"}`); st != 202 || body["data"].(map[string]any)["retried"] != float64(0) {
		t.Fatalf("second bulk retry: %d %v", st, body)
	}
	// One failed execution retried on its own again: the same retry, not a second one.
	st, one := p.post("/api/v1/executions/"+failed[0]+"/retry", "")
	if st != 202 || one["data"].(map[string]any)["alreadyRetried"] != true {
		t.Fatalf("single retry of a retried execution: %d %v", st, one)
	}
	firstRetry := one["data"].(map[string]any)["retryId"].(string)

	for _, r := range body["data"].(map[string]any)["retries"].([]any) {
		rid := r.(map[string]any)["retryId"].(string)
		ex, steps := p.finished(rid)
		if ex.Status != envelope.StatusSucceeded || ex.RetryOf != r.(map[string]any)["executionId"] {
			t.Fatalf("retry %s: %s %v (retry of %q)", rid, ex.Status, ex.Error, ex.RetryOf)
		}
		by := stepsByNode(steps)
		if len(by["shape"]) != 1 || !by["shape"][0].Replayed || len(by["send"]) != 1 || by["send"][0].Replayed {
			t.Fatalf("retry %s steps: %+v", rid, by)
		}
	}
	if _, err := p.st.Execution(context.Background(), firstRetry); err != nil {
		t.Fatalf("the first execution's retry: %v", err)
	}
	// Each execution's call reached the partner twice under one key: the failed one and the
	// retry; no retry ran twice.
	sink.mu.Lock()
	defer sink.mu.Unlock()
	if len(sink.keys) != 50 {
		t.Fatalf("the partner saw %d idempotency keys, want 50", len(sink.keys))
	}
	for k, n := range sink.keys {
		if n != 2 {
			t.Fatalf("key %s reached the partner %d times, want 2 (the failure and its retry)", k, n)
		}
	}
}

// Retries exhausted: the execution fails and its flow's onError handler tells a receiver.
func TestOnErrorRunsWhenRetriesAreExhausted(t *testing.T) {
	p := startPipeline(t)
	sink := &flakySink{failures: 1000, seen: map[string]int{}}
	srv := httptest.NewServer(sink)
	t.Cleanup(srv.Close)
	got := make(chan map[string]any, 4)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var body map[string]any
		_ = json.NewDecoder(r.Body).Decode(&body)
		got <- body
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)

	id := p.flow(`{"name":"handled","retry":{"maxAttempts":3,"initialInterval":"100ms","jitter":0},
	  "onError":{"node":"tell"},
	  "graph":{"nodes":[{"id":"in","type":"trigger.webhook"},
	    {"id":"call","type":"action","connector":"http","action":"request","config":{"method":"GET","url":"` + srv.URL + `/flaky/1"}},
	    {"id":"tell","type":"action","connector":"http","action":"request",
	     "config":{"method":"POST","url":"` + receiver.URL + `/alerts",
	       "body":{"code":"{{ input.error.code }}","execution":"{{ input.execution.id }}"}}}],
	  "edges":[{"source":"in","target":"call"}]}}`)
	st, body := p.post("/hooks/"+id, `{}`)
	if st != 202 {
		t.Fatalf("webhook: %d %v", st, body)
	}
	eid := body["data"].(map[string]any)["executionId"].(string)
	ex, steps := p.finished(eid)
	if ex.Status != envelope.StatusFailed || ex.Error == nil || ex.Error.Code != "http_5xx" {
		t.Fatalf("execution %s %+v", ex.Status, ex.Error)
	}
	by := stepsByNode(steps)
	if len(by["call"]) != 1 || by["call"][0].Attempt != 3 || len(by["call"][0].Attempts) != 2 || len(by["tell"]) != 1 || by["tell"][0].Status != envelope.StepSucceeded {
		t.Fatalf("steps %+v", by)
	}
	select {
	case alert := <-got:
		if alert["code"] != "http_5xx" || alert["execution"] != eid {
			t.Fatalf("alert %v", alert)
		}
	default:
		t.Fatal("the execution ended without its handler's alert")
	}
	if c := sink.count("/flaky/1"); c != 3 {
		t.Fatalf("the partner saw %d attempts, want 3", c)
	}
}

// A partner's 400 is not retried: the http step takes its error port, and the branch there
// runs (the execution handles the failure and succeeds).
func TestClientErrorTakesTheErrorPort(t *testing.T) {
	p := startPipeline(t)
	var calls atomic.Int64
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		calls.Add(1)
		http.Error(w, `{"reason":"unknown customer"}`, http.StatusBadRequest)
	}))
	t.Cleanup(sink.Close)
	id := p.flow(`{"name":"error-port","graph":{"nodes":[{"id":"in","type":"trigger.webhook"},
	    {"id":"call","type":"action","connector":"http","action":"request","config":{"method":"POST","url":"` + sink.URL + `/customers","body":{"n":1}}},
	    {"id":"ok","type":"action","connector":"transform","action":"map","config":{"fields":{"done":"true"}}},
	    {"id":"rejected","type":"action","connector":"transform","action":"map","config":{"fields":{"status":"input.status"}}}],
	  "edges":[{"source":"in","target":"call"},{"source":"call","target":"ok","port":"success"},{"source":"call","target":"rejected","port":"error"}]}}`)
	st, body := p.post("/hooks/"+id, `{}`)
	if st != 202 {
		t.Fatalf("webhook: %d %v", st, body)
	}
	ex, steps := p.finished(body["data"].(map[string]any)["executionId"].(string))
	by := stepsByNode(steps)
	if ex.Status != envelope.StatusSucceeded || len(by["rejected"]) != 1 || by["rejected"][0].Status != envelope.StepSucceeded ||
		string(by["rejected"][0].Output) != `{"status":400}` || by["call"][0].Port != "error" || by["call"][0].Attempt != 1 {
		t.Fatalf("execution %s, steps %+v", ex.Status, by)
	}
	if len(by["ok"]) == 1 && by["ok"][0].Status != envelope.StepSkipped {
		t.Fatalf("the success branch ran: %+v", by["ok"])
	}
	if calls.Load() != 1 {
		t.Fatalf("the partner saw %d calls, want 1 (a 400 is not retried)", calls.Load())
	}
}
