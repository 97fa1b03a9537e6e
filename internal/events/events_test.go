package events_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

func setup(t *testing.T) (context.Context, kafkax.Config, *events.KafkaPublisher) {
	t.Helper()
	brokers := testrig.Kafka(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	t.Cleanup(cancel)
	cfg := kafkax.Config{Brokers: brokers, TopicPrefix: testrig.Unique("t") + ".", RecordKeys: testrig.RecordKeys()}
	if err := kafkax.EnsureTopics(ctx, cfg, events.TopicName); err != nil {
		t.Fatal(err)
	}
	w := kafkax.NewProducer(cfg)
	t.Cleanup(func() { _ = w.Close() })
	return ctx, cfg, events.NewKafkaPublisher(w, cfg)
}

var sample = []events.Event{
	{Type: events.FlowCreated, FlowID: "flow-a", Revision: 1, Actor: "u1"},
	{Type: events.FlowCreated, FlowID: "flow-b", Revision: 1},
	{Type: events.FlowStarting, FlowID: "flow-a", Revision: 1, Status: "starting"},
}

func TestPublishKeysAndOrder(t *testing.T) {
	ctx, cfg, pub := setup(t)
	if err := pub.Publish(ctx, sample...); err != nil {
		t.Fatal(err)
	}

	// Publish returned, so all three are acknowledged: read them back from every partition.
	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers: cfg.Brokers, GroupID: testrig.Unique("g"), Topic: cfg.Topic(events.TopicName),
		StartOffset: kafka.FirstOffset, MaxWait: 100 * time.Millisecond,
	})
	defer r.Close()
	perFlow := map[string][]events.Event{}
	partOf := map[string]int{}
	for range len(sample) {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("reading back: %v", err)
		}
		var ev events.Event
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			t.Fatalf("value %s: %v", m.Value, err)
		}
		if string(m.Key) != ev.FlowID {
			t.Errorf("key %q, flowId %q", m.Key, ev.FlowID)
		}
		if h := header(m, events.HeaderType); h != ev.Type {
			t.Errorf("header type %q, event type %q", h, ev.Type)
		}
		if len(ev.ID) != 32 || ev.At.IsZero() {
			t.Errorf("id %q at %v: want 32 hex chars and a time", ev.ID, ev.At)
		}
		if p, ok := partOf[ev.FlowID]; ok && p != m.Partition {
			t.Errorf("flow %s in partitions %d and %d", ev.FlowID, p, m.Partition)
		}
		partOf[ev.FlowID] = m.Partition
		perFlow[ev.FlowID] = append(perFlow[ev.FlowID], ev)
	}
	assertTypes(t, perFlow["flow-a"], events.FlowCreated, events.FlowStarting)
	assertTypes(t, perFlow["flow-b"], events.FlowCreated)
	if a := perFlow["flow-a"]; len(a) == 2 && (a[0].Actor != "u1" || a[1].Status != "starting" || a[1].Revision != 1) {
		t.Errorf("flow-a fields lost: %+v", a)
	}
}

func TestConsumeGroupAtLeastOnce(t *testing.T) {
	ctx, cfg, pub := setup(t)
	if err := pub.Publish(ctx, sample...); err != nil {
		t.Fatal(err)
	}
	group := testrig.Unique("g")
	boom := errors.New("boom")

	// First run: handle events until flow-b's, fail on it; nothing from it on is committed.
	var first []events.Event
	err := events.Consume(ctx, cfg, group, func(_ context.Context, ev events.Event) error {
		if ev.FlowID == "flow-b" {
			return boom
		}
		first = append(first, ev)
		return nil
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Consume returned %v, want the handler's error", err)
	}

	// Second run of the same group: flow-b's event comes again, then the run is cancelled.
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	var second []events.Event
	handled := map[string]bool{} // type@flow; the sample's pairs are distinct
	for _, ev := range first {
		handled[ev.Type+"@"+ev.FlowID] = true
	}
	err = events.Consume(runCtx, cfg, group, func(_ context.Context, ev events.Event) error {
		second = append(second, ev)
		handled[ev.Type+"@"+ev.FlowID] = true
		if len(handled) == len(sample) {
			stop()
		}
		return nil
	})
	if err != nil {
		t.Fatalf("Consume after cancel returned %v, want nil", err)
	}
	if ctx.Err() != nil {
		t.Fatalf("deadline passed before every event was handled: first %v, second %v", types(first), types(second))
	}
	if !hasFlow(second, "flow-b") {
		t.Errorf("flow-b's event was not redelivered: first %v, second %v", types(first), types(second))
	}
	for _, ev := range second {
		for _, f := range first {
			if ev.ID == f.ID && ev.FlowID != "flow-b" {
				// Committed events of other partitions may only come back if their commit was lost.
				t.Logf("note: %s %s delivered twice", ev.Type, ev.FlowID)
			}
		}
	}
}

func TestConsumeBroadcastFromEnd(t *testing.T) {
	ctx, cfg, pub := setup(t)
	// Published before Consume starts: must not be seen.
	if err := pub.Publish(ctx, events.Event{Type: events.FlowDeleted, FlowID: "old"}); err != nil {
		t.Fatal(err)
	}

	got := make(chan events.Event, 100)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- events.Consume(runCtx, cfg, "", func(_ context.Context, ev events.Event) error {
			got <- ev
			return nil
		})
	}()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("Consume returned %v, want nil after cancel", err)
		}
	}()

	// Consume gives no readiness signal: publish probes until one arrives.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	seen := []events.Event{}
probing:
	for i := 0; ; i++ {
		if err := pub.Publish(ctx, events.Event{Type: "probe", FlowID: fmt.Sprintf("probe-%d", i)}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-got:
			seen = append(seen, ev)
			break probing
		case <-tick.C:
		case <-ctx.Done():
			t.Fatal("no probe event arrived before the deadline")
		}
	}
	if err := pub.Publish(ctx, sample...); err != nil {
		t.Fatal(err)
	}
	perFlow := map[string][]events.Event{}
	for perFlowLen(perFlow) < len(sample) {
		select {
		case ev := <-got:
			seen = append(seen, ev)
			if ev.Type != "probe" {
				perFlow[ev.FlowID] = append(perFlow[ev.FlowID], ev)
			}
		case <-ctx.Done():
			t.Fatalf("deadline: got %v", types(seen))
		}
	}
	if hasFlow(seen, "old") {
		t.Error("an event published before Consume started was delivered")
	}
	assertTypes(t, perFlow["flow-a"], events.FlowCreated, events.FlowStarting)
	assertTypes(t, perFlow["flow-b"], events.FlowCreated)
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func assertTypes(t *testing.T, evs []events.Event, want ...string) {
	t.Helper()
	got := types(evs)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got types %v, want %v", got, want)
	}
}

func types(evs []events.Event) []string {
	out := make([]string, len(evs))
	for i, ev := range evs {
		out[i] = ev.Type
	}
	return out
}

func hasFlow(evs []events.Event, flow string) bool {
	for _, ev := range evs {
		if ev.FlowID == flow {
			return true
		}
	}
	return false
}

func perFlowLen(m map[string][]events.Event) int {
	n := 0
	for _, v := range m {
		n += len(v)
	}
	return n
}
