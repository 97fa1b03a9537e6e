package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/notify"
	"github.com/flowd/flowd/internal/testrig"
)

type received struct {
	path      string
	body      []byte
	signature string
	event     string
}

// Five executions fail in a burst once their retries are exhausted: each runs the flow's
// onError handler; the first is notified at once, by a signed webhook and an e-mail through a
// real SMTP server; the other four arrive in one digest when the window ends.
func TestFailureNotificationsAreThrottledIntoDigests(t *testing.T) {
	smtp := testrig.SMTP(t)
	p := newPipeline(t, 2, connectorPolicy{egressAllow: "127.0.0.1/32"})
	p.nopt = notifyOptions{smtpAddr: smtp.Addr, smtpFrom: "flowd@test.example", egressAllow: "loopback"}
	p.start()

	var mu sync.Mutex
	var hooks []received
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		hooks = append(hooks, received{path: r.URL.Path, body: b, signature: r.Header.Get(notify.HeaderSignature), event: r.Header.Get(notify.HeaderEvent)})
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(receiver.Close)
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	}))
	t.Cleanup(sink.Close)

	st, conn := p.post("/api/v1/connections", `{"name":"alert-signing","type":"api_key","data":{"key":"s3cret"}}`)
	if st != 201 {
		t.Fatalf("connection: %d %v", st, conn)
	}
	connID := conn["data"].(map[string]any)["id"].(string)
	id := p.flow(`{"name":"orders-sync","retry":{"maxAttempts":2,"initialInterval":"100ms","jitter":0},
	  "onError":{"node":"tell"},
	  "notifications":{"webhook":{"url":"` + receiver.URL + `/flowd","connection":"` + connID + `"},
	                   "email":{"to":["ops@example.com"]},"digest":"4s"},
	  "graph":{"nodes":[{"id":"in","type":"trigger.webhook"},
	    {"id":"call","type":"action","connector":"http","action":"request","config":{"method":"GET","url":"` + sink.URL + `/x"}},
	    {"id":"tell","type":"action","connector":"http","action":"request",
	     "config":{"method":"POST","url":"` + receiver.URL + `/onerror","body":{"execution":"{{ input.execution.id }}"}}}],
	  "edges":[{"source":"in","target":"call"}]}}`)
	var execs []string
	for i := range 5 {
		st, body := p.post("/hooks/"+id, fmt.Sprintf(`{"n":%d}`, i))
		if st != 202 {
			t.Fatalf("webhook: %d %v", st, body)
		}
		execs = append(execs, body["data"].(map[string]any)["executionId"].(string))
	}
	for _, e := range execs {
		ex, steps := p.finished(e)
		call := stepsByNode(steps)["call"]
		if ex.Status != envelope.StatusFailed || len(call) != 1 || call[0].Attempt != 2 || len(call[0].Attempts) != 1 {
			t.Fatalf("execution %s: %s, call %+v (want failed after 2 attempts)", e, ex.Status, call)
		}
	}

	// Five onError calls, and two notifications: the first failure, then the digest of the
	// four others.
	var got []received
	handled := 0
	for deadline := time.Now().Add(60 * time.Second); ; {
		mu.Lock()
		got, handled = nil, 0
		for _, h := range hooks {
			if h.path == "/onerror" {
				handled++
			} else {
				got = append(got, h)
			}
		}
		mu.Unlock()
		if (len(got) >= 2 && handled >= 5) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond) // polling the receiver with a deadline
	}
	if handled != 5 {
		t.Fatalf("the onError handler ran %d times, want once per failed execution (5)", handled)
	}
	if len(got) != 2 {
		t.Fatalf("%d webhook notifications, want the first failure and one digest", len(got))
	}
	var counts []float64
	for i, h := range got {
		if h.signature != notify.Sign([]byte("s3cret"), h.body) {
			t.Fatalf("webhook %d: signature %q does not match its body", i, h.signature)
		}
		var m map[string]any
		if err := json.Unmarshal(h.body, &m); err != nil || m["flowId"] != id || m["flowName"] != "orders-sync" {
			t.Fatalf("webhook %d body %s", i, h.body)
		}
		counts = append(counts, m["count"].(float64))
		if fs := m["failures"].([]any); len(fs) != int(m["count"].(float64)) {
			t.Fatalf("webhook %d lists %d failures, counts %v", i, len(fs), m["count"])
		}
	}
	if got[0].event != "execution.failed" || got[1].event != "execution.failed.digest" || counts[0] != 1 || counts[1] != 4 {
		t.Fatalf("webhooks %s (%v) then %s (%v)", got[0].event, counts[0], got[1].event, counts[1])
	}

	mails := smtp.WaitMessages(t, 2)
	subjects := strings.Join(testrig.Subjects(mails), " | ")
	if len(mails) != 2 || subjects != "[flowd] orders-sync: execution failed | [flowd] orders-sync: 4 executions failed" &&
		subjects != "[flowd] orders-sync: 4 executions failed | [flowd] orders-sync: execution failed" {
		t.Fatalf("%d mails: %s", len(mails), subjects)
	}
	for _, m := range mails {
		if !strings.Contains(m, "To: ops@example.com") || !strings.Contains(m, "http_5xx") {
			t.Fatalf("mail:\n%s", m)
		}
	}
}
