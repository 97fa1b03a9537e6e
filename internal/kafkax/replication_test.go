package kafkax_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

// On a single broker (the rig's, as in flowd dev) the production defaults are lowered to one
// replica and min.insync.replicas 1, and the topics are created so.
func TestDurabilityOnASingleBroker(t *testing.T) {
	brokers := testrig.Kafka(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	cfg := kafkax.Config{Brokers: brokers, TopicPrefix: testrig.Unique("t") + ".", Partitions: 2}
	resolved, d := resolveWithOffsets(ctx, t, cfg)
	if want := (kafkax.Durability{ReplicationFactor: 1, MinInsyncReplicas: 1, Brokers: 1, Lowered: true, OffsetsReplicationFactor: 1}); d != want {
		t.Fatalf("durability %+v, want %+v", d, want)
	}
	if err := kafkax.EnsureTopics(ctx, resolved, "one"); err != nil {
		t.Fatal(err)
	}
	reps, err := kafkax.DescribeReplication(ctx, cfg, cfg.Topic("one"))
	if err != nil {
		t.Fatal(err)
	}
	if got := reps[cfg.Topic("one")]; got.ReplicationFactor != 1 || got.MinInsyncReplicas != 1 || got.Partitions != 2 {
		t.Fatalf("topic created as %+v", got)
	}
	// An explicit factor is never lowered: it fails with a reason.
	cfg.ReplicationFactor = 3
	if _, _, err := kafkax.ResolveDurability(ctx, cfg); err == nil || !strings.Contains(err.Error(), "needs at least 3 brokers, and the cluster lists 1") {
		t.Fatalf("replication factor 3 on one broker: %v", err)
	}
	if _, err := kafkax.DescribeReplication(ctx, cfg, "no-such-topic-"+testrig.Unique("")); !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Fatalf("describing a missing topic: %v", err)
	}
}

// On three brokers, flowd's topics get three replicas and min.insync.replicas 2; an existing
// topic replicated less is warned about, or refused with RequireReplication. Then records are
// produced and consumed while the leader of a partition is killed and later restarted: every
// acknowledged record is read, the writes go on on the two brokers left, and the group reader
// follows the partitions' new leaders both ways. With two brokers down nothing is
// acknowledged, and the writes resume when one comes back.
func TestReplicationOnAThreeBrokerCluster(t *testing.T) {
	cluster := testrig.StartKafkaCluster(t)
	began := time.Now()
	defer func() { t.Logf("on the cluster: %s", time.Since(began).Round(10*time.Millisecond)) }()
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()
	cfg := kafkax.Config{Brokers: cluster.Brokers, TopicPrefix: testrig.Unique("t") + ".", Partitions: 3}

	logs := &testrig.LogBuffer{}
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(logs, nil)))
	_, d, err := kafkax.ResolveDurability(ctx, cfg)
	slog.SetDefault(prev)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(logs.String(), "WARN") {
		t.Errorf("warnings on a cluster replicated as configured: %s", logs)
	}
	if want := (kafkax.Durability{ReplicationFactor: 3, MinInsyncReplicas: 2, Brokers: 3}); d != want {
		t.Fatalf("durability %+v, want %+v", d, want)
	}
	if err := kafkax.EnsureTopics(ctx, cfg, "work"); err != nil {
		t.Fatal(err)
	}
	t.Logf("topic created: %s", time.Since(began).Round(10*time.Millisecond))
	topic := cfg.Topic("work")
	reps, err := kafkax.DescribeReplication(ctx, cfg, topic)
	if err != nil {
		t.Fatal(err)
	}
	if got := reps[topic]; got.ReplicationFactor != 3 || got.MinInsyncReplicas != 2 || got.UnderReplicated != 0 || got.Offline != 0 {
		t.Fatalf("topic created as %+v, want 3 replicas, min.insync.replicas 2, all in sync", got)
	}

	t.Run("existing topics replicated less", func(t *testing.T) {
		admin := &kafka.Client{Addr: kafka.TCP(cluster.Brokers...), Transport: cfg.Transport()}
		res, err := admin.CreateTopics(ctx, &kafka.CreateTopicsRequest{Topics: []kafka.TopicConfig{
			{Topic: cfg.Topic("thin"), NumPartitions: 1, ReplicationFactor: 1},
		}})
		if err != nil || res.Errors[cfg.Topic("thin")] != nil {
			t.Fatalf("create a topic with one replica: %v %v", err, res)
		}
		logs := &testrig.LogBuffer{}
		prev := slog.Default()
		slog.SetDefault(slog.New(slog.NewTextHandler(logs, nil)))
		err = kafkax.EnsureTopics(ctx, cfg, "thin")
		slog.SetDefault(prev)
		if err != nil {
			t.Fatalf("a thin topic is warned about, not refused, by default: %v", err)
		}
		if !strings.Contains(logs.String(), "topic "+topic[:len(topic)-len("work")]+"thin has replication factor 1, below the configured 3") {
			t.Fatalf("no warning about the thin topic; logs:\n%s", logs)
		}
		strict := cfg
		strict.RequireReplication = true
		err = kafkax.EnsureTopics(ctx, strict, "thin")
		if !errors.Is(err, kafkax.ErrUnderReplicated) || !strings.Contains(err.Error(), "replication factor 1, below the configured 3") {
			t.Fatalf("with RequireReplication: %v", err)
		}
		if err := kafkax.EnsureTopics(ctx, strict, "work"); err != nil {
			t.Fatalf("a topic replicated as configured is fine with RequireReplication: %v", err)
		}
	})

	t.Run("a leader killed and restarted", func(t *testing.T) {
		leaderChange(ctx, t, cluster, cfg, topic)
	})

	// Committed offsets exist now, replicated as the cluster's brokers say (3).
	if _, d := resolveWithOffsets(ctx, t, cfg); d.OffsetsReplicationFactor != 3 {
		t.Fatalf("durability %+v: want __consumer_offsets with 3 replicas", d)
	}
}

// resolveWithOffsets resolves cfg's durability once Kafka's offsets topic exists (a
// FindCoordinator request makes the broker create it), so that its replication is known.
func resolveWithOffsets(ctx context.Context, t *testing.T, cfg kafkax.Config) (kafkax.Config, kafkax.Durability) {
	t.Helper()
	admin := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.Transport()}
	for deadline := time.Now().Add(60 * time.Second); ; {
		_, _ = admin.FindCoordinator(ctx, &kafka.FindCoordinatorRequest{Key: testrig.Unique("g-"), KeyType: kafka.CoordinatorKeyTypeConsumer})
		resolved, d, err := kafkax.ResolveDurability(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		if d.OffsetsReplicationFactor > 0 {
			return resolved, d
		}
		if time.Now().After(deadline) {
			t.Fatalf("the offsets topic never showed: %+v", d)
		}
		time.Sleep(100 * time.Millisecond) // polling the metadata
	}
}

func leaderChange(ctx context.Context, t *testing.T, cluster *testrig.KafkaCluster, cfg kafkax.Config, topic string) {
	// The reader: a consumer group member with the roles' settings, committing what it read
	// (in the background, as the roles do, so commits do not pace the reads).
	group := testrig.Unique("g-")
	r := kafka.NewReader(cfg.GroupReader(kafka.ReaderConfig{GroupID: group, Topic: topic, MaxWait: 200 * time.Millisecond, CommitInterval: 100 * time.Millisecond}))
	defer func() { _ = r.Close() }()
	var mu sync.Mutex
	read := map[string]int{}
	go func() {
		for {
			m, err := r.FetchMessage(ctx)
			if ctx.Err() != nil {
				return
			}
			if err != nil { // a group error while a coordinator moves: fetch again, as the roles do
				t.Logf("fetch: %v", err)
				continue
			}
			mu.Lock()
			read[string(m.Value)]++
			mu.Unlock()
			// Commit failures (a coordinator moving) only mean the record is read again.
			_ = r.CommitMessages(ctx, m)
		}
	}()

	// The writers: sequential acks=all writes, each given the ingest's 5 s; what was
	// acknowledged is remembered.
	p := kafkax.NewProducer(cfg)
	defer func() { _ = p.Close() }()
	var (
		acked     sync.Map
		ackedN    atomic.Int64
		failed    atomic.Int64
		next      atomic.Int64
		stop      = make(chan struct{})
		writersWG sync.WaitGroup
	)
	for range 4 {
		writersWG.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				v := fmt.Sprintf("r%d", next.Add(1))
				wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				err := p.WriteMessages(wctx, kafka.Message{Topic: topic, Key: []byte(v), Value: []byte(v)})
				cancel()
				if err != nil {
					failed.Add(1)
					continue
				}
				acked.Store(v, true)
				ackedN.Add(1)
			}
		})
	}
	defer func() { close(stop); writersWG.Wait() }()
	waitAcked := func(n int64, what string) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for ackedN.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d of %d writes acknowledged (%d failed)", what, ackedN.Load(), n, failed.Load())
			}
			time.Sleep(20 * time.Millisecond) // polling the writers' progress
		}
	}

	start := time.Now()
	lap := func(what string) {
		t.Logf("%s: %d acknowledged, %d failed, %s", what, ackedN.Load(), failed.Load(), time.Since(start).Round(10*time.Millisecond))
		start = time.Now()
	}
	waitAcked(300, "before the kill")
	lap("before the kill")
	victim := leaderOf(ctx, t, cfg, topic, 0)
	if err := cluster.Kill(victim); err != nil {
		t.Fatal(err)
	}
	killedAt := ackedN.Load()
	t.Logf("killed broker %d (leader of %s/0) after %d acknowledged writes", victim, topic, killedAt)
	waitAcked(killedAt+600, "on the two brokers left")
	lap("on the two brokers left")
	if now := leaderOf(ctx, t, cfg, topic, 0); now == victim {
		t.Fatalf("partition 0 is still led by the dead broker %d", victim)
	}
	if err := cluster.Restart(victim); err != nil {
		t.Fatal(err)
	}
	lap("restart")
	restartedAt := ackedN.Load()
	waitAcked(restartedAt+300, "after the restart")
	lap("after the restart")

	// Two brokers down: one replica left, under min.insync.replicas 2. Nothing may be
	// acknowledged then (a write already acknowledged by the replicas as the second broker dies
	// may still return, one per writer at most); the writers get errors, and go on once a broker is back.
	other := victim%3 + 1
	if err := cluster.Kill(victim); err != nil {
		t.Fatal(err)
	}
	if err := cluster.Kill(other); err != nil {
		t.Fatal(err)
	}
	ackedAtLoss, failedAtLoss := ackedN.Load(), failed.Load()
	for deadline := time.Now().Add(90 * time.Second); failed.Load() < failedAtLoss+8; {
		if time.Now().After(deadline) {
			t.Fatalf("with one broker of three up, writes went on failing only %d times", failed.Load()-failedAtLoss)
		}
		time.Sleep(20 * time.Millisecond) // polling the writers' progress
	}
	if n := ackedN.Load() - ackedAtLoss; n > 4 {
		t.Fatalf("%d writes acknowledged with one in-sync replica; min.insync.replicas is 2", n)
	}
	lap("one broker left: writes refused")
	if err := cluster.Restart(other); err != nil {
		t.Fatal(err)
	}
	lap("second restart")
	waitAcked(ackedN.Load()+300, "with two brokers back")
	lap("with two brokers back")
	close(stop)
	writersWG.Wait()
	stop = make(chan struct{}) // for the deferred close

	// Every acknowledged record is read: none lost, none skipped by the reader.
	var missing []string
	deadline := time.Now().Add(90 * time.Second)
	for {
		missing = missing[:0]
		mu.Lock()
		acked.Range(func(k, _ any) bool {
			if read[k.(string)] == 0 {
				missing = append(missing, k.(string))
			}
			return true
		})
		dups := 0
		for _, c := range read {
			if c > 1 {
				dups++
			}
		}
		total := len(read)
		mu.Unlock()
		if len(missing) == 0 {
			t.Logf("%d writes acknowledged (%d failed or timed out and were not), all %d read; %d records read more than once (redeliveries after the leader changes)",
				ackedN.Load(), failed.Load(), total, dups)
			return
		}
		if time.Now().After(deadline) {
			_ = pprof.Lookup("goroutine").WriteTo(os.Stderr, 1)
			t.Fatalf("%d of %d acknowledged records never read, e.g. %v", len(missing), ackedN.Load(), missing[:min(5, len(missing))])
		}
		time.Sleep(100 * time.Millisecond) // polling the reader's progress
	}
}

// leaderOf is the id of the broker leading partition of topic, as the cluster says now.
func leaderOf(ctx context.Context, t *testing.T, cfg kafkax.Config, topic string, partition int) int {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		for _, b := range cfg.Brokers { // any live broker will say
			var conn *kafka.Conn
			if conn, err = kafka.DialContext(ctx, "tcp", b); err != nil {
				continue
			}
			parts, perr := conn.ReadPartitions(topic)
			_ = conn.Close()
			for _, p := range parts {
				if perr == nil && p.ID == partition && p.Leader.Host != "" {
					return p.Leader.ID
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no leader of %s/%d: %v", topic, partition, err)
		}
		time.Sleep(100 * time.Millisecond) // polling the metadata
	}
}
