package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowd/flowd/connectors/sdk/telemetry"
)

// engine runs handlers: it owns the concurrency bound, deadlines and panic recovery, so the
// gRPC server and Invoke behave the same.
type engine struct {
	manifest     Manifest
	manifestJSON []byte
	actions      map[string]Handler
	triggers     map[string]TriggerHandler
	slots        chan struct{} // a semaphore: one token per running handler
	log          *slog.Logger

	close        func(context.Context) error // Connector.Close; may be nil
	closeOnce    sync.Once
	drainTimeout time.Duration
	closeTimeout time.Duration
	// stopTracing flushes and stops span export (telemetry.Start); nil when not started.
	stopTracing func(context.Context) error
}

func newEngine(c Connector, log *slog.Logger) (*engine, error) {
	m, err := c.Describe()
	if err != nil {
		return nil, err
	}
	mj, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("sdk: encode manifest: %w", err)
	}
	n := c.MaxConcurrency
	if n <= 0 {
		n = DefaultMaxConcurrency
	}
	return &engine{
		manifest:     m,
		manifestJSON: mj,
		actions:      c.Actions,
		triggers:     c.Triggers,
		slots:        make(chan struct{}, n),
		log:          log,
		close:        c.Close,
		drainTimeout: drainTimeout,
		closeTimeout: CloseTimeout,
	}, nil
}

// executeBatch runs every item concurrently (within the process bound) and returns results in
// item order.
func (r *engine) executeBatch(ctx context.Context, items []wireInvocation) []Result {
	results := make([]Result, len(items))
	var wg sync.WaitGroup
	for i := range items {
		wg.Go(func() { results[i] = r.execute(ctx, &items[i]) })
	}
	wg.Wait()
	return results
}

// execute runs one invocation. Its outputs carry json.RawMessage data, already encoded, so an
// unencodable output is this item's error rather than a failed batch.
func (r *engine) execute(ctx context.Context, w *wireInvocation) (res Result) {
	res = Result{ID: w.ID}
	h, ok := r.actions[w.Action]
	if !ok {
		res.Error = &Error{Code: "unknown_action", Message: fmt.Sprintf("connector %s has no action %q", r.manifest.Name, w.Action)}
		return res
	}
	if w.parent.IsValid() {
		// The handler's ctx carries the call's trace, so what it calls (the http connector's
		// requests) continues it; the span itself is recorded only if this process exports.
		var span trace.Span
		ctx, span = telemetry.Tracer().Start(trace.ContextWithRemoteSpanContext(ctx, w.parent), r.manifest.Name+" "+w.Action,
			trace.WithSpanKind(trace.SpanKindServer))
		defer span.End()
		if span.IsRecording() {
			span.SetAttributes(telemetry.AttrConnector.String(r.manifest.Name), telemetry.AttrAction.String(w.Action),
				telemetry.AttrExecutionID.String(w.ExecutionID), telemetry.AttrNodeID.String(w.NodeID),
				telemetry.AttrAttempt.Int(w.Attempt))
		}
		defer func() {
			if res.Error != nil && span.IsRecording() {
				span.SetStatus(codes.Error, res.Error.Code)
			}
		}()
	}
	var outs []Output
	err := r.guarded(ctx, w.Deadline, "action "+w.Action, func(ctx context.Context) error {
		var err error
		outs, err = h.run(ctx, w)
		return err
	})
	if err != nil {
		res.Error = err
		return res
	}
	res.Outputs, res.Error = encodeOutputs(outs, h.spec.Ports)
	return res
}

func (r *engine) poll(ctx context.Context, w *wirePoll) (PollResult, *Error) {
	h, ok := r.triggers[w.Trigger]
	if !ok {
		return PollResult{}, &Error{Code: "unknown_trigger", Message: fmt.Sprintf("connector %s has no trigger %q", r.manifest.Name, w.Trigger)}
	}
	var out PollResult
	err := r.guarded(ctx, w.Deadline, "trigger "+w.Trigger, func(ctx context.Context) error {
		var err error
		out, err = h.run(ctx, w)
		return err
	})
	if err != nil {
		return PollResult{}, err
	}
	items := make([]any, len(out.Items))
	for i, it := range out.Items {
		b, err := json.Marshal(it)
		if err != nil {
			return PollResult{}, &Error{Code: "invalid_output", Message: fmt.Sprintf("item %d: %v", i, err)}
		}
		items[i] = json.RawMessage(b)
	}
	return PollResult{Items: items, Cursor: out.Cursor}, nil
}

// guarded runs fn in its own goroutine under the concurrency bound and the deadline. A panic is
// a permanent error for this call only. When the deadline passes first, the call answers at once
// and fn is abandoned: it keeps its slot until it returns, so a handler that ignores ctx costs
// capacity, never an answer.
func (r *engine) guarded(ctx context.Context, deadline time.Time, what string, fn func(context.Context) error) *Error {
	if !deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, deadline)
		defer cancel()
	}
	select {
	case r.slots <- struct{}{}:
	case <-ctx.Done():
		return contextError(ctx.Err(), "waiting for a free handler slot")
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-r.slots }()
		defer func() {
			if p := recover(); p != nil {
				r.log.Error("handler panicked", "call", what, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				done <- &Error{Code: "panic", Message: fmt.Sprintf("%s panicked: %v", what, p)}
			}
		}()
		done <- fn(ctx)
	}()
	select {
	case err := <-done:
		return handlerError(err)
	case <-ctx.Done():
		return contextError(ctx.Err(), what)
	}
}

func handlerError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return contextError(err, err.Error())
	}
	return AsError(err)
}

// contextError: running out of time is worth a retry; the runner's retry policy decides.
func contextError(err error, what string) *Error {
	if errors.Is(err, context.DeadlineExceeded) {
		return &Error{Code: "deadline_exceeded", Message: "deadline exceeded: " + what, Retryable: true}
	}
	return &Error{Code: "canceled", Message: "canceled: " + what, Retryable: true}
}

func encodeOutputs(outs []Output, ports []string) ([]Output, *Error) {
	enc := make([]Output, len(outs))
	for i, o := range outs {
		if o.Port != "" && !slices.Contains(ports, o.Port) {
			return nil, &Error{Code: "invalid_output", Message: fmt.Sprintf("output %d: port %q is not declared by the action", i, o.Port)}
		}
		b, err := json.Marshal(o.Data)
		if err != nil {
			return nil, &Error{Code: "invalid_output", Message: fmt.Sprintf("output %d: %v", i, err)}
		}
		enc[i] = Output{Port: o.Port, Data: json.RawMessage(b)}
	}
	return enc, nil
}

// Invoke runs one invocation of c in process, through the same checks as a served connector
// behind the flowd host: config and input against the action's schemas (a refused call is an
// invalid_config or invalid_input error with its Problems, and the handler is not called),
// then decoding, deadline, panic and output checks. It is for unit tests of handlers. Output
// data comes back decoded from JSON (objects as map[string]any, numbers as json.Number), as
// the host returns it.
func Invoke(ctx context.Context, c Connector, inv Invocation) Result {
	r, err := newEngine(c, slog.Default())
	if err != nil {
		return Result{ID: inv.ID, Error: &Error{Code: "invalid_connector", Message: err.Error()}}
	}
	// Compiled per call, as the host compiles them per start: a broken schema fails the call.
	schemas, err := CompileSchemas(r.manifest)
	if err != nil {
		return Result{ID: inv.ID, Error: &Error{Code: "invalid_connector", Message: err.Error()}}
	}
	w, err := wireFromInvocation(inv)
	if err != nil {
		return Result{ID: inv.ID, Error: AsError(err)}
	}
	if e := schemas.CheckInvocation(w.Action, w.Config, w.Input); e != nil {
		return Result{ID: inv.ID, Error: e}
	}
	res := r.execute(ctx, &w)
	for i, o := range res.Outputs {
		v, err := DecodeJSON(o.Data.(json.RawMessage))
		if err != nil {
			return Result{ID: inv.ID, Error: &Error{Code: "invalid_output", Message: err.Error()}}
		}
		res.Outputs[i].Data = v
	}
	return res
}

func wireFromInvocation(inv Invocation) (wireInvocation, error) {
	w := wireInvocation{
		ID:             inv.ID,
		Action:         inv.Action,
		ExecutionID:    inv.ExecutionID,
		NodeID:         inv.NodeID,
		Attempt:        inv.Attempt,
		IdempotencyKey: inv.IdempotencyKey,
		Deadline:       inv.Deadline,
	}
	var err error
	if w.Config, err = json.Marshal(inv.Config); err != nil {
		return w, Permanent("invalid_config", err)
	}
	if w.Input, err = json.Marshal(inv.Input); err != nil {
		return w, Permanent("invalid_input", err)
	}
	if w.Context, err = json.Marshal(inv.Context); err != nil {
		return w, Permanent("invalid_context", err)
	}
	if inv.Connection != nil {
		data, err := json.Marshal(inv.Connection.Data)
		if err != nil {
			return w, Permanent("invalid_connection", err)
		}
		w.conn = wireConnection{present: true, typ: inv.Connection.Type, data: data}
	}
	return w, nil
}

// DecodeJSON decodes one JSON value the way the host hands connector data to flowd: numbers
// stay json.Number so large integers (ids) survive untouched.
func DecodeJSON(data []byte) (any, error) {
	if len(bytes.TrimSpace(data)) == 0 {
		return nil, nil
	}
	d := json.NewDecoder(bytes.NewReader(data))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, errors.New("sdk: trailing data after JSON value")
	}
	return v, nil
}
