package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

func TestEnabled(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want bool
	}{
		{"nothing set", nil, false},
		{"exporter otlp", map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{"endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, true},
		{"traces endpoint", map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, true},
		{"exporter none wins over endpoint", map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317"}, false},
		{"sdk disabled", map[string]string{"OTEL_SDK_DISABLED": "TRUE", "OTEL_TRACES_EXPORTER": "otlp"}, false},
		{"sdk disabled false", map[string]string{"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_EXPORTER": "otlp"}, true},
		{"another exporter", map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Enabled(func(k string) string { return tc.env[k] }); got != tc.want {
				t.Errorf("Enabled = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestStartOffByDefault(t *testing.T) {
	for _, k := range []string{"OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Setenv(k, "")
	}
	stop, err := Start(context.Background(), "test")
	if err != nil {
		t.Fatal(err)
	}
	if Active() {
		t.Error("tracing on without any OTEL_* setting")
	}
	if _, span := Tracer().Start(context.Background(), "x"); span.IsRecording() {
		t.Error("a span records while tracing is off")
	}
	if err := stop(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestStartRefusesAnUnknownProtocol(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1")
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
	if _, err := Start(context.Background(), "test"); err == nil || Active() {
		t.Fatalf("Start with http/json: %v, active %v", err, Active())
	}
}

func spanContext(t *testing.T, tid, sid string) trace.SpanContext {
	t.Helper()
	tr, err := trace.TraceIDFromHex(tid)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := trace.SpanIDFromHex(sid)
	if err != nil {
		t.Fatal(err)
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: tr, SpanID: sp, TraceFlags: trace.FlagsSampled})
}

// Each invocation of a batch keeps its own trace across the call; one without a trace gets none.
func TestItemsCrossTheCall(t *testing.T) {
	a := spanContext(t, "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
	b := spanContext(t, "1af7651916cd43dd8448eb211c80319c", "c7ad6b7169203331")
	out := OutgoingItems(context.Background(), []trace.SpanContext{a, {}, b})
	md, _ := metadata.FromOutgoingContext(out)
	got := IncomingItems(metadata.NewIncomingContext(context.Background(), md), 3)
	if len(got) != 3 || !got[0].Equal(a.WithRemote(true)) || got[1].IsValid() || !got[2].Equal(b.WithRemote(true)) {
		t.Fatalf("items = %v", got)
	}

	// A single value (the W3C convention for a call) applies to every invocation.
	one := metadata.Pairs("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
	got = IncomingItems(metadata.NewIncomingContext(context.Background(), one), 2)
	if len(got) != 2 || !got[0].Equal(a.WithRemote(true)) || !got[1].Equal(a.WithRemote(true)) {
		t.Fatalf("single value: %v", got)
	}

	// Malformed values are ignored; no metadata, no contexts.
	bad := metadata.Pairs("traceparent", "00-zz-b7ad6b7169203331-01")
	if got := IncomingItems(metadata.NewIncomingContext(context.Background(), bad), 1); got[0].IsValid() {
		t.Fatalf("malformed traceparent accepted: %v", got)
	}
	if got := IncomingItems(context.Background(), 1); got != nil {
		t.Fatalf("no metadata: %v", got)
	}
	if OutgoingItems(context.Background(), []trace.SpanContext{{}}) != context.Background() {
		t.Fatal("metadata added for items without a trace")
	}
}
