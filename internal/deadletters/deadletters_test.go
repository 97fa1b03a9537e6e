package deadletters_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/deadletters"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// rig is a real broker's topics and a real Redis under unique names.
type rig struct {
	t    *testing.T
	kcfg kafkax.Config
	st   *store.Store
	w    *flakyWriter
	log  *slog.Logger
}

// flakyWriter fails the next `fail` writes, then produces with acks=all.
type flakyWriter struct {
	p    *kafkax.Producer
	fail atomic.Int32
}

func (f *flakyWriter) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if f.fail.Add(-1) >= 0 {
		return errors.New("broker unavailable (test)")
	}
	return f.p.WriteMessages(ctx, msgs...)
}

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newRig(t *testing.T) *rig {
	t.Helper()
	brokers := testrig.Kafka(t)
	rdb := testrig.RedisClient(t)
	kcfg := kafkax.Config{Brokers: brokers, TopicPrefix: testrig.Unique("dl") + ".", Partitions: 1, RecordKeys: testrig.RecordKeys()}
	if err := kafkax.EnsureTopics(ctxFor(t), kcfg, envelope.TopicDLQ, envelope.TopicIngest, envelope.TopicResults, envelope.PoolTopic("")); err != nil {
		t.Fatal(err)
	}
	p := kafkax.NewProducer(kcfg)
	t.Cleanup(func() { _ = p.Close() })
	return &rig{t: t, kcfg: kcfg, st: store.New(rdb, testrig.Unique("dl")+":"), w: &flakyWriter{p: p},
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

// service runs a Service (its indexer and sweep) until the test ends.
func (r *rig) service(adjust ...func(*deadletters.Config)) *deadletters.Service {
	r.t.Helper()
	cfg := deadletters.Config{Kafka: r.kcfg, Store: r.st, Writer: r.w, Log: r.log, Lease: 2 * time.Second, ProduceTimeout: time.Second}
	for _, a := range adjust {
		a(&cfg)
	}
	svc, err := deadletters.New(cfg)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	r.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			r.t.Errorf("run: %v", err)
		}
	})
	select {
	case <-svc.Ready():
	case err := <-done:
		r.t.Fatalf("run: %v", err)
	}
	return svc
}

// deadLetter sends orig to the dead-letter topic as the router and the runners do.
func (r *rig) deadLetter(orig kafka.Message, reason string) {
	r.t.Helper()
	dlq := r.kcfg.NewDeadLetters(r.w.p, r.kcfg.Topic(envelope.TopicDLQ), r.log)
	if err := dlq.Send(ctxFor(r.t), orig, reason); err != nil {
		r.t.Fatal(err)
	}
}

// ingest is a signed ingest record of flow for execution, as ingest produces it, consumed at
// offset.
func (r *rig) ingest(flow, execution string, offset int64, sign bool) kafka.Message {
	v, _ := json.Marshal(envelope.Ingest{ExecutionID: execution, FlowID: flow, Revision: 1, Trigger: envelope.TriggerWebhook,
		ReceivedAt: time.Now().UTC(), Input: json.RawMessage(`{"n":1}`)})
	m := kafka.Message{Topic: r.kcfg.Topic(envelope.TopicIngest), Partition: 0, Offset: offset, Key: []byte(execution), Value: v,
		Headers: []kafka.Header{{Key: "traceparent", Value: []byte("00-abc-def-01")}}}
	if sign {
		r.kcfg.RecordKeys.Sign(&m)
	}
	return m
}

// await polls the indexed dead letters until want of them are listed.
func await(t *testing.T, svc *deadletters.Service, want int) []store.DeadLetter {
	t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; {
		dls, err := svc.List(context.Background(), store.DeadLetterQuery{All: true}, deadletters.Filter{})
		if err != nil {
			t.Fatal(err)
		}
		if len(dls) >= want {
			return dls
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d dead letters indexed, want %d", len(dls), want)
		}
		time.Sleep(20 * time.Millisecond) // polling Redis with a deadline
	}
}

// status polls one dead letter until it has the status.
func (r *rig) status(id, want string) *store.DeadLetter {
	r.t.Helper()
	for deadline := time.Now().Add(60 * time.Second); ; {
		dl, err := r.st.DeadLetter(context.Background(), id)
		if err == nil && dl.Status == want {
			return dl
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("dead letter %s: %+v %v, want %s", id, dl, err, want)
		}
		time.Sleep(20 * time.Millisecond) // polling Redis with a deadline
	}
}

// replays reads topic from its start to a marker produced now and returns the records replayed
// from dead letters on it.
func (r *rig) replays(name string) []kafka.Message {
	var out []kafka.Message
	for _, m := range r.records(name) {
		if header(m, deadletters.HeaderReplayOf) != "" {
			out = append(out, m)
		}
	}
	return out
}

// records reads topic from its start to a marker produced now and returns what it holds.
func (r *rig) records(name string) []kafka.Message {
	r.t.Helper()
	ctx := ctxFor(r.t)
	marker := testrig.Unique("marker")
	if err := r.w.p.WriteMessages(ctx, kafka.Message{Topic: r.kcfg.Topic(name), Key: []byte(marker), Value: []byte(marker)}); err != nil {
		r.t.Fatal(err)
	}
	rd := kafka.NewReader(kafka.ReaderConfig{Brokers: r.kcfg.Brokers, Topic: r.kcfg.Topic(name), Partition: 0, MaxWait: 100 * time.Millisecond})
	defer func() { _ = rd.Close() }()
	var out []kafka.Message
	for {
		m, err := rd.ReadMessage(ctx)
		if err != nil {
			r.t.Fatalf("read %s: %v", name, err)
		}
		if string(m.Value) == marker {
			return out
		}
		if !strings.HasPrefix(string(m.Key), "marker") { // an earlier call's
			out = append(out, m)
		}
	}
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Every dead letter a flowd role sent is indexed with where it came from, its flow and
// execution (only when a flowd role wrote the original), its headers and its value (bounded);
// a record on the dead-letter topic that no flowd role wrote is not.
func TestIndexerStoresEveryDeadLetter(t *testing.T) {
	r := newRig(t)
	ctx := ctxFor(t)
	// First, on the topic's one partition: a record nobody signed, right on the dead-letter topic.
	forgedDLQ := kafka.Message{Topic: r.kcfg.Topic(envelope.TopicDLQ), Key: []byte("k"), Value: []byte(`{"flowId":"f1"}`),
		Headers: []kafka.Header{{Key: kafkax.HeaderDLQReason, Value: []byte("planted")}}}
	if err := r.w.p.WriteMessages(ctx, forgedDLQ); err != nil {
		t.Fatal(err)
	}
	r.deadLetter(r.ingest("f1", "x1", 41, true), "flow f1 revision 1: flow revision not available")
	r.deadLetter(r.ingest("f1", "x2", 42, false), "record authentication failed: record is not signed")
	big := r.ingest("f2", "x3", 43, true)
	big.Value, _ = json.Marshal(map[string]any{"executionId": "x3", "flowId": "f2", "input": strings.Repeat("x", 4000)})
	r.kcfg.RecordKeys.Sign(&big)
	r.deadLetter(big, "work item refused")

	svc := r.service(func(c *deadletters.Config) { c.MaxValueBytes = 1024 })
	dls := await(t, svc, 3)
	if len(dls) != 3 {
		t.Fatalf("indexed %d dead letters, want 3 (the planted one left out): %+v", len(dls), dls)
	}
	byExec := map[string]store.DeadLetter{}
	for _, d := range dls {
		byExec[d.ExecutionID] = d
	}
	good, forged, trunc := byExec["x1"], byExec["x2"], byExec["x3"]
	if good.ID != "0-1" || good.Topic != r.kcfg.Topic(envelope.TopicIngest) || good.Offset != 41 || good.FlowID != "f1" || !good.Authentic ||
		good.Status != store.DeadLetterOpen || good.Reason != "flow f1 revision 1: flow revision not available" || good.At.IsZero() {
		t.Fatalf("signed ingest record indexed as %+v", good)
	}
	if svc.NotReplayable(&good) != "" {
		t.Fatalf("signed ingest record not replayable: %s", svc.NotReplayable(&good))
	}
	full, err := svc.Get(ctx, good.ID)
	if err != nil {
		t.Fatal(err)
	}
	if string(full.Key) != "x1" || !json.Valid(full.Value) || len(full.Headers) != 1 || full.Headers[0].Key != "traceparent" {
		t.Fatalf("signed ingest record: key %q value %q headers %v", full.Key, full.Value, full.Headers)
	}
	if forged.FlowID != "" || forged.Authentic || !strings.Contains(svc.NotReplayable(&forged), "not written by a flowd role") {
		t.Fatalf("unsigned original indexed as %+v (%s)", forged, svc.NotReplayable(&forged))
	}
	if !trunc.Truncated || trunc.ValueBytes <= 4000 || trunc.FlowID != "f2" || svc.NotReplayable(&trunc) == "" {
		t.Fatalf("large original indexed as %+v", trunc)
	}
	if full, _ := svc.Get(ctx, trunc.ID); len(full.Value) != 1024 {
		t.Fatalf("large original kept %d bytes", len(full.Value))
	}

	// Indexed again from the start (another group, after a discard): nothing changes.
	if _, err := svc.Discard(ctx, forged.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	again := r.service(func(c *deadletters.Config) { c.GroupID = r.kcfg.Group("deadletters-again") })
	r.deadLetter(r.ingest("f1", "x4", 44, true), "after the second indexer started")
	if dls := await(t, again, 4); len(dls) != 4 {
		t.Fatalf("after indexing again: %d dead letters", len(dls))
	}
	if d := r.status(forged.ID, store.DeadLetterDiscarded); d.DiscardedBy != "admin" {
		t.Fatalf("discarded dead letter after indexing again: %+v", d)
	}
}

// A replay produces the original record once, to its topic, signed anew; the second replay is
// answered "already replayed" and produces nothing.
func TestReplayProducesOnce(t *testing.T) {
	r := newRig(t)
	ctx := ctxFor(t)
	orig := r.ingest("f1", "x1", 7, true)
	r.deadLetter(orig, "flow f1 revision 1: flow revision not available")
	svc := r.service()
	id := await(t, svc, 1)[0].ID

	dl, err := svc.Replay(ctx, id, "alice")
	if err != nil || dl.Status != store.DeadLetterReplayed || dl.ReplayedBy != "alice" || dl.ReplayedAt == nil {
		t.Fatalf("replay: %+v %v", dl, err)
	}
	if _, err := svc.Replay(ctx, id, "bob"); !errors.Is(err, store.ErrReplayed) {
		t.Fatalf("second replay: %v", err)
	}
	got := r.replays(envelope.TopicIngest)
	if len(got) != 1 {
		t.Fatalf("%d replayed records on the ingest topic, want 1", len(got))
	}
	m := got[0]
	if string(m.Key) != "x1" || string(m.Value) != string(orig.Value) || header(m, "traceparent") != "00-abc-def-01" || header(m, deadletters.HeaderReplayOf) != id {
		t.Fatalf("replayed record: key %q value %s headers %v", m.Key, m.Value, m.Headers)
	}
	if err := r.kcfg.RecordKeys.Verify(m); err != nil {
		t.Fatalf("the replayed record does not verify: %v", err)
	}
}

// A replay whose produce failed, and one whose process died after claiming it, are finished
// by the sweep once their lease ran out; meanwhile a replay asked again is "in progress".
func TestInterruptedReplaysAreFinished(t *testing.T) {
	r := newRig(t)
	ctx := ctxFor(t)
	r.deadLetter(r.ingest("f1", "x1", 1, true), "flow revision not available")
	r.deadLetter(r.ingest("f1", "x2", 2, true), "flow revision not available")
	svc := r.service()
	dls := await(t, svc, 2)
	failed, died := dls[1].ID, dls[0].ID

	r.w.fail.Store(1)
	dl, err := svc.Replay(ctx, failed, "alice")
	if !errors.Is(err, deadletters.ErrPending) || dl.Status != store.DeadLetterReplaying {
		t.Fatalf("replay with the broker down: %+v %v", dl, err)
	}
	// The other's process claimed it and died before producing.
	if _, err := r.st.ClaimReplay(ctx, died, "bob", time.Now(), 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Replay(ctx, died, "carol"); !errors.Is(err, store.ErrReplaying) {
		t.Fatalf("replay during another's: %v", err)
	}

	if d := r.status(failed, store.DeadLetterReplayed); d.ReplayedBy != "alice" {
		t.Fatalf("finished replay: %+v", d)
	}
	if d := r.status(died, store.DeadLetterReplayed); d.ReplayedBy != "bob" {
		t.Fatalf("finished replay: %+v", d)
	}
	got := r.replays(envelope.TopicIngest)
	seen := map[string]int{}
	for _, m := range got {
		seen[header(m, deadletters.HeaderReplayOf)]++
	}
	if len(got) != 2 || seen[failed] != 1 || seen[died] != 1 {
		t.Fatalf("replayed records: %v", seen)
	}
}

// ReplayMany replays what it can and counts the rest.
func TestReplayManyReports(t *testing.T) {
	r := newRig(t)
	ctx := ctxFor(t)
	r.deadLetter(r.ingest("f1", "x1", 1, true), "flow revision not available")
	r.deadLetter(r.ingest("f1", "x2", 2, true), "flow revision not available")
	r.deadLetter(r.ingest("f1", "x3", 3, false), "record authentication failed")
	r.deadLetter(r.ingest("f1", "x4", 4, true), "flow revision not available")
	svc := r.service()
	dls := await(t, svc, 4)
	byExec := map[string]string{}
	for _, d := range dls {
		byExec[d.ExecutionID] = d.ID
	}
	if _, err := svc.Replay(ctx, byExec["x1"], "alice"); err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Discard(ctx, byExec["x4"], "alice"); err != nil {
		t.Fatal(err)
	}
	rep, err := svc.ReplayMany(ctx, dls, "bob")
	if err != nil {
		t.Fatal(err)
	}
	if rep.Replayed != 1 || rep.AlreadyReplayed != 1 || rep.NotReplayable != 1 || rep.Discarded != 1 || rep.Pending != 0 ||
		len(rep.ReplayedIDs) != 1 || rep.ReplayedIDs[0] != byExec["x2"] {
		t.Fatalf("report %+v", rep)
	}
	if got := r.replays(envelope.TopicIngest); len(got) != 2 {
		t.Fatalf("%d replayed records, want 2", len(got))
	}
}

// parkedWork is a work item the router parked on the dead-letter topic, signed or not.
func (r *rig) parkedWork(execution string, sign bool) kafka.Message {
	pk := envelope.Parked{ExecutionID: execution, FlowID: "f1", Revision: 1, NodeID: "A", Token: "t-" + execution, Attempt: 3}
	v, _ := json.Marshal(envelope.Work{ExecutionID: execution, FlowID: "f1", Revision: 1, Token: pk.Token, Attempt: 3, TimeoutMs: 1000})
	hv, _ := json.Marshal(pk)
	m := kafka.Message{Topic: r.kcfg.Topic(envelope.PoolTopic("")), Partition: -1, Offset: -1, Key: []byte(execution), Value: v,
		Headers: []kafka.Header{{Key: envelope.HeaderParked, Value: hv}}}
	if sign {
		r.kcfg.RecordKeys.Sign(&m)
	}
	return m
}

// Discarding the dead letter of a parked step fails that step: its failure goes to the results
// topic, signed, for the attempt the dead letter held. A record no flowd role wrote parks
// nothing: discarding it produces nothing.
func TestDiscardingAParkedStepFailsIt(t *testing.T) {
	r := newRig(t)
	r.deadLetter(r.parkedWork("x1", true), "retries exhausted: step A failed 2 time(s)")
	r.deadLetter(r.parkedWork("x2", false), "retries exhausted: forged")
	svc := r.service()
	dls := await(t, svc, 2)
	byExec := map[string]store.DeadLetter{}
	for _, dl := range dls {
		byExec[dl.ExecutionID] = dl
	}
	parked, forged := byExec["x1"], byExec["x2"]
	if parked.Parked == nil || parked.Parked.Token != "t-x1" || parked.Parked.Attempt != 3 || forged.Parked != nil {
		t.Fatalf("parked steps: authentic %+v, forged %+v", parked.Parked, forged.Parked)
	}
	ctx := ctxFor(t)
	if _, err := svc.Discard(ctx, forged.ID, "admin"); err != nil {
		t.Fatal(err)
	}
	if recs := r.records(envelope.TopicResults); len(recs) != 0 {
		t.Fatalf("discarding a forged dead letter produced %d results", len(recs))
	}

	r.w.fail.Store(1)
	if _, err := svc.Discard(ctx, parked.ID, "alice"); !errors.Is(err, deadletters.ErrPending) {
		t.Fatalf("discard while the broker fails: %v, want ErrPending", err)
	}
	r.status(parked.ID, store.DeadLetterDiscarded)
	if _, err := svc.Discard(ctx, parked.ID, "alice"); err != nil {
		t.Fatalf("discarding again: %v", err)
	}
	recs := r.records(envelope.TopicResults)
	if len(recs) != 1 {
		t.Fatalf("%d results after the discard, want the parked step's failure", len(recs))
	}
	if err := r.kcfg.RecordKeys.Verify(recs[0]); err != nil {
		t.Fatalf("the failure is not signed: %v", err)
	}
	var res envelope.Result
	if err := json.Unmarshal(recs[0].Value, &res); err != nil {
		t.Fatal(err)
	}
	if res.ExecutionID != "x1" || res.Token != "t-x1" || res.Attempt != 3 || res.NodeID != "A" || res.Error == nil ||
		res.Error.Code != envelope.CodeDeadLetterDiscarded || res.Error.Retryable || string(recs[0].Key) != "x1" {
		t.Fatalf("failure of the parked step: %+v", res)
	}
}
