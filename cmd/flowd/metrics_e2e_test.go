package main

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// metricValue reads one sample of the metrics the API serves: the line of name with exactly
// labels (as Prometheus' text format writes them, e.g. `{status="succeeded"}`); 0 when absent.
func (p *pipeline) metricValue(name, labels string) float64 {
	p.t.Helper()
	res, err := http.Get(p.base + "/metrics")
	if err != nil {
		p.t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	if res.StatusCode != 200 {
		b, _ := io.ReadAll(res.Body)
		p.t.Fatalf("/metrics: %d %s", res.StatusCode, b)
	}
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+labels+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				p.t.Fatalf("%s%s: %q", name, labels, v)
			}
			return f
		}
	}
	return 0
}

// N webhooks through a 3-step flow: the metrics count N more webhooks answered 202, N more
// executions succeeded, and 3N more step durations of the transform connector's map action.
func TestMetricsCountWebhooksExecutionsAndSteps(t *testing.T) {
	p := startPipeline(t)
	id := p.flow(`{"name":"metered","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook"},
		{"id":"a","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.x"}}},
		{"id":"b","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.v"}}},
		{"id":"c","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.v"}}}],
		"edges":[{"source":"hook","target":"a"},{"source":"a","target":"b"},{"source":"b","target":"c"}]}}`)
	hooks := p.metricValue("flowd_webhooks_total", `{code="202"}`)
	ended := p.metricValue("flowd_executions_ended_total", `{flow="",status="succeeded"}`)
	steps := p.metricValue("flowd_step_duration_seconds_count", `{action="map",connector="transform",outcome="succeeded"}`)
	const n = 5
	for i := range n {
		st, body := p.post("/hooks/"+id, fmt.Sprintf(`{"x":%d}`, i))
		if st != 202 {
			t.Fatalf("webhook: %d %v", st, body)
		}
		p.finished(body["data"].(map[string]any)["executionId"].(string))
	}
	if got := p.metricValue("flowd_webhooks_total", `{code="202"}`) - hooks; got != n {
		t.Errorf("webhooks answered 202: +%v, want +%d", got, n)
	}
	// The router counts an execution once its end is stored: a moment after it can be read.
	for deadline := time.Now().Add(30 * time.Second); ; {
		got := p.metricValue("flowd_executions_ended_total", `{flow="",status="succeeded"}`) - ended
		if got == n {
			break
		}
		if got > n || time.Now().After(deadline) {
			t.Fatalf("executions succeeded: +%v, want +%d", got, n)
		}
		time.Sleep(20 * time.Millisecond) // polling the metrics with a deadline
	}
	if got := p.metricValue("flowd_step_duration_seconds_count", `{action="map",connector="transform",outcome="succeeded"}`) - steps; got != 3*n {
		t.Errorf("step durations: +%v, want +%d", got, 3*n)
	}
	if p.metricValue("go_goroutines", "") == 0 {
		t.Error("no Go runtime metrics")
	}
}
