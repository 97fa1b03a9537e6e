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

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/sdk"
)

func TestCheckConfig(t *testing.T) {
	good := ProduceConfig{Brokers: []string{"b:9092", " a:9092", "b:9092"}, Topic: "partner.orders_v1"}
	brokers, err := checkConfig(good)
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
			_, err := checkConfig(cfg)
			if e := sdk.AsError(err); e == nil || e.Code != "invalid_config" || e.Retryable {
				t.Fatalf("error = %v, want permanent invalid_config", err)
			}
		})
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
	p := New()
	t.Cleanup(func() { _ = p.Close() })
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
	p := New()
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
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := p.writer([]string{"a:1"}); sdk.AsError(err).Code != "kafka_unavailable" {
		t.Fatalf("writer after Close = %v", err)
	}
}

func TestManifest(t *testing.T) {
	m, err := New().Connector().Describe()
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
