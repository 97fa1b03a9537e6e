package runners

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// fakePolls is an in-memory Polls with the contract of internal/store/polls.go.
type fakePolls struct {
	pmu     sync.Mutex
	cursors map[string]string
	seen    map[string]map[string]bool
	polled  int
	failOn  int // PolledItems call (1-based) that fails, as a crash before the cursor is saved
}

func (p *fakePolls) TakeDuePolls(context.Context, string, time.Time, time.Duration, int) ([]store.DuePoll, time.Time, error) {
	return nil, time.Time{}, nil
}

func (p *fakePolls) SeenPollItems(_ context.Context, flowID string, ids []string) (map[string]bool, error) {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	out := map[string]bool{}
	for _, id := range ids {
		if p.seen[flowID][id] {
			out[id] = true
		}
	}
	return out, nil
}

func (p *fakePolls) PolledItems(_ context.Context, flowID, _ string, _ int, cursor string, ids []string, _, _ time.Time) error {
	p.pmu.Lock()
	defer p.pmu.Unlock()
	p.polled++
	if p.polled == p.failOn {
		return errors.New("redis unavailable (test)")
	}
	if p.seen == nil {
		p.seen, p.cursors = map[string]map[string]bool{}, map[string]string{}
	}
	if p.seen[flowID] == nil {
		p.seen[flowID] = map[string]bool{}
	}
	for _, id := range ids {
		p.seen[flowID][id] = true
	}
	p.cursors[flowID] = cursor
	return nil
}

// pages is a source of numbered items: a poll from cursor n returns items n+1.. up to size of
// them, as far as the source has.
type pages struct {
	mu    sync.Mutex
	total int
	size  int
	calls []string // cursors asked with
}

func (s *pages) Poll(_ context.Context, _ string, req sdk.PollRequest) (sdk.PollResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, req.Cursor)
	from := 0
	if req.Cursor != "" {
		_ = json.Unmarshal([]byte(req.Cursor), &from)
	}
	var items []any
	for n := from + 1; n <= min(from+s.size, s.total); n++ {
		items = append(items, map[string]any{"id": n, "name": "item"})
	}
	last := min(from+s.size, s.total)
	return sdk.PollResult{Items: items, Cursor: itoa(last)}, nil
}

func (s *pages) Execute(context.Context, string, []sdk.Invocation) ([]sdk.Result, error) {
	return nil, errors.New("not an action")
}

// A poll produces one ingest record per item, signed, with an execution id derived from the
// item; a poll repeated because its cursor was not saved (a crash between producing and
// saving) produces its items again under the same execution ids, and a poll repeated after
// the save (the cursor saved, the source answering the same again) produces none of them.
func TestPollProducesEachItemOnce(t *testing.T) {
	t.Parallel()
	st, w := newFakeRuns(), &recordingWriter{}
	st.flows["f1/1"] = &flowdoc.Flow{ID: "f1", Revision: 1, Owners: []flowdoc.Owner{{ID: "u1", Type: flowdoc.OwnerUser}},
		Graph: flowdoc.Graph{Nodes: []flowdoc.Node{{ID: "t", Type: flowdoc.TypePoll, Connector: "src", Trigger: "items"},
			{ID: "A", Type: flowdoc.TypeAction, Connector: "c", Action: "a"}}}}
	st.failOn = 2
	src := &pages{total: 25, size: 10}
	r, err := New(Config{Kafka: kafkax.Config{Brokers: []string{"unused:9092"}, RecordKeys: testrig.RecordKeys()}, Host: src, Store: st})
	if err != nil {
		t.Fatal(err)
	}
	r.useWriter(w)
	ctx := context.Background()
	poll := func() error {
		st.pmu.Lock()
		cur := st.cursors["f1"]
		st.pmu.Unlock()
		return r.pollOnce(ctx, src, st, store.DuePoll{FlowID: "f1", Revision: 1, Cursor: cur})
	}
	if err := poll(); err != nil { // items 1-10
		t.Fatal(err)
	}
	if err := poll(); err == nil { // items 11-20 produced, then the cursor is not saved
		t.Fatal("the failed save was not reported")
	}
	for range 3 { // 11-20 again (nothing new), then 21-25, then nothing
		if err := poll(); err != nil {
			t.Fatal(err)
		}
	}
	// A source answering items the poll produced before (here: asked from an old cursor)
	// starts nothing: they are remembered.
	if err := r.pollOnce(ctx, src, st, store.DuePoll{FlowID: "f1", Revision: 1, Cursor: "5"}); err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{} // item -> records produced
	for _, m := range w.all() {
		if err := r.cfg.Kafka.RecordKeys.Verify(m); err != nil || m.Topic != r.cfg.Kafka.Topic(envelope.TopicIngest) {
			t.Fatalf("record on %s: %v", m.Topic, err)
		}
		var in envelope.Ingest
		if err := json.Unmarshal(m.Value, &in); err != nil {
			t.Fatal(err)
		}
		if in.Trigger != "poll" || in.FlowID != "f1" || in.ExecutionID != PollExecutionID("f1", ItemID(in.Input)) || string(m.Key) != in.ExecutionID {
			t.Fatalf("ingest record %+v", in)
		}
		ids[ItemID(in.Input)]++
	}
	if len(ids) != 25 {
		t.Fatalf("%d items produced, want 25", len(ids))
	}
	// The poll whose cursor was not saved is repeated: its items are produced again, under the
	// same execution ids (checked above), so the router starts each once. Every other item is
	// produced once: the items of a saved poll are remembered.
	for id, n := range ids {
		item, _ := strconv.Atoi(id)
		if want := 1 + boolInt(item >= 11 && item <= 20); n != want {
			t.Errorf("item %s produced %d times, want %d", id, n, want)
		}
	}
	if want := []string{"", "10", "10", "20", "25", "5"}; len(src.calls) != len(want) || src.calls[2] != "10" || src.calls[3] != "20" {
		t.Fatalf("polled with cursors %q, want %q", src.calls, want)
	}
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestItemID(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string]string{`{"id":"a-1"}`: "a-1", `{"id":42}`: "42", `{"id":4.5e1}`: "4.5e1"} {
		if got := ItemID(json.RawMessage(raw)); got != want {
			t.Errorf("ItemID(%s) = %q, want %q", raw, got, want)
		}
	}
	if a, b := ItemID(json.RawMessage(`{"x":1}`)), ItemID(json.RawMessage(`{"x":2}`)); a == b || a[:7] != "sha256:" {
		t.Errorf("items without ids: %q %q", a, b)
	}
}
