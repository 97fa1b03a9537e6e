// Package kafka is the built-in `kafka` connector: its `produce` action writes one record per
// call to a topic with acks=all, the way flows hand data to partner systems.
//
// The connector reaches only brokers an operator allowed (FLOWD_CONNECTOR_KAFKA_BROKERS_ALLOW):
// with no allowlist it produces nowhere. It never writes to flowd's own topics (the prefix in
// FLOWD_CONNECTOR_RESERVED_TOPIC_PREFIX, default "flowd.") nor to Kafka's internal `__*` topics,
// even on an allowed cluster, and every dial goes through the egress policy.
package kafka

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"os"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/kafkax"
)

// Name and Version identify the connector in its manifest.
const (
	Name    = "kafka"
	Version = "1.0.0"
)

// IdempotencyHeader carries the step's idempotency key on every record, so a consumer can drop
// the duplicate a retried step produces.
const IdempotencyHeader = "Idempotency-Key"

// Environment the runner passes to the connector.
const (
	// EnvBrokersAllow is the comma-separated host:port list of brokers the connector may reach,
	// bootstrap and advertised alike.
	EnvBrokersAllow = egress.EnvKafkaBrokersAllow
	// EnvReservedTopicPrefix is flowd's own topic prefix, which the connector never writes.
	EnvReservedTopicPrefix = egress.EnvReservedTopicPrefix
	// DefaultReservedTopicPrefix is flowd's default topic prefix.
	DefaultReservedTopicPrefix = kafkax.DefaultTopicPrefix
)

// Options are the operator's rules for the connector.
type Options struct {
	// AllowedBrokers are the host:port brokers the connector may dial. Empty: none.
	AllowedBrokers []string
	// ReservedTopicPrefix is flowd's topic prefix; empty means DefaultReservedTopicPrefix.
	ReservedTopicPrefix string
	// Egress is the address policy of every dial. An allowed broker given as an address is
	// allowed by it too (the operator named that address); one given as a name is not: its
	// resolved addresses are checked, since the name's DNS may not be the operator's.
	// nil: the default policy.
	Egress *egress.Policy
}

// OptionsFromEnv reads the options the runner passes in the environment.
func OptionsFromEnv() (Options, error) {
	o := Options{ReservedTopicPrefix: os.Getenv(EnvReservedTopicPrefix)}
	for b := range strings.SplitSeq(os.Getenv(EnvBrokersAllow), ",") {
		if b = strings.TrimSpace(b); b != "" {
			o.AllowedBrokers = append(o.AllowedBrokers, b)
		}
	}
	pol, err := egress.FromEnv()
	o.Egress = pol
	return o, err
}

// errBrokerNotAllowed is a broker missing from the allowlist, met at dial time (an advertised
// broker the cluster's metadata points to).
var errBrokerNotAllowed = errors.New("broker not in the kafka connector's allowlist")

// maxCachedWriters bounds the cached writers (one per distinct broker list); past it a call
// gets a writer of its own, closed after the call.
const maxCachedWriters = 16

// ProduceConfig is the config of the `produce` action. Templates in it are rendered by the
// runner before the call.
type ProduceConfig struct {
	Brokers []string          `json:"brokers"`
	Topic   string            `json:"topic"`
	Key     string            `json:"key"`
	Headers map[string]string `json:"headers"`
	// Value is the record value; when absent the step's input is. A string is written as its
	// raw bytes (so a template can produce CSV or XML), anything else as JSON.
	Value json.RawMessage `json:"value"`
}

// Produced is the output of `produce`: where the record landed.
type Produced struct {
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
}

// Producer holds the writers for the plugin's life.
type Producer struct {
	brokers   map[string]bool // allowed, normalised host:port
	reserved  string          // flowd's topic prefix
	transport *kafkago.Transport

	mu      sync.Mutex
	writers map[string]*kafkago.Writer // by normalised broker list
	closed  bool
}

// New returns a Producer with no writers yet; they are made on first use. It fails when an
// allowed broker is not host:port.
func New(o Options) (*Producer, error) {
	p := &Producer{brokers: map[string]bool{}, reserved: o.ReservedTopicPrefix, writers: map[string]*kafkago.Writer{}}
	if p.reserved == "" {
		p.reserved = DefaultReservedTopicPrefix
	}
	for _, b := range o.AllowedBrokers {
		n, ok := normBroker(b)
		if !ok {
			return nil, fmt.Errorf("%s: %q is not host:port", EnvBrokersAllow, b)
		}
		p.brokers[n] = true
	}
	// Brokers allowed by address join the egress allowlist: a broker on a private network is
	// reachable once the operator names its address, and nothing else on that network is.
	var allow []string
	for _, b := range slices.Sorted(maps.Keys(p.brokers)) {
		if host, _, _ := net.SplitHostPort(b); net.ParseIP(host) != nil {
			allow = append(allow, b)
		}
	}
	if !o.Egress.Empty() {
		allow = append(allow, o.Egress.String())
	}
	pol, err := egress.Parse(strings.Join(allow, ","))
	if err != nil {
		return nil, err
	}
	d := &egress.Dialer{
		Policy: pol,
		OnDeny: func(e *egress.DeniedError) {
			slog.Warn("egress refused", "target", e.Target, "address", e.IP.String(), "kind", e.What)
		},
	}
	p.transport = &kafkago.Transport{
		DialTimeout: 5 * time.Second,
		ClientID:    "flowd-connector",
		MetadataTTL: time.Second, // as flowd's writers: topics are never auto-created
		Dial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			// Every connection, to a bootstrap broker or one the metadata advertises, must be
			// to an allowed broker: a cluster cannot point the connector elsewhere.
			if n, _ := normBroker(addr); !p.brokers[n] {
				slog.Warn("kafka broker refused", "broker", addr)
				return nil, fmt.Errorf("%w: %s", errBrokerNotAllowed, addr)
			}
			return d.DialContext(ctx, network, addr)
		},
	}
	return p, nil
}

// normBroker lower-cases the host of host:port.
func normBroker(b string) (string, bool) {
	host, port, err := net.SplitHostPort(strings.TrimSpace(b))
	if err != nil || host == "" || port == "" {
		return "", false
	}
	return net.JoinHostPort(strings.ToLower(host), port), true
}

// Connector returns the connector served by p.
func (p *Producer) Connector() sdk.Connector {
	return sdk.Connector{
		Manifest: sdk.Manifest{
			Name:        Name,
			Version:     Version,
			Description: "Produces records to Kafka topics (acks=all).",
		},
		Actions: map[string]sdk.Handler{
			"produce": sdk.Action(produceSpec, func(ctx context.Context, call sdk.Call[ProduceConfig, json.RawMessage]) ([]sdk.Output, error) {
				out, err := p.Produce(ctx, call.Config, call.Input, call.IdempotencyKey)
				if err != nil {
					return nil, err
				}
				return []sdk.Output{{Data: out}}, nil
			}),
		},
		// Writes are synchronous (acks=all before a call returns), so nothing is left to
		// flush: closing releases the writers' connections.
		Close: func(context.Context) error { return p.Close() },
	}
}

// Close flushes and closes every cached writer.
func (p *Producer) Close() error {
	p.mu.Lock()
	ws := p.writers
	p.writers, p.closed = map[string]*kafkago.Writer{}, true
	p.mu.Unlock()
	var errs []error
	for _, w := range ws {
		errs = append(errs, w.Close())
	}
	// A writer closes only a transport it made itself.
	p.transport.CloseIdleConnections()
	return errors.Join(errs...)
}

// Produce writes one record and returns where it landed. It returns once the broker has
// acknowledged the record on all in-sync replicas.
func (p *Producer) Produce(ctx context.Context, cfg ProduceConfig, input json.RawMessage, idempotencyKey string) (Produced, error) {
	brokers, err := p.checkConfig(cfg)
	if err != nil {
		return Produced{}, err
	}
	value, err := recordValue(cfg.Value, input)
	if err != nil {
		return Produced{}, err
	}
	w, release, err := p.writer(brokers)
	if err != nil {
		return Produced{}, err
	}
	defer release()

	res := &completion{}
	msg := kafkago.Message{
		Topic:      cfg.Topic,
		Value:      value,
		Headers:    headers(cfg.Headers, idempotencyKey),
		WriterData: res, // filled in by the writer's Completion hook
	}
	if cfg.Key != "" {
		msg.Key = []byte(cfg.Key)
	}
	if err := w.WriteMessages(ctx, msg); err != nil {
		return Produced{}, classify(ctx, cfg.Topic, err)
	}
	// WriteMessages of a synchronous writer returns after Completion ran for its batch.
	return Produced{Topic: cfg.Topic, Partition: res.partition, Offset: res.offset}, nil
}

// completion receives the partition and offset of one record: kafka-go reports them only to
// the writer's Completion hook, with every message of a batch, which may mix calls.
type completion struct {
	partition int
	offset    int64
}

func onCompletion(msgs []kafkago.Message, err error) {
	if err != nil {
		return
	}
	for _, m := range msgs {
		if c, ok := m.WriterData.(*completion); ok {
			c.partition, c.offset = m.Partition, m.Offset
		}
	}
}

// writer returns the cached writer for brokers, or a private one when the cache is full; call
// release when the write is done.
func (p *Producer) writer(brokers []string) (*kafkago.Writer, func(), error) {
	key := strings.Join(brokers, ",")
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, nil, sdk.Retryable("kafka_unavailable", errors.New("the kafka connector is shutting down"))
	}
	if w, ok := p.writers[key]; ok {
		return w, func() {}, nil
	}
	w := kafkax.NewWriter(kafkax.Config{Brokers: brokers})
	w.Transport = p.transport // the connector's own: allowlisted dials, never flowd's credentials
	w.Completion = onCompletion
	if len(p.writers) < maxCachedWriters {
		p.writers[key] = w
		return w, func() {}, nil
	}
	return w, func() {
		if err := w.Close(); err != nil {
			slog.Warn("close kafka writer", "brokers", key, "err", err)
		}
	}, nil
}

var topicName = regexp.MustCompile(`^[a-zA-Z0-9._-]{1,249}$`)

// checkConfig validates cfg against the operator's rules and returns the broker list sorted and
// de-duplicated, so the same cluster written in another order shares a writer.
func (p *Producer) checkConfig(cfg ProduceConfig) ([]string, error) {
	if len(cfg.Brokers) == 0 {
		return nil, sdk.Errorf("invalid_config", "brokers is empty")
	}
	brokers := make([]string, 0, len(cfg.Brokers))
	for i, b := range cfg.Brokers {
		n, ok := normBroker(b)
		if !ok {
			return nil, sdk.Errorf("invalid_config", "brokers[%d]: %q is not host:port", i, cfg.Brokers[i])
		}
		if !p.brokers[n] {
			return nil, sdk.Errorf("broker_not_allowed", "brokers[%d]: %s is not an allowed broker; an operator allows brokers with %s (flowd runner --kafka-connector-brokers)", i, n, EnvBrokersAllow)
		}
		brokers = append(brokers, n)
	}
	slices.Sort(brokers)
	brokers = slices.Compact(brokers)
	if !topicName.MatchString(cfg.Topic) || cfg.Topic == "." || cfg.Topic == ".." {
		return nil, sdk.Errorf("invalid_config", "topic %q is not a valid Kafka topic name", cfg.Topic)
	}
	if err := p.checkTopic(cfg.Topic); err != nil {
		return nil, err
	}
	for name := range cfg.Headers {
		if name == "" {
			return nil, sdk.Errorf("invalid_config", "headers: a header name is empty")
		}
	}
	return brokers, nil
}

// checkTopic refuses flowd's own topics and Kafka's internal ones: a flow must not forge what
// flowd's roles read, even on a cluster the operator allowed for partners.
func (p *Producer) checkTopic(topic string) error {
	if (kafkax.Config{TopicPrefix: p.reserved}).Reserved(topic) {
		return sdk.Errorf("topic_reserved", "topic %s is reserved: names starting with %q belong to flowd, those starting with \"__\" to Kafka", topic, p.reserved)
	}
	return nil
}

// recordValue is the configured value, or the input: a JSON string as its raw text, null (or
// nothing) as a null record value (a tombstone on a compacted topic), anything else as compact
// JSON.
func recordValue(configured, input json.RawMessage) ([]byte, error) {
	raw := bytes.TrimSpace(configured)
	what := "value"
	if len(raw) == 0 {
		raw, what = bytes.TrimSpace(input), "input"
	}
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, nil
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, sdk.Permanent("invalid_config", fmt.Errorf("%s: %w", what, err))
		}
		return []byte(s), nil
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, sdk.Permanent("invalid_config", fmt.Errorf("%s: %w", what, err))
	}
	return buf.Bytes(), nil
}

// headers returns the configured headers in name order, then the idempotency key, which
// replaces a configured header of the same name.
func headers(configured map[string]string, idempotencyKey string) []kafkago.Header {
	hs := make([]kafkago.Header, 0, len(configured)+1)
	for _, name := range slices.Sorted(maps.Keys(configured)) {
		if idempotencyKey != "" && strings.EqualFold(name, IdempotencyHeader) {
			continue
		}
		hs = append(hs, kafkago.Header{Key: name, Value: []byte(configured[name])})
	}
	if idempotencyKey != "" {
		hs = append(hs, kafkago.Header{Key: IdempotencyHeader, Value: []byte(idempotencyKey)})
	}
	return hs
}

// permanent are broker answers a retry cannot change.
var permanent = map[kafkago.Error]bool{
	kafkago.MessageSizeTooLarge:         true,
	kafkago.RecordListTooLarge:          true,
	kafkago.InvalidTopic:                true,
	kafkago.InvalidRecord:               true,
	kafkago.InvalidRequiredAcks:         true,
	kafkago.TopicAuthorizationFailed:    true,
	kafkago.ClusterAuthorizationFailed:  true,
	kafkago.UnsupportedVersion:          true,
	kafkago.UnsupportedForMessageFormat: true,
}

// classify maps a write failure to the step's error: an unknown topic and a refused record are
// permanent; everything else (unreachable brokers, leader changes, timeouts) is worth a retry.
func classify(ctx context.Context, topic string, err error) error {
	var denied *egress.DeniedError
	switch {
	case errors.As(err, &denied):
		return sdk.Permanent("egress_denied", fmt.Errorf("produce to %s: %w", topic, denied))
	case errors.Is(err, errBrokerNotAllowed):
		return sdk.Permanent("broker_not_allowed", fmt.Errorf("produce to %s: the cluster advertises a broker that is not allowed (%w); an operator allows brokers with %s", topic, err, EnvBrokersAllow))
	}
	if ctx.Err() != nil {
		return fmt.Errorf("kafka: produce to %s: %w", topic, ctx.Err())
	}
	var werrs kafkago.WriteErrors
	if errors.As(err, &werrs) {
		for _, e := range werrs {
			if e != nil {
				err = e
				break
			}
		}
	}
	var kerr kafkago.Error
	if errors.As(err, &kerr) {
		switch {
		case kerr == kafkago.UnknownTopicOrPartition:
			return sdk.Errorf("unknown_topic", "topic %s does not exist (flowd does not create topics on produce)", topic)
		case permanent[kerr]:
			return sdk.Permanent("kafka_rejected", fmt.Errorf("produce to %s: %w", topic, err))
		}
	}
	return sdk.Retryable("kafka_unavailable", fmt.Errorf("produce to %s: %w", topic, err))
}

var produceSpec = sdk.ActionSpec{
	Title: "Produce a record",
	Description: "Writes one record to a Kafka topic and waits for acks=all. The value is config.value " +
		"when set, else the step's input: a string is written as its raw text, null as a null value, anything " +
		"else as JSON. The record carries the configured headers plus Idempotency-Key (the step's idempotency " +
		"key) so consumers can drop duplicates. The topic must exist. Broker failures are retryable " +
		"(kafka_unavailable); an unknown topic (unknown_topic) or a refused record (kafka_rejected) is not. " +
		"Only brokers the operator allowed are reached (broker_not_allowed); flowd's own topics and " +
		"Kafka's __ topics are refused (topic_reserved).",
	ConfigSchema: json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "brokers": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^[^\\s:]+:[0-9]+$"}, "description": "Bootstrap brokers, host:port; each must be on the operator's broker allowlist."},
    "topic": {"type": "string", "pattern": "^[a-zA-Z0-9._-]{1,249}$"},
    "key": {"type": "string", "description": "Record key; records with the same key go to the same partition. Empty: no key."},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    "value": {"description": "Record value; defaults to the step's input."}
  },
  "required": ["brokers", "topic"],
  "additionalProperties": false
}`),
	InputSchema: json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "description": "The record value when config.value is not set."
}`),
	OutputSchema: json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "topic": {"type": "string"},
    "partition": {"type": "integer", "minimum": 0},
    "offset": {"type": "integer", "minimum": 0}
  },
  "required": ["topic", "partition", "offset"]
}`),
}
