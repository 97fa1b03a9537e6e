package runners_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
	"github.com/flowd/flowd/runners"
)

// Connectors are built once per test binary; the Go build cache makes that cheap after the
// first run.
var (
	buildOnce     sync.Once
	connectorsDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if connectorsDir != "" {
		_ = os.RemoveAll(filepath.Dir(connectorsDir))
	}
	os.Exit(code)
}

func connectors(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		tmp, err := os.MkdirTemp("", "flowd-runner-test-")
		if err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(tmp, "connectors")
		hosttest.Build(t, dir, map[string]string{
			"http":      "github.com/flowd/flowd/connectors/http",
			"transform": "github.com/flowd/flowd/connectors/transform",
		})
		connectorsDir = dir
	})
	if connectorsDir == "" {
		t.Fatal("connectors were not built")
	}
	return connectorsDir
}

type rig struct {
	t       *testing.T
	kcfg    kafkax.Config
	group   string
	st      *store.Store
	kr      *secrets.Keyring
	logs    *testrig.LogBuffer
	log     *slog.Logger
	w       *kafka.Writer
	results *collector
	owner   string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	brokers := testrig.Kafka(t)
	rdb := testrig.RedisClient(t)
	kr, err := secrets.ParseKeys("k1:" + secrets.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{
		t:     t,
		kcfg:  kafkax.Config{Brokers: brokers, TopicPrefix: testrig.Unique("rt") + ".", Partitions: 3, RecordKeys: testrig.RecordKeys()},
		group: testrig.Unique("runner-"),
		st:    store.New(rdb, testrig.Unique("t")+":"),
		kr:    kr,
		logs:  &testrig.LogBuffer{},
		owner: identity.NewID(),
	}
	r.log = slog.New(slog.NewJSONHandler(r.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() || os.Getenv("FLOWD_TEST_RUNNER_LOGS") != "" {
			logs := r.logs.String()
			if len(logs) > 20000 {
				logs = "..." + logs[len(logs)-20000:]
			}
			t.Logf("runner logs:\n%s", logs)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := kafkax.EnsureTopics(ctx, r.kcfg, envelope.PoolTopic(""), envelope.TopicResults, envelope.TopicDLQ); err != nil {
		t.Fatal(err)
	}
	r.w = kafkax.NewWriter(r.kcfg)
	t.Cleanup(func() { _ = r.w.Close() })
	r.results = r.collect(envelope.TopicResults)
	return r
}

// startRunner runs a Runner until the returned stop is called (or the test ends).
func (r *rig) startRunner(mod func(*runners.Config)) (stop func()) {
	r.t.Helper()
	// The tests' HTTP servers listen on loopback: allowed as an operator allows them.
	h, err := host.New(host.Options{Dir: connectors(r.t), Env: []string{egress.EnvAllow + "=loopback"}, Logger: r.log})
	if err != nil {
		r.t.Fatal(err)
	}
	cfg := runners.Config{
		Kafka:    r.kcfg,
		GroupID:  r.group,
		Host:     h,
		Resolver: connections.NewResolver(r.st, r.kr, nil, r.log),
		Store:    r.st,
		Log:      r.log,
	}
	if mod != nil {
		mod(&cfg)
	}
	run, err := runners.New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					r.t.Errorf("Run: %v", err)
				}
			case <-time.After(60 * time.Second):
				r.t.Error("Run did not return within 60s of its ctx ending")
			}
			_ = h.Close()
		})
	}
	r.t.Cleanup(stop)
	return stop
}

// produce does what the router does for each work item: store the flow revision it runs (once
// per flow), mark its activation pending in the execution, and produce it signed.
func (r *rig) produce(works ...envelope.Work) {
	r.t.Helper()
	msgs := make([]kafka.Message, len(works))
	for i, w := range works {
		r.seed(w)
		raw, err := json.Marshal(w)
		if err != nil {
			r.t.Fatal(err)
		}
		msgs[i] = kafka.Message{Topic: r.kcfg.Topic(envelope.PoolTopic("")), Key: []byte(w.ExecutionID), Value: raw}
		r.kcfg.RecordKeys.Sign(&msgs[i])
	}
	r.produceRaw(msgs...)
}

// seed stores w's flow (a webhook trigger leading to w's node, owned by w's owners) and w's
// activation as pending, unless they are there already.
func (r *rig) seed(w envelope.Work) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now().UTC()
	f := &flowdoc.Flow{
		ID: w.FlowID, Revision: w.Revision, Name: "runner test", Owners: w.Owners, Status: flowdoc.StatusActive,
		Graph: flowdoc.Graph{
			Nodes: []flowdoc.Node{{ID: "hook", Type: flowdoc.TypeWebhook}, w.Node},
			Edges: []flowdoc.Edge{{Source: "hook", Target: w.Node.ID}},
		},
		CreatedAt: &now, UpdatedAt: &now,
	}
	if err := r.st.CreateFlow(ctx, f); err != nil && !errors.Is(err, store.ErrExists) {
		r.t.Fatal(err)
	}
	act, err := json.Marshal(envelope.Activation{NodeID: w.Node.ID, Input: w.Input, DispatchedAt: now})
	if err != nil {
		r.t.Fatal(err)
	}
	t := store.Transition{ExecutionID: w.ExecutionID, MessageID: "seed:" + w.Token}
	if _, err := r.st.AdvanceExecution(ctx, t, func(cur *store.ExecState) (*store.ExecChange, error) {
		ch := &store.ExecChange{AddPending: map[string]json.RawMessage{w.Token: act}}
		if cur.Execution == nil {
			ch.Execution = &envelope.Execution{ID: w.ExecutionID, FlowID: w.FlowID, Revision: w.Revision,
				Trigger: envelope.TriggerWebhook, Status: envelope.StatusRunning, ReceivedAt: now, StartedAt: now}
		}
		return ch, nil
	}); err != nil {
		r.t.Fatal(err)
	}
}

func (r *rig) produceRaw(msgs ...kafka.Message) {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := r.w.WriteMessages(ctx, msgs...); err != nil {
		r.t.Fatal(err)
	}
}

// work builds a work item for node, as the router would.
func (r *rig) work(node flowdoc.Node, input string) envelope.Work {
	ex := identity.NewID()
	token := node.ID + "#" + testrig.Unique("")
	return envelope.Work{
		ExecutionID: ex, FlowID: "flow-" + ex, Revision: 1, Token: token, Attempt: 1, Node: node,
		Owners: []flowdoc.Owner{{ID: r.owner, Type: flowdoc.OwnerUser}},
		Input:  json.RawMessage(input),
		Context: map[string]json.RawMessage{
			"steps":    json.RawMessage(`{"lookup":{"name":"Ada"}}`),
			"settings": json.RawMessage(`{"region":"eu"}`),
		},
		IdempotencyKey: ex + "/" + token,
		Deadline:       time.Now().Add(time.Minute),
	}
}

// collector reads every partition of a topic from the start.
type collector struct {
	mu   sync.Mutex
	msgs []kafka.Message
}

func (r *rig) collect(name string) *collector {
	c := &collector{}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for p := range r.kcfg.Partitions {
		rd := kafka.NewReader(kafka.ReaderConfig{
			Brokers: r.kcfg.Brokers, Topic: r.kcfg.Topic(name), Partition: p,
			MinBytes: 1, MaxBytes: 10 << 20, MaxWait: 100 * time.Millisecond, ReadLagInterval: -1,
		})
		wg.Go(func() {
			defer func() { _ = rd.Close() }()
			for {
				m, err := rd.ReadMessage(ctx)
				if err != nil {
					return
				}
				c.mu.Lock()
				c.msgs = append(c.msgs, m)
				c.mu.Unlock()
			}
		})
	}
	r.t.Cleanup(func() { cancel(); wg.Wait() })
	return c
}

func (c *collector) all() []kafka.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]kafka.Message(nil), c.msgs...)
}

// waitResults polls until every token has a Result and returns them by token (in arrival
// order per token).
// waitResultOf waits for the result of the given attempt of token.
func (r *rig) waitResultOf(token string, attempt int) envelope.Result {
	r.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		for _, res := range r.waitResults(token)[token] {
			if res.Attempt == attempt {
				return res
			}
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("no result of attempt %d of %s after 90s", attempt, token)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (r *rig) waitResults(tokens ...string) map[string][]envelope.Result {
	r.t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		got := map[string][]envelope.Result{}
		for _, m := range r.results.all() {
			var res envelope.Result
			if err := json.Unmarshal(m.Value, &res); err != nil {
				r.t.Fatalf("result is not JSON: %v: %s", err, m.Value)
			}
			if string(m.Key) != res.ExecutionID {
				r.t.Fatalf("result keyed %q, want its execution id %q", m.Key, res.ExecutionID)
			}
			got[res.Token] = append(got[res.Token], res)
		}
		missing := 0
		for _, tok := range tokens {
			if len(got[tok]) == 0 {
				missing++
			}
		}
		if missing == 0 {
			return got
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d of %d results missing after 90s", missing, len(tokens))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// committed sums the group's committed offsets on the work topic.
func (r *rig) committed() int64 {
	r.t.Helper()
	c := &kafka.Client{Addr: kafka.TCP(r.kcfg.Brokers...)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	topic := r.kcfg.Topic(envelope.PoolTopic(""))
	parts := make([]int, r.kcfg.Partitions)
	for i := range parts {
		parts[i] = i
	}
	resp, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: r.group, Topics: map[string][]int{topic: parts}})
	if err != nil {
		r.t.Fatal(err)
	}
	var sum int64
	for _, p := range resp.Topics[topic] {
		if p.CommittedOffset > 0 {
			sum += p.CommittedOffset
		}
	}
	return sum
}

// api is a local HTTP API that counts requests per Idempotency-Key and answers with fail
// for the first failures requests of each key.
type api struct {
	*httptest.Server
	failures int
	delay    time.Duration
	mu       sync.Mutex
	byKey    map[string]int
	auth     []string
	total    atomic.Int32
}

func newAPI(t *testing.T, failures int, delay time.Duration) *api {
	a := &api{failures: failures, delay: delay, byKey: map[string]int{}}
	a.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		a.total.Add(1)
		key := req.Header.Get("Idempotency-Key")
		a.mu.Lock()
		a.byKey[key]++
		n := a.byKey[key]
		a.auth = append(a.auth, req.Header.Get("Authorization"))
		a.mu.Unlock()
		if a.delay > 0 {
			time.Sleep(a.delay) // simulated API latency, not synchronisation
		}
		if n <= a.failures {
			http.Error(w, "try later", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"path": req.URL.Path, "got": json.RawMessage(orNull(body)), "key": key})
	}))
	t.Cleanup(a.Close)
	return a
}

func orNull(b []byte) []byte {
	if len(bytes.TrimSpace(b)) == 0 {
		return []byte("null")
	}
	return b
}

func (a *api) count(key string) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.byKey[key]
}

func httpNode(url string) flowdoc.Node {
	return flowdoc.Node{
		ID: "call", Type: "action", Connector: "http", Action: "request",
		Config: map[string]any{
			"method": "POST",
			"url":    url + "/orders/{{ input.id }}",
			"body":   map[string]any{"sku": "{{ input.sku }}", "note": "region {{ settings.region }}"},
		},
		Retry: &flowdoc.Retry{Backoff: "20ms", MaxBackoff: "100ms"},
	}
}

func transformNode() flowdoc.Node {
	return flowdoc.Node{
		ID: "shape", Type: "action", Connector: "transform", Action: "map",
		Config: map[string]any{"fields": map[string]any{"total": "input.qty * input.price", "customer": "steps.lookup.name"}},
	}
}

func decode(t *testing.T, raw json.RawMessage) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("output %s: %v", raw, err)
	}
	return m
}

// Many steps of two connectors, spread over partitions, each get their Result with the
// connector's outputs; templates in the config are rendered from the input and context.
func TestRunnerRunsSteps(t *testing.T) {
	r := newRig(t)
	a := newAPI(t, 0, 0)
	r.startRunner(func(c *runners.Config) { c.Concurrency = 8 })

	var works []envelope.Work
	var tokens []string
	for i := range 20 {
		w := r.work(transformNode(), `{"qty":`+itoa(i)+`,"price":1.5}`)
		works = append(works, w)
		tokens = append(tokens, w.Token)
	}
	for i := range 10 {
		w := r.work(httpNode(a.URL), `{"id":"o-`+itoa(i)+`","sku":"A-`+itoa(i)+`"}`)
		works = append(works, w)
		tokens = append(tokens, w.Token)
	}
	r.produce(works...)
	got := r.waitResults(tokens...)

	for i, w := range works {
		res := got[w.Token][0]
		if res.Error != nil {
			t.Fatalf("work %d: error %+v", i, res.Error)
		}
		if res.ExecutionID != w.ExecutionID || res.NodeID != w.Node.ID || res.FlowID != w.FlowID || res.Revision != 1 || res.Attempt != 1 {
			t.Fatalf("work %d: result header %+v", i, res)
		}
		if res.StartedAt.IsZero() || res.FinishedAt.Before(res.StartedAt) {
			t.Fatalf("work %d: timings %v %v", i, res.StartedAt, res.FinishedAt)
		}
		if len(res.Outputs) != 1 {
			t.Fatalf("work %d: %d outputs", i, len(res.Outputs))
		}
		out := decode(t, res.Outputs[0].Data)
		if i < 20 {
			if out["total"] != float64(i)*1.5 || out["customer"] != "Ada" {
				t.Fatalf("transform %d: output %v", i, out)
			}
			continue
		}
		n := itoa(i - 20)
		body, _ := out["body"].(map[string]any)
		sent, _ := body["got"].(map[string]any)
		if res.Outputs[0].Port != "success" || out["status"] != float64(200) || body["path"] != "/orders/o-"+n ||
			sent["sku"] != "A-"+n || sent["note"] != "region eu" || body["key"] != w.IdempotencyKey {
			t.Fatalf("http %s: port %q output %v", n, res.Outputs[0].Port, out)
		}
	}
	for _, w := range works[20:] {
		if c := a.count(w.IdempotencyKey); c != 1 {
			t.Fatalf("API saw key %s %d times", w.IdempotencyKey, c)
		}
	}
}

// A runner makes one attempt per work item and reports a retryable failure at once (the
// router's delay queue sends the next attempt when it is due, so no runner waits out a
// backoff); each attempt's item carries the same idempotency key.
func TestEachAttemptIsOneWorkItemWithTheSameIdempotencyKey(t *testing.T) {
	r := newRig(t)
	a := newAPI(t, 2, 0) // 503, 503, then 200
	r.startRunner(nil)

	w := r.work(httpNode(a.URL), `{"id":"o-1","sku":"A-1"}`)
	for attempt := 1; attempt <= 3; attempt++ {
		w.Attempt = attempt
		r.produce(w)
		res := r.waitResultOf(w.Token, attempt)
		if res.Attempt != attempt {
			t.Fatalf("attempt %d: result %+v", attempt, res)
		}
		if attempt < 3 && (res.Error == nil || !res.Error.Retryable || res.Error.Code != "http_5xx") {
			t.Fatalf("attempt %d: result %+v, want a retryable http_5xx", attempt, res)
		}
		if attempt == 3 && (res.Error != nil || len(res.Outputs) != 1 || res.Outputs[0].Port != "success") {
			t.Fatalf("attempt 3: result %+v, want success", res)
		}
	}
	if c := a.count(w.IdempotencyKey); c != 3 || a.total.Load() != 3 {
		t.Fatalf("API saw the key %d times (%d requests), want the same key 3 times", c, a.total.Load())
	}
}

// The same work record delivered twice runs once: the second delivery finds the item finished
// (its Result is on the results topic already) and is committed without a second Result.
func TestRedeliveredWorkRunsOnce(t *testing.T) {
	r := newRig(t)
	a := newAPI(t, 0, 50*time.Millisecond)
	r.startRunner(nil)

	w := r.work(httpNode(a.URL), `{"id":"o-1","sku":"A-1"}`)
	before := r.committed()
	r.produce(w, w) // same key, same partition, adjacent offsets
	waitCommitted := func(want int64) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for r.committed() < want {
			if time.Now().After(deadline) {
				t.Fatalf("committed %d, want %d: both deliveries handled", r.committed(), want)
			}
			time.Sleep(20 * time.Millisecond) // polling the group's offsets with a deadline
		}
	}
	waitCommitted(before + 2)
	results := r.waitResults(w.Token)[w.Token]
	if len(results) != 1 || a.count(w.IdempotencyKey) != 1 {
		t.Fatalf("%d results and %d API requests, want one of each", len(results), a.count(w.IdempotencyKey))
	}

	// A redelivery long after the step finished: known from the run record too.
	r.produce(w)
	waitCommitted(before + 3)
	if n := len(r.waitResults(w.Token)[w.Token]); n != 1 || a.count(w.IdempotencyKey) != 1 {
		t.Fatalf("late redelivery: %d results, API count %d, want 1 and 1", n, a.count(w.IdempotencyKey))
	}
}

// Offsets are committed as work finishes: a runner stopped mid-stream leaves nothing it
// completed to run again, and its successor picks up everything else.
func TestRestartResumesFromCommittedOffsets(t *testing.T) {
	r := newRig(t)
	a := newAPI(t, 0, 20*time.Millisecond)
	stop := r.startRunner(func(c *runners.Config) { c.Concurrency = 4 })

	var tokens []string
	var works []envelope.Work
	batch := func(n int) {
		var ws []envelope.Work
		for range n {
			w := r.work(httpNode(a.URL), `{"id":"x","sku":"s"}`)
			ws = append(ws, w)
			tokens = append(tokens, w.Token)
		}
		works = append(works, ws...)
		r.produce(ws...)
	}
	batch(60)
	// Stop the first runner part way through the stream.
	deadline := time.Now().Add(60 * time.Second)
	for len(r.results.all()) < 10 {
		if time.Now().After(deadline) {
			t.Fatal("first runner produced fewer than 10 results in 60s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	// Run returned after its final commit: every answered item is committed, nothing else.
	committed := r.committed()
	for int64(len(r.results.all())) < committed {
		if time.Now().After(deadline) {
			t.Fatalf("committed %d offsets but only %d results arrived", committed, len(r.results.all()))
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n := len(r.results.all()); int64(n) != committed {
		t.Fatalf("the first runner answered %d items but committed %d offsets", n, committed)
	}
	if committed >= 60 {
		t.Logf("the first runner finished all work before it was stopped")
	}

	r.startRunner(nil)
	batch(20)
	got := r.waitResults(tokens...)
	for _, w := range works {
		if n := len(got[w.Token]); n != 1 {
			t.Fatalf("work %s got %d Results, want exactly 1 (a completed item ran again)", w.Token, n)
		}
		if c := a.count(w.IdempotencyKey); c != 1 {
			t.Fatalf("API saw %s %d times", w.IdempotencyKey, c)
		}
	}
	deadline = time.Now().Add(30 * time.Second)
	for r.committed() != int64(len(works)) {
		if time.Now().After(deadline) {
			t.Fatalf("committed %d offsets, want %d", r.committed(), len(works))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Shutdown waits for running steps only up to the drain bound: a step still running then is
// neither answered nor committed, and the next runner runs it again with the same
// idempotency key (at-least-once), without waiting for the first runner's claim to lapse.
func TestDrainBoundLeavesUnfinishedWorkForRedelivery(t *testing.T) {
	r := newRig(t)
	a := newAPI(t, 0, 2*time.Second)
	stop := r.startRunner(func(c *runners.Config) { c.DrainTimeout = 50 * time.Millisecond })

	w := r.work(httpNode(a.URL), `{"id":"o-1","sku":"A-1"}`)
	r.produce(w)
	deadline := time.Now().Add(60 * time.Second)
	for a.count(w.IdempotencyKey) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the step never reached the API")
		}
		time.Sleep(5 * time.Millisecond)
	}
	stop()
	if n := len(r.results.all()); n != 0 || r.committed() != 0 {
		t.Fatalf("after an abandoned step: %d results, %d committed; want none", n, r.committed())
	}

	r.startRunner(nil)
	res := r.waitResults(w.Token)[w.Token]
	if len(res) != 1 || res[0].Error != nil {
		t.Fatalf("results %+v", res)
	}
	if c := a.count(w.IdempotencyKey); c != 2 {
		t.Fatalf("API saw the key %d times, want 2 (the abandoned call and the redelivery)", c)
	}
}

// A node's basic connection is resolved in the runner and reaches the API as an Authorization
// header; the secret shows up in no Result and no log line. A connection the flow's owners may
// not use fails the step for good.
func TestConnectionIsResolvedForTheStep(t *testing.T) {
	r := newRig(t)
	a := newAPI(t, 0, 0)
	password := "pw-" + testrig.Unique("")
	connID := r.createConnection(r.owner, "basic", map[string]any{"username": "ada"}, map[string]string{"password": password})
	r.startRunner(nil)

	node := httpNode(a.URL)
	node.Connection = connID
	w := r.work(node, `{"id":"o-1","sku":"A-1"}`)
	foreign := r.work(node, `{"id":"o-2","sku":"A-2"}`)
	foreign.Owners = []flowdoc.Owner{{ID: identity.NewID(), Type: flowdoc.OwnerUser}}
	r.produce(w, foreign)
	got := r.waitResults(w.Token, foreign.Token)

	if res := got[w.Token][0]; res.Error != nil || res.Outputs[0].Port != "success" {
		t.Fatalf("result %+v", res)
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("ada:"+password))
	a.mu.Lock()
	auth := append([]string(nil), a.auth...)
	a.mu.Unlock()
	if len(auth) != 1 || auth[0] != want {
		t.Fatalf("API saw Authorization %q, want one request with %q", auth, want)
	}
	res := got[foreign.Token][0]
	if res.Error == nil || res.Error.Code != "connection_not_found" || res.Error.Retryable || res.Outputs != nil {
		t.Fatalf("foreign owners: result %+v, want a permanent connection_not_found", res)
	}
	for _, m := range r.results.all() {
		if bytes.Contains(m.Value, []byte(password)) || bytes.Contains(m.Value, []byte(base64.StdEncoding.EncodeToString([]byte("ada:"+password)))) {
			t.Fatalf("the secret appears in a Result: %s", m.Value)
		}
	}
	if strings.Contains(r.logs.String(), password) {
		t.Fatal("the secret appears in the logs")
	}
}

func (r *rig) createConnection(owner, typ string, fields map[string]any, secretFields map[string]string) string {
	r.t.Helper()
	now := time.Now().UTC()
	c := &store.Connection{
		ID: identity.NewID(), Name: "conn-" + testrig.Unique(""), Type: typ, Owner: owner,
		Fields: fields, Secrets: map[string]secrets.Sealed{}, CreatedAt: now, UpdatedAt: now,
	}
	for k, v := range secretFields {
		sl, err := r.kr.Encrypt([]byte(v), store.ConnectionAAD(c.ID, k))
		if err != nil {
			r.t.Fatal(err)
		}
		c.Secrets[k] = sl
	}
	if err := r.st.CreateConnection(context.Background(), c); err != nil {
		r.t.Fatal(err)
	}
	return c.ID
}

// Records that are not work items go to the dead-letter topic with the reason, are committed,
// and do not hold up the work behind them.
func TestUndecodableWorkGoesToTheDLQ(t *testing.T) {
	r := newRig(t)
	dlq := r.collect(envelope.TopicDLQ)
	r.startRunner(nil)

	topic := r.kcfg.Topic(envelope.PoolTopic(""))
	bad := []kafka.Message{
		{Topic: topic, Key: []byte("k1"), Value: []byte(`{not json`)},
		{Topic: topic, Key: []byte("k1"), Value: []byte(`{"executionId":"e1","node":{"id":"n"}}`)},
	}
	r.kcfg.RecordKeys.SignAll(bad) // signed, so what is refused is their content
	r.produceRaw(bad...)
	w := r.work(transformNode(), `{"qty":2,"price":2}`)
	w.ExecutionID = "k1" // same partition as the bad records, after them
	r.produce(w)
	res := r.waitResults(w.Token)[w.Token][0]
	if res.Error != nil {
		t.Fatalf("result %+v", res)
	}

	deadline := time.Now().Add(30 * time.Second)
	for len(dlq.all()) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters, want 2", len(dlq.all()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	reasons := map[string]string{}
	for _, m := range dlq.all() {
		for _, h := range m.Headers {
			if h.Key == kafkax.HeaderDLQReason {
				reasons[string(m.Value)] = string(h.Value)
			}
		}
		if string(m.Key) != "k1" {
			t.Fatalf("dead letter keyed %q, want the original key", m.Key)
		}
	}
	if !strings.Contains(reasons[`{not json`], "not a work item") ||
		!strings.Contains(reasons[`{"executionId":"e1","node":{"id":"n"}}`], "token, node.connector, node.action") {
		t.Fatalf("reasons %q", reasons)
	}
	for r.committed() != 3 {
		if time.Now().After(deadline) {
			t.Fatalf("committed %d offsets, want 3", r.committed())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if len(dlq.all()) != 2 {
		t.Fatalf("%d dead letters, want 2", len(dlq.all()))
	}
}

// A work item is a request to act with someone's credentials: the runner takes the node, its
// connection and the owners from the stored flow revision, runs only activations the router
// awaits, and dead-letters records no flowd role signed, without any request leaving.
func TestRunnerTrustsTheStoreNotTheRecord(t *testing.T) {
	r := newRig(t)
	a := newAPI(t, 0, 0)
	thief := newAPI(t, 0, 0)
	password := "pw-" + testrig.Unique("")
	connID := r.createConnection(r.owner, "basic", map[string]any{"username": "ada"}, map[string]string{"password": password})
	dlq := r.collect(envelope.TopicDLQ)
	r.startRunner(nil)
	topic := r.kcfg.Topic(envelope.PoolTopic(""))

	// 1. Unsigned: claims the owner's connection and sends it to the thief.
	stolen := httpNode(thief.URL)
	stolen.Connection = connID
	unsigned := r.work(stolen, `{"id":"o-1","sku":"A-1"}`)
	raw, _ := json.Marshal(unsigned)
	r.produceRaw(kafka.Message{Topic: topic, Key: []byte(unsigned.ExecutionID), Value: raw})

	// 2. Signed by a role with another key (a stale or foreign deployment).
	otherKeys, err := busauth.New([]secrets.Key{{ID: "b1", Material: bytes.Repeat([]byte{7}, 32)}})
	if err != nil {
		t.Fatal(err)
	}
	foreignSig := r.work(stolen, `{"id":"o-2","sku":"A-2"}`)
	raw, _ = json.Marshal(foreignSig)
	m := kafka.Message{Topic: topic, Key: []byte(foreignSig.ExecutionID), Value: raw}
	otherKeys.Sign(&m)
	r.produceRaw(m)

	// 3. Signed, but the record's node and owners differ from the stored flow's: the stored
	// node (calling the real API, with a connection the stored owners may not use) is what runs.
	stored := httpNode(a.URL)
	stored.Connection = connID
	claims := r.work(stored, `{"id":"o-3","sku":"A-3"}`)
	claims.Owners = []flowdoc.Owner{{ID: identity.NewID(), Type: flowdoc.OwnerUser}} // the flow's real owner: not the connection's
	r.seed(claims)
	claims.Node = stolen                                                    // what the record claims
	claims.Owners = []flowdoc.Owner{{ID: r.owner, Type: flowdoc.OwnerUser}} // the connection's owner
	raw, _ = json.Marshal(claims)
	m = kafka.Message{Topic: topic, Key: []byte(claims.ExecutionID), Value: raw}
	r.kcfg.RecordKeys.Sign(&m)
	r.produceRaw(m)

	// 4. Signed and for a stored flow, but no activation of it is pending.
	notPending := r.work(transformNode(), `{"qty":1,"price":1}`)
	r.seed(notPending)
	notPending.Token = "other#" + testrig.Unique("")
	raw, _ = json.Marshal(notPending)
	m = kafka.Message{Topic: topic, Key: []byte(notPending.ExecutionID), Value: raw}
	r.kcfg.RecordKeys.Sign(&m)
	r.produceRaw(m)

	res := r.waitResults(claims.Token)[claims.Token][0]
	if res.Error == nil || res.Error.Code != "connection_not_found" {
		t.Fatalf("result %+v, want connection_not_found: the stored owners may not use the connection", res)
	}
	deadline := time.Now().Add(30 * time.Second)
	for len(dlq.all()) < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters, want 3", len(dlq.all()))
		}
		time.Sleep(10 * time.Millisecond)
	}
	reasons := map[string]string{}
	for _, m := range dlq.all() {
		var w envelope.Work
		_ = json.Unmarshal(m.Value, &w)
		for _, h := range m.Headers {
			if h.Key == kafkax.HeaderDLQReason {
				reasons[w.ExecutionID] = string(h.Value)
			}
		}
		if err := r.kcfg.RecordKeys.Verify(m); err != nil {
			t.Fatalf("dead letter not signed by the runner: %v", err)
		}
	}
	for id, want := range map[string]string{
		unsigned.ExecutionID:   "record authentication failed: record is not signed",
		foreignSig.ExecutionID: "record authentication failed: record signature does not match",
		notPending.ExecutionID: "is not pending",
	} {
		if !strings.Contains(reasons[id], want) {
			t.Errorf("dead letter of %s: reason %q, want %q", id, reasons[id], want)
		}
	}
	if n := thief.total.Load(); n != 0 {
		t.Fatalf("%d request(s) reached the URL the records named", n)
	}
	if n := a.total.Load(); n != 0 {
		t.Fatalf("%d request(s) reached the stored node's API with a connection its owners may not use", n)
	}
	if len(r.results.all()) != 1 {
		t.Fatalf("%d results, want only the stored node's", len(r.results.all()))
	}
}

func itoa(i int) string { return strconv.Itoa(i) }
