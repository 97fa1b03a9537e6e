package outbox_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/outbox"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// A change committed while the broker is unreachable keeps its event in the outbox; once a
// broker answers, the event is published and only then removed.
func TestEventsSurviveAnUnreachableBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	opt, err := redis.ParseURL(testrig.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer func() { _ = rdb.Close() }()
	st := store.New(rdb, testrig.Unique("t")+":")
	good := kafkax.Config{Brokers: testrig.Kafka(t), TopicPrefix: testrig.Unique("t") + ".", Partitions: 1, RecordKeys: testrig.RecordKeys()}
	if err := kafkax.EnsureTopics(ctx, good, events.TopicName); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))

	now := time.Now()
	f := &flowdoc.Flow{ID: "f1", Name: "f", Revision: 1, CreatedAt: &now}
	if err := st.CreateFlow(ctx, f, events.Event{ID: "e1", Type: events.FlowCreated, FlowID: "f1", At: now}); err != nil {
		t.Fatal(err)
	}

	// A broker nobody listens on: a real connection failure, not a stub.
	down := kafkax.Config{Brokers: []string{"127.0.0.1:1"}, TopicPrefix: good.TopicPrefix, RecordKeys: good.RecordKeys}
	dw := kafkax.NewProducer(down)
	defer func() { _ = dw.Close() }()
	fctx, fcancel := context.WithTimeout(ctx, 3*time.Second)
	err = outbox.New(st, events.NewKafkaPublisher(dw, down), log).Flush(fctx)
	fcancel()
	if err == nil {
		t.Fatal("flush to an unreachable broker succeeded")
	}
	if n, _ := st.OutboxLen(ctx); n != 1 {
		t.Fatalf("outbox holds %d events after a failed publish, want 1", n)
	}

	w := kafkax.NewProducer(good)
	defer func() { _ = w.Close() }()
	if err := outbox.New(st, events.NewKafkaPublisher(w, good), log).Flush(ctx); err != nil {
		t.Fatalf("flush: %v", err)
	}
	if n, _ := st.OutboxLen(ctx); n != 0 {
		t.Fatalf("outbox holds %d events after publishing", n)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: good.Brokers, Topic: good.Topic(events.TopicName)})
	defer func() { _ = r.Close() }()
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var ev events.Event
	if err := json.Unmarshal(m.Value, &ev); err != nil || ev.ID != "e1" || ev.Type != events.FlowCreated || string(m.Key) != "f1" {
		t.Fatalf("published %s (key %s): %v", m.Value, m.Key, err)
	}
}
