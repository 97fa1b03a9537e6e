package router_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/outbox"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
	"github.com/flowd/flowd/router"
)

// harness runs a Router against the real broker and redis-server and plays the runner pool
// itself: it reads flowd.steps.default and answers with Results.
type harness struct {
	t    *testing.T
	ctx  context.Context
	kcfg kafkax.Config
	// partners names the partner topics, outside kcfg's prefix.
	partners kafkax.Config
	st       *store.Store
	w        *kafkax.Producer
	group    string
	works    *collector
	events   *collector
	dlq      *collector
}

func newHarness(t *testing.T, before func(h *harness)) *harness {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	rdb := testrig.RedisClient(t)
	h := &harness{
		t: t, ctx: ctx,
		kcfg:  kafkax.Config{Brokers: testrig.Kafka(t), TopicPrefix: testrig.Unique("t") + ".", Partitions: 1, RecordKeys: testrig.RecordKeys()},
		st:    store.New(rdb, testrig.Unique("t")+":"),
		group: testrig.Unique("router-"),
	}
	if err := kafkax.EnsureTopics(ctx, h.kcfg, envelope.TopicIngest, envelope.TopicResults, envelope.TopicDLQ,
		events.TopicName, envelope.PoolTopic("")); err != nil {
		t.Fatal(err)
	}
	// Partner topics live outside flowd's prefix: those inside it are refused.
	h.partners = kafkax.Config{Brokers: h.kcfg.Brokers, TopicPrefix: testrig.Unique("partner-") + ".", Partitions: 1}
	if err := kafkax.EnsureTopics(ctx, h.partners, "partner"); err != nil {
		t.Fatal(err)
	}
	h.w = kafkax.NewProducer(h.kcfg)
	t.Cleanup(func() { _ = h.w.Close() })
	h.works = h.collect(envelope.PoolTopic(""))
	h.events = h.collect(events.TopicName)
	h.dlq = h.collect(envelope.TopicDLQ)
	if before != nil {
		before(h)
	}

	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	relay := outbox.New(h.st, events.NewKafkaPublisher(h.w, h.kcfg), log)
	rt, err := router.New(router.Config{Kafka: h.kcfg, Store: h.st, Log: log, GroupID: h.group, Relay: relay,
		// Long enough that lifecycle changes in these tests are driven by events, not the timer.
		ReconcileInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go relay.Run(runCtx)
	go func() { done <- rt.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("router: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Error("router did not stop within 30s")
		}
	})
	select {
	case <-rt.Ready():
	case err := <-done:
		t.Fatalf("router stopped before it was ready: %v", err)
	case <-ctx.Done():
		t.Fatal("router not ready in time")
	}
	return h
}

// collector keeps every record of a one-partition topic, from the beginning.
type collector struct {
	mu   sync.Mutex
	msgs []kafka.Message
}

func (h *harness) collect(name string) *collector {
	c := &collector{}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: h.kcfg.Brokers, Topic: h.kcfg.Topic(name), Partition: 0,
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond})
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := r.FetchMessage(ctx)
			if err != nil {
				return
			}
			c.mu.Lock()
			c.msgs = append(c.msgs, m)
			c.mu.Unlock()
		}
	}()
	h.t.Cleanup(func() { cancel(); <-done; _ = r.Close() })
	return c
}

func (c *collector) all() []kafka.Message {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]kafka.Message(nil), c.msgs...)
}

// eventually polls cond until it holds or the deadline passes.
func (h *harness) eventually(what string, cond func() (bool, string)) {
	h.t.Helper()
	deadline := time.Now().Add(45 * time.Second)
	for {
		ok, state := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) || h.ctx.Err() != nil {
			h.t.Fatalf("timed out waiting for %s (last: %s)", what, state)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (h *harness) createFlow(f *flowdoc.Flow) {
	h.t.Helper()
	now := time.Now().UTC()
	f.ID, f.Revision, f.CreatedAt, f.UpdatedAt = identity.NewID(), 1, &now, &now
	if f.Status == "" {
		f.Status = flowdoc.StatusActive
	}
	f.Owners = []flowdoc.Owner{{ID: "u1", Type: flowdoc.OwnerUser}}
	if probs := flowdoc.Validate(f, flowdoc.Options{}); len(probs) > 0 {
		h.t.Fatalf("test flow is invalid: %v", probs)
	}
	if err := h.st.CreateFlow(h.ctx, f); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) produce(topic string, key string, value any, headers ...kafka.Header) {
	h.t.Helper()
	raw, ok := value.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(value); err != nil {
			h.t.Fatal(err)
		}
	}
	h.produceSigned(kafka.Message{Topic: topic, Key: []byte(key), Value: raw, Headers: headers}, true)
}

// produceSigned produces m, signed as a flowd role would when sign is set.
func (h *harness) produceSigned(m kafka.Message, sign bool) {
	h.t.Helper()
	if sign {
		h.kcfg.RecordKeys.Sign(&m)
	}
	if err := h.w.WriteMessages(h.ctx, m); err != nil {
		h.t.Fatal(err)
	}
}

func (h *harness) ingest(f *flowdoc.Flow, input string, sync bool) envelope.Ingest {
	h.t.Helper()
	in := envelope.Ingest{ExecutionID: testrig.Unique("x"), FlowID: f.ID, Revision: f.Revision,
		Trigger: envelope.TriggerWebhook, ReceivedAt: time.Now().UTC(), Input: json.RawMessage(input), Sync: sync}
	h.produce(h.kcfg.Topic(envelope.TopicIngest), in.ExecutionID, in) // keyed as ingest keys it
	return in
}

func (h *harness) workOf(execID string) []envelope.Work {
	var out []envelope.Work
	for _, m := range h.works.all() {
		var w envelope.Work
		if err := json.Unmarshal(m.Value, &w); err != nil {
			h.t.Fatalf("work is not JSON: %v", err)
		}
		if string(m.Key) != w.ExecutionID {
			h.t.Fatalf("work keyed %q, want its execution id %q", m.Key, w.ExecutionID)
		}
		if w.ExecutionID == execID {
			out = append(out, w)
		}
	}
	return out
}

// waitWork waits until execID has n work items for node and returns them.
func (h *harness) waitWork(execID, node string, n int) []envelope.Work {
	h.t.Helper()
	var got []envelope.Work
	h.eventually(fmt.Sprintf("%d work item(s) for %s of %s", n, node, execID), func() (bool, string) {
		got = got[:0]
		for _, w := range h.workOf(execID) {
			if w.Node.ID == node {
				got = append(got, w)
			}
		}
		return len(got) >= n, fmt.Sprintf("%d", len(got))
	})
	return got
}

func (h *harness) result(w envelope.Work, fail *envelope.Error, outputs ...string) envelope.Result {
	h.t.Helper()
	res := envelope.Result{ExecutionID: w.ExecutionID, FlowID: w.FlowID, Revision: w.Revision, NodeID: w.Node.ID,
		Token: w.Token, Attempt: w.Attempt, Error: fail, StartedAt: time.Now().UTC(), FinishedAt: time.Now().UTC()}
	for _, o := range outputs {
		res.Outputs = append(res.Outputs, envelope.Output{Data: json.RawMessage(o)})
	}
	h.produce(h.kcfg.Topic(envelope.TopicResults), w.ExecutionID, res)
	return res
}

func (h *harness) waitExecution(id, status string) *envelope.Execution {
	h.t.Helper()
	var e *envelope.Execution
	h.eventually("execution "+id+" "+status, func() (bool, string) {
		var err error
		e, err = h.st.Execution(h.ctx, id)
		if err != nil {
			return false, err.Error()
		}
		return e.Status == status, e.Status
	})
	return e
}

func (h *harness) steps(id string) map[string][]envelope.Step {
	h.t.Helper()
	steps, err := h.st.ExecutionSteps(h.ctx, id)
	if err != nil {
		h.t.Fatal(err)
	}
	out := map[string][]envelope.Step{}
	for _, s := range steps {
		out[s.NodeID] = append(out[s.NodeID], s)
	}
	return out
}

func (h *harness) waitStats(flowID string, want store.StatsBucket) {
	h.t.Helper()
	h.eventually("stats of "+flowID, func() (bool, string) {
		b, err := h.st.FlowStats(h.ctx, flowID, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
		if err != nil {
			return false, err.Error()
		}
		var sum store.StatsBucket
		for _, x := range b {
			sum.Success += x.Success
			sum.Error += x.Error
			sum.Ignored += x.Ignored
		}
		return sum == want, fmt.Sprintf("%+v", sum)
	})
}

func act(id string) flowdoc.Node {
	return flowdoc.Node{ID: id, Type: flowdoc.TypeAction, Connector: "test", Action: "echo"}
}

func ctl(id, typ string, config map[string]any) flowdoc.Node {
	return flowdoc.Node{ID: id, Type: typ, Config: config}
}

func edge(src, dst string, port ...string) flowdoc.Edge {
	e := flowdoc.Edge{Source: src, Target: dst}
	if len(port) > 0 {
		e.Port = port[0]
	}
	return e
}

func webhookFlow(name string, nodes []flowdoc.Node, edges ...flowdoc.Edge) *flowdoc.Flow {
	return &flowdoc.Flow{Name: name, Graph: flowdoc.Graph{
		Nodes: append([]flowdoc.Node{{ID: "t", Type: flowdoc.TypeWebhook}}, nodes...), Edges: edges}}
}

func stepStatuses(steps map[string][]envelope.Step) map[string]string {
	out := map[string]string{}
	for id, list := range steps {
		var s []string
		for _, st := range list {
			s = append(s, st.Status)
		}
		sort.Strings(s)
		out[id] = strings.Join(s, ",")
	}
	return out
}

func TestRouter(t *testing.T) {
	h := newHarness(t, nil)

	t.Run("if takes each branch", func(t *testing.T) {
		h.t = t
		f := webhookFlow("if", []flowdoc.Node{ctl("c", flowdoc.TypeIf, map[string]any{"condition": "input.n > 1"}), act("A"), act("B")},
			edge("t", "c"), edge("c", "A", "true"), edge("c", "B", "false"))
		h.createFlow(f)
		for _, tc := range []struct{ input, node, other string }{{`{"n":5}`, "A", "B"}, {`{"n":0}`, "B", "A"}} {
			in := h.ingest(f, tc.input, false)
			w := h.waitWork(in.ExecutionID, tc.node, 1)[0]
			if string(w.Input) != tc.input || w.Attempt != 1 || w.IdempotencyKey == "" || w.Owners[0].ID != "u1" ||
				w.Deadline.IsZero() || !strings.Contains(string(w.Context["flow"]), f.ID) {
				t.Fatalf("work %+v", w)
			}
			h.result(w, nil, `{"done":true}`)
			e := h.waitExecution(in.ExecutionID, envelope.StatusSucceeded)
			if e.FlowID != f.ID || e.Revision != 1 || e.Trigger != envelope.TriggerWebhook || e.FinishedAt == nil {
				t.Fatalf("execution %+v", e)
			}
			got := stepStatuses(h.steps(in.ExecutionID))
			want := map[string]string{"t": "succeeded", "c": "succeeded", tc.node: "succeeded", tc.other: "skipped"}
			for k, v := range want {
				if got[k] != v {
					t.Fatalf("steps %v, want %v", got, want)
				}
			}
			if s := h.steps(in.ExecutionID)[tc.node][0]; string(s.Output) != `{"done":true}` || string(s.Input) != tc.input {
				t.Fatalf("step of %s: %+v", tc.node, s)
			}
		}
		h.waitStats(f.ID, store.StatsBucket{Success: 2})
		list, total, err := h.st.FlowExecutions(h.ctx, f.ID, envelope.StatusSucceeded, 0, 10)
		if err != nil || total != 2 || len(list) != 2 {
			t.Fatalf("flow executions: %d of %d, %v", len(list), total, err)
		}
	})

	t.Run("merge after fan-out fires once with both inputs", func(t *testing.T) {
		h.t = t
		f := webhookFlow("merge", []flowdoc.Node{act("A"), act("B"), ctl("m", flowdoc.TypeMerge, nil), act("C")},
			edge("t", "A"), edge("t", "B"), edge("A", "m"), edge("B", "m"), edge("m", "C"))
		h.createFlow(f)
		in := h.ingest(f, `{}`, false)
		wa, wb := h.waitWork(in.ExecutionID, "A", 1)[0], h.waitWork(in.ExecutionID, "B", 1)[0]
		h.result(wb, nil, `"b"`)
		h.result(wa, nil, `"a"`)
		wc := h.waitWork(in.ExecutionID, "C", 1)[0]
		if string(wc.Input) != `{"A":"a","B":"b"}` {
			t.Fatalf("C input %s", wc.Input)
		}
		h.result(wc, nil, `"c"`)
		h.waitExecution(in.ExecutionID, envelope.StatusSucceeded)
		if n := len(h.waitWork(in.ExecutionID, "C", 1)); n != 1 {
			t.Fatalf("C got %d work items", n)
		}
	})

	t.Run("split makes one work item per element", func(t *testing.T) {
		h.t = t
		f := webhookFlow("split", []flowdoc.Node{ctl("s", flowdoc.TypeSplit, map[string]any{"path": "input.items"}), act("A")},
			edge("t", "s"), edge("s", "A"))
		h.createFlow(f)
		in := h.ingest(f, `{"items":[{"i":1},{"i":2},{"i":3}]}`, false)
		ws := h.waitWork(in.ExecutionID, "A", 3)
		var inputs []string
		for _, w := range ws {
			inputs = append(inputs, string(w.Input))
			h.result(w, nil, string(w.Input))
		}
		sort.Strings(inputs)
		if strings.Join(inputs, " ") != `{"i":1} {"i":2} {"i":3}` {
			t.Fatalf("inputs %v", inputs)
		}
		h.waitExecution(in.ExecutionID, envelope.StatusSucceeded)
		if got := stepStatuses(h.steps(in.ExecutionID))["A"]; got != "succeeded,succeeded,succeeded" {
			t.Fatalf("steps of A: %s", got)
		}
	})

	t.Run("filter ends the execution filtered", func(t *testing.T) {
		h.t = t
		f := webhookFlow("filter", []flowdoc.Node{ctl("f", flowdoc.TypeFilter, map[string]any{"condition": "input.keep"}), act("A")},
			edge("t", "f"), edge("f", "A"))
		h.createFlow(f)
		in := h.ingest(f, `{"keep":false}`, false)
		h.waitExecution(in.ExecutionID, envelope.StatusFiltered)
		if n := len(h.workOf(in.ExecutionID)); n != 0 {
			t.Fatalf("%d work items for a filtered execution", n)
		}
		h.waitStats(f.ID, store.StatsBucket{Ignored: 1})
	})

	t.Run("a failure without an error edge fails the execution", func(t *testing.T) {
		h.t = t
		f := webhookFlow("fail", []flowdoc.Node{act("A"), act("B")}, edge("t", "A"), edge("A", "B"))
		h.createFlow(f)
		in := h.ingest(f, `{}`, false)
		h.result(h.waitWork(in.ExecutionID, "A", 1)[0], &envelope.Error{Code: "http_500", Message: "upstream failed"})
		e := h.waitExecution(in.ExecutionID, envelope.StatusFailed)
		if e.Error == nil || e.Error.Code != "http_500" {
			t.Fatalf("execution error %+v", e.Error)
		}
		if s := h.steps(in.ExecutionID)["A"][0]; s.Status != envelope.StepFailed || s.Error == nil {
			t.Fatalf("step of A: %+v", s)
		}
		h.waitStats(f.ID, store.StatsBucket{Error: 1})
	})

	t.Run("a failure follows the error port edge", func(t *testing.T) {
		h.t = t
		f := webhookFlow("error port", []flowdoc.Node{act("A"), act("B"), act("E")},
			edge("t", "A"), edge("A", "B"), edge("A", "E", flowdoc.PortError))
		h.createFlow(f)
		in := h.ingest(f, `{"v":1}`, false)
		h.result(h.waitWork(in.ExecutionID, "A", 1)[0], &envelope.Error{Code: "boom", Message: "no"})
		we := h.waitWork(in.ExecutionID, "E", 1)[0]
		if !strings.Contains(string(we.Input), `"code":"boom"`) || !strings.Contains(string(we.Input), `"input":{"v":1}`) {
			t.Fatalf("E input %s", we.Input)
		}
		h.result(we, nil, `"handled"`)
		h.waitExecution(in.ExecutionID, envelope.StatusSucceeded)
	})

	t.Run("sync reply from a respond node", func(t *testing.T) {
		h.t = t
		f := webhookFlow("respond", []flowdoc.Node{act("A"), ctl("r", flowdoc.TypeRespond, map[string]any{
			"status": 201, "body": map[string]any{"greeting": "hello {{ steps.A.name }}"}})},
			edge("t", "A"), edge("A", "r"))
		h.createFlow(f)
		in := h.ingest(f, `{}`, true)
		h.result(h.waitWork(in.ExecutionID, "A", 1)[0], nil, `{"name":"Ada"}`)
		r, err := h.st.WaitReply(h.ctx, in.ExecutionID, 30*time.Second)
		if err != nil || r.Status != 201 || string(r.Body) != `{"greeting":"hello Ada"}` {
			t.Fatalf("reply %+v, %v", r, err)
		}
		h.waitExecution(in.ExecutionID, envelope.StatusSucceeded)
	})

	t.Run("sync reply without a respond node is the last output", func(t *testing.T) {
		h.t = t
		f := webhookFlow("last output", []flowdoc.Node{act("A")}, edge("t", "A"))
		h.createFlow(f)
		in := h.ingest(f, `{}`, true)
		h.result(h.waitWork(in.ExecutionID, "A", 1)[0], nil, `{"x":1}`)
		r, err := h.st.WaitReply(h.ctx, in.ExecutionID, 30*time.Second)
		if err != nil || r.Status != 200 || string(r.Body) != `{"x":1}` {
			t.Fatalf("reply %+v, %v", r, err)
		}
	})

	t.Run("redelivered ingest and result records change nothing", func(t *testing.T) {
		h.t = t
		f := webhookFlow("dup", []flowdoc.Node{act("A"), act("B")}, edge("t", "A"), edge("A", "B"))
		h.createFlow(f)
		in := h.ingest(f, `{"n":1}`, false)
		h.produce(h.kcfg.Topic(envelope.TopicIngest), in.ExecutionID, in) // the same record again
		// A later record on the same partition is a barrier: once its work exists, the copy
		// before it has been processed.
		barrier := h.ingest(f, `{"n":2}`, false)
		wbar := h.waitWork(barrier.ExecutionID, "A", 1)[0]
		wa := h.waitWork(in.ExecutionID, "A", 1)
		if len(wa) != 1 {
			t.Fatalf("%d work items for A after a redelivered ingest, want 1", len(wa))
		}
		res := h.result(wa[0], nil, `"a"`)
		h.produce(h.kcfg.Topic(envelope.TopicResults), res.ExecutionID, res) // the same result again
		h.result(wbar, nil, `"a2"`)
		h.waitWork(barrier.ExecutionID, "B", 1)
		wb := h.waitWork(in.ExecutionID, "B", 1)
		if len(wb) != 1 {
			t.Fatalf("%d work items for B after a redelivered result, want 1", len(wb))
		}
		h.result(wb[0], nil, `"b"`)
		h.waitExecution(in.ExecutionID, envelope.StatusSucceeded)
		if got := stepStatuses(h.steps(in.ExecutionID)); got["A"] != "succeeded" || got["B"] != "succeeded" || got["t"] != "succeeded" {
			t.Fatalf("steps %v", got)
		}
		// Replaying the ending result after the end does not count the execution twice.
		h.produce(h.kcfg.Topic(envelope.TopicResults), wb[0].ExecutionID, envelope.Result{ExecutionID: wb[0].ExecutionID,
			FlowID: f.ID, Revision: 1, NodeID: "B", Token: wb[0].Token, Attempt: 1})
		wbar2 := h.waitWork(barrier.ExecutionID, "B", 1)[0]
		h.result(wbar2, nil, `"b2"`)
		h.waitExecution(barrier.ExecutionID, envelope.StatusSucceeded)
		h.waitStats(f.ID, store.StatsBucket{Success: 2})
	})

	t.Run("unusable records go to the dead letter topic", func(t *testing.T) {
		h.t = t
		before := len(h.dlq.all())
		h.produce(h.kcfg.Topic(envelope.TopicIngest), "x", []byte("not json"))
		h.produce(h.kcfg.Topic(envelope.TopicIngest), "gone", envelope.Ingest{ExecutionID: "x-gone", FlowID: "gone", Revision: 1})
		f := webhookFlow("dlq", []flowdoc.Node{act("A")}, edge("t", "A"))
		h.createFlow(f)
		// A webhook flow started by a record claiming another trigger kind.
		kind := envelope.Ingest{ExecutionID: testrig.Unique("x-kind"), FlowID: f.ID, Revision: 1, Trigger: envelope.TriggerKafka, Input: json.RawMessage(`{}`)}
		h.produce(h.kcfg.Topic(envelope.TopicIngest), f.ID, kind)
		// A well-formed ingest record for a real flow that no flowd role signed (a tenant's forgery).
		forged := envelope.Ingest{ExecutionID: testrig.Unique("x-forged"), FlowID: f.ID, Revision: 1, Trigger: envelope.TriggerWebhook,
			ReceivedAt: time.Unix(0, 0).UTC(), Input: json.RawMessage(`{"forged":true}`)}
		raw, _ := json.Marshal(forged)
		h.produceSigned(kafka.Message{Topic: h.kcfg.Topic(envelope.TopicIngest), Key: []byte(f.ID), Value: raw}, false)
		// A genuine one behind them on the same partition still runs.
		ok := h.ingest(f, `{"n":1}`, false)
		h.waitWork(ok.ExecutionID, "A", 1)

		h.eventually("4 dead letters", func() (bool, string) {
			n := len(h.dlq.all()) - before
			return n == 4, fmt.Sprint(n)
		})
		for _, id := range []string{kind.ExecutionID, forged.ExecutionID} {
			if _, err := h.st.Execution(h.ctx, id); !errors.Is(err, store.ErrNotFound) {
				t.Fatalf("execution %s exists (err %v): a refused ingest record started it", id, err)
			}
		}
		var reasons []string
		for _, m := range h.dlq.all()[before:] {
			for _, hd := range m.Headers {
				if hd.Key == kafkax.HeaderDLQReason {
					reasons = append(reasons, string(hd.Value))
				}
			}
		}
		joined := strings.Join(reasons, "\n")
		for _, want := range []string{"record authentication failed: record is not signed", `trigger "kafka"`} {
			if !strings.Contains(joined, want) {
				t.Fatalf("dead letter reasons %q lack %q", reasons, want)
			}
		}
		for _, m := range h.dlq.all()[before:] {
			reason := ""
			for _, hd := range m.Headers {
				if hd.Key == kafkax.HeaderDLQReason {
					reason = string(hd.Value)
				}
			}
			if reason == "" {
				t.Fatalf("dead letter %s has no reason", m.Value)
			}
		}
	})
}

// A kafka-trigger flow active when the router starts consumes its partner topic; stopping it
// stops consumption and is confirmed with flow.stopped; starting it again resumes where it
// stopped.
func TestPartnerTopic(t *testing.T) {
	var f *flowdoc.Flow
	var partner string
	h := newHarness(t, func(h *harness) {
		partner = h.partners.Topic("partner")
		f = &flowdoc.Flow{Name: "partner", Graph: flowdoc.Graph{
			Nodes: []flowdoc.Node{{ID: "k", Type: flowdoc.TypeKafka, Config: map[string]any{
				"topic": partner, "key": "k1", "headers": map[string]any{"source": "erp"}}}, act("A")},
			Edges: []flowdoc.Edge{edge("k", "A")}}}
		h.createFlow(f)
	})
	erp := kafka.Header{Key: "source", Value: []byte("erp")}

	h.produce(partner, "k1", map[string]any{"order": 1}, erp)
	h.produce(partner, "k2", map[string]any{"order": 2}, erp)                                               // key does not match
	h.produce(partner, "k1", map[string]any{"order": 3}, kafka.Header{Key: "source", Value: []byte("crm")}) // header does not match
	var w envelope.Work
	h.eventually("work from the partner record", func() (bool, string) {
		for _, m := range h.works.all() {
			_ = json.Unmarshal(m.Value, &w)
			if w.FlowID == f.ID {
				return true, ""
			}
		}
		return false, "none"
	})
	if string(w.Input) != `{"order":1}` || w.ExecutionID != router.PartnerExecutionID(f.ID, partner, 0, 0) {
		t.Fatalf("work %+v", w)
	}
	h.result(w, nil, `"ok"`)
	e := h.waitExecution(w.ExecutionID, envelope.StatusSucceeded)
	if e.Trigger != envelope.TriggerKafka {
		t.Fatalf("execution %+v", e)
	}
	h.waitStats(f.ID, store.StatsBucket{Success: 1, Ignored: 2})

	// Stop the flow as the API does: stopping, announced on flowd.events through the outbox.
	setStatus := func(from, to, evType string) {
		_, err := h.st.UpdateFlow(h.ctx, f.ID, func(cur *flowdoc.Flow) (store.Mutation, error) {
			if cur.Status != from {
				return store.Mutation{}, fmt.Errorf("flow is %s, not %s", cur.Status, from)
			}
			next := *cur
			next.Status = to
			return store.Mutation{Flow: &next, Events: []events.Event{{ID: identity.NewID(), Type: evType, FlowID: f.ID,
				Revision: 1, Status: to, At: time.Now().UTC()}}}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitConfirmed := func(status, evType string) {
		h.eventually("flow "+status, func() (bool, string) {
			cur, err := h.st.Flow(h.ctx, f.ID)
			if err != nil {
				return false, err.Error()
			}
			return cur.Status == status, cur.Status
		})
		h.eventually(evType+" on flowd.events", func() (bool, string) {
			for _, m := range h.events.all() {
				var ev events.Event
				if json.Unmarshal(m.Value, &ev) == nil && ev.Type == evType && ev.FlowID == f.ID && ev.Status == status {
					return true, ""
				}
			}
			return false, "not yet"
		})
	}
	setStatus(flowdoc.StatusActive, flowdoc.StatusStopping, events.FlowStopping)
	waitConfirmed(flowdoc.StatusInactive, events.FlowStopped)

	group := h.group + "-" + f.ID
	client := &kafka.Client{Addr: kafka.TCP(h.kcfg.Brokers...)}
	h.eventually("partner group without members", func() (bool, string) {
		res, err := client.DescribeGroups(h.ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err != nil || len(res.Groups) != 1 {
			return false, fmt.Sprint(err)
		}
		return len(res.Groups[0].Members) == 0, fmt.Sprintf("%d members", len(res.Groups[0].Members))
	})
	committed := func() int64 {
		of, err := client.OffsetFetch(h.ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{partner: {0}}})
		if err != nil || len(of.Topics[partner]) != 1 {
			t.Fatalf("offsets of %s: %v", group, err)
		}
		return of.Topics[partner][0].CommittedOffset
	}
	if c := committed(); c != 3 {
		t.Fatalf("committed offset %d after three records, want 3", c)
	}
	// Nothing consumes the partner topic now: a new record stays unconsumed.
	h.produce(partner, "k1", map[string]any{"order": 4}, erp)
	afterStop := router.PartnerExecutionID(f.ID, partner, 0, 3)
	if _, err := h.st.Execution(h.ctx, afterStop); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a record produced after the stop started execution %s: %v", afterStop, err)
	}
	if c := committed(); c != 3 {
		t.Fatalf("committed offset moved to %d while the flow was stopped", c)
	}

	// Started again, the flow picks up where it stopped: the record becomes one execution.
	setStatus(flowdoc.StatusInactive, flowdoc.StatusStarting, events.FlowStarting)
	waitConfirmed(flowdoc.StatusActive, events.FlowStarted)
	wa := h.waitWork(afterStop, "A", 1)[0]
	if string(wa.Input) != `{"order":4}` {
		t.Fatalf("work after restart %s", wa.Input)
	}
	h.result(wa, nil, `"ok"`)
	h.waitExecution(afterStop, envelope.StatusSucceeded)
	h.waitStats(f.ID, store.StatsBucket{Success: 2, Ignored: 2})
}

// Ingest records are keyed by execution: one busy flow's executions spread over every
// partition, so two routers in one group both start some of them, and each execution is
// started exactly once.
func TestTwoRoutersShareOneFlow(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h := &harness{
		t: t, ctx: ctx,
		kcfg:  kafkax.Config{Brokers: testrig.Kafka(t), TopicPrefix: testrig.Unique("t") + ".", Partitions: 4, RecordKeys: testrig.RecordKeys()},
		st:    store.New(testrig.RedisClient(t), testrig.Unique("t")+":"),
		group: testrig.Unique("router-"),
	}
	if err := kafkax.EnsureTopics(ctx, h.kcfg, envelope.TopicIngest, envelope.TopicResults, envelope.TopicDLQ,
		events.TopicName, envelope.PoolTopic("")); err != nil {
		t.Fatal(err)
	}
	h.w = kafkax.NewProducer(h.kcfg)
	t.Cleanup(func() { _ = h.w.Close() })
	f := webhookFlow("busy", []flowdoc.Node{act("A")}, edge("t", "A"))
	h.createFlow(f)

	logs := []*testrig.LogBuffer{{}, {}}
	for i, buf := range logs {
		log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
		rt, err := router.New(router.Config{Kafka: h.kcfg, Store: h.st, Log: log, GroupID: h.group, ReconcileInterval: time.Hour})
		if err != nil {
			t.Fatal(err)
		}
		runCtx, stop := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- rt.Run(runCtx) }()
		t.Cleanup(func() {
			stop()
			if err := <-done; err != nil {
				t.Errorf("router %d: %v", i, err)
			}
		})
		<-rt.Ready()
	}

	// The burst goes on until both routers have started executions (the group needs a moment
	// to give the second member its partitions), bounded in count.
	started := func(buf *testrig.LogBuffer) int { return strings.Count(buf.String(), `msg="execution started"`) }
	var sent []string
	for len(sent) < 2000 && (started(logs[0]) == 0 || started(logs[1]) == 0) {
		for range 20 {
			sent = append(sent, h.ingest(f, `{"n":1}`, false).ExecutionID)
		}
		time.Sleep(50 * time.Millisecond) // pacing of the burst, not synchronisation
	}
	h.eventually("every execution started", func() (bool, string) {
		n := started(logs[0]) + started(logs[1])
		return n >= len(sent), fmt.Sprintf("%d of %d", n, len(sent))
	})
	a, b := started(logs[0]), started(logs[1])
	if a == 0 || b == 0 {
		t.Fatalf("executions started by the two routers: %d and %d; want both to take part", a, b)
	}
	all := logs[0].String() + logs[1].String()
	for _, id := range sent {
		if n := strings.Count(all, "execution="+id+" "); n != 1 {
			t.Fatalf("execution %s started %d times, want once", id, n)
		}
		if _, err := h.st.Execution(ctx, id); err != nil {
			t.Fatalf("execution %s: %v", id, err)
		}
	}
	t.Logf("%d executions of one flow: %d started by one router, %d by the other", len(sent), a, b)
}
