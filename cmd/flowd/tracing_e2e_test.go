package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracev1 "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"

	"github.com/flowd/flowd/internal/envelope"
)

// receivedSpan is a span as an OTLP receiver decodes it.
type receivedSpan struct {
	service, name         string
	trace, span, parent   string
	kind                  tracev1.Span_SpanKind
	execution, node, conn string
}

// otlpReceiver is an OTLP/gRPC trace collector keeping every span it is sent.
type otlpReceiver struct {
	collectortrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []receivedSpan
}

func (r *otlpReceiver) Export(_ context.Context, req *collectortrace.ExportTraceServiceRequest) (*collectortrace.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rs := range req.GetResourceSpans() {
		service := ""
		for _, a := range rs.GetResource().GetAttributes() {
			if a.GetKey() == "service.name" {
				service = a.GetValue().GetStringValue()
			}
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				rec := receivedSpan{service: service, name: s.GetName(), kind: s.GetKind(),
					trace: hex.EncodeToString(s.GetTraceId()), span: hex.EncodeToString(s.GetSpanId()),
					parent: hex.EncodeToString(s.GetParentSpanId())}
				for _, a := range s.GetAttributes() {
					switch a.GetKey() {
					case "flowd.execution_id":
						rec.execution = a.GetValue().GetStringValue()
					case "flowd.node_id":
						rec.node = a.GetValue().GetStringValue()
					case "flowd.connector":
						rec.conn = a.GetValue().GetStringValue()
					}
				}
				r.spans = append(r.spans, rec)
			}
		}
	}
	return &collectortrace.ExportTraceServiceResponse{}, nil
}

func (r *otlpReceiver) snapshot() []receivedSpan {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]receivedSpan(nil), r.spans...)
}

// startOTLPReceiver serves an OTLP receiver and points this process's exporters (and the
// connector plugins it starts, which inherit OTEL_*) at it.
func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &otlpReceiver{}
	srv := grpc.NewServer()
	collectortrace.RegisterTraceServiceServer(srv, rcv)
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(srv.Stop)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+ln.Addr().String())
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "50") // ms: the plugins' spans leave before they are stopped
	t.Setenv("OTEL_SERVICE_NAME", "")
	t.Setenv("OTEL_SDK_DISABLED", "")
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	return rcv
}

// N webhooks through a 3-step flow (map, an http call, map), one continuing its caller's
// trace: each execution is one trace holding the webhook's, the router's, every step's and
// every connector call's spans (the host's and the plugin's), each span's parent in the
// trace; and the http connector's partner sees that trace's traceparent.
func TestTracingFollowsEachExecution(t *testing.T) {
	rcv := startOTLPReceiver(t)
	var seenMu sync.Mutex
	var seen []string // traceparents the partner received
	partner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seenMu.Lock()
		seen = append(seen, r.Header.Get("traceparent"))
		seenMu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(partner.Close)
	p := startPipeline(t)
	id := p.flow(`{"name":"traced","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook"},
		{"id":"a","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.x"}}},
		{"id":"b","type":"action","connector":"http","action":"request","config":{"method":"GET","url":"` + partner.URL + `/ping"}},
		{"id":"c","type":"action","connector":"transform","action":"map","config":{"fields":{"status":"input.status"}}}],
		"edges":[{"source":"hook","target":"a"},{"source":"a","target":"b"},{"source":"b","target":"c"}]}}`)

	const (
		incomingTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		incomingSpan  = "00f067aa0ba902b7"
	)
	const n = 3
	execs := make([]string, n)
	for i := range n {
		req, err := http.NewRequest(http.MethodPost, p.base+"/hooks/"+id, strings.NewReader(fmt.Sprintf(`{"x":%d}`, i)))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		if i == 0 {
			req.Header.Set("traceparent", "00-"+incomingTrace+"-"+incomingSpan+"-01")
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusAccepted {
			t.Fatalf("webhook: %d", res.StatusCode)
		}
		execs[i] = res.Header.Get("Flowd-Execution-Id")
	}
	for _, e := range execs {
		if ex, _ := p.finished(e); ex.Status != envelope.StatusSucceeded {
			t.Fatalf("execution %s: %s %v", e, ex.Status, ex.Error)
		}
	}
	p.stop() // flushes every role's spans; the plugins flush theirs as they exit

	// Per execution: the webhook, the routing of its ingest record and of 3 results, and per
	// step the runner's span, the host's call and the plugin's span.
	want := map[string]int{"webhook": 1, "route ingest": 1, "route result": 3, "run step": 3,
		"call transform map": 2, "call http request": 1, "transform map": 2, "http request": 1}
	var traces map[string][]receivedSpan // trace id -> spans
	byExec := map[string]string{}        // execution -> its trace id
	for deadline := time.Now().Add(30 * time.Second); ; {
		traces = map[string][]receivedSpan{}
		for _, s := range rcv.snapshot() {
			traces[s.trace] = append(traces[s.trace], s)
			if s.name == "webhook" {
				byExec[s.execution] = s.trace
			}
		}
		complete := true
		for _, e := range execs {
			counts := map[string]int{}
			for _, s := range traces[byExec[e]] {
				counts[s.name]++
			}
			for name, k := range want {
				complete = complete && counts[name] >= k
			}
		}
		if complete {
			break
		}
		if time.Now().After(deadline) {
			for _, e := range execs {
				t.Logf("execution %s, trace %s:", e, byExec[e])
				for _, s := range traces[byExec[e]] {
					t.Logf("  %+v", s)
				}
			}
			t.Fatalf("spans missing (want per execution %v)", want)
		}
		time.Sleep(50 * time.Millisecond) // polling the receiver with a deadline
	}

	for i, e := range execs {
		tid := byExec[e]
		spans := traces[tid]
		ids := map[string]bool{}
		counts := map[string]int{}
		for _, s := range spans {
			ids[s.span] = true
			counts[s.name]++
		}
		for name, k := range want {
			if counts[name] != k {
				t.Errorf("execution %s: %d %q spans, want %d", e, counts[name], name, k)
			}
		}
		services := map[string]bool{}
		for _, s := range spans {
			services[s.service] = true
			if s.execution != "" && s.execution != e {
				t.Errorf("trace of %s holds a span of execution %s: %+v", e, s.execution, s)
			}
			switch {
			case s.name == "webhook" && i == 0:
				if s.parent != incomingSpan {
					t.Errorf("webhook span's parent %q, want the caller's span %s", s.parent, incomingSpan)
				}
			case s.name == "webhook":
				if s.parent != "" {
					t.Errorf("webhook span without a traceparent has parent %q", s.parent)
				}
			case !ids[s.parent]:
				t.Errorf("execution %s: span %q has parent %q, not in its trace", e, s.name, s.parent)
			}
		}
		for _, svc := range []string{"flowd-dev", "flowd-connector-transform", "flowd-connector-http"} {
			if !services[svc] {
				t.Errorf("execution %s: no span from %s (got %v)", e, svc, services)
			}
		}
		if i == 0 && tid != incomingTrace {
			t.Errorf("execution with a traceparent has trace %s, want %s", tid, incomingTrace)
		}
	}
	// Every span of the executions is in one of their traces: one trace per execution.
	for _, s := range rcv.snapshot() {
		if s.execution == "" {
			continue
		}
		if tid, ok := byExec[s.execution]; ok && tid != s.trace {
			t.Errorf("execution %s has spans in traces %s and %s (%q)", s.execution, tid, s.trace, s.name)
		}
	}
	seenMu.Lock()
	defer seenMu.Unlock()
	if len(seen) != n {
		t.Fatalf("partner called %d times, want %d", len(seen), n)
	}
	for _, e := range execs {
		found := false
		for _, tp := range seen {
			found = found || strings.HasPrefix(tp, "00-"+byExec[e]+"-")
		}
		if !found {
			t.Errorf("the partner saw no traceparent of execution %s's trace %s (saw %v)", e, byExec[e], seen)
		}
	}
}
