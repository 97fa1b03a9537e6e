package ingest

import (
	"strconv"
	"strings"

	"github.com/gofiber/fiber/v2"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowd/flowd/connectors/sdk/telemetry"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/tracing"
)

// startSpan starts the webhook's server span, continuing the caller's trace when the request
// carries a traceparent, and makes it the request's context: the record produced carries it
// on to the router. It returns nil while tracing is off.
func startSpan(c *fiber.Ctx) trace.Span {
	if !tracing.On() {
		return nil
	}
	// Cloned: fiber reuses the request's buffers, and the span outlives the handler in the
	// exporter's queue.
	carrier := propagation.MapCarrier{}
	for _, k := range []string{tracing.HeaderTraceparent, tracing.HeaderTracestate} {
		if v := c.Get(k); v != "" {
			carrier[k] = strings.Clone(v)
		}
	}
	ctx := telemetry.Propagator().Extract(c.UserContext(), carrier)
	ctx, span := tracing.Tracer().Start(ctx, "webhook", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("http.request.method", strings.Clone(c.Method())),
			attribute.String(string(tracing.AttrFlowID), strings.Clone(c.Params("flowId")))))
	c.SetUserContext(ctx)
	return span
}

// spanRecord notes the execution a webhook started on its span.
func spanRecord(c *fiber.Ctx, rec *envelope.Ingest) {
	if span := trace.SpanFromContext(c.UserContext()); span.IsRecording() {
		span.SetAttributes(tracing.AttrExecutionID.String(rec.ExecutionID))
	}
}

// endSpan ends a webhook's span with the status it is answered with.
func endSpan(span trace.Span, status int) {
	if span == nil {
		return
	}
	span.SetAttributes(attribute.Int("http.response.status_code", status))
	if status >= 500 {
		span.SetStatus(codes.Error, strconv.Itoa(status))
	}
	span.End()
}
