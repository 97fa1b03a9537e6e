package testrig_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/testrig"
)

// TestKafkaRoundTrip proves the rig's broker is a real one: it answers ApiVersions, creates a
// topic, takes a record with acks=all and hands the same record back to a reader.
func TestKafkaRoundTrip(t *testing.T) {
	brokers := testrig.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	conn, err := kafka.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		t.Fatalf("dial %s: %v", brokers[0], err)
	}
	defer func() { _ = conn.Close() }()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))

	versions, err := conn.ApiVersions()
	if err != nil {
		t.Fatalf("ApiVersions: %v", err)
	}
	produce, okP := apiVersion(versions, 0) // ApiKey 0 is Produce
	fetch, okF := apiVersion(versions, 1)   // ApiKey 1 is Fetch
	if !okP || !okF {
		t.Fatalf("broker does not list Produce and Fetch among its %d APIs", len(versions))
	}
	t.Logf("kafka broker %s at %v: %d APIs, Produce v%d-v%d, Fetch v%d-v%d", testrig.KafkaVersion(),
		brokers, len(versions), produce.MinVersion, produce.MaxVersion, fetch.MinVersion, fetch.MaxVersion)
	// Kafka 4.0 dropped Fetch v0-v3 (KIP-896): a broker that still offers them is not the 4.x
	// broker the rig claims to run (an embedded fake or an older Kafka would).
	if strings.HasPrefix(testrig.KafkaVersion(), "4.") && fetch.MinVersion < 4 {
		t.Errorf("broker claims Kafka %s but still offers Fetch v%d", testrig.KafkaVersion(), fetch.MinVersion)
	}

	topic := testrig.Unique("rig-")
	createTopic(ctx, t, conn, topic)

	w := &kafka.Writer{
		Addr:                   kafka.TCP(brokers...),
		Topic:                  topic,
		RequiredAcks:           kafka.RequireAll,
		BatchTimeout:           5 * time.Millisecond,
		AllowAutoTopicCreation: false,
	}
	defer func() { _ = w.Close() }()
	want := "hello from " + topic
	if err := w.WriteMessages(ctx, kafka.Message{Key: []byte("k"), Value: []byte(want)}); err != nil {
		t.Fatalf("produce to %s: %v", topic, err)
	}

	r := kafka.NewReader(kafka.ReaderConfig{
		Brokers:     brokers,
		Topic:       topic,
		Partition:   0,
		StartOffset: kafka.FirstOffset,
		MaxWait:     100 * time.Millisecond,
	})
	defer func() { _ = r.Close() }()
	msg, err := r.ReadMessage(ctx) // ctx carries the deadline
	if err != nil {
		t.Fatalf("consume from %s: %v", topic, err)
	}
	if got := string(msg.Value); got != want || string(msg.Key) != "k" || msg.Offset != 0 {
		t.Fatalf("read back key=%q value=%q offset=%d, want key=%q value=%q offset=0",
			msg.Key, got, msg.Offset, "k", want)
	}
}

// TestRedisRoundTrip proves the rig's redis-server is a real one: SET then GET.
func TestRedisRoundTrip(t *testing.T) {
	opts, err := redis.ParseURL(testrig.Redis(t))
	if err != nil {
		t.Fatalf("parse %s: %v", testrig.EnvRedis, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rdb := redis.NewClient(opts)
	defer func() { _ = rdb.Close() }()

	info, err := rdb.Info(ctx, "server").Result()
	if err != nil {
		t.Fatalf("INFO server: %v", err)
	}
	t.Logf("redis-server %s at %s", infoField(info, "redis_version"), opts.Addr)

	key := testrig.Unique("rig:") + ":k"
	if err := rdb.Set(ctx, key, "v1", time.Minute).Err(); err != nil {
		t.Fatalf("SET %s: %v", key, err)
	}
	got, err := rdb.Get(ctx, key).Result()
	if err != nil || got != "v1" {
		t.Fatalf("GET %s = %q, %v; want \"v1\"", key, got, err)
	}
	if _, err := rdb.Get(ctx, key+"-absent").Result(); !errors.Is(err, redis.Nil) {
		t.Fatalf("GET of an absent key: err = %v, want redis.Nil", err)
	}
}

func apiVersion(versions []kafka.ApiVersion, key int16) (kafka.ApiVersion, bool) {
	for _, v := range versions {
		if v.ApiKey == key {
			return v, true
		}
	}
	return kafka.ApiVersion{}, false
}

// createTopic creates a one-partition topic through the controller, then polls the metadata
// until the partition has a leader (the broker accepts records only from then on).
func createTopic(ctx context.Context, t *testing.T, conn *kafka.Conn, topic string) {
	t.Helper()
	ctrl, err := conn.Controller()
	if err != nil {
		t.Fatalf("find the controller: %v", err)
	}
	cc, err := kafka.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		t.Fatalf("dial the controller: %v", err)
	}
	defer func() { _ = cc.Close() }()
	_ = cc.SetDeadline(time.Now().Add(30 * time.Second))
	if err := cc.CreateTopics(kafka.TopicConfig{Topic: topic, NumPartitions: 1, ReplicationFactor: 1}); err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}

	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		parts, err := cc.ReadPartitions(topic)
		if err == nil && len(parts) == 1 && parts[0].Leader.Host != "" {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("topic %s has no leader before the deadline (last: %v, %v)", topic, parts, err)
		case <-tick.C:
		}
	}
}

func infoField(info, name string) string {
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+":"); ok {
			return v
		}
	}
	return "unknown"
}
