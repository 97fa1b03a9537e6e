package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/kafka/internal/kafka"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

// topic creates a fresh topic on the rig's broker and returns its full name.
func topic(ctx context.Context, t *testing.T, brokers []string, partitions int) string {
	t.Helper()
	cfg := kafkax.Config{Brokers: brokers, TopicPrefix: testrig.Unique("test.kafka-connector."), Partitions: partitions}
	if err := kafkax.EnsureTopics(ctx, cfg, "out"); err != nil {
		t.Fatal(err)
	}
	return cfg.Topic("out")
}

// readAt reads the one record at topic/partition/offset.
func readAt(ctx context.Context, t *testing.T, brokers []string, topic string, partition int, offset int64) kafkago.Message {
	t.Helper()
	r := kafkago.NewReader(kafkago.ReaderConfig{Brokers: brokers, Topic: topic, Partition: partition, MaxWait: 100 * time.Millisecond})
	defer func() { _ = r.Close() }()
	if err := r.SetOffset(offset); err != nil {
		t.Fatal(err)
	}
	m, err := r.ReadMessage(ctx)
	if err != nil {
		t.Fatalf("read %s/%d@%d: %v", topic, partition, offset, err)
	}
	return m
}

func headerMap(m kafkago.Message) map[string]string {
	hs := map[string]string{}
	for _, h := range m.Headers {
		hs[h.Key] = string(h.Value)
	}
	return hs
}

// produced decodes a produce output as the host returns it (numbers as json.Number).
func produced(t *testing.T, r sdk.Result) kafka.Produced {
	t.Helper()
	if r.Error != nil || len(r.Outputs) != 1 {
		t.Fatalf("result %s = %+v, want one output", r.ID, r)
	}
	b, _ := json.Marshal(r.Outputs[0].Data)
	var p kafka.Produced
	if err := json.Unmarshal(b, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestProduceThroughHost launches the kafka binary through the host, produces to the real
// broker and reads the records back.
func TestProduceThroughHost(t *testing.T) {
	brokers := testrig.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp := topic(ctx, t, brokers, 3)

	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"kafka": "github.com/flowd/flowd/connectors/kafka"})
	// The rig's broker is allowed the way an operator allows a partner cluster.
	h, err := host.New(host.Options{Dir: dir, Env: []string{kafka.EnvBrokersAllow + "=" + strings.Join(brokers, ",")}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })

	results, err := h.Execute(ctx, "kafka", []sdk.Invocation{
		{
			ID: "json", Action: "produce", ExecutionID: "e1", NodeID: "publish", Attempt: 1,
			IdempotencyKey: "e1/publish/1",
			Config: map[string]any{
				"brokers": brokers, "topic": tp, "key": "order-42",
				"headers": map[string]any{"X-Flow": "f1", "Content-Type": "application/json"},
			},
			Input: map[string]any{"orderId": 42, "lines": []any{"a", "b"}},
		},
		{
			ID: "text", Action: "produce", IdempotencyKey: "e2/publish/1",
			Config: map[string]any{"brokers": brokers, "topic": tp, "key": "csv", "value": "42,a\n43,b\n"},
			Input:  map[string]any{"ignored": true},
		},
		{
			ID: "missing-topic", Action: "produce",
			Config: map[string]any{"brokers": brokers, "topic": testrig.Unique("test.kafka-connector.nope.")},
			Input:  map[string]any{"x": 1},
		},
	})
	if err != nil {
		t.Fatal(err)
	}

	out := produced(t, results[0])
	if out.Topic != tp {
		t.Fatalf("output topic = %s, want %s", out.Topic, tp)
	}
	m := readAt(ctx, t, brokers, tp, out.Partition, out.Offset)
	if string(m.Key) != "order-42" || string(m.Value) != `{"lines":["a","b"],"orderId":42}` {
		t.Fatalf("record key %q value %s", m.Key, m.Value)
	}
	hs := headerMap(m)
	if hs["Idempotency-Key"] != "e1/publish/1" || hs["X-Flow"] != "f1" || hs["Content-Type"] != "application/json" || len(hs) != 3 {
		t.Fatalf("record headers = %v", hs)
	}

	out = produced(t, results[1])
	m = readAt(ctx, t, brokers, tp, out.Partition, out.Offset)
	if string(m.Key) != "csv" || string(m.Value) != "42,a\n43,b\n" || headerMap(m)["Idempotency-Key"] != "e2/publish/1" {
		t.Fatalf("text record key %q value %q headers %v", m.Key, m.Value, headerMap(m))
	}

	if e := results[2].Error; e == nil || e.Code != "unknown_topic" || e.Retryable {
		t.Fatalf("missing topic = %+v, want a permanent unknown_topic error", results[2])
	}
}

// TestConcurrentProducesReportTheirOwnOffsets checks that each call learns where its own
// record landed, although kafka-go batches records of concurrent calls together.
func TestConcurrentProducesReportTheirOwnOffsets(t *testing.T) {
	brokers := testrig.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tp := topic(ctx, t, brokers, 2)

	p, err := kafka.New(kafka.Options{AllowedBrokers: brokers})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	c := p.Connector()
	const n = 40
	outs := make([]sdk.Result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			outs[i] = sdk.Invoke(ctx, c, sdk.Invocation{
				ID: fmt.Sprint(i), Action: "produce", IdempotencyKey: fmt.Sprintf("k%d", i),
				Config: map[string]any{"brokers": brokers, "topic": tp, "key": fmt.Sprintf("key-%d", i%4)},
				Input:  map[string]any{"i": i},
			})
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i, r := range outs {
		if r.Error != nil {
			t.Fatalf("produce %d: %+v", i, r.Error)
		}
		out := r.Outputs[0].Data.(map[string]any)
		part, _ := out["partition"].(json.Number).Int64()
		off, _ := out["offset"].(json.Number).Int64()
		where := fmt.Sprintf("%d@%d", part, off)
		if seen[where] {
			t.Fatalf("two calls reported %s", where)
		}
		seen[where] = true
		m := readAt(ctx, t, brokers, tp, int(part), off)
		if string(m.Value) != fmt.Sprintf(`{"i":%d}`, i) || headerMap(m)["Idempotency-Key"] != fmt.Sprintf("k%d", i) {
			t.Fatalf("call %d reported %s, which holds %s %v", i, where, m.Value, headerMap(m))
		}
	}
}
