package runners

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// The runner's claim logic, item by item, against an in-memory store, executor and producer:
// when it runs a step, when it waits for another runner, when it refuses an item. The same
// paths run on a real broker and Redis in runner_test.go.

// fakeRuns is an in-memory Store with the contract of store.BeginRun/FinishRun.
type fakeRuns struct {
	mu      sync.Mutex
	flows   map[string]*flowdoc.Flow // by "<id>/<revision>"
	exec    map[string]*envelope.Execution
	pending map[string]*envelope.Activation // by "<execution>/<token>"
	done    map[store.RunKey]bool
	claims  map[store.RunKey]string // holder
	begins  int
	down    int             // BeginRun calls still to fail
	onBegin func(calls int) // called (unlocked) after each BeginRun
	nextID  int
	fakePolls
}

func (s *fakeRuns) ServePool(context.Context, string, string, time.Time, time.Time) error { return nil }

func (s *fakeRuns) LeavePool(context.Context, string, string) error { return nil }

func newFakeRuns() *fakeRuns {
	return &fakeRuns{flows: map[string]*flowdoc.Flow{}, exec: map[string]*envelope.Execution{},
		pending: map[string]*envelope.Activation{}, done: map[store.RunKey]bool{}, claims: map[store.RunKey]string{}}
}

func (s *fakeRuns) Revision(_ context.Context, id string, n int) (*flowdoc.Flow, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, ok := s.flows[id+"/"+itoa(n)]
	if !ok {
		return nil, store.ErrNotFound
	}
	cp := *f
	return &cp, nil
}

func itoa(n int) string { return strconv.Itoa(n) }

var errRedisDown = errors.New("redis unavailable")

func (s *fakeRuns) BeginRun(_ context.Context, k store.RunKey, _ time.Duration) (*store.RunStart, error) {
	s.mu.Lock()
	s.begins++
	calls, hook := s.begins, s.onBegin
	st, err := s.begin(k)
	s.mu.Unlock()
	if hook != nil {
		hook(calls)
	}
	return st, err
}

func (s *fakeRuns) begin(k store.RunKey) (*store.RunStart, error) {
	if s.down > 0 {
		s.down--
		return nil, errRedisDown
	}
	st := &store.RunStart{}
	if e := s.exec[k.ExecutionID]; e != nil {
		x := *e
		st.Execution = &x
		if a := s.pending[k.ExecutionID+"/"+k.Token]; a != nil {
			ac := *a
			st.Activation = &ac
		}
	}
	switch {
	case s.done[k]:
		st.Done = true
	case s.claims[k] == "":
		s.nextID++
		holder := "claim-" + itoa(s.nextID)
		s.claims[k] = holder
		st.Claim = &fakeClaim{s: s, k: k, holder: holder}
	}
	return st, nil
}

func (s *fakeRuns) FinishRun(_ context.Context, k store.RunKey, _ time.Duration, claim store.RunClaim) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done[k] = true
	if c, ok := claim.(*fakeClaim); ok && s.claims[k] == c.holder {
		delete(s.claims, k)
	}
	return nil
}

// finishElsewhere is another runner finishing k.
func (s *fakeRuns) finishElsewhere(k store.RunKey) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.done[k] = true
	delete(s.claims, k)
}

func (s *fakeRuns) claimed(k store.RunKey) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.claims[k]
}

func (s *fakeRuns) finished(k store.RunKey) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.done[k]
}

type fakeClaim struct {
	s      *fakeRuns
	k      store.RunKey
	holder string
}

func (c *fakeClaim) Extend(context.Context, time.Duration) error {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.s.claims[c.k] != c.holder {
		return store.ErrLockLost
	}
	return nil
}

func (c *fakeClaim) Release(context.Context) error {
	c.s.mu.Lock()
	defer c.s.mu.Unlock()
	if c.s.claims[c.k] == c.holder {
		delete(c.s.claims, c.k)
	}
	return nil
}

// fakeExecutor answers every invocation with its input under "echo" and counts the calls by
// connector.
type fakeExecutor struct {
	mu    sync.Mutex
	calls map[string]int
}

func (e *fakeExecutor) Execute(_ context.Context, name string, items []sdk.Invocation) ([]sdk.Result, error) {
	e.mu.Lock()
	if e.calls == nil {
		e.calls = map[string]int{}
	}
	e.calls[name] += len(items)
	e.mu.Unlock()
	out := make([]sdk.Result, len(items))
	for i, it := range items {
		out[i] = sdk.Result{ID: it.ID, Outputs: []sdk.Output{{Data: map[string]any{"echo": it.Input, "action": it.Action}}}}
	}
	return out, nil
}

func (e *fakeExecutor) count(name string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.calls[name]
}

// failingWriter fails every write; onFail runs after each failure.
type failingWriter struct{ onFail func() }

func (w *failingWriter) WriteMessages(context.Context, ...kafka.Message) error {
	w.onFail()
	return errors.New("broker unavailable")
}

type recordingWriter struct {
	mu   sync.Mutex
	msgs []kafka.Message
}

func (w *recordingWriter) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msgs...)
	return nil
}

func (w *recordingWriter) all() []kafka.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]kafka.Message(nil), w.msgs...)
}

type claims struct {
	t    *testing.T
	r    *Runner
	st   *fakeRuns
	exec *fakeExecutor
	w    *recordingWriter
	item envelope.Work
	key  store.RunKey
}

// newClaims sets up flow f1 revision 1 (webhook → A, connector "c") and execution x1 whose
// activation tok of A is pending, and a runner for the default pool.
func newClaims(t *testing.T) *claims {
	t.Helper()
	t.Parallel()
	st, ex, w := newFakeRuns(), &fakeExecutor{}, &recordingWriter{}
	st.flows["f1/1"] = &flowdoc.Flow{ID: "f1", Revision: 1, Owners: []flowdoc.Owner{{ID: "u1", Type: flowdoc.OwnerUser}},
		Graph: flowdoc.Graph{Nodes: []flowdoc.Node{{ID: "t", Type: flowdoc.TypeWebhook},
			{ID: "A", Type: flowdoc.TypeAction, Connector: "c", Action: "a"}}}}
	st.exec["x1"] = &envelope.Execution{ID: "x1", FlowID: "f1", Revision: 1, Status: envelope.StatusRunning}
	st.pending["x1/tok"] = &envelope.Activation{NodeID: "A", Input: json.RawMessage(`{"n":1}`)}
	r, err := New(Config{
		Kafka: kafkax.Config{Brokers: []string{"unused:9092"}, RecordKeys: testrig.RecordKeys()},
		Host:  ex, Store: st, ClaimTTL: time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.useWriter(w)
	r.batchers = &batchers{exec: ex, max: 1, wait: time.Millisecond, ctx: context.Background(), m: map[string]*batcher{}}
	item := envelope.Work{ExecutionID: "x1", FlowID: "f1", Revision: 1, Token: "tok", Attempt: 1,
		Node: flowdoc.Node{ID: "A", Type: flowdoc.TypeAction, Connector: "c", Action: "a"}, Input: json.RawMessage(`{"n":1}`)}
	return &claims{t: t, r: r, st: st, exec: ex, w: w, item: item, key: store.RunKey{ExecutionID: "x1", Token: "tok", Attempt: 1}}
}

func (c *claims) message(w envelope.Work, sign bool) kafka.Message {
	c.t.Helper()
	raw, err := json.Marshal(w)
	if err != nil {
		c.t.Fatal(err)
	}
	m := kafka.Message{Topic: c.r.topic, Key: []byte(w.ExecutionID), Value: raw}
	if sign {
		c.r.cfg.Kafka.RecordKeys.Sign(&m)
	}
	return m
}

func (c *claims) process(m kafka.Message) bool {
	return c.r.process(context.Background(), context.Background(), m)
}

// produced splits what the runner produced into results and dead-letter reasons.
func (c *claims) produced() (results []envelope.Result, deadLetters []string) {
	c.t.Helper()
	for _, m := range c.w.all() {
		switch m.Topic {
		case c.r.results:
			if err := c.r.cfg.Kafka.RecordKeys.Verify(m); err != nil {
				c.t.Fatalf("result not signed: %v", err)
			}
			var res envelope.Result
			if err := json.Unmarshal(m.Value, &res); err != nil {
				c.t.Fatal(err)
			}
			results = append(results, res)
		case c.r.cfg.Kafka.Topic(envelope.TopicDLQ):
			for _, h := range m.Headers {
				if h.Key == kafkax.HeaderDLQReason {
					deadLetters = append(deadLetters, string(h.Value))
				}
			}
		default:
			c.t.Fatalf("record on %s", m.Topic)
		}
	}
	return results, deadLetters
}

func TestClaimFreshItemRunsOnceAndIsRecorded(t *testing.T) {
	c := newClaims(t)
	if !c.process(c.message(c.item, true)) {
		t.Fatal("the item's offset may not be committed")
	}
	results, dl := c.produced()
	if len(results) != 1 || len(dl) != 0 {
		t.Fatalf("results %+v, dead letters %q", results, dl)
	}
	if res := results[0]; res.Error != nil || res.NodeID != "A" || res.Token != "tok" || len(res.Outputs) != 1 ||
		!strings.Contains(string(res.Outputs[0].Data), `"echo":{"n":1}`) {
		t.Fatalf("result %+v", res)
	}
	if c.exec.count("c") != 1 {
		t.Fatalf("connector called %d times", c.exec.count("c"))
	}
	if !c.st.finished(c.key) || c.st.claimed(c.key) != "" {
		t.Fatalf("run finished %v, claim %q", c.st.finished(c.key), c.st.claimed(c.key))
	}
}

func TestClaimRedeliveredFinishedItemIsNotRunAgain(t *testing.T) {
	c := newClaims(t)
	c.st.finishElsewhere(c.key)
	if !c.process(c.message(c.item, true)) {
		t.Fatal("the item's offset may not be committed")
	}
	if results, dl := c.produced(); len(results) != 0 || len(dl) != 0 || c.exec.count("c") != 0 {
		t.Fatalf("results %+v, dead letters %q, calls %d", results, dl, c.exec.count("c"))
	}
}

func TestClaimHeldElsewhereWaitsForTheOtherRunnersResult(t *testing.T) {
	c := newClaims(t)
	c.st.claims[c.key] = "another runner"
	c.st.onBegin = func(calls int) {
		if calls == 2 { // the other runner finishes while this one waits
			c.st.finishElsewhere(c.key)
		}
	}
	if !c.process(c.message(c.item, true)) {
		t.Fatal("the item's offset may not be committed")
	}
	if results, _ := c.produced(); len(results) != 0 || c.exec.count("c") != 0 {
		t.Fatalf("ran an item another runner was running: results %+v, calls %d", results, c.exec.count("c"))
	}
}

func TestClaimLapsedElsewhereIsTakenOver(t *testing.T) {
	c := newClaims(t)
	c.st.claims[c.key] = "a crashed runner"
	c.st.onBegin = func(calls int) {
		if calls == 2 { // its claim expires
			c.st.mu.Lock()
			delete(c.st.claims, c.key)
			c.st.mu.Unlock()
		}
	}
	if !c.process(c.message(c.item, true)) {
		t.Fatal("the item's offset may not be committed")
	}
	if results, _ := c.produced(); len(results) != 1 || c.exec.count("c") != 1 || !c.st.finished(c.key) {
		t.Fatalf("results %+v, calls %d", results, c.exec.count("c"))
	}
}

func TestClaimStoreOutageIsWaitedOut(t *testing.T) {
	c := newClaims(t)
	c.st.down = 2
	if !c.process(c.message(c.item, true)) {
		t.Fatal("the item's offset may not be committed")
	}
	if results, _ := c.produced(); len(results) != 1 || c.exec.count("c") != 1 {
		t.Fatalf("results %+v, calls %d", results, c.exec.count("c"))
	}
}

func TestClaimRunsTheStoredNodeNotTheRecords(t *testing.T) {
	c := newClaims(t)
	w := c.item
	w.Node.Connector, w.Node.Action = "evil", "exfiltrate"
	if !c.process(c.message(w, true)) {
		t.Fatal("the item's offset may not be committed")
	}
	results, _ := c.produced()
	if c.exec.count("evil") != 0 || c.exec.count("c") != 1 || len(results) != 1 || !strings.Contains(string(results[0].Outputs[0].Data), `"action":"a"`) {
		t.Fatalf("calls %v, results %+v", c.exec.calls, results)
	}
}

func TestClaimRefusedItemsAreDeadLetteredNotRun(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(c *claims, w *envelope.Work) bool // sign?
		reason string
	}{
		{"unsigned", func(*claims, *envelope.Work) bool { return false }, "record authentication failed"},
		{"not pending", func(c *claims, _ *envelope.Work) bool { delete(c.st.pending, "x1/tok"); return true }, "is not pending"},
		{"another node's activation", func(c *claims, _ *envelope.Work) bool {
			c.st.pending["x1/tok"].NodeID = "B"
			return true
		}, `is of node "B"`},
		{"another revision", func(c *claims, w *envelope.Work) bool {
			c.st.flows["f1/2"] = c.st.flows["f1/1"]
			w.Revision = 2
			return true
		}, "runs flow f1 revision 1"},
		{"unknown node", func(_ *claims, w *envelope.Work) bool { w.Node.ID = "Z"; return true }, `has no node "Z"`},
		{"the trigger node", func(_ *claims, w *envelope.Work) bool { w.Node.ID = "t"; return true }, "not an action"},
		{"no such revision", func(_ *claims, w *envelope.Work) bool { w.Revision = 9; return true }, "has no revision 9"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClaims(t)
			w := c.item
			sign := tc.change(c, &w)
			if !c.process(c.message(w, sign)) {
				t.Fatal("the dead-lettered item's offset may not be committed")
			}
			results, dl := c.produced()
			if len(results) != 0 || len(dl) != 1 || !strings.Contains(dl[0], tc.reason) {
				t.Fatalf("results %+v, dead letters %q, want one naming %q", results, dl, tc.reason)
			}
			if c.exec.count("c") != 0 {
				t.Fatal("a refused item ran")
			}
			if h := c.st.claimed(c.key); h != "" {
				t.Fatalf("the refused item's claim %q is still held", h)
			}
		})
	}
}

func TestClaimResultNotAcknowledgedIsLeftForRedelivery(t *testing.T) {
	c := newClaims(t)
	work, stop := context.WithCancel(context.Background())
	defer stop()
	c.r.useWriter(&failingWriter{onFail: stop}) // the broker is down until shutdown
	if c.r.process(work, work, c.message(c.item, true)) {
		t.Fatal("an item whose result was not acknowledged may be committed")
	}
	if c.st.finished(c.key) {
		t.Fatal("recorded as finished without an acknowledged result")
	}
	if h := c.st.claimed(c.key); h != "" {
		t.Fatalf("claim %q kept: the redelivery would wait for it to lapse", h)
	}
}
