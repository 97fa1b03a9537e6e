package router

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
	"github.com/flowd/flowd/router/graph"
)

func testRouter(t *testing.T, cfg Config) *Router {
	t.Helper()
	cfg.Store = newFakeStore()
	cfg.Kafka = kafkax.Config{Brokers: []string{"unused:9092"}, RecordKeys: testrig.RecordKeys()}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func startOutcome(t *testing.T, r *Router, sync bool, input string) (*store.ExecChange, *execState) {
	t.Helper()
	f := &flowdoc.Flow{ID: "f1", Name: "f", Revision: 2, Owners: []flowdoc.Owner{{ID: "u1", Type: flowdoc.OwnerUser}},
		Graph: flowdoc.Graph{
			Nodes: []flowdoc.Node{{ID: "t", Type: flowdoc.TypeWebhook}, {ID: "A", Type: flowdoc.TypeAction, Connector: "c", Action: "a", Pool: "big"}},
			Edges: []flowdoc.Edge{{Source: "t", Target: "A"}},
		}}
	g, err := graph.Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0).UTC()
	exec := &envelope.Execution{ID: "x1", FlowID: "f1", Revision: 2, Trigger: "webhook", Status: envelope.StatusRunning, ReceivedAt: now, StartedAt: now}
	st := &execState{Sync: sync}
	gc := r.graphContext(exec, nil)
	out, err := g.Start(&st.Graph, gc, json.RawMessage(input))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := r.change(g, exec, st, gc, nil, out, now)
	if err != nil {
		t.Fatal(err)
	}
	return ch, st
}

func TestChangeProducesWorkForThePool(t *testing.T) {
	r := testRouter(t, Config{})
	ch, _ := startOutcome(t, r, false, `{"a":1}`)
	if len(ch.Records) != 1 || ch.Records[0].Topic != "flowd.steps.big" || string(ch.Records[0].Key) != "x1" {
		t.Fatalf("records %+v", ch.Records)
	}
	var w envelope.Work
	if err := json.Unmarshal(ch.Records[0].Value, &w); err != nil {
		t.Fatal(err)
	}
	if w.Node.ID != "A" || string(w.Input) != `{"a":1}` || w.IdempotencyKey != "x1:"+w.Token || w.Owners[0].ID != "u1" ||
		string(w.Context["steps"]) != `{"t":{"a":1}}` || string(w.Context["flow"]) != `{"id":"f1","name":"f","revision":2}` {
		t.Fatalf("work %+v, context %s", w, w.Context)
	}
	if len(ch.AddPending) != 1 || ch.Execution.Status != envelope.StatusRunning {
		t.Fatalf("change %+v", ch)
	}
	// Steps of one transition keep the order they ran in.
	if len(ch.Steps) != 2 || ch.Steps[0].NodeID != "t" || ch.Steps[1].NodeID != "A" || !ch.Steps[0].StartedAt.Before(ch.Steps[1].StartedAt) {
		t.Fatalf("steps %+v", ch.Steps)
	}
}

func TestOversizedWorkFailsTheExecution(t *testing.T) {
	r := testRouter(t, Config{MaxRecordBytes: 600})
	ch, st := startOutcome(t, r, true, `{"blob":"`+strings.Repeat("x", 600)+`"}`)
	if len(ch.Records) != 0 || len(ch.AddPending) != 0 {
		t.Fatalf("oversized work was kept: %+v", ch)
	}
	e := ch.Execution
	if e.Status != envelope.StatusFailed || e.Error == nil || e.Error.Code != CodeRecordTooLarge || e.FinishedAt == nil {
		t.Fatalf("execution %+v", e)
	}
	if st.Graph.Status != envelope.StatusFailed {
		t.Fatalf("graph state %q", st.Graph.Status)
	}
	// The flow failed, not flowd: 502 with the error's code (it was a 500).
	if ch.Reply == nil || ch.Reply.Status != 502 || !strings.Contains(string(ch.Reply.Body), `"code":"`+CodeRecordTooLarge+`"`) {
		t.Fatalf("sync caller got %+v", ch.Reply)
	}
}

func TestPartnerFilters(t *testing.T) {
	spec, err := specOf(&flowdoc.Node{ID: "k", Type: flowdoc.TypeKafka, Config: map[string]any{
		"topic": "orders", "key": "k1", "headers": map[string]any{"source": "erp"}}})
	if err != nil {
		t.Fatal(err)
	}
	erp := []kafka.Header{{Key: "other", Value: []byte("x")}, {Key: "source", Value: []byte("erp")}}
	tests := []struct {
		key     string
		headers []kafka.Header
		want    bool
	}{
		{"k1", erp, true},
		{"k2", erp, false},
		{"k1", nil, false},
		{"k1", []kafka.Header{{Key: "source", Value: []byte("crm")}}, false},
	}
	for _, tt := range tests {
		if got := spec.matches(kafka.Message{Key: []byte(tt.key), Headers: tt.headers}); got != tt.want {
			t.Errorf("key %s headers %v: match = %v, want %v", tt.key, tt.headers, got, tt.want)
		}
	}
	if _, err := specOf(&flowdoc.Node{ID: "k", Type: flowdoc.TypeKafka}); err == nil {
		t.Fatal("a trigger without a topic was accepted")
	}
	open, _ := specOf(&flowdoc.Node{ID: "k", Type: flowdoc.TypeKafka, Config: map[string]any{"topic": "t"}})
	if !open.matches(kafka.Message{}) {
		t.Fatal("a trigger without filters must take every record")
	}
}

func TestRecordInput(t *testing.T) {
	for in, want := range map[string]string{`{"a":1}`: `{"a":1}`, "plain text": `"plain text"`, "": `null`, `[1,2]`: `[1,2]`} {
		if got := string(recordInput([]byte(in))); got != want {
			t.Errorf("recordInput(%q) = %s, want %s", in, got, want)
		}
	}
	first, again, next := PartnerExecutionID("f", "t", 0, 1), PartnerExecutionID("f", "t", 0, 1), PartnerExecutionID("f", "t", 0, 2)
	if first != again || first == next {
		t.Fatal("partner execution ids must be deterministic and distinct per record")
	}
}
