package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/store"
)

// sink is the local HTTP service the flow's http step calls.
type sink struct {
	srv      *http.Server
	url      string
	requests atomic.Int64
	delay    atomic.Int64 // ns each answer waits
}

func startSink() (*sink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &sink{url: "http://" + ln.Addr().String() + "/sink"}
	s.srv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in struct {
			ID string `json:"id"`
		}
		raw, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(raw, &in)
		s.requests.Add(1)
		if d := time.Duration(s.delay.Load()); d > 0 {
			time.Sleep(d) // a slow partner API
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"ok":true,"id":"`+in.ID+`"}`)
	})}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// e2eFlow is the three-step flow: transform → http to the sink → transform, under a retry
// policy (the sink never fails, so what it costs is the policy's bookkeeping alone).
func e2eFlow(name, sinkURL string) string {
	return fmt.Sprintf(`{
  "name": %q,
  "retry": {"maxAttempts": 5, "initialInterval": "500ms", "maxInterval": "10s", "jitter": 0.2, "on": ["http_5xx", "http_429"]},
  "graph": {
    "nodes": [
      {"id": "hook", "type": "trigger.webhook", "config": {"mode": "async"}},
      {"id": "prepare", "type": "action", "connector": "transform", "action": "map",
       "config": {"fields": {"id": "input.id", "name": "input.firstName + ' ' + input.lastName", "amount": "input.amount"}}},
      {"id": "call", "type": "action", "connector": "http", "action": "request",
       "config": {"method": "POST", "url": %q, "body": {"id": "{{ input.id }}", "name": "{{ input.name }}"}}},
      {"id": "shape", "type": "action", "connector": "transform", "action": "map",
       "config": {"fields": {"id": "input.body.id", "ok": "input.status == 200"}}}
    ],
    "edges": [
      {"source": "hook", "target": "prepare"},
      {"source": "prepare", "target": "call"},
      {"source": "call", "target": "shape", "port": "success"}
    ]
  }
}`, name, sinkURL)
}

// e2eFlowSaving is e2eFlow under a save policy, with no count bound.
func e2eFlowSaving(name, sinkURL, save string) string {
	return strings.Replace(e2eFlow(name, sinkURL), `"graph": {`,
		fmt.Sprintf(`"history": {"succeeded": %q, "maxCount": 1000000},
  "graph": {`, save), 1)
}

// ingestOnlyFlow is an async webhook flow whose executions nobody routes (ingest alone).
func ingestOnlyFlow(name string) string {
	return fmt.Sprintf(`{"name": %q, "graph": {"nodes": [
  {"id": "hook", "type": "trigger.webhook", "config": {"mode": "async"}},
  {"id": "shape", "type": "action", "connector": "transform", "action": "map", "config": {"fields": {"id": "input.id"}}}
], "edges": [{"source": "hook", "target": "shape"}]}}`, name)
}

// createActiveFlow writes a flow straight into the store as active revision 1, as the api
// role would after create + start (no router confirmation is needed for a webhook flow).
func createActiveFlow(ctx context.Context, st *store.Store, doc string) (string, error) {
	f, probs := flowdoc.Decode([]byte(doc), flowdoc.Options{})
	if len(probs) > 0 {
		return "", fmt.Errorf("bench flow invalid: %v", probs)
	}
	now := time.Now().UTC()
	f.ID, f.Status, f.Revision, f.Type = identity.NewID(), flowdoc.StatusActive, 1, flowdoc.DerivedType(f)
	f.Owners = []flowdoc.Owner{{ID: "bench", Type: "user"}}
	f.CreatedAt, f.UpdatedAt = &now, &now
	if err := st.CreateFlow(ctx, f); err != nil {
		return "", err
	}
	return f.ID, nil
}

// ended counts a flow's finished executions (succeeded, and failed or filtered) from its
// counters, which pruning never lowers.
func ended(ctx context.Context, st *store.Store, flowID string) (succeeded, other int, err error) {
	c, err := st.Counts(ctx, flowID)
	if err != nil {
		return 0, 0, err
	}
	return int(c.Success), int(c.Error + c.Ignored), nil
}

// allExecutions reads every execution record of a flow.
func allExecutions(ctx context.Context, st *store.Store, flowID string) ([]envelope.Execution, error) {
	var out []envelope.Execution
	for offset := 0; ; {
		page, total, err := st.FlowExecutions(ctx, flowID, "", offset, 1000)
		if err != nil {
			return nil, err
		}
		out = append(out, page...)
		offset += len(page)
		if len(page) == 0 || offset >= total {
			return out, nil
		}
	}
}

// completionLatency is finishedAt − receivedAt of the succeeded executions that finished in
// [from, to] (zero times: all).
func completionLatency(execs []envelope.Execution, from, to time.Time) latencies {
	var l latencies
	for _, e := range execs {
		if e.FinishedAt == nil || e.Status != envelope.StatusSucceeded {
			continue
		}
		if !from.IsZero() && (e.FinishedAt.Before(from) || e.FinishedAt.After(to)) {
			continue
		}
		l = append(l, e.FinishedAt.Sub(e.ReceivedAt))
	}
	return l
}

// progress polls a flow's finished executions.
type progress struct {
	done atomic.Int64 // finished executions, any status
	fail atomic.Int64 // of which not succeeded
	stop func()
	wg   sync.WaitGroup

	mu    sync.Mutex
	moved chan struct{} // closed (and replaced) whenever done grows
}

// changed returns a channel closed when done next grows.
func (p *progress) changed() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.moved
}

func watchProgress(ctx context.Context, st *store.Store, flowID string) *progress {
	p := &progress{moved: make(chan struct{})}
	ctx, p.stop = context.WithCancel(ctx)
	p.wg.Go(func() {
		t := time.NewTicker(25 * time.Millisecond)
		defer t.Stop()
		for {
			if s, o, err := ended(ctx, st, flowID); err == nil {
				p.fail.Store(int64(o))
				if old := p.done.Swap(int64(s + o)); old != int64(s+o) {
					p.mu.Lock()
					close(p.moved)
					p.moved = make(chan struct{})
					p.mu.Unlock()
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return p
}

func (p *progress) close() { p.stop(); p.wg.Wait() }

// waitDone waits (bounded) until n executions of the flow have finished.
func (p *progress) waitDone(ctx context.Context, n int64, bound time.Duration) bool {
	deadline := time.Now().Add(bound)
	for p.done.Load() < n {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

// e2eRun is one end-to-end measurement.
type e2eRun struct {
	Name        string             `json:"name"`
	Runners     int                `json:"runners"`
	Mode        string             `json:"mode"` // closed-loop (max) or open-loop (fixed rate)
	Window      int                `json:"window,omitempty"`
	TargetRate  float64            `json:"targetPerSec,omitempty"`
	Seconds     float64            `json:"seconds"`
	Sent        int64              `json:"accepted"`
	Completed   int64              `json:"completed"`
	Failed      int64              `json:"failed"`
	CompletedPS float64            `json:"completedPerSec"`
	P50ms       float64            `json:"p50ms"`
	P99ms       float64            `json:"p99ms"`
	P999ms      float64            `json:"p999ms"`
	MaxMs       float64            `json:"maxMs"`
	IngestP99ms float64            `json:"ingestP99ms"`
	Unfinished  int64              `json:"unfinishedAfterDrain"`
	MachineCPU  float64            `json:"machineCpuPct"`
	ProcessCPU  map[string]float64 `json:"processCpuPct"`
	// CPUPerExecUs is each process's CPU per completed execution (µs), "total" their sum
	// without the load generator.
	CPUPerExecUs map[string]float64 `json:"cpuPerExecutionUs,omitempty"`
	SinkRequests int64              `json:"sinkRequests"`
}

// e2eMax drives the flow closed-loop: senders keep at most window executions unfinished, so
// the pipeline is always busy yet no backlog builds up; completions/s over d (after warm) is
// the maximum sustained rate.
func e2eMax(ctx context.Context, url string, st *store.Store, flowID string, senders, window int, warm, d time.Duration, payload []byte) (e2eRun, error) {
	run := e2eRun{Mode: "closed-loop", Window: window, Seconds: d.Seconds()}
	p := watchProgress(ctx, st, flowID)
	defer p.close()
	hc := newClient(senders)
	defer hc.CloseIdleConnections()
	var accepted, refused atomic.Int64
	start := time.Now()
	from, end := start.Add(warm), start.Add(warm+d)
	var doneFrom int64
	ingestLat := make([]latencies, senders)
	var wg sync.WaitGroup
	for i := range senders {
		wg.Go(func() {
			for time.Now().Before(end) && ctx.Err() == nil {
				if moved := p.changed(); accepted.Load()-p.done.Load() >= int64(window) {
					select { // the window is full: wait for completions
					case <-moved:
					case <-time.After(time.Until(end)):
					}
					continue
				}
				t0 := time.Now()
				status, _, err := post(ctx, hc, url, payload)
				if err != nil || status != http.StatusAccepted {
					refused.Add(1)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				accepted.Add(1)
				ingestLat[i] = append(ingestLat[i], time.Since(t0))
			}
		})
	}
	time.Sleep(time.Until(from))
	doneFrom = p.done.Load()
	time.Sleep(time.Until(end))
	doneEnd := p.done.Load()
	wg.Wait()
	run.CompletedPS = round1(float64(doneEnd-doneFrom) / d.Seconds())
	run.Sent = accepted.Load()
	if refused.Load() > 0 {
		logf("e2e: %d webhooks refused or failed", refused.Load())
	}
	if !p.waitDone(ctx, run.Sent, 90*time.Second) {
		run.Unfinished = run.Sent - p.done.Load()
		logf("e2e: %d executions still unfinished after the drain bound", run.Unfinished)
	}
	execs, err := allExecutions(ctx, st, flowID)
	if err != nil {
		return run, err
	}
	lat := completionLatency(execs, from, end)
	run.Completed, run.Failed = p.done.Load(), p.fail.Load()
	run.P50ms, run.P99ms, run.P999ms = lat.pct(50), lat.pct(99), lat.pct(99.9)
	run.MaxMs = lat.pct(100)
	var il latencies
	for _, l := range ingestLat {
		il = append(il, l...)
	}
	run.IngestP99ms = il.pct(99)
	return run, nil
}

// e2eRate drives the flow open-loop at rate webhooks/s for d: each webhook is sent at its
// scheduled time whatever happened to the earlier ones, so queueing shows in the latency.
func e2eRate(ctx context.Context, url string, st *store.Store, flowID string, rate float64, d time.Duration, payload []byte) (e2eRun, error) {
	run := e2eRun{Mode: "open-loop", TargetRate: round1(rate), Seconds: d.Seconds()}
	p := watchProgress(ctx, st, flowID)
	defer p.close()
	const maxInFlight = 1024
	hc := newClient(maxInFlight)
	defer hc.CloseIdleConnections()
	var accepted, refused atomic.Int64
	var mu sync.Mutex
	var ingestLat latencies
	sem := make(chan struct{}, maxInFlight)
	interval := time.Duration(float64(time.Second) / rate)
	start := time.Now()
	end := start.Add(d)
	var wg sync.WaitGroup
	for i := 0; ctx.Err() == nil; i++ {
		at := start.Add(time.Duration(i) * interval)
		if at.After(end) {
			break
		}
		time.Sleep(time.Until(at))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			status, _, err := post(ctx, hc, url, payload)
			if err != nil || status != http.StatusAccepted {
				refused.Add(1)
				return
			}
			accepted.Add(1)
			l := time.Since(at) // from the scheduled time: a late send counts against us
			mu.Lock()
			ingestLat = append(ingestLat, l)
			mu.Unlock()
		})
	}
	wg.Wait()
	run.Sent = accepted.Load()
	if refused.Load() > 0 {
		logf("e2e: %d webhooks refused or failed", refused.Load())
	}
	if !p.waitDone(ctx, run.Sent, 90*time.Second) {
		run.Unfinished = run.Sent - p.done.Load()
	}
	execs, err := allExecutions(ctx, st, flowID)
	if err != nil {
		return run, err
	}
	lat := completionLatency(execs, time.Time{}, time.Time{})
	run.Completed, run.Failed = p.done.Load(), p.fail.Load()
	run.CompletedPS = round1(float64(run.Completed) / d.Seconds())
	run.P50ms, run.P99ms, run.P999ms, run.MaxMs = lat.pct(50), lat.pct(99), lat.pct(99.9), lat.pct(100)
	run.IngestP99ms = ingestLat.pct(99)
	return run, nil
}

// waitGroupMembers waits until the consumer group has n members, each with partitions.
func waitGroupMembers(ctx context.Context, brokers []string, group string, n int, bound time.Duration) error {
	tr := kafkax.Config{Brokers: brokers}.Transport()
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second, Transport: tr}
	deadline := time.Now().Add(bound)
	last := ""
	for time.Now().Before(deadline) && ctx.Err() == nil {
		resp, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err != nil {
			last = err.Error()
		} else if len(resp.Groups) == 1 {
			g := resp.Groups[0]
			assigned := 0
			for _, m := range g.Members {
				parts := 0
				for _, t := range m.MemberAssignments.Topics {
					parts += len(t.Partitions)
				}
				if parts > 0 {
					assigned++
				}
			}
			last = fmt.Sprintf("state %s, %d members, %d with partitions", g.GroupState, len(g.Members), assigned)
			if strings.EqualFold(g.GroupState, "Stable") && len(g.Members) == n && assigned == n {
				return nil
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("group %s did not reach %d members within %s (%s)", group, n, bound, last)
}

// cpuPerExecution turns CPU shares over d (percent of one core) into µs per completed
// execution, per process and in total without the load generator ("bench").
func cpuPerExecution(pct map[string]float64, d time.Duration, completed int64) map[string]float64 {
	if completed <= 0 {
		return nil
	}
	out := make(map[string]float64, len(pct)+1)
	total := 0.0
	for name, p := range pct {
		us := p / 100 * d.Seconds() * 1e6 / float64(completed)
		out[name] = math.Round(us)
		if name != "bench" {
			total += us
		}
	}
	out["total"] = math.Round(total)
	return out
}
