package telemetry

import (
	"context"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc/metadata"
)

// The plugin protocol batches invocations of different executions into one Execute call, and
// gRPC metadata belongs to the call. So the call's "traceparent" (and "tracestate") metadata
// holds one value per invocation, in the request's order, "" for an invocation without a
// trace; a call carrying a single value applies it to every invocation, which makes a batch
// of one exactly the W3C convention for gRPC.
const (
	keyTraceparent = "traceparent"
	keyTracestate  = "tracestate"
)

// OutgoingItems returns ctx with the metadata that carries the span context of each of items
// (in the request's order) to the plugin. Nothing is added when none of them has one.
func OutgoingItems(ctx context.Context, items []trace.SpanContext) context.Context {
	found := false
	for _, sc := range items {
		found = found || sc.IsValid()
	}
	if !found {
		return ctx
	}
	kv := make([]string, 0, 4*len(items))
	for _, sc := range items {
		c := propagation.MapCarrier{}
		if sc.IsValid() {
			prop.Inject(trace.ContextWithSpanContext(context.Background(), sc), c)
		}
		kv = append(kv, keyTraceparent, c[keyTraceparent], keyTracestate, c[keyTracestate])
	}
	return metadata.AppendToOutgoingContext(ctx, kv...)
}

// IncomingItems reads the span contexts OutgoingItems sent for n invocations: one per
// invocation, invalid where none (or a malformed one) came. It returns nil when the call
// carried none.
func IncomingItems(ctx context.Context, n int) []trace.SpanContext {
	md, ok := metadata.FromIncomingContext(ctx)
	if !ok {
		return nil
	}
	parents := md.Get(keyTraceparent)
	if len(parents) == 0 {
		return nil
	}
	states := md.Get(keyTracestate)
	out := make([]trace.SpanContext, n)
	for i := range out {
		j := i
		if len(parents) == 1 {
			j = 0
		} else if i >= len(parents) {
			break
		}
		c := propagation.MapCarrier{keyTraceparent: parents[j]}
		if j < len(states) && states[j] != "" {
			c[keyTracestate] = states[j]
		}
		// The propagator validates: a malformed value yields an invalid span context.
		out[i] = trace.SpanContextFromContext(prop.Extract(context.Background(), c))
	}
	return out
}
