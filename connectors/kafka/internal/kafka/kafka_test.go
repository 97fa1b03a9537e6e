package kafka

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"syscall"
	"testing"
	"time"

	kafkago "github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/sdk"
)

// producer returns a Producer allowing brokers, failing t on a bad option.
func producer(t *testing.T, o Options) *Producer {
	t.Helper()
	p, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

func TestCheckConfig(t *testing.T) {
	p := producer(t, Options{AllowedBrokers: []string{"a:9092", "B:9092", "a:1"}})
	good := ProduceConfig{Brokers: []string{"b:9092", " a:9092", "B:9092"}, Topic: "partner.orders_v1"}
	brokers, err := p.checkConfig(good)
	if err != nil {
		t.Fatal(err)
	}
	// Sorted and de-duplicated: the same cluster in another order shares a writer.
	if strings.Join(brokers, ",") != "a:9092,b:9092" {
		t.Fatalf("brokers = %v", brokers)
	}
	for name, cfg := range map[string]ProduceConfig{
		"no brokers":     {Topic: "t"},
		"broker no port": {Brokers: []string{"localhost"}, Topic: "t"},
		"empty topic":    {Brokers: []string{"a:1"}},
		"bad topic":      {Brokers: []string{"a:1"}, Topic: "orders/eu"},
		"dot topic":      {Brokers: []string{"a:1"}, Topic: ".."},
		"long topic":     {Brokers: []string{"a:1"}, Topic: strings.Repeat("t", 250)},
		"empty header":   {Brokers: []string{"a:1"}, Topic: "t", Headers: map[string]string{"": "v"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := p.checkConfig(cfg)
			if e := sdk.AsError(err); e == nil || e.Code != "invalid_config" || e.Retryable {
				t.Fatalf("error = %v, want permanent invalid_config", err)
			}
		})
	}
}

func TestBrokersComeFromTheAllowlist(t *testing.T) {
	for name, tc := range map[string]struct {
		allowed []string
		brokers []string
	}{
		"no allowlist":          {nil, []string{"kafka.partner.example:9092"}},
		"not listed":            {[]string{"kafka.partner.example:9092"}, []string{"kafka.other.example:9092"}},
		"other port":            {[]string{"kafka.partner.example:9092"}, []string{"kafka.partner.example:9093"}},
		"one of two not listed": {[]string{"a:9092"}, []string{"a:9092", "127.0.0.1:9092"}},
		"flowd's own cluster":   {[]string{"kafka.partner.example:9092"}, []string{"127.0.0.1:9092"}},
	} {
		t.Run(name, func(t *testing.T) {
			p := producer(t, Options{AllowedBrokers: tc.allowed})
			_, err := p.checkConfig(ProduceConfig{Brokers: tc.brokers, Topic: "partner.orders"})
			e := sdk.AsError(err)
			if e == nil || e.Code != "broker_not_allowed" || e.Retryable || !strings.Contains(e.Message, EnvBrokersAllow) {
				t.Fatalf("error = %v, want permanent broker_not_allowed naming %s", err, EnvBrokersAllow)
			}
		})
	}
	if _, err := New(Options{AllowedBrokers: []string{"no-port"}}); err == nil {
		t.Fatal("an allowlist entry without a port was accepted")
	}
}

func TestReservedTopicsAreRefused(t *testing.T) {
	def := producer(t, Options{AllowedBrokers: []string{"a:1"}})
	custom := producer(t, Options{AllowedBrokers: []string{"a:1"}, ReservedTopicPrefix: "acme-flowd."})
	for _, tc := range []struct {
		p     *Producer
		topic string
		ok    bool
	}{
		{def, "flowd.ingest", false},
		{def, "flowd.steps.default", false},
		{def, "flowd.results", false},
		{def, "flowd.events", false},
		{def, "flowd.dlq", false},
		{def, "__consumer_offsets", false},
		{def, "__transaction_state", false},
		{def, "partner.orders", true},
		{def, "flowdx.orders", true},
		{def, "_single_underscore", true},
		{custom, "acme-flowd.ingest", false},
		{custom, "__consumer_offsets", false},
		{custom, "flowd.ingest", true}, // another deployment's prefix is not this one's
	} {
		_, err := tc.p.checkConfig(ProduceConfig{Brokers: []string{"a:1"}, Topic: tc.topic})
		if tc.ok {
			if err != nil {
				t.Errorf("topic %s (prefix %q): %v", tc.topic, tc.p.reserved, err)
			}
			continue
		}
		if e := sdk.AsError(err); e == nil || e.Code != "topic_reserved" || e.Retryable {
			t.Errorf("topic %s (prefix %q): %v, want permanent topic_reserved", tc.topic, tc.p.reserved, err)
		}
	}
}

// TestDialsOnlyAllowedBrokers calls the transport's dial as kafka-go does for a broker the
// cluster's metadata advertises: an unlisted broker and an allowlisted name resolving to
// loopback are refused before any connection.
func TestDialsOnlyAllowedBrokers(t *testing.T) {
	p := producer(t, Options{AllowedBrokers: []string{"localhost:2", "127.0.0.1:1"}})
	ctx := context.Background()
	_, err := p.transport.Dial(ctx, "tcp", "10.0.0.1:9092")
	if !errors.Is(err, errBrokerNotAllowed) {
		t.Fatalf("advertised broker off the allowlist: %v", err)
	}
	if e := sdk.AsError(classify(ctx, "t", fmt.Errorf("wrapped: %w", err))); e.Code != "broker_not_allowed" || e.Retryable {
		t.Fatalf("classify = %+v, want permanent broker_not_allowed", e)
	}
	// A listed name is still checked where it resolves: its DNS may not be the operator's.
	_, err = p.transport.Dial(ctx, "tcp", "localhost:2")
	var denied *egress.DeniedError
	if !errors.As(err, &denied) {
		t.Fatalf("allowlisted name resolving to loopback: %v, want *egress.DeniedError", err)
	}
	if e := sdk.AsError(classify(ctx, "t", err)); e.Code != "egress_denied" || e.Retryable {
		t.Fatalf("classify = %+v, want permanent egress_denied", e)
	}
	// A listed address is allowed by the egress policy too: port 1 refuses the connection.
	if _, err = p.transport.Dial(ctx, "tcp", "127.0.0.1:1"); err == nil || errors.As(err, &denied) || errors.Is(err, errBrokerNotAllowed) {
		t.Fatalf("allowlisted address: %v, want a plain connection error", err)
	}
}

func TestRecordValue(t *testing.T) {
	tests := []struct {
		configured, input string
		want              []byte
	}{
		{"", `{"id": 1, "tags": ["a"]}`, []byte(`{"id":1,"tags":["a"]}`)}, // input, compacted JSON
		{`"a,b,c\n"`, `{"ignored": true}`, []byte("a,b,c\n")},             // a string: raw text
		{`{"v": 2}`, `{"ignored": true}`, []byte(`{"v":2}`)},
		{`42`, ``, []byte(`42`)},
		{``, `"plain"`, []byte("plain")},
		{`null`, `{"x": 1}`, nil}, // explicit null: a null value (tombstone)
		{``, ``, nil},
	}
	for _, tt := range tests {
		got, err := recordValue(json.RawMessage(tt.configured), json.RawMessage(tt.input))
		if err != nil {
			t.Fatalf("recordValue(%s, %s): %v", tt.configured, tt.input, err)
		}
		if string(got) != string(tt.want) || (got == nil) != (tt.want == nil) {
			t.Errorf("recordValue(%s, %s) = %q, want %q", tt.configured, tt.input, got, tt.want)
		}
	}
}

func TestHeaders(t *testing.T) {
	hs := headers(map[string]string{"b": "2", "a": "1", "idempotency-key": "spoofed"}, "exec-1/n/0")
	var got []string
	for _, h := range hs {
		got = append(got, h.Key+"="+string(h.Value))
	}
	if strings.Join(got, " ") != "a=1 b=2 Idempotency-Key=exec-1/n/0" {
		t.Fatalf("headers = %v", got)
	}
	// Without a key (e.g. `flowd connectors invoke`) the configured headers pass as they are.
	if hs := headers(map[string]string{"Idempotency-Key": "mine"}, ""); len(hs) != 1 || string(hs[0].Value) != "mine" {
		t.Fatalf("headers without a key = %v", hs)
	}
}

func TestClassify(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		err       error
		code      string
		retryable bool
	}{
		{kafkago.UnknownTopicOrPartition, "unknown_topic", false},
		{kafkago.WriteErrors{kafkago.MessageSizeTooLarge}, "kafka_rejected", false},
		{fmt.Errorf("wrapped: %w", kafkago.TopicAuthorizationFailed), "kafka_rejected", false},
		{kafkago.WriteErrors{nil, kafkago.NotEnoughReplicas}, "kafka_unavailable", true},
		{kafkago.LeaderNotAvailable, "kafka_unavailable", true},
		{&dialError{syscall.ECONNREFUSED}, "kafka_unavailable", true},
		{io.ErrUnexpectedEOF, "kafka_unavailable", true},
	}
	for _, tt := range tests {
		e := sdk.AsError(classify(ctx, "t", tt.err))
		if e.Code != tt.code || e.Retryable != tt.retryable {
			t.Errorf("classify(%v) = %+v, want %s retryable=%v", tt.err, e, tt.code, tt.retryable)
		}
	}
	// A caller that gave up gets its context error, which the SDK turns into its own answer.
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := classify(canceled, "t", io.ErrUnexpectedEOF); !errors.Is(err, context.Canceled) {
		t.Fatalf("classify with a canceled ctx = %v", err)
	}
}

// dialError stands in for a dial failure without a network.
type dialError struct{ err error }

func (e *dialError) Error() string { return "dial tcp: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func TestUnreachableBrokerIsRetryable(t *testing.T) {
	p := producer(t, Options{AllowedBrokers: []string{"127.0.0.1:1"}})
	// Port 1 on loopback refuses at once. The deadline only keeps a regression from hanging
	// the test; it is far beyond what the refusal takes.
	res := sdk.Invoke(context.Background(), p.Connector(), sdk.Invocation{
		ID: "1", Action: "produce", Deadline: time.Now().Add(time.Minute),
		Config: map[string]any{"brokers": []string{"127.0.0.1:1"}, "topic": "t"},
		Input:  map[string]any{"x": 1},
	})
	if res.Error == nil || res.Error.Code != "kafka_unavailable" || !res.Error.Retryable {
		t.Fatalf("want a retryable kafka_unavailable error, got %+v", res)
	}
}

func TestWriterCacheAndClose(t *testing.T) {
	p, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	w1, rel1, err := p.writer([]string{"a:1"})
	if err != nil {
		t.Fatal(err)
	}
	rel1()
	w2, rel2, _ := p.writer([]string{"a:1"})
	rel2()
	if w1 != w2 {
		t.Fatal("same broker list got a second writer")
	}
	for i := range maxCachedWriters + 2 {
		_, rel, err := p.writer([]string{fmt.Sprintf("h%d:1", i)})
		if err != nil {
			t.Fatal(err)
		}
		rel()
	}
	if n := len(p.writers); n != maxCachedWriters {
		t.Fatalf("%d cached writers, want the cap %d", n, maxCachedWriters)
	}
	// The connector's Close, which the SDK calls before the plugin exits, closes the producer.
	if err := p.Connector().Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.writer([]string{"a:1"}); sdk.AsError(err).Code != "kafka_unavailable" {
		t.Fatalf("writer after Close = %v", err)
	}
}

func TestManifest(t *testing.T) {
	m, err := producer(t, Options{}).Connector().Describe()
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != Name || m.Version != Version || m.Actions["produce"].Title == "" {
		t.Fatalf("manifest = %+v", m)
	}
	// The host's own check: schemas/connector.schema.json, and every embedded schema compiles.
	doc, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := host.ValidateManifest(Name, doc); err != nil {
		t.Fatal(err)
	}
}
