// Package kafkax is the kafka-go plumbing every flowd role shares: topic naming, explicit topic
// creation, the one producer configuration, how every connection authenticates (SASL, TLS),
// and a reachability check.
package kafkax

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/busauth"
)

// Defaults applied to a zero Config.
const (
	DefaultTopicPrefix = "flowd."
	DefaultPartitions  = 6
	// A consumer group member that stops heartbeating (a SIGKILLed role) loses its partitions
	// after the session timeout; the survivors notice the rebalance at their next heartbeat
	// and rejoin. 6 s (the broker's default minimum) and 2 s hand a dead member's partitions
	// over in under 10 s, where kafka-go's defaults (30 s, 3 s) took more than 30.
	DefaultSessionTimeout    = 6 * time.Second
	DefaultHeartbeatInterval = 2 * time.Second
	// DefaultRebalanceTimeout bounds how long live members may take to rejoin a rebalance
	// (finishing and committing their in-flight records first).
	DefaultRebalanceTimeout = 10 * time.Second
)

// ensureTimeout bounds EnsureTopics when the caller's ctx has no deadline: kafka-go's
// CreateTopics waits for the topic to show up in metadata and never gives up on its own.
const ensureTimeout = 60 * time.Second

// Config locates the Kafka cluster and says how flowd's topics are named and created.
type Config struct {
	Brokers     []string
	TopicPrefix string // default "flowd."
	Partitions  int    // default 6
	// Replication of the topics flowd creates: 0 means the production default (3 and 2), or
	// what a smaller cluster has (see Durability). RequireReplication refuses to use existing
	// topics replicated less than that; without it they are warned about.
	ReplicationFactor  int
	MinInsyncReplicas  int
	RequireReplication bool
	// Consumer group membership (see the Default* constants).
	SessionTimeout    time.Duration
	HeartbeatInterval time.Duration
	RebalanceTimeout  time.Duration
	// SASL and TLS apply to every connection flowd makes to this cluster: build readers with
	// Dialer, clients with Transport, and writers with NewWriter.
	SASL SASL
	TLS  TLS
	// RecordKeys sign what a role produces to flowd's topics and verify what it consumes
	// from them (package busauth). Roles refuse to start without it.
	RecordKeys *busauth.Keyring
}

// Reserved reports whether topic is not for tenants: one of flowd's own (under the topic
// prefix) or one of Kafka's internal topics ("__consumer_offsets" and the like). Partner
// triggers and the kafka connector may use neither.
func (c Config) Reserved(topic string) bool {
	return strings.HasPrefix(topic, c.withDefaults().TopicPrefix) || strings.HasPrefix(topic, "__")
}

func (c Config) withDefaults() Config {
	if c.TopicPrefix == "" {
		c.TopicPrefix = DefaultTopicPrefix
	}
	if c.Partitions <= 0 {
		c.Partitions = DefaultPartitions
	}
	if c.SessionTimeout <= 0 {
		c.SessionTimeout = DefaultSessionTimeout
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = DefaultHeartbeatInterval
	}
	if c.RebalanceTimeout <= 0 {
		c.RebalanceTimeout = DefaultRebalanceTimeout
	}
	return c
}

// Group names a consumer group after the topic prefix, so deployments that share a broker
// under different prefixes never share a group: Group("router") is "flowd-router".
func (c Config) Group(role string) string {
	return strings.TrimRight(c.withDefaults().TopicPrefix, ".-_") + "-" + role
}

// GroupReader completes a consumer-group reader's configuration with what every flowd reader
// shares: the brokers, the dialer (SASL, TLS) and the group membership timeouts.
func (c Config) GroupReader(rc kafka.ReaderConfig) kafka.ReaderConfig {
	d := c.withDefaults()
	rc.Brokers = c.Brokers
	rc.Dialer = c.Dialer()
	rc.SessionTimeout = d.SessionTimeout
	rc.HeartbeatInterval = d.HeartbeatInterval
	rc.RebalanceTimeout = d.RebalanceTimeout
	return rc
}

// CheckGroupTimeouts says what is wrong with the membership settings, if anything: the broker
// refuses sessions under its group.min.session.timeout.ms (6 s by default), and a heartbeat
// must come several times per session for a slow one not to cost the membership.
func (c Config) CheckGroupTimeouts() error {
	d := c.withDefaults()
	if d.HeartbeatInterval*3 > d.SessionTimeout {
		return fmt.Errorf("kafka heartbeat interval %s must be at most a third of the session timeout %s", d.HeartbeatInterval, d.SessionTimeout)
	}
	return nil
}

// Topic returns the full name of a flowd topic: Topic("events") is "flowd.events".
func (c Config) Topic(name string) string {
	return c.withDefaults().TopicPrefix + name
}

func (c Config) addr() (net.Addr, error) {
	if len(c.Brokers) == 0 {
		return nil, errors.New("kafkax: no brokers configured")
	}
	return kafka.TCP(c.Brokers...), nil
}

// NewWriter returns the producer configuration flowd uses everywhere. It has no Topic: every
// message names its own, so one writer serves all topics. WriteMessages returns only once the
// broker acknowledged with acks=all.
func NewWriter(cfg Config) *kafka.Writer {
	return &kafka.Writer{
		Addr: kafka.TCP(cfg.Brokers...),
		// A struct-literal Writer defaults to RequireNone: fire and forget.
		RequiredAcks: kafka.RequireAll,
		// Default is 1 s: every synchronous write would wait that long for a batch to fill.
		BatchTimeout: 2 * time.Millisecond,
		BatchSize:    1000,
		// Same key, same partition: per-flow / per-execution ordering.
		Balancer:               &kafka.Hash{},
		AllowAutoTopicCreation: false, // topics are created explicitly by EnsureTopics
		Async:                  false, // Async drops errors
		WriteTimeout:           10 * time.Second,
		ReadTimeout:            10 * time.Second,
		Transport:              cfg.writerTransport(),
	}
}

// client returns a kafka.Client on a private transport. kafka-go answers Metadata requests
// from the transport's cache, so a fresh transport with a short TTL is what gives a poll fresh
// answers; call the returned close when done so its goroutine ends.
func client(cfg Config, metadataTTL time.Duration, topics []string) (*kafka.Client, func(), error) {
	addr, err := cfg.addr()
	if err != nil {
		return nil, nil, err
	}
	tr := cfg.Transport()
	tr.MetadataTTL, tr.MetadataTopics = metadataTTL, topics
	return &kafka.Client{Addr: addr, Transport: tr}, tr.CloseIdleConnections, nil
}

// Ping tells whether a broker answers a metadata request.
func Ping(ctx context.Context, cfg Config) error {
	// An empty (non-nil) topic list asks for brokers only.
	c, closeFn, err := client(cfg, 10*time.Second, []string{})
	if err != nil {
		return err
	}
	defer closeFn()
	if _, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{}}); err != nil {
		return fmt.Errorf("kafkax: ping %v: %w", cfg.Brokers, err)
	}
	return nil
}

// EnsureTopics creates the prefixed topics (an existing topic is fine) with the configured
// replication, checks that existing ones are replicated as much (see checkReplication), and
// waits until the cluster metadata shows every partition of each with a leader, so the first
// produce or fetch does not race topic creation.
func EnsureTopics(ctx context.Context, cfg Config, names ...string) error {
	topics := make([]string, len(names))
	for i, n := range names {
		topics[i] = cfg.Topic(n)
	}
	return EnsureTopicsNamed(ctx, cfg, topics...)
}

// EnsureTopicsNamed is EnsureTopics for topics given by their full names (a partner's topic,
// which flowd dev creates as a developer broker would).
func EnsureTopicsNamed(ctx context.Context, cfg Config, topics ...string) error {
	cfg = cfg.withDefaults()
	if len(topics) == 0 {
		return nil
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, ensureTimeout)
		defer cancel()
	}

	c, closeFn, err := client(cfg, 250*time.Millisecond, topics)
	if err != nil {
		return err
	}
	defer closeFn()

	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
	if err != nil {
		return fmt.Errorf("kafkax: metadata of %v: %w", cfg.Brokers, err)
	}
	d, err := resolveDurability(cfg.ReplicationFactor, cfg.MinInsyncReplicas, len(md.Brokers))
	if err != nil {
		return err
	}
	req := &kafka.CreateTopicsRequest{Topics: make([]kafka.TopicConfig, len(topics))}
	for i, t := range topics {
		req.Topics[i] = kafka.TopicConfig{
			Topic:             t,
			NumPartitions:     cfg.Partitions,
			ReplicationFactor: d.ReplicationFactor,
			ConfigEntries:     []kafka.ConfigEntry{{ConfigName: minInsync, ConfigValue: strconv.Itoa(d.MinInsyncReplicas)}},
		}
	}
	// The transport routes CreateTopics to the controller named in its metadata.
	res, err := c.CreateTopics(ctx, req)
	if err != nil {
		return fmt.Errorf("kafkax: create topics %v: %w", topics, err)
	}
	var existed []string
	for t, terr := range res.Errors {
		switch {
		case errors.Is(terr, kafka.TopicAlreadyExists):
			existed = append(existed, t)
		case terr != nil:
			return fmt.Errorf("kafkax: create topic %s (%s): %w", t, d, terr)
		}
	}
	if err := waitReady(ctx, c, cfg, topics); err != nil {
		return err
	}
	if len(existed) > 0 {
		if err := checkReplication(ctx, c, cfg, d, existed); err != nil {
			return err
		}
	}
	return waitProducerCache(ctx, cfg, topics)
}

// waitProducerCache waits until the metadata cache of the transport NewWriter uses knows the
// topics: kafka-go resolves a message's topic from that cache only, so a write right after
// topic creation would otherwise fail with UnknownTopicOrPartition until the next refresh.
func waitProducerCache(ctx context.Context, cfg Config, topics []string) error {
	c := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: cfg.writerTransport()}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
		if err == nil && checkReady(md, topics) == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkax: producer metadata for %v not refreshed: %w", topics, ctx.Err())
		case <-tick.C:
		}
	}
}

// waitReady polls metadata until every topic has all its partitions led, or ctx ends.
func waitReady(ctx context.Context, c *kafka.Client, cfg Config, topics []string) error {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	warned := map[string]bool{}
	for {
		md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: topics})
		var notReady string
		if err != nil {
			notReady = err.Error()
		} else {
			notReady = checkReady(md, topics)
			for _, t := range md.Topics {
				if t.Error == nil && len(t.Partitions) != cfg.Partitions && !warned[t.Name] {
					warned[t.Name] = true // created earlier with another count: use it as is
					slog.WarnContext(ctx, "kafka topic exists with a different partition count",
						"topic", t.Name, "partitions", len(t.Partitions), "configured", cfg.Partitions)
				}
			}
		}
		if notReady == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("kafkax: topics %v not ready (%s): %w", topics, notReady, ctx.Err())
		case <-tick.C:
		}
	}
}

// checkReady returns why the topics are not usable yet, or "" when they are.
func checkReady(md *kafka.MetadataResponse, topics []string) string {
	byName := make(map[string]kafka.Topic, len(md.Topics))
	for _, t := range md.Topics {
		byName[t.Name] = t
	}
	for _, name := range topics {
		t, ok := byName[name]
		switch {
		case !ok:
			return name + ": missing from metadata"
		case t.Error != nil:
			return fmt.Sprintf("%s: %v", name, t.Error)
		case len(t.Partitions) == 0:
			return name + ": no partitions yet"
		}
		for _, p := range t.Partitions {
			if p.Error != nil {
				return fmt.Sprintf("%s/%d: %v", name, p.ID, p.Error)
			}
			if p.Leader.Host == "" { // leader -1 maps to the zero Broker
				return fmt.Sprintf("%s/%d: no leader", name, p.ID)
			}
		}
	}
	return ""
}
