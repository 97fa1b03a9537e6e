package runners

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/codes"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/expression"
	"github.com/flowd/flowd/internal/metrics"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/tracing"
)

// Error codes the runner itself puts in Results (connector and host codes pass through).
const (
	CodeConnectionUnavailable = "connection_unavailable" // no resolver, or the store could not be read
	CodeInvalidConfig         = "invalid_config"         // a template in the node's config failed
	CodeInvalidInput          = "invalid_input"          // the work item's input or context is not usable
	CodeConnectorNotFound     = "connector_not_found"    // no such connector in this pool's host
	CodeConnectorRefused      = "connector_refused"      // the binary is not pinned, mismatches or has a bad manifest
	CodeInvalidOutput         = "invalid_output"         // an output could not be encoded
	CodeResultTooLarge        = "result_too_large"       // the outputs exceed what Kafka accepts
)

// errAbandoned means the runner gave a work item up at shutdown, uncommitted, for redelivery.
var errAbandoned = errors.New("work item abandoned at shutdown")

// claimPoll is how often a runner waiting on another's claim looks for the result.
const claimPoll = 100 * time.Millisecond

// process handles one fetched record and reports whether its offset may be committed: the
// record's Result (or its dead-letter copy) is acknowledged by the broker. stop ends waiting
// (for a claim, for the store); work ends everything, after the drain bound.
func (r *Runner) process(stop, work context.Context, m kafka.Message) bool {
	if err := r.cfg.Kafka.RecordKeys.Verify(m); err != nil {
		reason := "record authentication failed: " + err.Error()
		r.log.Warn("work item not written by a flowd role: sending it to the dead-letter topic", "partition", m.Partition, "offset", m.Offset, "reason", reason)
		return r.deadLetter(work, m, reason) == nil
	}
	w, reason := decodeWork(m.Value)
	if reason != "" {
		r.log.Warn("undecodable work item: sending it to the dead-letter topic", "partition", m.Partition, "offset", m.Offset, "reason", reason)
		return r.deadLetter(work, m, reason) == nil
	}
	// One span per attempt, the child of the routing that sent it; the result carries it back.
	work, span := tracing.StartConsumer(work, "run step", m.Headers)
	defer span.End()
	if span.IsRecording() {
		span.SetAttributes(tracing.AttrExecutionID.String(w.ExecutionID), tracing.AttrFlowID.String(w.FlowID),
			tracing.AttrNodeID.String(w.Node.ID), tracing.AttrConnector.String(w.Node.Connector),
			tracing.AttrAction.String(w.Node.Action), tracing.AttrAttempt.Int(max(w.Attempt, 1)))
	}
	log := r.log.With("execution", w.ExecutionID, "flow", w.FlowID, "node", w.Node.ID, "token", w.Token,
		"partition", m.Partition, "offset", m.Offset)
	start, reason, err := r.begin(stop, work, w, log)
	if err != nil {
		log.Info("work item left for redelivery", "reason", err)
		return false
	}
	if reason != "" {
		log.Warn("work item refused: sending it to the dead-letter topic", "reason", reason)
		return r.deadLetter(work, m, reason) == nil
	}
	key := store.RunKey{ExecutionID: w.ExecutionID, Token: w.Token, Attempt: w.Attempt}
	log = log.With("connector", w.Node.Connector, "action", w.Node.Action)

	claim, done := start.Claim, start.Done
	if claim == nil && !done {
		// Another runner holds the claim: wait for its result or for the claim to lapse.
		if claim, done, err = r.acquire(stop, work, key, log); err != nil {
			log.Info("work item left for redelivery", "reason", err)
			return false
		}
	}
	if done {
		log.Info("redelivered work item finished before: its result is on the results topic already")
		return true
	}

	stopRenewing := r.keepClaim(work, claim, log)
	res, err := r.execute(work, w, log)
	stopRenewing()
	if err == nil {
		if res.Error != nil && span.IsRecording() {
			span.SetStatus(codes.Error, res.Error.Code)
		}
		err = r.publish(work, res, log)
	}
	if err != nil {
		log.Info("work item left for redelivery", "reason", err)
		r.release(work, claim, log)
		return false
	}
	r.record(work, key, claim, log)
	return true
}

// decodeWork parses a work record; reason says why it cannot be run.
func decodeWork(raw []byte) (*envelope.Work, string) {
	var w envelope.Work
	if err := json.Unmarshal(raw, &w); err != nil {
		return nil, "not a work item: " + err.Error()
	}
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"executionId", w.ExecutionID}, {"token", w.Token}, {"node.id", w.Node.ID},
		{"node.connector", w.Node.Connector}, {"node.action", w.Node.Action},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, "work item lacks " + strings.Join(missing, ", ")
	}
	return &w, ""
}

// acquire reports whether the item finished before (a redelivery), or returns a claim on
// running it. While another runner holds the claim, it waits for that runner to finish, or
// for the claim to lapse (the holder died or gave up), rather than run the step twice.
func (r *Runner) acquire(stop, work context.Context, key store.RunKey, log *slog.Logger) (store.RunClaim, bool, error) {
	b := backoff.New(100*time.Millisecond, 5*time.Second)
	waiting := false
	for {
		claim, done, err := r.tryAcquire(work, key)
		if err == nil && (claim != nil || done) {
			return claim, done, nil
		}
		delay := claimPoll
		switch {
		case err != nil:
			delay = b.Next()
			log.Warn("run records unavailable; retrying", "err", err, "in", delay)
		case !waiting:
			waiting = true
			log.Info("work item is being run elsewhere; waiting for its result")
		}
		if !backoff.Sleep(stop, delay) {
			return nil, false, errAbandoned
		}
	}
}

func (r *Runner) tryAcquire(ctx context.Context, key store.RunKey) (store.RunClaim, bool, error) {
	st, err := r.cfg.Store.BeginRun(ctx, key, r.cfg.ClaimTTL)
	if err != nil {
		return nil, false, err
	}
	return st.Claim, st.Done, nil
}

// keepClaim extends the claim while the step runs; call the returned func when it is done.
func (r *Runner) keepClaim(ctx context.Context, claim store.RunClaim, log *slog.Logger) func() {
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(r.cfg.ClaimTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			err := claim.Extend(ctx, r.cfg.ClaimTTL)
			if errors.Is(err, store.ErrLockLost) {
				log.Warn("claim on the work item lapsed while it ran; another runner may run it too")
				return
			}
			if err != nil {
				log.Warn("extending the claim on the work item failed", "err", err)
			}
		}
	}()
	return func() { close(done); <-finished }
}

func (r *Runner) release(ctx context.Context, claim store.RunClaim, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := claim.Release(ctx); err != nil {
		log.Warn("releasing the claim on the work item failed; a redelivery waits for it to lapse", "err", err)
	}
}

// record notes the item as finished, for redeliveries. It runs after the Result is on Kafka,
// so a failure here only means a redelivery would run the step again (with the same
// idempotency key); holding the offset back would cause exactly that, so the offset is
// committed anyway.
func (r *Runner) record(ctx context.Context, key store.RunKey, claim store.RunClaim, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	b := backoff.New(100*time.Millisecond, 2*time.Second)
	for {
		err := r.cfg.Store.FinishRun(ctx, key, r.cfg.RedeliveryWindow, claim)
		if err == nil {
			return
		}
		if !b.Wait(ctx) {
			log.Error("recording the finished work item failed; a redelivery would run it again", "err", err)
			return
		}
	}
}

// execute makes the work item's one attempt and returns its Result. It returns an error only
// when it gave the item up (shutdown).
func (r *Runner) execute(work context.Context, w *envelope.Work, log *slog.Logger) (*envelope.Result, error) {
	attempt := max(w.Attempt, 1)
	if w.Deadline.IsZero() && w.TimeoutMs > 0 {
		// A parked step replayed from the dead-letter topic: its time starts now.
		w.Deadline = time.Now().Add(time.Duration(w.TimeoutMs) * time.Millisecond)
	}
	res := &envelope.Result{
		ExecutionID: w.ExecutionID, FlowID: w.FlowID, Revision: w.Revision, NodeID: w.Node.ID, Token: w.Token,
		Attempt: attempt, StartedAt: time.Now().UTC(),
	}
	finish := func(out sdk.Result) *envelope.Result {
		res.FinishedAt = time.Now().UTC()
		// A connector or action that does not exist is the flow's choice, not a bounded label.
		if out.Error == nil || (out.Error.Code != CodeConnectorNotFound && out.Error.Code != "unknown_action") {
			code := ""
			if out.Error != nil {
				code = out.Error.Code
			}
			metrics.StepFinished(w.Node.Connector, w.Node.Action, res.FinishedAt.Sub(res.StartedAt).Seconds(), code)
		}
		if out.Error != nil {
			res.Error = recordError(out.Error)
			log.Info("step failed", "code", out.Error.Code, "attempt", res.Attempt)
			return res
		}
		res.Outputs = make([]envelope.Output, 0, len(out.Outputs))
		for i, o := range out.Outputs {
			data, err := json.Marshal(o.Data)
			if err != nil {
				res.Outputs = nil
				res.Error = &envelope.Error{Code: CodeInvalidOutput, Message: fmt.Sprintf("output %d cannot be encoded: %v", i, err)}
				return res
			}
			res.Outputs = append(res.Outputs, envelope.Output{Port: o.Port, Data: data})
		}
		log.Debug("step succeeded", "attempt", res.Attempt, "outputs", len(res.Outputs))
		return res
	}

	inv, serr, err := r.invocation(work, w)
	if err != nil {
		return nil, err
	}
	if serr != nil {
		return finish(sdk.Result{Error: serr}), nil
	}
	// One attempt per work item: a retryable failure goes back to the router, whose delay
	// queue sends the next attempt when it is due, so no runner waits out a backoff.
	inv.Attempt = attempt
	out, err := r.attempt(work, w, inv)
	if err != nil {
		return nil, err
	}
	return finish(out), nil
}

// attempt makes one attempt: resolve the connection, then call the connector. The error
// return means the runner is shutting down.
func (r *Runner) attempt(ctx context.Context, w *envelope.Work, inv sdk.Invocation) (sdk.Result, error) {
	if w.Node.Connection != "" {
		conn, cerr := r.resolve(ctx, w)
		if ctx.Err() != nil {
			return sdk.Result{}, errAbandoned
		}
		if cerr != nil {
			return sdk.Result{Error: cerr}, nil
		}
		inv.Connection = conn
	}
	out, err := r.batchers.get(w.Node.Connector).do(ctx, inv)
	if ctx.Err() != nil || errors.Is(err, host.ErrClosed) {
		return sdk.Result{}, errAbandoned
	}
	if err != nil {
		return sdk.Result{Error: hostError(err)}, nil
	}
	return out, nil
}

// resolve turns the node's connection into credentials for this one call.
func (r *Runner) resolve(ctx context.Context, w *envelope.Work) (*sdk.Connection, *sdk.Error) {
	if r.cfg.Resolver == nil {
		return nil, &sdk.Error{Code: CodeConnectionUnavailable, Message: "connection " + w.Node.Connection + ": this runner has no secret key to open connections"}
	}
	conn, err := r.cfg.Resolver.Resolve(ctx, w.Node.Connection, w.Node.Connector, w.Owners)
	if err == nil {
		return conn, nil
	}
	var ce *connections.Error
	if errors.As(err, &ce) {
		code := ce.Code
		if code == "unavailable" {
			code = CodeConnectionUnavailable
		}
		return nil, &sdk.Error{Code: code, Message: ce.Err.Error(), Retryable: ce.Retryable}
	}
	return nil, &sdk.Error{Code: CodeConnectionUnavailable, Message: err.Error(), Retryable: true}
}

// recordError is a connector's error (the SDK's type, on the plugin side of the boundary) as
// the records carry it.
func recordError(e *sdk.Error) *envelope.Error {
	return &envelope.Error{Code: e.Code, Message: e.Message, Retryable: e.Retryable, RetryAfterMs: sdk.RetryAfterMs(e.RetryAfter)}
}

// hostError classifies a connector call that could not be made.
func hostError(err error) *sdk.Error {
	switch {
	case errors.Is(err, host.ErrUnknownConnector):
		return &sdk.Error{Code: CodeConnectorNotFound, Message: err.Error()}
	case errors.Is(err, host.ErrNotPinned), errors.Is(err, host.ErrChecksumMismatch), errors.Is(err, host.ErrInvalidManifest):
		return &sdk.Error{Code: CodeConnectorRefused, Message: err.Error()}
	}
	var se *sdk.Error
	if errors.As(err, &se) {
		return se
	}
	return &sdk.Error{Code: host.CodeUnavailable, Message: err.Error(), Retryable: true}
}

// invocation builds what every attempt sends: the node's config with its templates rendered
// against the item's input and context, except in the fields the action marks raw. Rendered
// values may come from secrets in settings, so they are never logged. The error return means
// the runner is shutting down.
func (r *Runner) invocation(ctx context.Context, w *envelope.Work) (sdk.Invocation, *sdk.Error, error) {
	inv := sdk.Invocation{
		Action: w.Node.Action, ExecutionID: w.ExecutionID, NodeID: w.Node.ID,
		IdempotencyKey: w.IdempotencyKey, Deadline: w.Deadline, Config: w.Node.Config,
	}
	if inv.Config == nil {
		inv.Config = map[string]any{}
	}
	// Raw JSON goes to the connector as it came: numbers keep their precision.
	if len(bytes.TrimSpace(w.Input)) > 0 {
		inv.Input = w.Input
	}
	if len(w.Context) > 0 {
		inv.Context = make(map[string]any, len(w.Context))
		for k, v := range w.Context {
			inv.Context[k] = v
		}
	}
	if !hasTemplate(w.Node.Config) {
		return inv, nil, nil // nothing to render: no need to ask which fields are raw
	}
	raw, serr, err := r.rawFields(ctx, w)
	if serr != nil || err != nil {
		return inv, serr, err
	}
	cc, err := r.configs.get(w, raw)
	if err != nil {
		return inv, &sdk.Error{Code: CodeInvalidConfig, Message: "node config: " + err.Error()}, nil
	}
	if !cc.templated {
		return inv, nil, nil
	}
	env, serr := templateEnv(w)
	if serr != nil {
		return inv, serr, nil
	}
	v, err := cc.val.Render(env)
	if err != nil {
		return inv, &sdk.Error{Code: CodeInvalidConfig, Message: "node config: " + err.Error()}, nil
	}
	cfg, ok := v.(map[string]any)
	if !ok {
		return inv, &sdk.Error{Code: CodeInvalidConfig, Message: "node config is not an object"}, nil
	}
	inv.Config = cfg
	return inv, nil, nil
}

// templateEnv is what `{{ }}` templates see. Numbers decode as float64, which is what
// expr-lang computes with.
func templateEnv(w *envelope.Work) (expression.Env, *sdk.Error) {
	env := expression.Env{}
	if in := bytes.TrimSpace(w.Input); len(in) > 0 {
		var v any
		if err := json.Unmarshal(in, &v); err != nil {
			return nil, &sdk.Error{Code: CodeInvalidInput, Message: "input: " + err.Error()}
		}
		env[expression.KeyInput] = v
	} else {
		env[expression.KeyInput] = nil
	}
	for _, k := range []string{expression.KeySteps, expression.KeyFlow, expression.KeySettings, expression.KeyExecution} {
		raw := bytes.TrimSpace(w.Context[k])
		if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
			continue // the expression package fills in an empty object
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			return nil, &sdk.Error{Code: CodeInvalidInput, Message: fmt.Sprintf("context.%s is not an object", k)}
		}
		env[k] = m
	}
	return env, nil
}

// publish produces a Result to flowd.results with acks=all, retrying until the broker takes
// it or ctx ends. A Result too large for Kafka is replaced by an error Result.
func (r *Runner) publish(ctx context.Context, res *envelope.Result, log *slog.Logger) error {
	value, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	b := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		msg := kafka.Message{Topic: r.results, Key: []byte(res.ExecutionID), Value: value}
		msg.Headers = tracing.Inject(ctx, msg.Headers) // the router's next hop continues the step's span
		r.cfg.Kafka.RecordKeys.Sign(&msg)
		err := r.writer.WriteMessages(ctx, msg)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("produce result: %w", ctx.Err())
		}
		if tooLarge(err) && res.Error == nil {
			log.Warn("result too large for Kafka: replaced by an error", "bytes", len(value))
			res.Outputs = nil
			res.Error = &envelope.Error{Code: CodeResultTooLarge, Message: fmt.Sprintf("the step's outputs encode to %d bytes, more than Kafka accepts", len(value))}
			if value, err = json.Marshal(res); err != nil {
				return fmt.Errorf("encode result: %w", err)
			}
			continue
		}
		log.Warn("producing the result failed; retrying", "err", err, "in", b.Peek())
		if !b.Wait(ctx) {
			return fmt.Errorf("produce result: %w", ctx.Err())
		}
	}
}

// deadLetter copies a record the runner cannot run to flowd.dlq, with why and where from.
func (r *Runner) deadLetter(ctx context.Context, m kafka.Message, reason string) error {
	if err := r.dlq.Send(ctx, m, reason); err != nil {
		return err
	}
	metrics.DeadLettered("runner")
	return nil
}

func tooLarge(err error) bool {
	var mtl kafka.MessageTooLargeError
	if errors.As(err, &mtl) || errors.Is(err, kafka.MessageSizeTooLarge) {
		return true
	}
	var we kafka.WriteErrors
	if errors.As(err, &we) {
		for _, e := range we {
			if errors.Is(e, kafka.MessageSizeTooLarge) {
				return true
			}
		}
	}
	return false
}

// configCache keeps compiled node configs, keyed by their content and raw fields: the nodes of
// a flow revision repeat the same few configs, so their templates are compiled once, not per
// step.
type configCache struct {
	mu  sync.Mutex
	max int
	m   map[[sha256.Size]byte]*compiledConfig
}

type compiledConfig struct {
	val       *expression.Value
	templated bool // has an expression outside the raw fields; otherwise the config is used as it is
}

func newConfigCache(maxEntries int) *configCache {
	return &configCache{max: maxEntries, m: map[[sha256.Size]byte]*compiledConfig{}}
}

// get compiles the node's config, leaving the raw fields (JSON pointers) as they are.
func (c *configCache) get(w *envelope.Work, raw []string) (*compiledConfig, error) {
	if !hasTemplate(w.Node.Config) {
		return &compiledConfig{}, nil
	}
	// Marshalling sorts map keys, so equal configs hash equally; it costs far less than a compile.
	doc, err := json.Marshal(w.Node.Config)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	h.Write(doc)
	for _, p := range raw {
		h.Write([]byte{0}) // config JSON holds no NUL byte: the config ends at the first
		h.Write([]byte(p))
	}
	var key [sha256.Size]byte
	h.Sum(key[:0])
	c.mu.Lock()
	cc, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return cc, nil
	}
	val, err := expression.CompileValueExcept(map[string]any(w.Node.Config), raw)
	if err != nil {
		return nil, err
	}
	cc = &compiledConfig{val: val, templated: val.Templated()}
	c.mu.Lock()
	if len(c.m) >= c.max {
		clear(c.m) // crude, but a recompile is cheap next to a flood of distinct configs
	}
	c.m[key] = cc
	c.mu.Unlock()
	return cc, nil
}

func hasTemplate(v any) bool {
	switch x := v.(type) {
	case string:
		return strings.Contains(x, "{{")
	case map[string]any:
		for _, e := range x {
			if hasTemplate(e) {
				return true
			}
		}
	case []any:
		for _, e := range x {
			if hasTemplate(e) {
				return true
			}
		}
	}
	return false
}
