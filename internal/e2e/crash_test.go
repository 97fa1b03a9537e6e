package e2e_test

// TestCrashRecovery is the crash test: the production roles run as separate flowd
// processes against the rig's real broker and redis-server; while a few thousand webhooks come
// in, the runner and then the router are killed with SIGKILL and restarted. Afterwards every
// webhook that got a 2xx has exactly one succeeded execution, and the HTTP sink saw each
// execution's idempotency key at least once and never two different keys for one execution.
//
// The flow keeps only its newest executions in Redis (a small count retention, under a small
// history budget), so pruning runs all along; the executions are checked in flowd.history,
// which holds every one, and against the flow's counters.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

const (
	crashWebhooks     = 2400 // webhooks sent in all (each 1000 adds about 18 s on a 2-core machine)
	crashClients      = 32   // concurrent webhook senders
	crashKillRunnerAt = 800  // accepted webhooks before the runner is killed
	crashKillRouterAt = 1600 // accepted webhooks before the router is killed
	crashWindow       = 300  // accepted webhooks the senders may be ahead of the sink
	crashRetryEvery   = 4    // the sink answers 503 to the first call of every 4th webhook
)

func TestCrashRecovery(t *testing.T) {
	ctx, rig := startCrashRig(t, crashOptions{runners: []string{"runner"}})
	// The load, with the crashes in the middle of it.
	rig.lap("roles ready, flow active")
	loadStart := time.Now()
	load := crashLoad(ctx, t, rig.hc, rig.ingestURL+"/hooks/"+rig.flowID, rig.procs, rig.sink)
	t.Logf("load (%s): %d accepted, %d answered 503, %d other answers, %d transport errors; runner killed after %d accepted (%d sink calls), router after %d (%d sink calls)",
		time.Since(loadStart).Round(time.Millisecond), len(load.accepted), load.unavailable, load.other, load.transport,
		load.runnerKilledAt, load.sinkAtRunnerKill, load.routerKilledAt, load.sinkAtRouterKill)
	if load.runnerKilledAt == 0 || load.routerKilledAt == 0 || load.routerKilledAt >= len(load.accepted) ||
		load.sinkAtRunnerKill == 0 || load.sinkAtRouterKill <= load.sinkAtRunnerKill {
		t.Fatalf("the crashes did not happen while the pipeline worked: runner killed after %d accepted (%d sink calls), router after %d (%d sink calls), %d accepted in all",
			load.runnerKilledAt, load.sinkAtRunnerKill, load.routerKilledAt, load.sinkAtRouterKill, len(load.accepted))
	}
	if load.other > 0 {
		t.Errorf("%d webhooks got an answer other than 2xx or 503", load.other)
	}
	if len(load.accepted) < crashKillRouterAt {
		t.Fatalf("only %d of %d webhooks were accepted", len(load.accepted), crashWebhooks)
	}

	rig.verify(ctx, t, load.accepted, load.unavailable+load.transport)
	rig.shutdown(ctx, t)
}

// crashRig is the production roles as separate processes, with the flow
// webhook (async) → http POST to the sink → transform started on them.
type crashRig struct {
	procs     map[string]*crashProc
	hc        *http.Client
	ingestURL string
	flowID    string
	sink      *crashSink
	connDir   string
	brokers   []string
	unique    string
	redisURL  string
	lap       func(string)
	steps     []string // the flow's action nodes, in order
	apiURL    string
	token     string // an administrator's
}

// crashOptions shape a crashRig.
type crashOptions struct {
	runners []string // the runner roles' names
	brokers []string // the Kafka cluster; the rig's broker when nil
	args    []string // more flags for every role
	// thirdStep adds a third action to the flow (call → shape → label).
	thirdStep bool
	// flow, when set, is the flow to start instead of the webhook one, given the URL of the
	// test's HTTP server, which serves handler (instead of the sink) when that is set.
	flow    func(url string) map[string]any
	handler http.Handler
	// keepAll keeps every execution in Redis (no history budget), for tests that count them
	// through the API.
	keepAll bool
}

// startCrashRig builds flowd and the connectors, starts api, ingest, router and the named
// runners, and starts the flow.
func startCrashRig(t *testing.T, opt crashOptions) (context.Context, *crashRig) {
	brokers := opt.brokers
	if brokers == nil {
		brokers = testrig.Kafka(t)
	}
	redisURL := testrig.Redis(t)
	phase := time.Now()
	lap := func(what string) {
		t.Logf("%s: %s", what, time.Since(phase).Round(time.Millisecond))
		phase = time.Now()
	}

	// 1. Binaries: flowd and the two connectors the flow uses.
	binDir := t.TempDir()
	connDir := filepath.Join(binDir, "connectors")
	flowdBin := filepath.Join(binDir, "flowd")
	var buildErr error
	var wg sync.WaitGroup
	wg.Go(func() {
		if out, err := exec.Command(crashGoTool(), "build", "-o", flowdBin, "github.com/flowd/flowd/cmd/flowd").CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("build flowd: %v\n%s", err, out)
		}
	})
	hosttest.Build(t, connDir, map[string]string{
		"http":      "github.com/flowd/flowd/connectors/http",
		"transform": "github.com/flowd/flowd/connectors/transform",
	})
	wg.Wait()
	if buildErr != nil {
		t.Fatal(buildErr)
	}

	// Bounds for a stuck run only; a passing run takes about a minute.
	ctx, cancel := context.WithTimeout(context.Background(), 9*time.Minute)
	t.Cleanup(cancel)

	// 3. The sink the flow's http step calls: counts each Idempotency-Key and remembers which
	// webhook (n) each key was sent for.
	sink := newCrashSink()
	var handler http.Handler = sink
	if opt.handler != nil {
		handler = opt.handler
	}
	srv := httptest.NewServer(handler)
	t.Cleanup(srv.Close)

	lap("build")

	// 2. The roles, each its own process.
	unique := testrig.Unique("crash")
	adminToken := "tok-" + testrig.Unique("")
	env := crashEnv(map[string]string{
		"FLOWD_KAFKA_BROKERS": strings.Join(brokers, ","),
		"FLOWD_REDIS_URL":     redisURL,
		"FLOWD_TOPIC_PREFIX":  unique + ".",
		"FLOWD_REDIS_PREFIX":  unique + ":",
		"FLOWD_ADMIN_TOKEN":   adminToken,
		"FLOWD_SECRET_KEY":    secrets.GenerateKey(),
		"FLOWD_BUS_KEY":       busauth.Generate(),
		// The default router group is not derived from the topic prefix: keep this test's
		// routers out of every other router's group on the shared broker.
		"FLOWD_ROUTER_GROUP": unique + "-router",
		"FLOWD_LOG_LEVEL":    "info",
	})
	logDir := t.TempDir()
	apiAddr, ingestAddr := crashFreeAddr(t), crashFreeAddr(t)
	common := append([]string{"--partitions", "3"}, opt.args...)
	procs := map[string]*crashProc{}
	roles := []*crashProc{
		{name: "api", args: append([]string{"api", "--addr", apiAddr, "--connectors-dir", connDir}, common...)},
		{name: "ingest", args: append([]string{"ingest", "--addr", ingestAddr}, common...)},
		// A small budget: pruning for the budget runs along with the flow's count retention.
		// flowd.history is where verify finds every execution.
		{name: "router", args: append([]string{"router", "--history-budget", "192KiB", "--history-stream"}, common...)},
	}
	if opt.keepAll {
		roles[2].args = append([]string{"router"}, common...)
	}
	for _, name := range opt.runners {
		// The sink listens on loopback, which the runner's connectors reach only when allowed.
		roles = append(roles, &crashProc{name: name, args: append([]string{"runner", "--pool", "default", "--concurrency", "16", "--connectors-dir", connDir, "--egress-allow", srv.Listener.Addr().String()}, common...)})
	}
	for _, p := range roles {
		p.bin, p.env, p.log = flowdBin, env, filepath.Join(logDir, p.name+".log")
		procs[p.name] = p
		p.start(t)
	}
	t.Cleanup(func() {
		for _, p := range procs {
			p.kill() // whatever a failed test left running
		}
		if t.Failed() {
			for _, p := range roles {
				t.Logf("--- %s log (tail) ---\n%s", p.name, crashTail(p.log, 100))
			}
		}
	})

	hc := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: crashClients * 2}}
	apiURL, ingestURL := "http://"+apiAddr, "http://"+ingestAddr
	crashWaitReady(ctx, t, hc, procs["api"], apiURL+"/readyz")
	crashWaitReady(ctx, t, hc, procs["ingest"], ingestURL+"/readyz")

	// 4. The flow: webhook (async) → http POST to the sink → transform; started, and confirmed
	// active by the router.
	flow := map[string]any{
		"name":    "crash-test",
		"history": map[string]any{"maxCount": 100},
		"retry":   map[string]any{"maxAttempts": 10, "initialInterval": "300ms", "maxInterval": "2s"},
		"graph": map[string]any{
			"nodes": []any{
				map[string]any{"id": "hook", "type": "trigger.webhook", "config": map[string]any{"mode": "async"}},
				map[string]any{"id": "call", "type": "action", "connector": "http", "action": "request", "config": map[string]any{
					"method": "POST", "url": srv.URL + "/sink", "body": map[string]any{"n": "{{ input.n }}"},
				}},
				map[string]any{"id": "shape", "type": "action", "connector": "transform", "action": "map", "config": map[string]any{
					"fields": map[string]any{"n": "input.body.n"},
				}},
			},
			"edges": []any{
				map[string]any{"source": "hook", "target": "call"},
				map[string]any{"source": "call", "target": "shape", "port": "success"},
			},
		},
	}
	if opt.flow != nil {
		flow = opt.flow(srv.URL)
	}
	if opt.thirdStep {
		graph := flow["graph"].(map[string]any)
		graph["nodes"] = append(graph["nodes"].([]any), map[string]any{"id": "label", "type": "action", "connector": "transform", "action": "map", "config": map[string]any{
			"fields": map[string]any{"n": "input.n", "label": "'done'"},
		}})
		graph["edges"] = append(graph["edges"].([]any), map[string]any{"source": "shape", "target": "label", "port": "success"})
	}
	var created struct {
		Data struct {
			ID string `json:"id"`
		} `json:"data"`
	}
	steps := []string{"call", "shape"}
	if opt.thirdStep {
		steps = append(steps, "label")
	}
	crashAPI(ctx, t, hc, adminToken, http.MethodPost, apiURL+"/api/v1/flows", flow, http.StatusCreated, &created)
	flowID := created.Data.ID
	crashAPI(ctx, t, hc, adminToken, http.MethodPost, apiURL+"/api/v1/flows/"+flowID+"/start", nil, 0, nil)
	crashPoll(ctx, t, 60*time.Second, "the router to confirm the flow active", func() (bool, string) {
		var got struct {
			Data struct {
				Status string `json:"status"`
			} `json:"data"`
		}
		crashAPI(ctx, t, hc, adminToken, http.MethodGet, apiURL+"/api/v1/flows/"+flowID, nil, http.StatusOK, &got)
		return got.Data.Status == "active", "status " + got.Data.Status
	}, procs["router"])
	crashPoll(ctx, t, 60*time.Second, "ingest to take webhooks for the flow", func() (bool, string) {
		if opt.flow != nil {
			return true, "" // not a webhook flow
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodHead, ingestURL+"/hooks/"+flowID, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	}, procs["ingest"])

	return ctx, &crashRig{procs: procs, hc: hc, ingestURL: ingestURL, flowID: flowID, sink: sink, connDir: connDir,
		brokers: brokers, unique: unique, redisURL: redisURL, lap: lap, steps: steps, apiURL: apiURL, token: adminToken}
}

// verify checks that every accepted webhook ended as one succeeded execution whose steps each
// ran once, that the flow has no other executions than those (and at most maxExtra from
// webhooks whose answer was lost), and that the sink saw one idempotency key per execution.
// The executions are read from flowd.history (Redis keeps only the newest) and checked
// against the flow's counters, which count each execution once.
func (r *crashRig) verify(ctx context.Context, t *testing.T, accepted map[string]int, maxExtra int) {
	t.Helper()
	redisURL, flowID, sink, unique := r.redisURL, r.flowID, r.sink, r.unique
	ropt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(ropt)
	defer func() { _ = rdb.Close() }()
	st := store.New(rdb, unique+":")
	var counts store.FlowCounts
	crashPoll(ctx, t, 180*time.Second, "every accepted execution to finish", func() (bool, string) {
		c, err := st.Counts(ctx, flowID)
		if err != nil {
			t.Fatalf("count executions: %v", err)
		}
		counts = c
		ended := c.Success + c.Error + c.Ignored
		return ended >= int64(len(accepted)), fmt.Sprintf("%d of %d ended", ended, len(accepted))
	}, nil)

	// Every ended execution is on flowd.history; a router crash may have produced a record
	// twice, so the last one per execution counts.
	hr := kafka.NewReader(kafka.ReaderConfig{Brokers: r.brokers, GroupID: testrig.Unique("verify-"),
		Topic: unique + "." + envelope.TopicHistory, StartOffset: kafka.FirstOffset, MaxWait: 200 * time.Millisecond})
	defer func() { _ = hr.Close() }()
	seen := map[string]envelope.History{}
	missing := func() int {
		n := 0
		for id := range accepted {
			if _, ok := seen[id]; !ok {
				n++
			}
		}
		return n
	}
	deadline := time.Now().Add(120 * time.Second)
	for {
		// Past the accepted ones, a quiet second means the topic has been read to its end.
		wait := 5 * time.Second
		if missing() == 0 {
			wait = time.Second
		}
		rctx, cancel := context.WithTimeout(ctx, wait)
		m, err := hr.ReadMessage(rctx)
		cancel()
		if err != nil {
			if missing() == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("flowd.history lacks %d of the %d accepted executions: %v", missing(), len(accepted), err)
			}
			continue
		}
		var h envelope.History
		if err := json.Unmarshal(m.Value, &h); err != nil {
			t.Fatalf("undecodable history record: %v", err)
		}
		seen[h.Execution.ID] = h
	}

	notSucceeded, badSteps, retried := 0, 0, 0
	for id, n := range accepted {
		h := seen[id]
		if e := h.Execution; e.Status != envelope.StatusSucceeded || e.FlowID != flowID || e.FinishedAt == nil {
			if notSucceeded++; notSucceeded <= 5 {
				t.Errorf("execution %s (webhook %d): flow %s status %s error %+v, want flow %s succeeded", id, n, e.FlowID, e.Status, e.Error, flowID)
			}
			continue
		}
		for _, st := range h.Steps {
			if st.NodeID == "call" && len(st.Attempts) > 0 {
				retried++
			}
		}
		// Each execution ran each step once, and the transform saw the sink's answer.
		if msg := crashCheckSteps(h.Steps, r.steps, n); msg != "" {
			if badSteps++; badSteps <= 5 {
				t.Errorf("execution %s (webhook %d): %s", id, n, msg)
			}
		}
	}
	if notSucceeded > 0 {
		t.Errorf("%d of %d accepted executions did not succeed", notSucceeded, len(accepted))
	}
	if badSteps > 0 {
		t.Errorf("%d of %d executions have unexpected step records", badSteps, len(accepted))
	}
	// About one in crashRetryEvery failed once and was retried; each of them still succeeded.
	if retried < len(accepted)/(2*crashRetryEvery) {
		t.Errorf("%d of %d executions were retried, want about one in %d", retried, len(accepted), crashRetryEvery)
	}
	t.Logf("%d of %d executions succeeded after a retry", retried, len(accepted))

	// No execution beyond the accepted ones: a 503 may still land (the writer retries a batch
	// whose caller gave up), so only those may add executions, never a crash. The counters
	// count each execution once however often its messages were redelivered.
	notAccepted := 0
	for id, h := range seen {
		if _, ok := accepted[id]; !ok && h.Execution.FlowID == flowID {
			notAccepted++
		}
	}
	if notAccepted > maxExtra {
		t.Errorf("the flow has %d executions not accepted, want at most %d from failed requests", notAccepted, maxExtra)
	}
	if counts.Success != int64(len(seen)) || counts.Error+counts.Ignored != 0 {
		t.Errorf("counters %+v for %d distinct executions on flowd.history: each must be counted once, as succeeded", counts, len(seen))
	}
	u, err := st.History(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("history in Redis: %+v", u)
	// Which bound prunes first depends on the executions' sizes and timing; one of them must.
	if u.Pruned[store.PrunedByCount]+u.Pruned[store.PrunedByBudget] == 0 {
		t.Errorf("no execution was deleted for the count retention or the budget: pruning did not run along")
	}
	listed := seen

	// The sink saw every execution's key at least once, and exactly one key per execution.
	keys, byN, missingKey := sink.snapshot()
	if missingKey > 0 {
		t.Errorf("%d sink requests carried no Idempotency-Key", missingKey)
	}
	redelivered := 0
	for _, c := range keys {
		if c > 1 {
			redelivered++
		}
	}
	t.Logf("sink: %d distinct idempotency keys, %d seen more than once (retries, and redeliveries after the crashes: one key each, deduplicable)", len(keys), redelivered)
	twoKeys := 0
	for id, n := range accepted {
		switch ks := byN[n]; {
		case len(ks) == 0:
			t.Errorf("the sink never saw execution %s (webhook %d)", id, n)
		case len(ks) > 1:
			if twoKeys++; twoKeys <= 5 {
				t.Errorf("execution %s (webhook %d) reached the sink with %d different keys %v: its side effect was applied twice", id, n, len(ks), ks)
			}
		}
	}
	if len(keys) != len(listed) {
		t.Errorf("the sink saw %d distinct keys for %d executions (%d accepted); want one key per execution", len(keys), len(listed), len(accepted))
	}

}

// shutdown stops the roles gracefully and checks that no connector process is left.
func (r *crashRig) shutdown(ctx context.Context, t *testing.T) {
	t.Helper()
	procs, connDir := r.procs, r.connDir
	r.lap("executions finished and checked")
	// 7. Graceful shutdown of every role, and no connector process left behind.
	for _, name := range []string{"ingest", "api", "runner", "runner-a", "router"} {
		if p := procs[name]; p != nil {
			p.terminate(t, 45*time.Second)
		}
	}
	crashPoll(ctx, t, 20*time.Second, "the connector processes to exit", func() (bool, string) {
		left := crashProcsUnder(connDir)
		return len(left) == 0, fmt.Sprintf("still running: %v", left)
	}, nil)
	r.lap("shutdown")
}

// nearSink waits until the senders are fewer than window accepted webhooks ahead of the
// sink, so a crash lands on a busy pipeline; false when ctx ends first.
func (r *crashRig) nearSink(ctx context.Context, accepted *atomic.Int64, window int64) bool {
	for {
		moved := r.sink.changed()
		if accepted.Load()-int64(r.sink.requests()) < window {
			return true
		}
		select {
		case <-moved:
		case <-ctx.Done():
			return false
		}
	}
}

// crashLoadResult is what the load saw.
type crashLoadResult struct {
	accepted                       map[string]int // execution id -> n of the webhook
	unavailable, other, transport  int
	runnerKilledAt, routerKilledAt int
	// sink requests when each crash happened: steps had been running
	sinkAtRunnerKill, sinkAtRouterKill int
}

// crashLoad sends crashWebhooks webhooks from crashClients goroutines. A watcher kills and
// restarts the runner once crashKillRunnerAt were accepted and the router once
// crashKillRouterAt were; the senders wait for each crash before going past its threshold by
// more than a margin, so both crashes happen while webhooks still come in.
func crashLoad(ctx context.Context, t *testing.T, hc *http.Client, url string, procs map[string]*crashProc, sink *crashSink) crashLoadResult {
	t.Helper()
	var (
		mu          sync.Mutex
		res         = crashLoadResult{accepted: map[string]int{}}
		acceptedN   atomic.Int64
		next        atomic.Int64
		runnerDone  = make(chan struct{})
		routerDone  = make(chan struct{})
		tick        = make(chan struct{}, 1)
		loadCtx, cx = context.WithTimeout(ctx, 4*time.Minute)
	)
	defer cx()
	const margin = 200 // a crash must happen before this many more are accepted

	crashErr := make(chan error, 1)
	go func() { // the crash watcher
		defer close(crashErr)
		for _, c := range []struct {
			at   int64
			name string
			done chan struct{}
			rec  *int
			sink *int
		}{
			{crashKillRunnerAt, "runner", runnerDone, &res.runnerKilledAt, &res.sinkAtRunnerKill},
			{crashKillRouterAt, "router", routerDone, &res.routerKilledAt, &res.sinkAtRouterKill},
		} {
			for acceptedN.Load() < c.at {
				select {
				case <-tick:
				case <-loadCtx.Done():
					close(c.done)
					return
				}
			}
			n, seen := int(acceptedN.Load()), sink.requests()
			if err := procs[c.name].crash(); err != nil {
				crashErr <- err
				close(c.done)
				return
			}
			mu.Lock()
			*c.rec, *c.sink = n, seen
			mu.Unlock()
			close(c.done)
		}
	}()

	var wg sync.WaitGroup
	for range crashClients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= crashWebhooks || loadCtx.Err() != nil {
					return
				}
				// Stay at most crashWindow webhooks ahead of the sink, so the load lasts as long
				// as the pipeline works on it and each crash hits a busy runner or router.
				for {
					moved := sink.changed()
					if acceptedN.Load()-int64(sink.requests()) < crashWindow {
						break
					}
					select {
					case <-moved:
					case <-loadCtx.Done():
						return
					}
				}
				// Hold back until a due crash has happened, so it lands mid-load.
				for _, gate := range []struct {
					at   int64
					done chan struct{}
				}{{crashKillRunnerAt + margin, runnerDone}, {crashKillRouterAt + margin, routerDone}} {
					if acceptedN.Load() >= gate.at {
						select {
						case <-gate.done:
						case <-loadCtx.Done():
							return
						}
					}
				}
				id, status, err := crashPost(loadCtx, hc, url, i)
				mu.Lock()
				switch {
				case err != nil:
					res.transport++
				case status >= 200 && status < 300 && id != "":
					res.accepted[id] = i
				case status == http.StatusServiceUnavailable:
					res.unavailable++
				default:
					res.other++
				}
				mu.Unlock()
				if err == nil && status >= 200 && status < 300 {
					acceptedN.Add(1)
					select {
					case tick <- struct{}{}:
					default:
					}
				}
			}
		})
	}
	wg.Wait()
	cx() // release the watcher if a threshold was never reached
	if err := <-crashErr; err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if int(next.Load()) < crashWebhooks {
		t.Fatalf("the load did not finish in time: %d of %d webhooks sent", next.Load(), crashWebhooks)
	}
	return res
}

// crashPost sends webhook n and returns the execution id of a 2xx answer.
func crashPost(ctx context.Context, hc *http.Client, url string, n int) (string, int, error) {
	return crashPostKey(ctx, hc, url, n, "")
}

// crashPostKey sends webhook n with an Idempotency-Key (none when key is empty).
func crashPostKey(ctx context.Context, hc *http.Client, url string, n int, key string) (string, int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"n":`+strconv.Itoa(n)+`}`))
	if err != nil {
		return "", 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", 0, err
	}
	var out struct {
		Data struct {
			ExecutionID string `json:"executionId"`
		} `json:"data"`
	}
	if resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(body, &out); err != nil || out.Data.ExecutionID == "" {
			return "", resp.StatusCode, fmt.Errorf("2xx without an execution id: %q", body)
		}
	}
	return out.Data.ExecutionID, resp.StatusCode, nil
}

// crashCheckSteps says what is wrong with an execution's step records ("" if nothing): each
// action of nodes ran once and succeeded, and the transforms produced {"n": n}.
func crashCheckSteps(steps []envelope.Step, nodes []string, n int) string {
	byNode := map[string][]envelope.Step{}
	for _, s := range steps {
		byNode[s.NodeID] = append(byNode[s.NodeID], s)
	}
	actions := 0
	for _, s := range steps {
		if s.Type == "action" {
			actions++
		}
	}
	if actions != len(nodes) {
		return fmt.Sprintf("%d action steps, want one each of %v (all: %+v)", actions, nodes, steps)
	}
	for _, node := range nodes {
		if len(byNode[node]) != 1 {
			return fmt.Sprintf("%d step records of node %s, want 1 (all: %+v)", len(byNode[node]), node, steps)
		}
		if s := byNode[node][0]; s.Status != envelope.StepSucceeded {
			return fmt.Sprintf("step %s is %s (%+v)", node, s.Status, s.Error)
		}
	}
	for _, node := range nodes[1:] {
		var out struct {
			N json.RawMessage `json:"n"`
		}
		got := byNode[node][0].Output
		if err := json.Unmarshal(got, &out); err != nil || strings.Trim(string(out.N), `"`) != strconv.Itoa(n) {
			return fmt.Sprintf("%s output %s, want n=%d", node, got, n)
		}
	}
	return ""
}

// crashSink is the flow's HTTP target.
type crashSink struct {
	mu         sync.Mutex
	keys       map[string]int              // Idempotency-Key -> requests
	byN        map[int]map[string]struct{} // webhook n -> keys it arrived with
	missingKey int
	total      int
	moved      chan struct{} // closed (and replaced) on every request
}

// changed returns a channel closed at the sink's next request.
func (s *crashSink) changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.moved
}

func (s *crashSink) requests() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

func newCrashSink() *crashSink {
	return &crashSink{keys: map[string]int{}, byN: map[int]map[string]struct{}{}, moved: make(chan struct{})}
}

func (s *crashSink) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body struct {
		N json.RawMessage `json:"n"`
	}
	raw, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(raw, &body)
	n, err := strconv.Atoi(strings.Trim(string(body.N), `"`))
	if err != nil {
		n = -1 // reported below: no webhook has it
	}
	key := r.Header.Get("Idempotency-Key")
	s.mu.Lock()
	s.total++
	close(s.moved)
	s.moved = make(chan struct{})
	first := false
	if key == "" {
		s.missingKey++
	} else {
		s.keys[key]++
		first = s.keys[key] == 1
		if s.byN[n] == nil {
			s.byN[n] = map[string]struct{}{}
		}
		s.byN[n][key] = struct{}{}
	}
	s.mu.Unlock()
	if first && n%crashRetryEvery == 0 {
		// Every few executions' first call fails: their retries wait in the router's delay
		// queue while the roles are killed.
		http.Error(w, "try again", http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true,"n":`+strconv.Itoa(n)+`}`) // n lets the transform step be checked
}

func (s *crashSink) snapshot() (map[string]int, map[int][]string, int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	keys := make(map[string]int, len(s.keys))
	for k, c := range s.keys {
		keys[k] = c
	}
	byN := make(map[int][]string, len(s.byN))
	for n, ks := range s.byN {
		for k := range ks {
			byN[n] = append(byN[n], k)
		}
	}
	return keys, byN, s.missingKey
}

// crashProc is one flowd role running as its own process.
type crashProc struct {
	name, bin, log string
	args, env      []string

	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{} // closed when cmd has exited
	runs int
}

func (p *crashProc) start(t *testing.T) {
	t.Helper()
	if err := p.startErr(); err != nil {
		t.Fatal(err)
	}
}

func (p *crashProc) startErr() error {
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.runs++
	fmt.Fprintf(f, "=== start %d: flowd %s\n", p.runs, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = p.env, f, f
	// Should this test process die, its roles die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return fmt.Errorf("start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); _ = f.Close(); close(done) }()
	p.cmd, p.done = cmd, done
	return nil
}

func (p *crashProc) current() (*exec.Cmd, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd, p.done
}

// exited reports whether the current process has ended, and how.
func (p *crashProc) exited() (bool, string) {
	cmd, done := p.current()
	select {
	case <-done:
		return true, cmd.ProcessState.String()
	default:
		return false, ""
	}
}

// crash kills the process with SIGKILL, waits for it to be gone and starts it again.
func (p *crashProc) crash() error {
	cmd, done := p.current()
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		return fmt.Errorf("kill %s: %w", p.name, err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		return fmt.Errorf("%s did not die after SIGKILL", p.name)
	}
	return p.startErr()
}

// kill ends the process at once if it still runs (cleanup after a failure).
func (p *crashProc) kill() {
	cmd, done := p.current()
	if cmd == nil {
		return
	}
	select {
	case <-done:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
}

// terminate sends SIGTERM and expects a clean exit within the deadline.
func (p *crashProc) terminate(t *testing.T, within time.Duration) {
	t.Helper()
	cmd, done := p.current()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Errorf("SIGTERM %s: %v", p.name, err)
		return
	}
	select {
	case <-done:
		if !cmd.ProcessState.Success() {
			t.Errorf("%s did not shut down cleanly on SIGTERM: %s", p.name, cmd.ProcessState)
		}
	case <-time.After(within):
		t.Errorf("%s did not exit within %s of SIGTERM", p.name, within)
	}
}

// crashWaitReady polls a readiness endpoint until it answers 200.
func crashWaitReady(ctx context.Context, t *testing.T, hc *http.Client, p *crashProc, url string) {
	t.Helper()
	crashPoll(ctx, t, 90*time.Second, p.name+" to be ready", func() (bool, string) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := hc.Do(req)
		if err != nil {
			return false, err.Error()
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status
	}, p)
}

// crashPoll calls cond until it holds, failing the test at the deadline or when p (if given)
// has exited meanwhile.
func crashPoll(ctx context.Context, t *testing.T, within time.Duration, what string, cond func() (bool, string), p *crashProc) {
	t.Helper()
	deadline := time.Now().Add(within)
	poll := backoff.New(20*time.Millisecond, 500*time.Millisecond)
	for {
		ok, last := cond()
		if ok {
			return
		}
		if p != nil {
			if gone, how := p.exited(); gone {
				t.Fatalf("waiting for %s: %s exited (%s)", what, p.name, how)
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			t.Fatalf("waiting for %s: not done within %s (last: %s)", what, within, last)
		}
		time.Sleep(poll.Next()) // a polling interval, not a synchronisation
	}
}

// crashAPI calls the control plane; want 0 accepts any 2xx.
func crashAPI(ctx context.Context, t *testing.T, hc *http.Client, token, method, url string, body any, want int, out any) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, _ := io.ReadAll(resp.Body)
	if (want != 0 && resp.StatusCode != want) || (want == 0 && resp.StatusCode/100 != 2) {
		t.Fatalf("%s %s: %s %s", method, url, resp.Status, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, url, raw, err)
		}
	}
}

// crashEnv is the environment of the roles: this process's, without any FLOWD_ setting,
// plus set.
func crashEnv(set map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLOWD_") {
			env = append(env, kv)
		}
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

// crashFreeAddr returns a loopback address with a port nobody listens on right now.
func crashFreeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// crashProcsUnder lists the processes whose executable lies under dir.
func crashProcsUnder(dir string) []string {
	ents, _ := os.ReadDir("/proc")
	var left []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		argv0, _, _ := bytes.Cut(cmdline, []byte{0})
		if strings.HasPrefix(string(argv0), dir+string(filepath.Separator)) {
			left = append(left, fmt.Sprintf("%d %s", pid, argv0))
		}
	}
	return left
}

// crashTail returns the last n lines of a file.
func crashTail(path string, n int) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer func() { _ = f.Close() }()
	var lines []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
		if len(lines) > n {
			lines = lines[1:]
		}
	}
	return strings.Join(lines, "\n")
}

// crashGoTool is the go command: $GOROOT/bin/go when GOROOT is set, else the one on PATH.
func crashGoTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}
