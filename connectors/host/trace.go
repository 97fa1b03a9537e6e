package host

import (
	"context"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowd/flowd/connectors/sdk"
	connectorv1 "github.com/flowd/flowd/connectors/sdk/proto/connector/v1"
	"github.com/flowd/flowd/connectors/sdk/telemetry"
	"github.com/flowd/flowd/internal/tracing"
)

// callSpans are the client spans of one Execute call, one per item whose step is traced.
type callSpans []trace.Span

// startCallSpans starts a client span for each item that has a traced step
// (tracing.WithItems) and returns callCtx with the metadata carrying each sent invocation's
// span to the plugin (telemetry.OutgoingItems). Off, it returns callCtx as it is.
func startCallSpans(ctx, callCtx context.Context, name string, items []sdk.Invocation,
	req *connectorv1.ExecuteRequest, sent map[string]int) (context.Context, callSpans) {
	if !tracing.On() {
		return callCtx, nil
	}
	parents := tracing.Items(ctx)
	if len(parents) != len(items) {
		return callCtx, nil
	}
	spans := make(callSpans, len(items))
	for i, it := range items {
		if !parents[i].IsValid() {
			continue
		}
		_, spans[i] = tracing.Tracer().Start(trace.ContextWithSpanContext(ctx, parents[i]), "call "+name+" "+it.Action,
			trace.WithSpanKind(trace.SpanKindClient))
		if spans[i].IsRecording() {
			spans[i].SetAttributes(tracing.AttrConnector.String(name), tracing.AttrAction.String(it.Action),
				tracing.AttrExecutionID.String(it.ExecutionID), tracing.AttrNodeID.String(it.NodeID),
				tracing.AttrAttempt.Int(it.Attempt))
		}
	}
	out := make([]trace.SpanContext, len(req.Invocations))
	for j, pi := range req.Invocations {
		if s := spans[sent[pi.GetId()]]; s != nil {
			out[j] = s.SpanContext()
		}
	}
	return telemetry.OutgoingItems(callCtx, out), spans
}

// end ends every span with its item's outcome.
func (cs callSpans) end(results []sdk.Result) {
	for i, s := range cs {
		if s == nil {
			continue
		}
		if i < len(results) && results[i].Error != nil {
			s.SetStatus(codes.Error, results[i].Error.Code)
		}
		s.End()
	}
}
