package tracing

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/secrets"
)

func keyring(t *testing.T) *busauth.Keyring {
	t.Helper()
	keys, err := secrets.ParseKeyList(busauth.Generate())
	if err != nil {
		t.Fatal(err)
	}
	k, err := busauth.New(keys)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestOffAddsNothing(t *testing.T) {
	t.Setenv("OTEL_TRACES_EXPORTER", "")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	stop, err := Start(context.Background(), "test", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if On() {
		t.Fatal("tracing on by default")
	}
	ctx := context.Background()
	hs := []kafka.Header{{Key: "traceparent", Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}
	allocs := testing.AllocsPerRun(100, func() {
		c, span := StartConsumer(ctx, "route ingest", hs)
		if span.IsRecording() {
			span.SetAttributes(AttrExecutionID.String("x"))
		}
		_ = Inject(c, nil)
		span.End()
	})
	if allocs != 0 {
		t.Errorf("tracing off costs %v allocations per record", allocs)
	}
	if got := Inject(trace.ContextWithSpanContext(ctx, remote(t)), nil); len(got) != 0 {
		t.Errorf("headers added while off: %v", got)
	}
}

func remote(t *testing.T) trace.SpanContext {
	t.Helper()
	tid, _ := trace.TraceIDFromHex("0af7651916cd43dd8448eb211c80319c")
	sid, _ := trace.SpanIDFromHex("b7ad6b7169203331")
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: trace.FlagsSampled, Remote: true})
}

// On, a record carries its producer's span in signed headers, and its consumer's span is that
// span's child.
func TestHeadersCarryTheSpanAcrossARecord(t *testing.T) {
	collector := httptest.NewServer(http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body) // takes any export: what is exported is the e2e test's concern
	}))
	defer collector.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.URL)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
	stop, err := Start(context.Background(), "test", slog.Default())
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	if !On() {
		t.Fatal("tracing off with an OTLP endpoint set")
	}
	ctx, producer := Tracer().Start(context.Background(), "webhook")
	defer producer.End()
	m := kafka.Message{Topic: "flowd.ingest", Key: []byte("e1"), Value: []byte(`{}`),
		Headers: []kafka.Header{{Key: "traceparent", Value: []byte("stale")}}}
	m.Headers = Inject(ctx, m.Headers)
	keys := keyring(t)
	keys.Sign(&m)
	if err := keys.Verify(m); err != nil {
		t.Fatalf("a traced record does not verify: %v", err)
	}
	n := 0
	for _, h := range m.Headers {
		if h.Key == HeaderTraceparent {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d traceparent headers, want 1 (replaced)", n)
	}

	_, consumer := StartConsumer(context.Background(), "route ingest", m.Headers)
	defer consumer.End()
	ro, ok := consumer.(interface{ Parent() trace.SpanContext })
	if !ok {
		t.Fatalf("span %T has no parent accessor", consumer)
	}
	if got := ro.Parent(); got.SpanID() != producer.SpanContext().SpanID() || got.TraceID() != producer.SpanContext().TraceID() {
		t.Errorf("consumer's parent %v, want the producer's span %v", got, producer.SpanContext())
	}

	// A malformed traceparent is ignored: the consumer starts a trace of its own.
	_, root := StartConsumer(context.Background(), "route ingest", []kafka.Header{{Key: HeaderTraceparent, Value: []byte("00-xyz-01")}})
	defer root.End()
	if p := root.(interface{ Parent() trace.SpanContext }).Parent(); p.IsValid() {
		t.Errorf("malformed traceparent continued: %v", p)
	}

	// A partner's record starts a new trace, linked to the partner's span.
	pm := []kafka.Header{{Key: HeaderTraceparent, Value: []byte("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")}}
	_, partner := StartRoot(ctx, "route partner record", pm)
	defer partner.End()
	if partner.SpanContext().TraceID() == remote(t).TraceID() || partner.SpanContext().TraceID() == producer.SpanContext().TraceID() {
		t.Error("a partner's record continued someone's trace")
	}

	hm := InjectMap(ctx, nil)
	if hm[HeaderTraceparent] == "" {
		t.Errorf("InjectMap: %v", hm)
	}
}
