package router

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

// The router's decisions, record by record, against an in-memory store and producer: what it
// produces, what it dead-letters and what it records. The same paths run on a real broker and
// Redis in router_test.go.

type decisions struct {
	t  *testing.T
	r  *Router
	st *fakeStore
	w  *fakeWriter
}

func newDecisions(t *testing.T, cfg Config) *decisions {
	t.Helper()
	t.Parallel()
	st, w := newFakeStore(), &fakeWriter{}
	cfg.Store = st
	cfg.Kafka = kafkax.Config{Brokers: []string{"unused:9092"}, RecordKeys: testrig.RecordKeys()}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	r.useWriter(w)
	return &decisions{t: t, r: r, st: st, w: w}
}

// twoSteps is webhook → A → B, saved as revision 1.
func (d *decisions) twoSteps() *flowdoc.Flow {
	return d.st.save(flowdoc.Flow{ID: "f1", Name: "two steps", Status: flowdoc.StatusActive,
		Owners: []flowdoc.Owner{{ID: "u1", Type: flowdoc.OwnerUser}},
		Graph: flowdoc.Graph{
			Nodes: []flowdoc.Node{{ID: "t", Type: flowdoc.TypeWebhook},
				{ID: "A", Type: flowdoc.TypeAction, Connector: "c", Action: "a"},
				{ID: "B", Type: flowdoc.TypeAction, Connector: "c", Action: "b"}},
			Edges: []flowdoc.Edge{{Source: "t", Target: "A"}, {Source: "A", Target: "B"}},
		}})
}

func (d *decisions) record(topic string, v any, sign bool) kafka.Message {
	d.t.Helper()
	raw, err := json.Marshal(v)
	if err != nil {
		d.t.Fatal(err)
	}
	m := kafka.Message{Topic: d.r.cfg.Kafka.Topic(topic), Key: []byte("k"), Value: raw, Partition: 3, Offset: 42}
	if sign {
		d.r.cfg.Kafka.RecordKeys.Sign(&m)
	}
	return m
}

func (d *decisions) signed(m kafka.Message) kafka.Message {
	d.r.cfg.Kafka.RecordKeys.Sign(&m)
	return m
}

func (d *decisions) handle(m kafka.Message) error {
	return d.r.handleMain(context.Background(), m)
}

func (d *decisions) mustHandle(m kafka.Message) {
	d.t.Helper()
	if err := d.handle(m); err != nil {
		d.t.Fatalf("handle %s: %v", m.Topic, err)
	}
}

func (d *decisions) ingest(f *flowdoc.Flow, execID string) kafka.Message {
	return d.record(envelope.TopicIngest, envelope.Ingest{ExecutionID: execID, FlowID: f.ID, Revision: f.Revision,
		Trigger: "webhook", ReceivedAt: time.Unix(1000, 0).UTC(), Input: json.RawMessage(`{"n":1}`)}, true)
}

// work decodes produced work items, checking each is signed and on the default pool's topic.
func (d *decisions) work(msgs []kafka.Message) []envelope.Work {
	d.t.Helper()
	var out []envelope.Work
	for _, m := range msgs {
		if m.Topic != d.r.cfg.Kafka.Topic(envelope.PoolTopic("")) {
			d.t.Fatalf("record on %s, want the work topic: %s", m.Topic, m.Value)
		}
		if err := d.r.cfg.Kafka.RecordKeys.Verify(m); err != nil {
			d.t.Fatalf("produced work is not signed: %v", err)
		}
		var w envelope.Work
		if err := json.Unmarshal(m.Value, &w); err != nil {
			d.t.Fatal(err)
		}
		out = append(out, w)
	}
	return out
}

func (d *decisions) result(w envelope.Work, fail *envelope.Error, output string) kafka.Message {
	res := envelope.Result{ExecutionID: w.ExecutionID, FlowID: w.FlowID, Revision: w.Revision, NodeID: w.Node.ID,
		Token: w.Token, Attempt: max(w.Attempt, 1), Error: fail, StartedAt: time.Unix(1001, 0).UTC(), FinishedAt: time.Unix(1002, 0).UTC()}
	if fail == nil {
		res.Outputs = []envelope.Output{{Data: json.RawMessage(output)}}
	}
	return d.record(envelope.TopicResults, res, true)
}

// deadLetters returns the reasons of the dead letters among msgs.
func (d *decisions) deadLetters(msgs []kafka.Message) []string {
	var out []string
	for _, m := range msgs {
		if m.Topic != d.r.cfg.Kafka.Topic(envelope.TopicDLQ) {
			d.t.Fatalf("record on %s, want only dead letters", m.Topic)
		}
		for _, h := range m.Headers {
			if h.Key == kafkax.HeaderDLQReason {
				out = append(out, string(h.Value))
			}
		}
	}
	return out
}

func TestDecideWebhookRunsEachStepInTurnAndSucceeds(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.twoSteps()
	d.mustHandle(d.ingest(f, "x1"))
	ws := d.work(d.w.take())
	if len(ws) != 1 || ws[0].Node.ID != "A" || ws[0].ExecutionID != "x1" || string(ws[0].Input) != `{"n":1}` {
		t.Fatalf("work after the trigger: %+v", ws)
	}
	if e := d.st.execution("x1"); e == nil || e.Status != envelope.StatusRunning || e.Revision != 1 {
		t.Fatalf("execution after the trigger: %+v", e)
	}
	d.mustHandle(d.result(ws[0], nil, `{"a":2}`))
	ws = d.work(d.w.take())
	if len(ws) != 1 || ws[0].Node.ID != "B" || string(ws[0].Input) != `{"a":2}` {
		t.Fatalf("work after A: %+v", ws)
	}
	d.mustHandle(d.result(ws[0], nil, `{"b":3}`))
	if got := d.w.take(); len(got) != 0 {
		t.Fatalf("an ended execution produced %d more record(s)", len(got))
	}
	e := d.st.execution("x1")
	if e == nil || e.Status != envelope.StatusSucceeded || e.FinishedAt == nil {
		t.Fatalf("execution at the end: %+v", e)
	}
	var got []string
	for _, s := range d.st.stepsOf("x1") {
		got = append(got, s.NodeID+":"+s.Status)
	}
	sort.Strings(got)
	if strings.Join(got, ",") != "A:succeeded,B:succeeded,t:succeeded" {
		t.Fatalf("steps %v", got)
	}
}

func TestDecideRedeliveredIngestProducesNothingTwice(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.twoSteps()
	m := d.ingest(f, "x1")
	d.mustHandle(m)
	if n := len(d.w.take()); n != 1 {
		t.Fatalf("first delivery produced %d records", n)
	}
	d.mustHandle(m)
	if n := len(d.w.take()); n != 0 {
		t.Fatalf("a redelivery after the records were produced produced %d more", n)
	}
}

func TestDecideRedeliveryAfterAFailedProduceProducesTheStoredWork(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.twoSteps()
	m := d.ingest(f, "x1")
	d.w.fail = 1
	if err := d.handle(m); !errors.Is(err, errBrokerDown) {
		t.Fatalf("handle with the broker down: %v, want the produce error (no commit)", err)
	}
	d.mustHandle(m)
	ws := d.work(d.w.take())
	if len(ws) != 1 || ws[0].Node.ID != "A" {
		t.Fatalf("the redelivery produced %+v, want the first delivery's work item", ws)
	}
	d.mustHandle(m)
	if n := len(d.w.take()); n != 0 {
		t.Fatalf("a third delivery produced %d records", n)
	}
}

func TestDecideDuplicateResultChangesNothing(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.twoSteps()
	d.mustHandle(d.ingest(f, "x1"))
	a := d.work(d.w.take())[0]
	res := d.result(a, nil, `{}`)
	d.mustHandle(res)
	if n := len(d.w.take()); n != 1 {
		t.Fatalf("result of A produced %d records", n)
	}
	d.mustHandle(res)
	if n := len(d.w.take()); n != 0 {
		t.Fatalf("the duplicate result produced %d records", n)
	}
}

func TestDecideFailedStepFailsTheExecution(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.twoSteps()
	d.mustHandle(d.ingest(f, "x1"))
	a := d.work(d.w.take())[0]
	d.mustHandle(d.result(a, &envelope.Error{Code: "http_500", Message: "partner down"}, ""))
	if n := len(d.w.take()); n != 0 {
		t.Fatalf("a failed step produced %d records", n)
	}
	e := d.st.execution("x1")
	if e == nil || e.Status != envelope.StatusFailed || e.Error == nil || e.Error.Code != "http_500" {
		t.Fatalf("execution %+v", e)
	}
}

func TestDecideUntrustedRecordsGoToTheDeadLetters(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.twoSteps()
	d.mustHandle(d.ingest(f, "x1"))
	a := d.work(d.w.take())[0]
	other := a
	other.Revision = 7
	wrongTrigger := envelope.Ingest{ExecutionID: "x3", FlowID: f.ID, Revision: 1, Trigger: "kafka", Input: json.RawMessage(`1`)}
	for _, c := range []struct {
		name   string
		m      kafka.Message
		reason string
		execID string
	}{
		{"unsigned ingest", d.record(envelope.TopicIngest, envelope.Ingest{ExecutionID: "x2", FlowID: f.ID, Revision: 1, Trigger: "webhook"}, false), "record authentication failed", "x2"},
		{"undecodable", d.signed(kafka.Message{Topic: d.r.topicIngest, Value: []byte("{")}), "undecodable ingest record", ""},
		{"unknown flow", d.record(envelope.TopicIngest, envelope.Ingest{ExecutionID: "x4", FlowID: "nope", Revision: 1, Trigger: "webhook"}, true), "flow nope revision 1", "x4"},
		{"trigger of another kind", d.record(envelope.TopicIngest, wrongTrigger, true), `trigger "kafka"`, "x3"},
		{"result of another revision", d.result(other, nil, `{}`), "revision 7", ""},
		{"result of an unknown execution", d.record(envelope.TopicResults, envelope.Result{ExecutionID: "x9", FlowID: f.ID, Revision: 1, NodeID: "A", Token: "t9"}, true), "unknown execution x9", "x9"},
	} {
		d.mustHandle(c.m)
		reasons := d.deadLetters(d.w.take())
		if len(reasons) != 1 || !strings.Contains(reasons[0], c.reason) {
			t.Errorf("%s: dead letters %q, want one naming %q", c.name, reasons, c.reason)
		}
		if c.execID != "" && d.st.execution(c.execID) != nil {
			t.Errorf("%s: created execution %s", c.name, c.execID)
		}
	}
	if e := d.st.execution("x1"); e == nil || e.Status != envelope.StatusRunning {
		t.Fatalf("the running execution changed: %+v", e)
	}
}

func TestDecideWorkTooLargeForKafkaFailsTheExecution(t *testing.T) {
	d := newDecisions(t, Config{MaxRecordBytes: 600})
	f := d.twoSteps()
	m := d.record(envelope.TopicIngest, envelope.Ingest{ExecutionID: "x1", FlowID: f.ID, Revision: 1, Trigger: "webhook",
		Input: json.RawMessage(`"` + strings.Repeat("x", 1000) + `"`)}, true)
	d.mustHandle(m)
	if n := len(d.w.take()); n != 0 {
		t.Fatalf("produced %d records, want none", n)
	}
	e := d.st.execution("x1")
	if e == nil || e.Status != envelope.StatusFailed || e.Error == nil || e.Error.Code != CodeRecordTooLarge {
		t.Fatalf("execution %+v", e)
	}
}

func TestDecideCurrentRevisionWhenTheRecordNamesNone(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.twoSteps()
	f2 := *f
	f2.Graph.Nodes, f2.Graph.Edges = f2.Graph.Nodes[:2], f2.Graph.Edges[:1] // revision 2 ends after A
	d.st.save(f2)
	d.mustHandle(d.record(envelope.TopicIngest, envelope.Ingest{ExecutionID: "x1", FlowID: f.ID, Trigger: "webhook", Input: json.RawMessage(`1`)}, true))
	a := d.work(d.w.take())[0]
	if a.Revision != 2 {
		t.Fatalf("work runs revision %d, want the current 2", a.Revision)
	}
	d.mustHandle(d.result(a, nil, `{}`))
	if e := d.st.execution("x1"); e == nil || e.Status != envelope.StatusSucceeded {
		t.Fatalf("execution %+v", e)
	}
}

func retryable(code string) *envelope.Error {
	return &envelope.Error{Code: code, Message: "partner unavailable", Retryable: true}
}

// produceDue runs the delay queue once, as if its records were due.
func (d *decisions) produceDue(at time.Time) {
	d.t.Helper()
	d.r.cfg.Now = func() time.Time { return at }
	if _, err := d.r.delays.drain(context.Background()); err != nil {
		d.t.Fatal(err)
	}
}

func TestDecideRetryableFailureWaitsInTheDelayQueue(t *testing.T) {
	at := time.Unix(5000, 0).UTC()
	d := newDecisions(t, Config{Now: func() time.Time { return at }})
	f := d.twoSteps()
	d.mustHandle(d.ingest(f, "x1"))
	a := d.work(d.w.take())[0]
	d.mustHandle(d.result(a, retryable("http_5xx"), ""))
	if n := len(d.w.take()); n != 0 {
		t.Fatalf("a retried step produced %d records at once; its next attempt must wait", n)
	}
	waiting := d.st.waiting()
	if len(waiting) != 1 {
		t.Fatalf("delay queue holds %d records, want the next attempt", len(waiting))
	}
	due := waiting[0].Record.Due
	// The default policy: 1s, ±10%.
	if wait := due.Sub(at); wait < 900*time.Millisecond || wait > 1100*time.Millisecond {
		t.Fatalf("next attempt due in %s, want about 1s", wait)
	}
	var steps []envelope.Step
	for _, s := range d.st.stepsOf("x1") {
		if s.NodeID == "A" {
			steps = append(steps, s)
		}
	}
	if len(steps) != 1 || steps[0].Status != envelope.StepRetrying || steps[0].Attempt != 2 || steps[0].RetryAt == nil ||
		len(steps[0].Attempts) != 1 || steps[0].Attempts[0].Error.Code != "http_5xx" {
		t.Fatalf("step of A while it waits: %+v", steps)
	}
	if e := d.st.execution("x1"); e.Status != envelope.StatusRunning {
		t.Fatalf("execution %s while its step waits", e.Status)
	}

	d.produceDue(due)
	ws := d.work(d.w.take())
	if len(ws) != 1 || ws[0].Attempt != 2 || ws[0].Token != a.Token || string(ws[0].Input) != string(a.Input) ||
		ws[0].IdempotencyKey != a.IdempotencyKey || !ws[0].Deadline.After(due) {
		t.Fatalf("due work %+v, want attempt 2 of the same activation", ws)
	}
	if len(d.st.waiting()) != 0 {
		t.Fatal("the produced record is still in the delay queue")
	}
	d.mustHandle(d.result(ws[0], retryable("http_5xx"), ""))
	d.produceDue(d.st.waiting()[0].Record.Due)
	ws = d.work(d.w.take())
	if len(ws) != 1 || ws[0].Attempt != 3 {
		t.Fatalf("third attempt %+v", ws)
	}
	d.mustHandle(d.result(ws[0], nil, `{"ok":true}`))
	b := d.work(d.w.take())
	if len(b) != 1 || b[0].Node.ID != "B" {
		t.Fatalf("after A succeeded: %+v", b)
	}
	for _, s := range d.st.stepsOf("x1") {
		if s.NodeID == "A" && (s.Status != envelope.StepSucceeded || s.Attempt != 3 || len(s.Attempts) != 2 || s.Error != nil) {
			t.Fatalf("step of A at the end: %+v", s)
		}
	}
}

func TestDecideRetriesEndWithTheFailure(t *testing.T) {
	d := newDecisions(t, Config{Retry: flowdoc.RetryPolicy{MaxAttempts: 2, Backoff: backoff.Policy{Initial: time.Millisecond}}})
	f := d.twoSteps()
	d.mustHandle(d.ingest(f, "x1"))
	a := d.work(d.w.take())[0]
	d.mustHandle(d.result(a, retryable("http_5xx"), ""))
	d.produceDue(d.st.waiting()[0].Record.Due)
	a2 := d.work(d.w.take())[0]
	d.mustHandle(d.result(a2, retryable("http_5xx"), ""))
	if len(d.st.waiting()) != 0 || len(d.w.take()) != 0 {
		t.Fatal("retried beyond maxAttempts")
	}
	e := d.st.execution("x1")
	if e.Status != envelope.StatusFailed || e.Error == nil || e.Error.Code != "http_5xx" {
		t.Fatalf("execution %+v", e)
	}
	for _, s := range d.st.stepsOf("x1") {
		if s.NodeID == "A" && (s.Status != envelope.StepFailed || s.Attempt != 2 || len(s.Attempts) != 1) {
			t.Fatalf("step of A: %+v", s)
		}
	}
}

func TestDecideRetryPolicyLayers(t *testing.T) {
	jitter := 0.0
	for _, c := range []struct {
		name     string
		flow     *flowdoc.Retry
		node     *flowdoc.Retry
		err      *envelope.Error
		retried  bool
		minDelay time.Duration
		maxDelay time.Duration
	}{
		{"not retryable", nil, nil, &envelope.Error{Code: "http_4xx"}, false, 0, 0},
		{"flow's interval", &flowdoc.Retry{InitialInterval: "5s", Jitter: &jitter}, nil, retryable("x"), true, 5 * time.Second, 5 * time.Second},
		{"node over flow", &flowdoc.Retry{InitialInterval: "5s", Jitter: &jitter}, &flowdoc.Retry{InitialInterval: "2s"}, retryable("x"), true, 2 * time.Second, 2 * time.Second},
		{"former field name", nil, &flowdoc.Retry{Backoff: "3s", Jitter: &jitter}, retryable("x"), true, 3 * time.Second, 3 * time.Second},
		{"code not listed", &flowdoc.Retry{On: []string{"http_429"}}, nil, retryable("http_5xx"), false, 0, 0},
		{"code listed", &flowdoc.Retry{On: []string{"http_429"}, Jitter: &jitter}, nil, retryable("http_429"), true, time.Second, time.Second},
		{"one attempt", nil, &flowdoc.Retry{MaxAttempts: 1}, retryable("x"), false, 0, 0},
		{"Retry-After longer than the backoff", nil, &flowdoc.Retry{Jitter: &jitter},
			&envelope.Error{Code: "http_429", Retryable: true, RetryAfterMs: 7000}, true, 7 * time.Second, 7 * time.Second},
	} {
		t.Run(c.name, func(t *testing.T) {
			d := newDecisions(t, Config{})
			at := time.Unix(5000, 0).UTC()
			d.r.cfg.Now = func() time.Time { return at }
			f := d.twoSteps()
			doc := *f
			doc.Retry = c.flow
			doc.Graph.Nodes = slices.Clone(f.Graph.Nodes)
			doc.Graph.Nodes[1].Retry = c.node
			f = d.st.save(doc)
			d.mustHandle(d.ingest(f, "x1"))
			a := d.work(d.w.take())[0]
			d.mustHandle(d.result(a, c.err, ""))
			waiting := d.st.waiting()
			if !c.retried {
				if len(waiting) != 0 || d.st.execution("x1").Status != envelope.StatusFailed {
					t.Fatalf("retried: %+v", waiting)
				}
				return
			}
			if len(waiting) != 1 {
				t.Fatal("not retried")
			}
			if wait := waiting[0].Record.Due.Sub(at); wait < c.minDelay || wait > c.maxDelay {
				t.Fatalf("next attempt in %s, want %s..%s", wait, c.minDelay, c.maxDelay)
			}
		})
	}
}

func TestDecideNodeTimeoutSetsTheDeadline(t *testing.T) {
	d := newDecisions(t, Config{})
	at := time.Unix(5000, 0).UTC()
	d.r.cfg.Now = func() time.Time { return at }
	f := d.twoSteps()
	doc := *f
	doc.Graph.Nodes = slices.Clone(f.Graph.Nodes)
	doc.Graph.Nodes[1].Timeout = "90s"
	f = d.st.save(doc)
	d.mustHandle(d.ingest(f, "x1"))
	if w := d.work(d.w.take())[0]; !w.Deadline.Equal(at.Add(90 * time.Second)) {
		t.Fatalf("deadline %s, want 90s after dispatch", w.Deadline)
	}
}

// A retry of a failed execution runs only what failed: the step that succeeded there is
// completed with its recorded output, the failed one runs again with the same input and
// idempotency key, and asking twice starts the retry once.
func TestDecideRetryOfAFailedExecutionRunsOnlyWhatFailed(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.twoSteps()
	d.mustHandle(d.ingest(f, "x1"))
	a := d.work(d.w.take())[0]
	d.mustHandle(d.result(a, nil, `{"a":2}`))
	b := d.work(d.w.take())[0]
	d.mustHandle(d.result(b, &envelope.Error{Code: "http_4xx", Message: "bad request"}, ""))
	if e := d.st.execution("x1"); e.Status != envelope.StatusFailed {
		t.Fatalf("x1 %s", e.Status)
	}

	ev := events.Event{Type: events.ExecutionRetry, FlowID: f.ID, ExecutionID: "x1", RetryID: "r1"}
	for range 2 {
		if err := d.r.confirm(context.Background(), ev); err != nil {
			t.Fatal(err)
		}
	}
	ws := d.work(d.w.take())
	if len(ws) != 1 || ws[0].Node.ID != "B" || ws[0].ExecutionID != "r1" || ws[0].Token != b.Token ||
		string(ws[0].Input) != `{"a":2}` || ws[0].IdempotencyKey != b.IdempotencyKey {
		t.Fatalf("retry work %+v, want B once with x1's input and key", ws)
	}
	r1 := d.st.execution("r1")
	if r1 == nil || r1.RetryOf != "x1" || r1.Status != envelope.StatusRunning {
		t.Fatalf("retry execution %+v", r1)
	}
	for _, s := range d.st.stepsOf("r1") {
		if s.NodeID == "A" && (!s.Replayed || string(s.Output) != `{"a":2}`) {
			t.Fatalf("A in the retry: %+v", s)
		}
	}
	d.mustHandle(d.result(ws[0], nil, `{"b":3}`))
	if e := d.st.execution("r1"); e.Status != envelope.StatusSucceeded {
		t.Fatalf("retry ended %s %v", e.Status, e.Error)
	}
}

// When an execution fails, its flow's onError handler runs in the same execution with the
// failure as input; the execution then ends failed with the first error.
func TestDecideOnErrorHandlerRunsWhenTheExecutionFails(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.st.save(flowdoc.Flow{ID: "f1", Name: "handled", Status: flowdoc.StatusActive,
		Owners:  []flowdoc.Owner{{ID: "u1", Type: flowdoc.OwnerUser}},
		OnError: &flowdoc.OnError{Node: "notify"},
		Graph: flowdoc.Graph{
			Nodes: []flowdoc.Node{{ID: "t", Type: flowdoc.TypeWebhook},
				{ID: "A", Type: flowdoc.TypeAction, Connector: "c", Action: "a"},
				{ID: "B", Type: flowdoc.TypeAction, Connector: "c", Action: "b"},
				{ID: "notify", Type: flowdoc.TypeAction, Connector: "c", Action: "n"},
				{ID: "log", Type: flowdoc.TypeAction, Connector: "c", Action: "l"}},
			Edges: []flowdoc.Edge{{Source: "t", Target: "A"}, {Source: "t", Target: "B"}, {Source: "notify", Target: "log"}},
		}})
	d.mustHandle(d.ingest(f, "x1"))
	ws := d.work(d.w.take())
	if len(ws) != 2 {
		t.Fatalf("work %+v", ws)
	}
	a, b := ws[0], ws[1]
	if a.Node.ID != "A" {
		a, b = b, a
	}
	d.mustHandle(d.result(a, &envelope.Error{Code: "http_4xx", Message: "refused"}, ""))
	h := d.work(d.w.take())
	if len(h) != 1 || h[0].Node.ID != "notify" {
		t.Fatalf("after the failure: %+v, want the handler's first node", h)
	}
	var in struct {
		Error     envelope.Error `json:"error"`
		Execution struct {
			ID     string `json:"id"`
			FlowID string `json:"flowId"`
		} `json:"execution"`
	}
	if err := json.Unmarshal(h[0].Input, &in); err != nil || in.Error.Code != "http_4xx" || in.Execution.ID != "x1" || in.Execution.FlowID != "f1" {
		t.Fatalf("handler input %s (%v)", h[0].Input, err)
	}
	if e := d.st.execution("x1"); e.Status != envelope.StatusRunning {
		t.Fatalf("execution %s while its handler runs", e.Status)
	}
	// B, still running when A failed, finishes meanwhile: recorded, nothing more.
	d.mustHandle(d.result(b, nil, `{}`))
	if n := len(d.w.take()); n != 0 {
		t.Fatalf("the failed graph's branch produced %d records", n)
	}
	d.mustHandle(d.result(h[0], nil, `{"sent":true}`))
	l := d.work(d.w.take())
	if len(l) != 1 || l[0].Node.ID != "log" {
		t.Fatalf("handler's second node: %+v", l)
	}
	d.mustHandle(d.result(l[0], nil, `{}`))
	e := d.st.execution("x1")
	if e.Status != envelope.StatusFailed || e.Error == nil || e.Error.Code != "http_4xx" {
		t.Fatalf("execution at the end: %+v", e)
	}
	status := map[string]string{}
	for _, s := range d.st.stepsOf("x1") {
		status[s.NodeID] = s.Status
	}
	if status["A"] != envelope.StepFailed || status["notify"] != envelope.StepSucceeded || status["log"] != envelope.StepSucceeded || status["B"] != envelope.StepSucceeded {
		t.Fatalf("steps %v", status)
	}
}

// A record asking to retry an execution of another flow, or one that is gone, replays nothing:
// it is dead-lettered.
func TestDecideRetryOfAnotherFlowsExecutionIsRefused(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.twoSteps()
	g := d.st.save(flowdoc.Flow{ID: "f2", Name: "other", Owners: f.Owners, Graph: f.Graph})
	d.mustHandle(d.ingest(g, "y1"))
	d.w.take()
	for _, of := range []string{"y1", "gone"} {
		d.mustHandle(d.record(envelope.TopicIngest, envelope.Ingest{ExecutionID: "r-" + of, FlowID: f.ID, Revision: 1,
			Trigger: "webhook", Input: json.RawMessage(`{}`), RetryOf: of}, true))
		reasons := d.deadLetters(d.w.take())
		if len(reasons) != 1 || d.st.execution("r-"+of) != nil {
			t.Fatalf("retry of %s: dead letters %q", of, reasons)
		}
	}
}

// parkingFlow is twoSteps whose steps park on the dead-letter topic after two attempts.
func (d *decisions) parkingFlow() *flowdoc.Flow {
	f := d.twoSteps()
	f.Retry = &flowdoc.Retry{MaxAttempts: 2, InitialInterval: "1ms", Exhausted: flowdoc.ExhaustedDeadLetter}
	return d.st.save(*f)
}

// parkA runs execution id of f until A's retries ran out, and returns A's parked work item as
// the dead letter holds it, and when its expiry is due.
func (d *decisions) parkA(f *flowdoc.Flow, id string) (envelope.Work, kafka.Message, time.Time) {
	d.t.Helper()
	d.mustHandle(d.ingest(f, id))
	a := d.work(d.w.take())[0]
	d.mustHandle(d.result(a, retryable("http_5xx"), ""))
	d.produceDue(d.st.waiting()[0].Record.Due)
	a2 := d.work(d.w.take())[0]
	d.mustHandle(d.result(a2, retryable("http_5xx"), ""))
	out := d.w.take()
	if reasons := d.deadLetters(out); len(reasons) != 1 || !strings.Contains(reasons[0], "retries exhausted") {
		d.t.Fatalf("after the last attempt: dead letters %q", reasons)
	}
	orig, _, ok := kafkax.Original(out[0])
	if !ok || orig.Topic != d.r.cfg.Kafka.Topic(envelope.PoolTopic("")) {
		d.t.Fatalf("the dead letter's original: %+v", orig)
	}
	orig.Topic = d.r.cfg.Kafka.Topic(envelope.PoolTopic(""))
	ws := d.work([]kafka.Message{orig}) // signed by a flowd role: replayable
	waiting := d.st.waiting()
	if len(waiting) != 1 || waiting[0].Record.Topic != d.r.cfg.Kafka.Topic(envelope.TopicResults) {
		d.t.Fatalf("delay queue after parking: %+v", waiting)
	}
	return ws[0], orig, waiting[0].Record.Due
}

// A step whose retries ran out, in a flow that says deadLetter, waits on flowd.dlq: its
// execution keeps running, replaying the work item runs the step again, and an unreplayed one
// fails when the park times out, exactly once.
func TestDecideExhaustedRetriesParkTheStepOnTheDeadLetterTopic(t *testing.T) {
	at := time.Unix(5000, 0).UTC()
	d := newDecisions(t, Config{Now: func() time.Time { return at }, ParkTimeout: time.Hour})
	f := d.parkingFlow()
	w, orig, expiry := d.parkA(f, "x1")
	if w.Attempt != 3 || !w.Deadline.IsZero() || w.TimeoutMs != DefaultStepTimeout.Milliseconds() {
		t.Fatalf("parked work item: attempt %d deadline %s timeout %dms; want attempt 3, its deadline set when it runs", w.Attempt, w.Deadline, w.TimeoutMs)
	}
	var pk envelope.Parked
	for _, h := range orig.Headers {
		if h.Key == envelope.HeaderParked {
			_ = json.Unmarshal(h.Value, &pk)
		}
	}
	if pk != (envelope.Parked{ExecutionID: "x1", FlowID: f.ID, Revision: f.Revision, NodeID: "A", Token: w.Token, Attempt: 3}) {
		t.Fatalf("parked header %+v", pk)
	}
	if wait := expiry.Sub(at); wait < time.Hour || wait > time.Hour+time.Second {
		t.Fatalf("expiry due %s after the execution started, want the park timeout after the last attempt", wait)
	}
	if e := d.st.execution("x1"); e.Status != envelope.StatusRunning {
		t.Fatalf("execution %s while its step is parked", e.Status)
	}
	for _, s := range d.st.stepsOf("x1") {
		if s.NodeID == "A" && (s.Status != envelope.StepDeadLettered || s.Attempt != 2 || len(s.Attempts) != 2 || s.Error == nil) {
			t.Fatalf("parked step of A: %+v", s)
		}
	}

	// Replayed after the fix: attempt 3 succeeds and the execution goes on to B.
	d.mustHandle(d.result(w, nil, `{"ok":true}`))
	if b := d.work(d.w.take()); len(b) != 1 || b[0].Node.ID != "B" {
		t.Fatalf("after the replayed step succeeded: %+v", b)
	}
	// The expiry, due later, finds nothing pending: nothing changes.
	d.produceDue(expiry)
	exp := d.w.take()
	if len(exp) != 1 {
		t.Fatalf("expiry produced %d records", len(exp))
	}
	d.st.forgetMarkers("x1")
	d.mustHandle(exp[0])
	for _, s := range d.st.stepsOf("x1") {
		if s.NodeID == "A" && (s.Status != envelope.StepSucceeded || s.Attempt != 3) {
			t.Fatalf("step of A after a late expiry: %+v", s)
		}
	}
	if e := d.st.execution("x1"); e.Status != envelope.StatusRunning {
		t.Fatalf("execution %s after a late expiry", e.Status)
	}
}

func TestDecideParkedStepFailsWhenNobodyActsOnIt(t *testing.T) {
	d := newDecisions(t, Config{ParkTimeout: time.Hour})
	f := d.parkingFlow()
	_, _, expiry := d.parkA(f, "x1")
	d.produceDue(expiry)
	d.mustHandle(d.w.take()[0])
	e := d.st.execution("x1")
	if e.Status != envelope.StatusFailed || e.Error == nil || e.Error.Code != envelope.CodeDeadLetterExpired {
		t.Fatalf("execution %+v, want failed with %s", e, envelope.CodeDeadLetterExpired)
	}
	for _, s := range d.st.stepsOf("x1") {
		if s.NodeID == "A" && (s.Status != envelope.StepFailed || s.Attempt != 3 || len(s.Attempts) != 2) {
			t.Fatalf("step of A: %+v", s)
		}
	}
}

// A replay that fails again parks the step again; the first park's expiry, arriving once its
// marker is gone, is a late copy of an attempt already recorded and changes nothing.
func TestDecideReplayThatFailsParksAgain(t *testing.T) {
	d := newDecisions(t, Config{ParkTimeout: time.Hour})
	f := d.parkingFlow()
	w, _, _ := d.parkA(f, "x1")
	d.mustHandle(d.result(w, retryable("http_5xx"), ""))
	out := d.w.take()
	if reasons := d.deadLetters(out); len(reasons) != 1 {
		t.Fatalf("a replay that failed: dead letters %q", reasons)
	}
	orig, _, _ := kafkax.Original(out[0])
	if w2 := d.work([]kafka.Message{orig}); w2[0].Attempt != 4 {
		t.Fatalf("second park's work item is attempt %d, want 4", w2[0].Attempt)
	}
	var first kafka.Message
	for _, dl := range d.st.waiting() {
		var res envelope.Result
		if json.Unmarshal(dl.Record.Value, &res) == nil && res.Attempt == 3 {
			first = d.r.message(dl.Record)
		}
	}
	if first.Topic == "" {
		t.Fatal("the first park's expiry is not in the delay queue")
	}
	d.st.forgetMarkers("x1")
	d.mustHandle(first)
	if e := d.st.execution("x1"); e.Status != envelope.StatusRunning {
		t.Fatalf("execution %s after the first park's expiry; the second park still waits", e.Status)
	}
}

func TestRetryPolicyParks(t *testing.T) {
	t.Parallel()
	p := flowdoc.RetryOf(flowdoc.DefaultRetry, &flowdoc.Flow{Retry: &flowdoc.Retry{Exhausted: flowdoc.ExhaustedDeadLetter, On: []string{"http_5xx"}}},
		&flowdoc.Node{})
	for _, c := range []struct {
		code      string
		retryable bool
		attempt   int
		want      bool
	}{
		{"http_5xx", true, 3, true},   // ran out
		{"http_5xx", true, 2, false},  // retried instead
		{"http_5xx", false, 3, false}, // not retryable: the error port
		{"http_429", true, 3, false},  // not a code the policy retries
	} {
		if got := p.Parks(c.code, c.retryable, c.attempt); got != c.want {
			t.Errorf("Parks(%s, %v, %d) = %v", c.code, c.retryable, c.attempt, got)
		}
	}
	node := flowdoc.RetryOf(flowdoc.DefaultRetry, &flowdoc.Flow{Retry: &flowdoc.Retry{Exhausted: flowdoc.ExhaustedDeadLetter}},
		&flowdoc.Node{Retry: &flowdoc.Retry{Exhausted: flowdoc.ExhaustedFail}})
	if node.Parks("x", true, 3) {
		t.Error("a node's exhausted: fail does not override its flow's deadLetter")
	}
}

// scheduled is a flow started by a schedule of every second, saved as revision 1.
func (d *decisions) scheduled() *flowdoc.Flow {
	return d.st.save(flowdoc.Flow{ID: "s1", Name: "ticking", Status: flowdoc.StatusActive,
		Owners: []flowdoc.Owner{{ID: "u1", Type: flowdoc.OwnerUser}},
		Graph: flowdoc.Graph{
			Nodes: []flowdoc.Node{{ID: "t", Type: flowdoc.TypeSchedule, Config: map[string]any{"cron": "@every 1s", "input": map[string]any{"k": 1}}},
				{ID: "A", Type: flowdoc.TypeAction, Connector: "c", Action: "a"}},
			Edges: []flowdoc.Edge{{Source: "t", Target: "A"}},
		}})
}

// Two routers share a schedule: each tick is fired by one of them, its execution carries the
// tick, and firing a tick again starts nothing twice. A stopped flow's schedule fires no more.
func TestDecideScheduleFiresEachTickOnce(t *testing.T) {
	start := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	d := newDecisions(t, Config{Now: func() time.Time { return start }})
	other, err := New(Config{Store: d.st, Kafka: d.r.cfg.Kafka, Now: func() time.Time { return start }})
	if err != nil {
		t.Fatal(err)
	}
	ow := &fakeWriter{}
	other.useWriter(ow)
	f := d.scheduled()
	ctx := context.Background()
	if err := d.r.ensureSchedule(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := other.ensureSchedule(ctx, f); err != nil {
		t.Fatal(err)
	}
	var fired []kafka.Message
	for i := 1; i <= 3; i++ {
		at := start.Add(time.Duration(i) * time.Second)
		for _, r := range []*Router{d.r, other} {
			r.cfg.Now = func() time.Time { return at }
			if _, err := r.schedules.drain(ctx); err != nil {
				t.Fatal(err)
			}
		}
		fired = append(append(fired, d.w.take()...), ow.take()...)
		if len(fired) != i {
			t.Fatalf("after tick %d: %d ingest records", i, len(fired))
		}
	}
	seen := map[string]bool{}
	for i, m := range fired {
		var in envelope.Ingest
		if err := json.Unmarshal(m.Value, &in); err != nil {
			t.Fatal(err)
		}
		want := start.Add(time.Duration(i+1) * time.Second)
		if in.ScheduledAt == nil || !in.ScheduledAt.Equal(want) || in.ExecutionID != ScheduledExecutionID(f.ID, want) ||
			in.Trigger != "schedule" || seen[in.ExecutionID] {
			t.Fatalf("tick %d: %+v", i, in)
		}
		seen[in.ExecutionID] = true
		if string(in.Input) != `{"scheduledAt":"`+want.Format(time.RFC3339)+`","input":{"k":1}}` {
			t.Fatalf("tick input %s", in.Input)
		}
	}
	// The execution of a tick, started twice, runs once, and carries its tick.
	d.mustHandle(d.signed(fired[0]))
	d.mustHandle(d.signed(fired[0]))
	if ws := d.work(d.w.take()); len(ws) != 1 {
		t.Fatalf("a tick started %d steps", len(ws))
	}
	var first envelope.Ingest
	_ = json.Unmarshal(fired[0].Value, &first)
	if e := d.st.execution(first.ExecutionID); e == nil || e.ScheduledAt == nil || !e.ScheduledAt.Equal(*first.ScheduledAt) {
		t.Fatalf("tick's execution %+v", e)
	}

	stopped := *f
	stopped.Status = flowdoc.StatusInactive
	d.st.save(stopped)
	cur, _ := d.st.Flow(ctx, f.ID)
	if err := d.r.ensureSchedule(ctx, cur); err != nil {
		t.Fatal(err)
	}
	d.r.cfg.Now = func() time.Time { return start.Add(time.Minute) }
	if _, err := d.r.schedules.drain(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(d.w.take()); n != 0 {
		t.Fatalf("a stopped flow's schedule fired %d ticks", n)
	}
}

// Expressions see where an execution came from: a partner record's topic, key and headers,
// and a schedule's tick, on every step.
func TestDecideExecutionContextNamesItsSource(t *testing.T) {
	d := newDecisions(t, Config{})
	f := d.st.save(flowdoc.Flow{ID: "k1", Name: "partner", Status: flowdoc.StatusActive,
		Owners: []flowdoc.Owner{{ID: "u1", Type: flowdoc.OwnerUser}},
		Graph: flowdoc.Graph{
			Nodes: []flowdoc.Node{{ID: "t", Type: flowdoc.TypeKafka, Config: map[string]any{"topic": "orders"}},
				{ID: "A", Type: flowdoc.TypeAction, Connector: "c", Action: "a"},
				{ID: "B", Type: flowdoc.TypeAction, Connector: "c", Action: "b"}},
			Edges: []flowdoc.Edge{{Source: "t", Target: "A"}, {Source: "A", Target: "B"}},
		}})
	src := &envelope.KafkaSource{Topic: "orders", Partition: 2, Offset: 7, Key: "acme", Headers: map[string]string{"type": "order.created"}}
	d.mustHandle(d.record(envelope.TopicIngest, envelope.Ingest{ExecutionID: "x1", FlowID: f.ID, Revision: f.Revision,
		Trigger: "kafka", ReceivedAt: time.Unix(1000, 0).UTC(), Input: json.RawMessage(`{}`), Source: src}, true))
	a := d.work(d.w.take())[0]
	d.mustHandle(d.result(a, nil, `{"ok":true}`))
	b := d.work(d.w.take())[0]
	for _, w := range []envelope.Work{a, b} {
		var env struct {
			Source envelope.KafkaSource `json:"source"`
		}
		if err := json.Unmarshal(w.Context["execution"], &env); err != nil || env.Source.Key != "acme" ||
			env.Source.Headers["type"] != "order.created" || env.Source.Offset != 7 {
			t.Fatalf("step %s sees execution %s (%v)", w.Node.ID, w.Context["execution"], err)
		}
	}
}
