package main

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/store"
)

// A burst into a flow with a small count retention, under a small global budget: the history
// stays under the budget, the newest executions and every failure stay listed, the counters
// and statistics stay exact, and flowd.history holds every execution.
func TestHistoryBoundsUnderABurst(t *testing.T) {
	const budget = 56 << 10
	p := newPipeline(t, 2, connectorPolicy{egressAllow: "127.0.0.1/32"})
	p.ropt = routerOptions{budget: fmt.Sprint(budget), stream: true}
	p.start()
	t.Cleanup(hookClient.CloseIdleConnections) // before the pipeline stops
	history := readTopic(t, p.kcfg, envelope.TopicHistory)

	// Inputs with fail=true fail in the transform (int('x') is an error); the rest succeed.
	id := p.flow(`{"name":"burst","history":{"succeeded":"all","maxCount":10},"graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook"},
		{"id":"work","type":"action","connector":"transform","action":"map",
		 "config":{"fields":{"n":"input.n","v":"input.fail ? int('x') : input.n * 2","pad":"input.pad"}}}],
		"edges":[{"source":"hook","target":"work"}]}}`)

	const n, failEvery = 120, 10
	pad := fmt.Sprintf("%0512d", 0)
	acks := make([]hookAck, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for i := range n {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			acks[i] = p.hook(id, fmt.Sprintf(`{"n":%d,"fail":%v,"pad":%q}`, i, i%failEvery == 0, pad))
		})
	}
	wg.Wait()
	wantFailed := map[string]bool{}
	for i, a := range acks {
		if a.err != nil || a.status != 202 {
			t.Fatalf("webhook %d: %d %v", i, a.status, a.err)
		}
		if i%failEvery == 0 {
			wantFailed[a.execution] = true
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	for {
		c, err := p.st.Counts(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if c.Success+c.Error == n {
			if c.Success != n-n/failEvery || c.Error != n/failEvery {
				t.Fatalf("counts %+v, want %d successes and %d errors", c, n-n/failEvery, n/failEvery)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("counts %+v: not every execution ended", c)
		}
		time.Sleep(20 * time.Millisecond) // polling Redis with a deadline
	}

	// The counters move first, the history's account right after: wait for the last entries.
	var u store.HistoryUsage
	for settle := time.Now().Add(30 * time.Second); ; {
		var err error
		if u, err = p.st.History(ctx); err != nil {
			t.Fatal(err)
		}
		// The budget is enforced as executions end: between their entry and the pruning it
		// triggers, the executions ending at that moment may take the history over it briefly.
		if u.Bytes > 2*budget {
			t.Fatalf("history %+v: twice the budget of %d", u, budget)
		}
		if u.Failed == n/failEvery && u.Kept+u.Pruned[store.PrunedByCount]+u.Pruned[store.PrunedByBudget] == n-n/failEvery && u.Bytes <= budget {
			break
		}
		if time.Now().After(settle) {
			t.Fatalf("history %+v: want %d failed, kept and deleted successes adding up to %d, at most %d bytes", u, n/failEvery, n-n/failEvery, budget)
		}
		time.Sleep(20 * time.Millisecond) // polling Redis with a deadline
	}
	t.Logf("history: %+v", u)
	if u.Bytes > budget || u.Pruned[store.PrunedByCount] == 0 || u.Pruned[store.PrunedByBudget] == 0 {
		t.Fatalf("history %+v: want at most %d bytes, executions deleted for the count and for the budget", u, budget)
	}
	failed, total, err := p.st.FlowExecutions(ctx, id, envelope.StatusFailed, 0, 100)
	if err != nil || total != len(wantFailed) {
		t.Fatalf("failed executions listed: %d %v, want all %d", total, err, len(wantFailed))
	}
	for _, e := range failed {
		if !wantFailed[e.ID] {
			t.Fatalf("listed failure %s was not sent to fail", e.ID)
		}
		if _, steps := p.finished(e.ID); len(steps) == 0 || len(steps[len(steps)-1].Input) == 0 {
			t.Fatalf("failure %s kept no step data: %+v", e.ID, steps)
		}
	}
	ok, okTotal, err := p.st.FlowExecutions(ctx, id, envelope.StatusSucceeded, 0, 100)
	if err != nil || okTotal == 0 || okTotal > 10 {
		t.Fatalf("succeeded executions listed: %d %v, want 1 to 10 (maxCount)", okTotal, err)
	}
	if u.Kept != int64(okTotal) || u.Failed != int64(len(wantFailed)) {
		t.Fatalf("history counts %d kept and %d failed, the flow lists %d and %d", u.Kept, u.Failed, okTotal, len(wantFailed))
	}
	stats, err := p.st.FlowStats(ctx, id, time.Now().Add(-time.Hour), time.Now().Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var s, e int64
	for _, b := range stats {
		s, e = s+b.Success, e+b.Error
	}
	if s != n-n/failEvery || e != n/failEvery {
		t.Fatalf("stats: %d successes and %d errors, want %d and %d", s, e, n-n/failEvery, n/failEvery)
	}

	// flowd.history: one record per execution, with its status and, for failures, its steps.
	seen := map[string]envelope.History{}
	for len(seen) < n {
		m, err := history.r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("flowd.history holds %d of %d executions: %v", len(seen), n, err)
		}
		var h envelope.History
		if err := json.Unmarshal(m.Value, &h); err != nil {
			t.Fatalf("history record: %v", err)
		}
		if string(m.Key) != h.Execution.ID || h.Execution.FlowID != id {
			t.Fatalf("history record keyed %s for execution %s of flow %s", m.Key, h.Execution.ID, h.Execution.FlowID)
		}
		seen[h.Execution.ID] = h
	}
	// The newest success is listed: whatever the count and the budget took, they took older ones.
	var newest envelope.Execution
	for _, h := range seen {
		if h.Execution.Status == envelope.StatusSucceeded && h.Execution.ReceivedAt.After(newest.ReceivedAt) {
			newest = h.Execution
		}
	}
	// (The index orders by millisecond; executions received within one are equally new.)
	if ok[0].ReceivedAt.UnixMilli() != newest.ReceivedAt.UnixMilli() {
		t.Fatalf("newest listed success %s received %s, newest received %s at %s", ok[0].ID, ok[0].ReceivedAt, newest.ID, newest.ReceivedAt)
	}
	for _, a := range acks {
		h, ok := seen[a.execution]
		if !ok {
			t.Fatalf("execution %s missing from flowd.history", a.execution)
		}
		wantStatus := envelope.StatusSucceeded
		if wantFailed[a.execution] {
			wantStatus = envelope.StatusFailed
		}
		if h.Execution.Status != wantStatus || h.Save != store.SaveAll || len(h.Steps) < 2 {
			t.Fatalf("history of %s: status %s, save %s, %d steps; want %s, all, the trigger and the action", a.execution, h.Execution.Status, h.Save, len(h.Steps), wantStatus)
		}
	}
}
