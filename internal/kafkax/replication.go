package kafkax

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
)

// Production replication of the topics flowd creates: a record acknowledged with acks=all is
// on at least two brokers' disks, and one broker may be lost without losing or refusing writes.
const (
	DefaultReplicationFactor = 3
	DefaultMinInsyncReplicas = 2
)

// minInsync is the topic config that makes acks=all mean "on this many replicas".
const minInsync = "min.insync.replicas"

// Durability is the replication flowd gives the topics it creates on one cluster.
type Durability struct {
	ReplicationFactor int
	MinInsyncReplicas int
	// Brokers is how many brokers the cluster listed when this was resolved.
	Brokers int
	// Lowered: the defaults did not fit the cluster (fewer than three brokers) and were
	// lowered to what it has. Acknowledged records then survive no broker loss.
	Lowered bool
	// OffsetsReplicationFactor is how many replicas Kafka keeps of committed offsets
	// (__consumer_offsets, replicated as the brokers say); 0 when the topic does not exist
	// yet (no group has committed) or may not be described.
	OffsetsReplicationFactor int
}

func (d Durability) String() string {
	return fmt.Sprintf("replication factor %d, min.insync.replicas %d", d.ReplicationFactor, d.MinInsyncReplicas)
}

// resolveDurability applies the defaults to the configured replication (0 = default) on a
// cluster of brokers: the defaults shrink to fit a smaller cluster (a single broker gets 1
// and 1), what was configured explicitly never does.
func resolveDurability(rf, minISR, brokers int) (Durability, error) {
	d := Durability{ReplicationFactor: rf, MinInsyncReplicas: minISR, Brokers: brokers}
	if rf < 0 || minISR < 0 {
		return d, fmt.Errorf("replication factor %d and min.insync.replicas %d must not be negative", rf, minISR)
	}
	if d.ReplicationFactor == 0 {
		d.ReplicationFactor = DefaultReplicationFactor
		if brokers > 0 && brokers < d.ReplicationFactor {
			d.ReplicationFactor, d.Lowered = brokers, true
		}
	} else if brokers > 0 && d.ReplicationFactor > brokers {
		return d, fmt.Errorf("replication factor %d needs at least %d brokers, and the cluster lists %d", d.ReplicationFactor, d.ReplicationFactor, brokers)
	}
	if d.MinInsyncReplicas == 0 {
		// One replica fewer than the factor, so one broker can be down, but never under 1 and
		// never more than the production default.
		d.MinInsyncReplicas = max(1, min(DefaultMinInsyncReplicas, d.ReplicationFactor-1))
		if d.ReplicationFactor < DefaultReplicationFactor && rf == 0 {
			d.Lowered = true
		}
	}
	if d.MinInsyncReplicas > d.ReplicationFactor {
		return d, fmt.Errorf("min.insync.replicas %d is more than the replication factor %d: no write could ever be acknowledged", d.MinInsyncReplicas, d.ReplicationFactor)
	}
	return d, nil
}

// ResolveDurability returns cfg with the replication its topics get on the cluster it names
// (see Durability), asking the cluster how many brokers it has. Roles call it once at start-up
// and say what it chose (LogDurability); EnsureTopics resolves by itself when they did not.
func ResolveDurability(ctx context.Context, cfg Config) (Config, Durability, error) {
	// The metadata of the offsets topic lists the brokers too.
	c, closeFn, err := client(cfg, 10*time.Second, []string{offsetsTopic})
	if err != nil {
		return cfg, Durability{}, err
	}
	defer closeFn()
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{offsetsTopic}})
	if err != nil {
		return cfg, Durability{}, fmt.Errorf("kafkax: count the brokers of %v: %w", cfg.Brokers, err)
	}
	d, err := resolveDurability(cfg.ReplicationFactor, cfg.MinInsyncReplicas, len(md.Brokers))
	if err != nil {
		return cfg, d, err
	}
	cfg.ReplicationFactor, cfg.MinInsyncReplicas = d.ReplicationFactor, d.MinInsyncReplicas
	for _, t := range md.Topics {
		if t.Name == offsetsTopic && t.Error == nil {
			d.OffsetsReplicationFactor = replicationOf(t).ReplicationFactor
		}
	}
	return cfg, d, nil
}

// offsetsTopic is where Kafka keeps consumer groups' committed offsets.
const offsetsTopic = "__consumer_offsets"

// LogDurability says at start-up what replication the role's topics get, and warns when it
// protects against no broker loss.
func LogDurability(ctx context.Context, log *slog.Logger, d Durability) {
	if d.Lowered {
		log.WarnContext(ctx, fmt.Sprintf("kafka cluster lists %d broker(s): flowd's topics get %s, so losing a broker can lose acknowledged records; production clusters have at least 3 brokers (see docs/durability.md)", d.Brokers, d),
			"replicationFactor", d.ReplicationFactor, "minInsyncReplicas", d.MinInsyncReplicas, "brokers", d.Brokers)
	} else {
		log.InfoContext(ctx, "kafka topics replicated", "replicationFactor", d.ReplicationFactor, "minInsyncReplicas", d.MinInsyncReplicas, "brokers", d.Brokers)
	}
	// Committed offsets live in Kafka's own topic: warn when they are less durable than
	// flowd's topics.
	if n := d.OffsetsReplicationFactor; n > 0 && n < d.ReplicationFactor {
		log.WarnContext(ctx, fmt.Sprintf("%s has replication factor %d, below the %d of flowd's topics: committed offsets may be lost with a broker and consumers then start again from older ones (set the brokers' offsets.topic.replication.factor; see docs/durability.md)", offsetsTopic, n, d.ReplicationFactor))
	}
}

// TopicReplication is what the cluster says about one topic's durability.
type TopicReplication struct {
	Topic      string `json:"topic"`
	Partitions int    `json:"partitions"`
	// ReplicationFactor is the fewest replicas any partition has.
	ReplicationFactor int `json:"replicationFactor"`
	// MinInsyncReplicas is the topic's effective min.insync.replicas; 0 when the cluster
	// would not say (no DescribeConfigs permission).
	MinInsyncReplicas int `json:"minInsyncReplicas,omitempty"`
	// UnderReplicated counts partitions with fewer in-sync replicas than replicas.
	UnderReplicated int `json:"underReplicatedPartitions"`
	// Offline counts partitions without a leader: nothing can be read or written there.
	Offline int `json:"offlinePartitions"`
}

// DescribeReplication asks the cluster for the replication of topics (full names). A topic
// the cluster does not know is an error wrapping kafka.UnknownTopicOrPartition.
func DescribeReplication(ctx context.Context, cfg Config, topics ...string) (map[string]TopicReplication, error) {
	c, closeFn, err := client(cfg, 250*time.Millisecond, topics)
	if err != nil {
		return nil, err
	}
	defer closeFn()
	return describeReplication(ctx, c, topics)
}

func describeReplication(ctx context.Context, c *kafka.Client, topics []string) (map[string]TopicReplication, error) {
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return nil, fmt.Errorf("kafkax: describe topics %v: %w", topics, err)
	}
	out := make(map[string]TopicReplication, len(topics))
	var errs []error
	for _, t := range md.Topics {
		if t.Error != nil {
			errs = append(errs, fmt.Errorf("kafkax: topic %s: %w", t.Name, t.Error))
			continue
		}
		out[t.Name] = replicationOf(t)
	}
	for _, name := range topics {
		if _, ok := out[name]; !ok && !hasTopic(md, name) {
			errs = append(errs, fmt.Errorf("kafkax: topic %s: %w", name, kafka.UnknownTopicOrPartition))
		}
	}
	if len(out) == 0 {
		return out, errors.Join(errs...)
	}
	// min.insync.replicas is a topic config (with the broker's as its default): one request.
	req := &kafka.DescribeConfigsRequest{}
	for name := range out {
		req.Resources = append(req.Resources, kafka.DescribeConfigRequestResource{
			ResourceType: kafka.ResourceTypeTopic, ResourceName: name, ConfigNames: []string{minInsync},
		})
	}
	if res, err := c.DescribeConfigs(ctx, req); err == nil {
		for _, r := range res.Resources {
			tr, ok := out[r.ResourceName]
			if !ok || r.Error != nil {
				continue
			}
			for _, e := range r.ConfigEntries {
				if e.ConfigName == minInsync {
					tr.MinInsyncReplicas, _ = strconv.Atoi(e.ConfigValue)
				}
			}
			out[r.ResourceName] = tr
		}
	}
	return out, errors.Join(errs...)
}

func hasTopic(md *kafka.MetadataResponse, name string) bool {
	for _, t := range md.Topics {
		if t.Name == name {
			return true
		}
	}
	return false
}

func replicationOf(t kafka.Topic) TopicReplication {
	r := TopicReplication{Topic: t.Name, Partitions: len(t.Partitions)}
	for i, p := range t.Partitions {
		if i == 0 || len(p.Replicas) < r.ReplicationFactor {
			r.ReplicationFactor = len(p.Replicas)
		}
		if len(p.Isr) < len(p.Replicas) {
			r.UnderReplicated++
		}
		if p.Leader.Host == "" {
			r.Offline++
		}
	}
	return r
}

// Below says how a topic falls short of d ("" when it does not): fewer replicas, or a lower
// min.insync.replicas, than flowd creates its topics with.
func (r TopicReplication) Below(d Durability) string {
	switch {
	case r.ReplicationFactor < d.ReplicationFactor:
		return fmt.Sprintf("topic %s has replication factor %d, below the configured %d", r.Topic, r.ReplicationFactor, d.ReplicationFactor)
	case r.MinInsyncReplicas > 0 && r.MinInsyncReplicas < d.MinInsyncReplicas:
		return fmt.Sprintf("topic %s has min.insync.replicas %d, below the configured %d", r.Topic, r.MinInsyncReplicas, d.MinInsyncReplicas)
	}
	return ""
}

// ErrUnderReplicated marks a refusal to start on topics replicated less than configured
// (Config.RequireReplication).
var ErrUnderReplicated = errors.New("kafka topics are replicated less than configured")

// warnedTopics keeps the warning about one under-replicated topic to once per process.
var warnedTopics sync.Map

// checkReplication compares existing topics with d: it warns about each one that falls short
// or, with cfg.RequireReplication, refuses.
func checkReplication(ctx context.Context, c *kafka.Client, cfg Config, d Durability, topics []string) error {
	reps, err := describeReplication(ctx, c, topics)
	if err != nil {
		return err
	}
	var short []error
	for _, name := range topics {
		why := reps[name].Below(d)
		if why == "" {
			continue
		}
		if cfg.RequireReplication {
			short = append(short, errors.New(why))
			continue
		}
		if _, seen := warnedTopics.LoadOrStore(name, true); !seen {
			slog.WarnContext(ctx, why+": losing a broker may lose or stall its records (raise it with kafka-reassign-partitions and kafka-configs; see docs/durability.md)",
				"topic", name, "replicationFactor", reps[name].ReplicationFactor, "minInsyncReplicas", reps[name].MinInsyncReplicas)
		}
	}
	if len(short) > 0 {
		return fmt.Errorf("%w (refused with --kafka-require-replication): %w", ErrUnderReplicated, errors.Join(short...))
	}
	return nil
}
