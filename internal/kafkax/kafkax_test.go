package kafkax_test

import (
	"context"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

func TestTopic(t *testing.T) {
	if got := (kafkax.Config{}).Topic("events"); got != "flowd.events" {
		t.Errorf("default prefix: got %q", got)
	}
	if got := (kafkax.Config{TopicPrefix: "acme."}).Topic("ingest"); got != "acme.ingest" {
		t.Errorf("custom prefix: got %q", got)
	}
}

func TestNewWriterSettings(t *testing.T) {
	w := kafkax.NewWriter(kafkax.Config{Brokers: []string{"127.0.0.1:1"}})
	if w.RequiredAcks != kafka.RequireAll || w.Async || w.AllowAutoTopicCreation || w.Topic != "" {
		t.Errorf("acks=%v async=%v autocreate=%v topic=%q", w.RequiredAcks, w.Async, w.AllowAutoTopicCreation, w.Topic)
	}
	if w.BatchTimeout <= 0 || w.BatchTimeout > 10*time.Millisecond {
		t.Errorf("BatchTimeout %v", w.BatchTimeout)
	}
	if _, ok := w.Balancer.(*kafka.Hash); !ok {
		t.Errorf("Balancer %T, want *kafka.Hash", w.Balancer)
	}
}

func TestPingUnreachable(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
	defer cancel()
	if err := kafkax.Ping(ctx, kafkax.Config{Brokers: []string{"127.0.0.1:1"}}); err == nil {
		t.Fatal("Ping of a closed port succeeded")
	}
	if err := kafkax.Ping(ctx, kafkax.Config{}); err == nil {
		t.Fatal("Ping without brokers succeeded")
	}
}

func TestEnsureTopicsAndWrite(t *testing.T) {
	brokers := testrig.Kafka(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cfg := kafkax.Config{Brokers: brokers, TopicPrefix: testrig.Unique("t") + ".", Partitions: 3}

	if err := kafkax.Ping(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	for i := range 2 { // the second call finds the topics there
		if err := kafkax.EnsureTopics(ctx, cfg, "a", "b"); err != nil {
			t.Fatalf("EnsureTopics call %d: %v", i+1, err)
		}
	}
	w := kafkax.NewWriter(cfg)
	defer w.Close()
	msgs := []kafka.Message{
		{Topic: cfg.Topic("a"), Key: []byte("k1"), Value: []byte("v1")},
		{Topic: cfg.Topic("b"), Key: []byte("k2"), Value: []byte("v2")},
		{Topic: cfg.Topic("a"), Key: []byte("k1"), Value: []byte("v3")},
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}

	// Read every partition of both topics back; the same key must land in one partition, in order.
	got := map[string][]string{} // topic/key -> values
	parts := map[string]int{}    // topic/key -> partition
	for _, topic := range []string{cfg.Topic("a"), cfg.Topic("b")} {
		for p := range cfg.Partitions {
			for _, m := range readAll(ctx, t, brokers, topic, p) {
				k := topic + "/" + string(m.Key)
				if prev, ok := parts[k]; ok && prev != p {
					t.Errorf("key %s in partitions %d and %d", k, prev, p)
				}
				parts[k] = p
				got[k] = append(got[k], string(m.Value))
			}
		}
	}
	if a := got[cfg.Topic("a")+"/k1"]; len(a) != 2 || a[0] != "v1" || a[1] != "v3" {
		t.Errorf("topic a key k1: got %v, want [v1 v3]", a)
	}
	if b := got[cfg.Topic("b")+"/k2"]; len(b) != 1 || b[0] != "v2" {
		t.Errorf("topic b key k2: got %v, want [v2]", b)
	}
}

// readAll returns the records of one partition up to its current end.
func readAll(ctx context.Context, t *testing.T, brokers []string, topic string, partition int) []kafka.Message {
	t.Helper()
	tr := &kafka.Transport{}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: tr}
	res, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{
		Topics: map[string][]kafka.OffsetRequest{topic: {kafka.LastOffsetOf(partition)}},
	})
	if err != nil {
		t.Fatal(err)
	}
	po := res.Topics[topic]
	if len(po) != 1 || po[0].Error != nil {
		t.Fatalf("end offset of %s/%d: %+v", topic, partition, po)
	}
	last := po[0].LastOffset
	if last == 0 {
		return nil
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers, Topic: topic, Partition: partition, MaxWait: 100 * time.Millisecond})
	defer r.Close()
	var out []kafka.Message
	for {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			t.Fatalf("%s/%d: %v", topic, partition, err)
		}
		out = append(out, m)
		if m.Offset+1 >= last {
			return out
		}
	}
}

func TestGroupFollowsThePrefix(t *testing.T) {
	type Config = kafkax.Config
	for prefix, want := range map[string]string{"": "flowd-router", "flowd.": "flowd-router", "acme.prod.": "acme.prod-router"} {
		if got := (Config{TopicPrefix: prefix}).Group("router"); got != want {
			t.Errorf("prefix %q: %q, want %q", prefix, got, want)
		}
	}
}

func TestGroupReaderHandsOverWithinTenSeconds(t *testing.T) {
	cfg := kafkax.Config{Brokers: []string{"b1:9092"}}
	rc := cfg.GroupReader(kafka.ReaderConfig{GroupID: "g", Topic: "t"})
	// A dead member's partitions move after the session timeout plus one heartbeat of the
	// survivors (they learn of the rebalance from it).
	if handover := rc.SessionTimeout + rc.HeartbeatInterval; handover > 10*time.Second {
		t.Fatalf("default handover %s (session %s, heartbeat %s), want at most 10s", handover, rc.SessionTimeout, rc.HeartbeatInterval)
	}
	if rc.RebalanceTimeout <= 0 || rc.Dialer == nil || rc.GroupID != "g" || rc.Brokers[0] != "b1:9092" {
		t.Fatalf("reader config %+v", rc)
	}
	if err := cfg.CheckGroupTimeouts(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	set := kafkax.Config{SessionTimeout: 30 * time.Second, HeartbeatInterval: 3 * time.Second, RebalanceTimeout: time.Minute}
	if rc := set.GroupReader(kafka.ReaderConfig{}); rc.SessionTimeout != 30*time.Second || rc.HeartbeatInterval != 3*time.Second || rc.RebalanceTimeout != time.Minute {
		t.Fatalf("configured timeouts not applied: %+v", rc)
	}
	if err := (kafkax.Config{SessionTimeout: 6 * time.Second, HeartbeatInterval: 3 * time.Second}).CheckGroupTimeouts(); err == nil {
		t.Fatal("a heartbeat of half the session was accepted")
	}
}
