// Package telemetry sets up OpenTelemetry tracing for flowd's processes (its roles and the
// connector plugins) from the standard OTEL_* environment, and carries a trace context across
// the plugin protocol.
//
// Tracing is off unless the environment asks for it (Enabled). Off, nothing is installed: the
// global tracer provider stays OpenTelemetry's no-op one and callers skip their tracing work
// after one atomic load (Active).
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
)

// InstrumentationName names the tracer of every flowd span.
const InstrumentationName = "github.com/flowd/flowd"

// Attribute keys of flowd's spans, in every process.
const (
	AttrExecutionID = attribute.Key("flowd.execution_id")
	AttrFlowID      = attribute.Key("flowd.flow_id")
	AttrNodeID      = attribute.Key("flowd.node_id")
	AttrConnector   = attribute.Key("flowd.connector")
	AttrAction      = attribute.Key("flowd.action")
	AttrAttempt     = attribute.Key("flowd.attempt")
)

// Enabled applies the rule that turns tracing on, to the environment getenv reads: on when
// OTEL_TRACES_EXPORTER is "otlp", or when it is unset and an OTLP endpoint is configured
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); off whenever
// OTEL_SDK_DISABLED is true or OTEL_TRACES_EXPORTER names anything else (such as "none").
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return false
	}
	switch exp := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))); exp {
	case "otlp":
		return true
	case "":
		return getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
	default:
		return false
	}
}

var (
	active atomic.Bool
	mu     sync.Mutex // serialises Start and shutdown
	tracer atomic.Pointer[trace.Tracer]
	prop   = propagation.TraceContext{}
	noopTr = noop.NewTracerProvider().Tracer(InstrumentationName)
)

// Active reports whether a Start is in effect: spans are recorded and exported.
func Active() bool { return active.Load() }

// Tracer is the tracer of flowd's spans: the exporting one while Active, else a no-op one.
func Tracer() trace.Tracer {
	if t := tracer.Load(); t != nil {
		return *t
	}
	return noopTr
}

// Propagator is the W3C Trace Context propagator (traceparent, tracestate) every hop uses.
func Propagator() propagation.TextMapPropagator { return prop }

// ErrAlreadyStarted is returned by a Start while another one is in effect.
var ErrAlreadyStarted = errors.New("telemetry: tracing already started")

// Start turns tracing on when the environment says so (Enabled): an OTLP exporter chosen by
// OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL ("grpc", or the default
// "http/protobuf"), each exporter reading its own OTEL_EXPORTER_OTLP_* settings; a batch span
// processor (OTEL_BSP_*); the sampler of OTEL_TRACES_SAMPLER; and service.name from
// OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES, else service. It installs the provider and the
// W3C propagator globally. The returned shutdown flushes what is buffered (within ctx) and
// turns tracing off again; when tracing stays off it does nothing.
func Start(ctx context.Context, service string) (shutdown func(context.Context) error, err error) {
	nothing := func(context.Context) error { return nil }
	if !Enabled(os.Getenv) {
		return nothing, nil
	}
	mu.Lock()
	defer mu.Unlock()
	if active.Load() {
		return nothing, ErrAlreadyStarted
	}
	exp, err := exporter(ctx)
	if err != nil {
		return nothing, err
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", service)),
		resource.WithTelemetrySDK(),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES win
	)
	if err != nil && res == nil {
		return nothing, fmt.Errorf("telemetry: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(prop)
	// Export failures (an unreachable collector) are logged like the process's other warnings.
	otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) { slog.Warn("tracing", "err", err) }))
	t := tp.Tracer(InstrumentationName)
	tracer.Store(&t)
	active.Store(true)
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		active.Store(false)
		tracer.Store(nil)
		// otel refuses its initial globals back (they delegate): no-ops stand in for them.
		otel.SetTracerProvider(noop.NewTracerProvider())
		otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
		if err := tp.Shutdown(ctx); err != nil {
			return fmt.Errorf("telemetry: flush spans: %w", err)
		}
		return nil
	}, nil
}

// exporter is the OTLP span exporter of the configured protocol.
func exporter(ctx context.Context) (sdktrace.SpanExporter, error) {
	protocol := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = os.Getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	switch strings.TrimSpace(protocol) {
	case "grpc":
		exp, err := otlptracegrpc.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP/gRPC exporter: %w", err)
		}
		return exp, nil
	case "", "http/protobuf":
		exp, err := otlptracehttp.New(ctx)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP/HTTP exporter: %w", err)
		}
		return exp, nil
	}
	return nil, fmt.Errorf("telemetry: OTEL_EXPORTER_OTLP_PROTOCOL %q is not supported (grpc or http/protobuf)", protocol)
}
