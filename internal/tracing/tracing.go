// Package tracing is how flowd's roles trace an execution: one trace from the webhook (or the
// router, for executions nothing traced before) through every Kafka hop, runner step and
// connector call. It starts export from the OTEL_* environment (connectors/sdk/telemetry
// holds that rule, shared with the connector plugins) and carries the W3C trace context in
// Kafka record headers.
//
// Off (the default), every helper returns at once after one atomic load: no span, no header,
// no allocation.
package tracing

import (
	"context"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowd/flowd/connectors/sdk/telemetry"
)

// Record headers carrying the trace context (W3C Trace Context names).
const (
	HeaderTraceparent = "traceparent"
	HeaderTracestate  = "tracestate"
)

// Attribute keys of flowd's spans (telemetry's, which the connector plugins use too).
const (
	AttrExecutionID = telemetry.AttrExecutionID
	AttrFlowID      = telemetry.AttrFlowID
	AttrNodeID      = telemetry.AttrNodeID
	AttrConnector   = telemetry.AttrConnector
	AttrAction      = telemetry.AttrAction
	AttrAttempt     = telemetry.AttrAttempt
)

// flushTimeout bounds the export of buffered spans at shutdown.
const flushTimeout = 5 * time.Second

// Start turns tracing on for role when the environment asks for it (telemetry.Enabled), with
// service.name flowd-<role> unless OTEL_SERVICE_NAME says otherwise. Call the returned func on
// exit: it flushes the spans still buffered.
func Start(ctx context.Context, role string, log *slog.Logger) (stop func(), err error) {
	shutdown, err := telemetry.Start(ctx, "flowd-"+role)
	if err != nil {
		return func() {}, err
	}
	if !telemetry.Active() {
		return func() {}, nil
	}
	log.Info("tracing on: spans exported over OTLP", "role", role)
	return func() {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
		defer cancel()
		if err := shutdown(ctx); err != nil {
			log.Warn("spans not exported at shutdown", "err", err)
		}
	}, nil
}

// On reports whether spans are recorded: callers skip their tracing work when not.
func On() bool { return telemetry.Active() }

// Tracer is the tracer of flowd's spans (a no-op one while tracing is off).
func Tracer() trace.Tracer { return telemetry.Tracer() }

// headerCarrier adapts kafka-go headers to the propagator.
type headerCarrier struct{ hs *[]kafka.Header }

func (c headerCarrier) Get(key string) string {
	for _, h := range *c.hs {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// Set replaces key's header, so a record passed on carries one trace context, the latest.
func (c headerCarrier) Set(key, value string) {
	for i, h := range *c.hs {
		if h.Key == key {
			(*c.hs)[i].Value = []byte(value)
			return
		}
	}
	*c.hs = append(*c.hs, kafka.Header{Key: key, Value: []byte(value)})
}

func (c headerCarrier) Keys() []string {
	keys := make([]string, len(*c.hs))
	for i, h := range *c.hs {
		keys[i] = h.Key
	}
	return keys
}

// Inject adds ctx's span context to a record's headers (traceparent, tracestate). Sign the
// record after: busauth signs every header but its own, so a flowd role's trace context is as
// authentic as the rest of its record.
func Inject(ctx context.Context, hs []kafka.Header) []kafka.Header {
	if !On() || !trace.SpanContextFromContext(ctx).IsValid() {
		return hs
	}
	return inject(ctx, hs)
}

// inject is Inject's work, apart so that hs escapes to the heap only when tracing is on.
func inject(ctx context.Context, hs []kafka.Header) []kafka.Header {
	telemetry.Propagator().Inject(ctx, headerCarrier{&hs})
	return hs
}

// InjectMap adds ctx's span context to headers kept as a map (a record stored before it is
// produced), allocating the map if needed.
func InjectMap(ctx context.Context, hs map[string]string) map[string]string {
	if !On() || !trace.SpanContextFromContext(ctx).IsValid() {
		return hs
	}
	if hs == nil {
		hs = make(map[string]string, 2)
	}
	telemetry.Propagator().Inject(ctx, propagation.MapCarrier(hs))
	return hs
}

// Extract returns ctx with the remote span context a record's headers carry. The propagator
// ignores a malformed traceparent, so the worst a forged one does is attach spans to a
// stranger's trace id.
func Extract(ctx context.Context, hs []kafka.Header) context.Context {
	if !On() {
		return ctx
	}
	return extract(ctx, hs)
}

func extract(ctx context.Context, hs []kafka.Header) context.Context {
	return telemetry.Propagator().Extract(ctx, headerCarrier{&hs})
}

// StartConsumer starts the span of a role processing a record: the child of the span that
// produced it, or the root of a new trace when the record carries none.
func StartConsumer(ctx context.Context, name string, hs []kafka.Header) (context.Context, trace.Span) {
	if !On() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	return Tracer().Start(Extract(ctx, hs), name, trace.WithSpanKind(trace.SpanKindConsumer))
}

// StartRoot starts the span of a record whose trace context is not flowd's (a partner's
// record): a new trace, linked to the partner's span if its headers carry one.
func StartRoot(ctx context.Context, name string, hs []kafka.Header) (context.Context, trace.Span) {
	if !On() {
		return ctx, trace.SpanFromContext(context.Background())
	}
	opts := []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindConsumer), trace.WithNewRoot()}
	if sc := trace.SpanContextFromContext(Extract(context.Background(), hs)); sc.IsValid() {
		opts = append(opts, trace.WithLinks(trace.Link{SpanContext: sc}))
	}
	return Tracer().Start(ctx, name, opts...)
}

// batchKey keys the span contexts of a batch of connector invocations in a context.
type batchKey struct{}

// WithItems returns ctx carrying the span context of each invocation of a batched connector
// call, in item order: the connector host parents each item's client span on its own.
func WithItems(ctx context.Context, items []trace.SpanContext) context.Context {
	return context.WithValue(ctx, batchKey{}, items)
}

// Items returns what WithItems put in ctx.
func Items(ctx context.Context) []trace.SpanContext {
	items, _ := ctx.Value(batchKey{}).([]trace.SpanContext)
	return items
}
