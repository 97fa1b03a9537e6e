package main

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/router"
)

// startRouter runs one more router on p's infrastructure until the returned stop is called.
func (p *pipeline) startRouter() (stop func()) {
	p.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	c, err := connect(ctx, p.in)
	if err != nil {
		cancel()
		p.t.Fatal(err)
	}
	rt, err := newRouter(c, p.in, routerOptions{})
	if err != nil {
		cancel()
		c.close()
		p.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- rt.Run(ctx) }()
	var stopped bool
	stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			p.t.Errorf("router: %v", err)
		}
		c.close()
	}
	p.t.Cleanup(stop)
	return stop
}

// ticks polls the flow's executions until one ran for a tick at or after until, and returns
// the scheduled times of all of them.
func (p *pipeline) ticks(flowID string, until time.Time) []time.Time {
	p.t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(60 * time.Second); ; {
		execs, _, err := p.st.FlowExecutions(ctx, flowID, "", 0, 1000)
		if err != nil {
			p.t.Fatal(err)
		}
		var out []time.Time
		reached := false
		for _, e := range execs {
			if e.ScheduledAt == nil {
				p.t.Fatalf("execution %s of a schedule flow without its tick", e.ID)
			}
			out = append(out, *e.ScheduledAt)
			reached = reached || !e.ScheduledAt.Before(until)
		}
		if reached {
			return out
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("no tick at or after %s: %d executions", until, len(execs))
		}
		time.Sleep(50 * time.Millisecond) // polling Redis with a deadline
	}
}

// A schedule of every second, with two routers running, starts one execution per tick: 9 to
// 11 in 10 s and no tick twice; with one router stopped mid-run, it keeps firing.
func TestScheduleFiresEachTickOnceAcrossRouters(t *testing.T) {
	p := startPipeline(t)
	stopSecond := p.startRouter()
	id := p.flow(`{"name":"ticking","graph":{"nodes":[
	    {"id":"tick","type":"trigger.schedule","config":{"cron":"@every 1s","input":{"report":"daily"}}},
	    {"id":"shape","type":"action","connector":"transform","action":"map","config":{"fields":{"at":"input.scheduledAt","report":"input.input.report"}}}],
	  "edges":[{"source":"tick","target":"shape"}]}}`)
	st, body := p.get("/api/v1/flows/"+id, p.token)
	next, _ := body["data"].(map[string]any)["nextRunAt"].(string)
	if st != 200 || next == "" {
		t.Fatalf("flow view without nextRunAt: %d %v", st, body)
	}
	t0 := time.Now().UTC()
	all := p.ticks(id, t0.Add(10*time.Second))
	seen := map[time.Time]bool{}
	n := 0
	for _, at := range all {
		if seen[at] {
			t.Fatalf("tick %s fired twice", at)
		}
		seen[at] = true
		if at.After(t0) && !at.After(t0.Add(10*time.Second)) {
			n++
		}
	}
	if n < 9 || n > 11 {
		t.Fatalf("%d executions for the ticks of 10 s, want 9 to 11", n)
	}

	stopSecond()
	t1 := time.Now().UTC()
	later := p.ticks(id, t1.Add(3*time.Second))
	if len(later) <= len(all) {
		t.Fatal("no tick fired after one router stopped")
	}
	ex, steps := p.finished(latestExecution(id, later))
	if ex.Status != envelope.StatusSucceeded || len(steps) == 0 {
		t.Fatalf("a tick's execution: %s %v", ex.Status, ex.Error)
	}

	// A router killed while it holds the schedule (taken, leased, never fired) leaves exactly
	// that behind: here taken as such a router would, in the remaining router's place.
	ctx := context.Background()
	var held time.Time
	for deadline := time.Now().Add(30 * time.Second); held.IsZero(); {
		due, _, err := p.st.TakeDueSchedules(ctx, time.Now(), 5*time.Second, 10)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range due {
			if d.FlowID == id {
				held = time.Now().UTC()
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the schedule was never due to a third router")
		}
		time.Sleep(20 * time.Millisecond) // polling the due set with a deadline
	}
	// Once its lease ends the live router fires again, and no tick ever fired twice.
	final := p.ticks(id, held.Add(8*time.Second))
	seen = map[time.Time]bool{}
	for _, at := range final {
		if seen[at] {
			t.Fatalf("tick %s fired twice", at)
		}
		seen[at] = true
	}
}

// latestExecution is the execution of the latest of ticks.
func latestExecution(flowID string, ticks []time.Time) string {
	latest := ticks[0]
	for _, t := range ticks {
		if t.After(latest) {
			latest = t
		}
	}
	return router.ScheduledExecutionID(flowID, latest)
}

// Trigger configs are checked when a flow is saved: each kind of mistake is refused with its
// path, so no webhook ever answers 500 flow_misconfigured for its config.
func TestTriggerConfigsAreCheckedWhenSaved(t *testing.T) {
	p := startPipeline(t)
	action := `{"id":"a","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input"}}}`
	st, conn := p.post("/api/v1/connections", `{"name":"signing","type":"api_key","data":{"key":"s3cret"}}`)
	if st != 201 {
		t.Fatalf("connection: %d %v", st, conn)
	}
	apiKey := conn["data"].(map[string]any)["id"].(string)
	for _, c := range []struct {
		trigger, path string
	}{
		{`{"id":"t","type":"trigger.webhook","config":{"mode":"synchronous"}}`, "/graph/nodes/0/config/mode"},
		{`{"id":"t","type":"trigger.webhook","config":{"timeoutMs":-5}}`, "/graph/nodes/0/config/timeoutMs"},
		{`{"id":"t","type":"trigger.webhook","config":{"auth":{"type":"bearer"}}}`, "/graph/nodes/0/config/auth/connection"},
		{`{"id":"t","type":"trigger.webhook","config":{"auth":{"type":"bearer","connection":"c1","token":"s3cret"}}}`, "/graph/nodes/0/config/auth/token"},
		{`{"id":"t","type":"trigger.webhook","config":{"auth":{"type":"basic","connection":"c1"}}}`, "/graph/nodes/0/config/auth/type"},
		{`{"id":"t","type":"trigger.webhook","config":{"moed":"sync"}}`, "/graph/nodes/0/config/moed"},
		{`{"id":"t","type":"trigger.webhook","config":{"auth":{"type":"bearer","connection":"no-such-connection"}}}`, "/graph/nodes/0/config/auth/connection"},
		{`{"id":"t","type":"trigger.webhook","config":{"auth":{"type":"bearer","connection":"` + apiKey + `"}}}`, "/graph/nodes/0/config/auth/connection"},
		{`{"id":"t","type":"trigger.kafka","config":{}}`, "/graph/nodes/0/config/topic"},
		{`{"id":"t","type":"trigger.kafka","config":{"topic":"orders","headers":{"type":1}}}`, "/graph/nodes/0/config/headers/type"},
		{`{"id":"t","type":"trigger.schedule","config":{"cron":"61 * * * *"}}`, "/graph/nodes/0/config/cron"},
		{`{"id":"t","type":"trigger.schedule","config":{"cron":"@daily","timezone":"Mars/Olympus"}}`, "/graph/nodes/0/config/timezone"},
		{`{"id":"t","type":"trigger.schedule","config":{"cron":"@daily","missed":"all"}}`, "/graph/nodes/0/config/missed"},
		{`{"id":"t","type":"trigger.schedule"}`, "/graph/nodes/0/config"},
	} {
		doc := fmt.Sprintf(`{"name":"bad trigger","graph":{"nodes":[%s,%s],"edges":[{"source":"t","target":"a"}]}}`, c.trigger, action)
		st, body := p.post("/api/v1/flows", doc)
		if st != 400 || !problemPath(body, c.path) {
			t.Errorf("%s: %d %v, want 400 with a problem at %s", c.trigger, st, body, c.path)
		}
	}
	// The same connection where it fits: saved, started, and the webhook verifies with it.
	id := p.flow(`{"name":"signed","graph":{"nodes":[{"id":"t","type":"trigger.webhook","config":{"auth":{"type":"hmac","connection":"` + apiKey + `"}}},` + action + `],
	  "edges":[{"source":"t","target":"a"}]}}`)
	if st, body := p.post("/hooks/"+id, `{}`); st != 401 {
		t.Fatalf("unsigned request to a signed webhook: %d %v", st, body)
	}
}

// problemPath reports whether body holds a problem at path, whatever its code.
func problemPath(body map[string]any, path string) bool {
	errs, _ := body["errors"].([]any)
	for _, e := range errs {
		if m, _ := e.(map[string]any); m["path"] == path {
			return true
		}
	}
	return false
}
