package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/internal/testrig"
)

// A real Prometheus server scrapes a running stack while N webhooks go through a 3-step flow
// (transform, http, code): PromQL sees the succeeded executions increase by exactly N, N samples
// in each step's duration histogram, and every consumer group's lag back at 0.
func TestPrometheusScrapesAStack(t *testing.T) {
	p := newPipeline(t, 2, connectorPolicy{egressAllow: "127.0.0.1/32"})
	hosttest.Build(t, filepath.Join(p.dir, "connectors"), map[string]string{"code": "github.com/flowd/flowd/connectors/code"})
	p.start()
	prom := testrig.Prometheus(t, strings.TrimPrefix(p.base, "http://"))
	sink := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer sink.Close()
	id := p.flow(`{"name":"scraped","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook"},
		{"id":"shape","type":"action","connector":"transform","action":"map","config":{"fields":{"n":"input.n"}}},
		{"id":"call","type":"action","connector":"http","action":"request","config":{"method":"POST","url":"` + sink.URL + `/x"}},
		{"id":"double","type":"action","connector":"code","action":"run","config":{"source":"return {doubled: 2};"}}],
		"edges":[{"source":"hook","target":"shape"},{"source":"shape","target":"call"},{"source":"call","target":"double"}]}}`)

	// The baseline: the last scrape before the first webhook.
	prom.Await(t, `up{job="flowd"}`, 1, 30*time.Second)
	t0, _ := prom.Query(t, `timestamp(up{job="flowd"})`)
	increase := func(selector string) string {
		return fmt.Sprintf(`sum(%[1]s) - (sum(%[1]s @ %.3[2]f) or vector(0))`, selector, t0)
	}
	const n = 8
	for i := range n {
		st, body := p.post("/hooks/"+id, fmt.Sprintf(`{"n":%d}`, i))
		if st != 202 {
			t.Fatalf("webhook: %d %v", st, body)
		}
		p.finished(body["data"].(map[string]any)["executionId"].(string))
	}

	prom.Await(t, increase(`flowd_executions_ended_total{status="succeeded"}`), n, 30*time.Second)
	prom.Await(t, increase(`flowd_executions_started_total`), n, 30*time.Second)
	prom.Await(t, increase(`flowd_webhooks_total{code="202"}`), n, 30*time.Second)
	for _, step := range []string{
		`connector="transform",action="map"`, `connector="http",action="request"`, `connector="code",action="run"`,
	} {
		prom.Await(t, increase(`flowd_step_duration_seconds_count{`+step+`,outcome="succeeded"}`), n, 30*time.Second)
	}
	if v, ok := prom.Query(t, `count(flowd_consumer_lag)`); !ok || v == 0 {
		t.Fatal("no consumer lag series scraped")
	}
	prom.Await(t, `max(flowd_consumer_lag)`, 0, 30*time.Second)
	if v, ok := prom.Query(t, increase(`flowd_produce_duration_seconds_count{outcome="acknowledged"}`)); !ok || v < 3*n {
		t.Errorf("produce calls acknowledged: %v, want at least %d (one per step's work and result)", v, 3*n)
	}
	if v, ok := prom.Query(t, `sum(flowd_plugin_starts_total{connector="code",outcome="started"})`); !ok || v < 1 {
		t.Errorf("code plugin starts: %v", v)
	}
}
