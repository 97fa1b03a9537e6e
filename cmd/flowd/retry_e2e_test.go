package main

import (
	"context"
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
