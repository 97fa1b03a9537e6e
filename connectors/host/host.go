// Package host runs connector plugins for the runners and the CLI: it discovers connector
// binaries in a directory, starts each lazily (once per Host) through hashicorp/go-plugin with
// mutual TLS (go-plugin's AutoMTLS protocol, with a P-256 host certificate) and optional sha256
// pinning, validates its manifest, multiplexes concurrent calls over its one gRPC connection,
// health-checks it, and restarts it with backoff after a crash. Reload picks up connectors
// installed, upgraded or removed since, without disturbing the calls in flight.
package host

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flowd/flowd/connectors/sdk"
	connectorv1 "github.com/flowd/flowd/connectors/sdk/proto/connector/v1"
)

// Error codes the host puts in results (sdk.Error.Code) for failures of its own.
const (
	CodeCrashed         = "connector_crashed"     // the plugin process died during the call: retryable
	CodeUnavailable     = "connector_unavailable" // the plugin could not be started (yet): retryable
	CodeDeadline        = "deadline_exceeded"     // the call or the item ran out of time: retryable
	CodeCanceled        = "canceled"              // the caller gave up: retryable
	CodeConnectorError  = "connector_error"       // the plugin failed the whole call: retryable
	CodeMessageTooLarge = "message_too_large"     // a request or response exceeded sdk.MaxMessageSize
	CodeMissingResult   = "missing_result"        // the plugin answered without this item
)

var (
	ErrUnknownConnector = errors.New("unknown connector")
	ErrNotPinned        = errors.New("connector is not in the pin file")
	ErrChecksumMismatch = errors.New("connector does not match its pinned sha256")
	ErrInvalidManifest  = errors.New("invalid connector manifest")
	ErrClosed           = errors.New("connector host is closed")
)

// Options configures a Host; zero values take the defaults in brackets.
type Options struct {
	Dir               string        // where connector executables live ["bin/connectors"]
	PinFile           string        // optional `sha256sum`-format file (Digest says what a pin covers); when set, only listed connectors that match start
	CallTimeout       time.Duration // bound of one Execute or Poll call, capped by item deadlines [30s]
	StartTimeout      time.Duration // handshake plus Describe [30s]
	HealthInterval    time.Duration // between health checks of running connectors [10s]
	HealthTimeout     time.Duration // for one health check [5s]
	RestartBackoff    time.Duration // before the first restart after a failure; doubles per failure [200ms]
	MaxRestartBackoff time.Duration // cap of the restart backoff [30s]
	HealthyAfter      time.Duration // uptime after which past failures are forgotten [1m]
	Env               []string      // extra KEY=VALUE for connectors, which otherwise get only an allowlist of the host's env
	Logger            *slog.Logger  // [slog.Default()]
}

func (o *Options) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if o.Dir == "" {
		o.Dir = filepath.Join("bin", "connectors")
	}
	def(&o.CallTimeout, 30*time.Second)
	def(&o.StartTimeout, 30*time.Second)
	def(&o.HealthInterval, 10*time.Second)
	def(&o.HealthTimeout, 5*time.Second)
	def(&o.RestartBackoff, 200*time.Millisecond)
	def(&o.MaxRestartBackoff, 30*time.Second)
	def(&o.HealthyAfter, time.Minute)
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
}

// Host runs the connectors of one directory. It is safe for concurrent use.
type Host struct {
	opts   Options
	log    *slog.Logger
	closed atomic.Bool // set under mu; read without it
	stop   chan struct{}
	loops  sync.WaitGroup // the health loop and the drains of replaced connectors

	reloading sync.Mutex // one Reload at a time, so an older scan never lands after a newer one

	mu   sync.Mutex
	sups map[string]*supervisor // every discovered connector; its process starts on first use
}

// New discovers the executables in opts.Dir (each one is a connector named after its file) and
// reads the pin file. Nothing is started until first use.
func New(opts Options) (*Host, error) {
	opts.defaults()
	h := &Host{
		opts: opts,
		log:  opts.Logger,
		stop: make(chan struct{}),
		sups: map[string]*supervisor{},
	}
	found, err := h.scan(context.Background())
	if err != nil {
		return nil, err
	}
	for name, f := range found {
		h.sups[name] = h.newSupervisor(name, f)
	}
	h.loops.Go(h.healthLoop)
	return h, nil
}

// discovered is one connector as a scan of the directory finds it.
type discovered struct {
	path string            // the executable in Dir, absolute
	id   [sha256.Size]byte // identity of what it runs
	pin  []byte            // its pinned sum; nil when the pin file does not list it
}

// scan discovers the connectors in Dir, with their identities and pins.
func (h *Host) scan(ctx context.Context) (map[string]discovered, error) {
	paths, err := discover(h.opts.Dir)
	if err != nil {
		return nil, err
	}
	var pins map[string][]byte
	if h.opts.PinFile != "" {
		if pins, err = readPinFile(h.opts.PinFile); err != nil {
			return nil, err
		}
	}
	found := make(map[string]discovered, len(paths))
	for name, path := range paths {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		found[name] = discovered{path: path, id: identity(ctx, path), pin: pins[name]}
	}
	return found, nil
}

func (h *Host) newSupervisor(name string, f discovered) *supervisor {
	return &supervisor{h: h, name: name, path: f.path, id: f.id, pin: f.pin, log: h.log.With("connector", name)}
}

func discover(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("connectors dir: %w", err)
	}
	paths := map[string]string{}
	for _, e := range entries {
		name := e.Name()
		if name == "" || name[0] == '.' {
			continue
		}
		path, err := filepath.Abs(filepath.Join(dir, name))
		if err != nil {
			return nil, fmt.Errorf("connectors dir: %w", err)
		}
		fi, err := os.Stat(path) // follows symlinks
		if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
			continue
		}
		paths[name] = path
	}
	return paths, nil
}

// List returns the names of the discovered connectors, sorted.
func (h *Host) List() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Sorted(maps.Keys(h.sups))
}

// Manifest returns the manifest the running connector described (starting it if needed).
func (h *Host) Manifest(ctx context.Context, name string) (*sdk.Manifest, error) {
	s, release, err := h.acquire(name)
	if err != nil {
		return nil, err
	}
	defer release()
	inst, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	m := inst.manifest // the maps are never written after load, so sharing them is safe
	return &m, nil
}

// RawFields returns the config fields the action of connector name marks raw
// (sdk.RawKeyword), as JSON pointers into its config: the caller must not render templates
// there. It starts the connector if needed and reads what the running one described, so it
// follows the binary across restarts. An action the connector does not have has none.
func (h *Host) RawFields(ctx context.Context, name, action string) ([]string, error) {
	s, release, err := h.acquire(name)
	if err != nil {
		return nil, err
	}
	defer release()
	inst, err := s.get(ctx)
	if err != nil {
		return nil, err
	}
	return inst.raw[action], nil // shared, never written after load: do not modify
}

// Execute runs a batch of invocations on connector name and returns one result per item, in
// item order. Failures of single items, of the call (deadline, crash) and of the plugin are
// results with an sdk.Error; the error return is for a call that could not be made at all
// (unknown connector, refused binary, invalid manifest, canceled ctx, malformed batch).
func (h *Host) Execute(ctx context.Context, name string, items []sdk.Invocation) ([]sdk.Result, error) {
	if len(items) == 0 {
		return nil, nil
	}
	seen := make(map[string]struct{}, len(items))
	for i, it := range items {
		if it.ID == "" {
			return nil, fmt.Errorf("execute %s: item %d has no id", name, i)
		}
		if _, dup := seen[it.ID]; dup {
			return nil, fmt.Errorf("execute %s: duplicate item id %q", name, it.ID)
		}
		seen[it.ID] = struct{}{}
	}
	s, release, err := h.acquire(name)
	if err != nil {
		return nil, err
	}
	defer release()
	inst, err := s.get(ctx)
	if err != nil {
		return nil, err
	}

	callCtx, cancel, itemDeadline := h.callContext(ctx, items)
	defer cancel()
	results := make([]sdk.Result, len(items))
	req := &connectorv1.ExecuteRequest{Invocations: make([]*connectorv1.Invocation, 0, len(items))}
	sent := make(map[string]int, len(items)) // id -> index in items
	for i := range items {
		pi, err := encodeInvocation(&items[i], itemDeadline(items[i].Deadline))
		if err == nil {
			err = inst.checkInvocation(pi)
		}
		if err != nil {
			results[i] = sdk.Result{ID: items[i].ID, Error: sdk.AsError(err)}
			continue
		}
		req.Invocations = append(req.Invocations, pi)
		sent[items[i].ID] = i
	}
	if len(req.Invocations) == 0 {
		return results, nil
	}

	callCtx, spans := startCallSpans(ctx, callCtx, name, items, req, sent)
	defer func() { spans.end(results) }()
	resp, err := inst.rpc.Execute(callCtx, req)
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
			return nil, fmt.Errorf("execute %s: %w", name, ctx.Err())
		}
		e := s.callError(callCtx, inst, err)
		for id, i := range sent {
			results[i] = sdk.Result{ID: id, Error: e}
		}
		return results, nil
	}
	for _, r := range resp.GetResults() {
		i, ok := sent[r.GetId()]
		if !ok {
			continue // unknown or repeated id: the first answer stands
		}
		delete(sent, r.GetId())
		results[i] = decodeResult(r)
	}
	for id, i := range sent {
		results[i] = sdk.Result{ID: id, Error: &sdk.Error{Code: CodeMissingResult, Message: "connector " + name + " returned no result for this item"}}
	}
	return results, nil
}

// Poll asks a polling trigger of connector name for new items. Its error is an *sdk.Error
// (retryable or not) for failures of the poll, or a plain error when the call could not be made.
func (h *Host) Poll(ctx context.Context, name string, req sdk.PollRequest) (sdk.PollResult, error) {
	s, release, err := h.acquire(name)
	if err != nil {
		return sdk.PollResult{}, err
	}
	defer release()
	inst, err := s.get(ctx)
	if err != nil {
		return sdk.PollResult{}, err
	}
	callCtx, cancel, itemDeadline := h.callContext(ctx, nil)
	defer cancel()
	preq, err := encodePoll(&req, itemDeadline(time.Time{}))
	if err == nil {
		err = inst.checkPoll(preq)
	}
	if err != nil {
		return sdk.PollResult{}, err
	}
	resp, err := inst.rpc.Poll(callCtx, preq)
	if err != nil {
		if ctx.Err() != nil && errors.Is(ctx.Err(), context.Canceled) {
			return sdk.PollResult{}, fmt.Errorf("poll %s: %w", name, ctx.Err())
		}
		return sdk.PollResult{}, s.callError(callCtx, inst, err)
	}
	if e := resp.GetError(); e != nil {
		return sdk.PollResult{}, decodeError(e)
	}
	out := sdk.PollResult{Cursor: resp.GetCursor(), Items: make([]any, len(resp.GetItemsJson()))}
	for i, b := range resp.GetItemsJson() {
		if out.Items[i], err = sdk.DecodeJSON(b); err != nil {
			return sdk.PollResult{}, &sdk.Error{Code: "invalid_output", Message: fmt.Sprintf("poll item %d: %v", i, err)}
		}
	}
	return out, nil
}

// deadlineGrace is how much earlier than the call's own deadline the plugin is asked to answer
// an item, so a slow item comes back as that item's deadline error instead of losing the batch.
const deadlineGrace = 250 * time.Millisecond

// callContext bounds a call by CallTimeout and, when every item has one, by the latest item
// deadline (plus grace). itemDeadline gives what each item is told: its own deadline, capped
// by the call's.
func (h *Host) callContext(ctx context.Context, items []sdk.Invocation) (context.Context, context.CancelFunc, func(time.Time) time.Time) {
	dl := time.Now().Add(h.opts.CallTimeout)
	if pd, ok := ctx.Deadline(); ok && pd.Before(dl) {
		dl = pd
	}
	var latest time.Time
	all := len(items) > 0
	for _, it := range items {
		if it.Deadline.IsZero() {
			all = false
			break
		}
		if it.Deadline.After(latest) {
			latest = it.Deadline
		}
	}
	if all && latest.Add(deadlineGrace).Before(dl) {
		dl = latest.Add(deadlineGrace)
	}
	ctx, cancel := context.WithDeadline(ctx, dl)
	itemCap := dl.Add(-deadlineGrace)
	return ctx, cancel, func(d time.Time) time.Time {
		if d.IsZero() || d.After(itemCap) {
			return itemCap
		}
		return d
	}
}

// acquire returns the supervisor of connector name for one call, counted in flight until
// release: a Reload that replaces the connector stops its process only after release.
func (h *Host) acquire(name string) (*supervisor, func(), error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed.Load() {
		return nil, nil, ErrClosed
	}
	s, ok := h.sups[name]
	if !ok {
		return nil, nil, fmt.Errorf("connector %q: %w (not an executable in %s)", name, ErrUnknownConnector, h.opts.Dir)
	}
	s.calls.Add(1)
	return s, s.calls.Done, nil
}

func (h *Host) healthLoop() {
	t := time.NewTicker(h.opts.HealthInterval)
	defer t.Stop()
	for {
		select {
		case <-h.stop:
			return
		case <-t.C:
		}
		h.each(func(s *supervisor) { s.checkHealth() })
	}
}

// Close stops health checks and kills every connector process; calls still running fail.
func (h *Host) Close() error {
	h.mu.Lock()
	already := h.closed.Swap(true)
	h.mu.Unlock()
	if already {
		return nil
	}
	close(h.stop)
	h.loops.Wait()
	h.each(func(s *supervisor) { s.shutdown() })
	return nil
}

// each runs fn on every connector's supervisor at once, outside the host's lock, and waits.
func (h *Host) each(fn func(*supervisor)) {
	h.mu.Lock()
	sups := make([]*supervisor, 0, len(h.sups))
	for _, s := range h.sups {
		sups = append(sups, s)
	}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for _, s := range sups {
		wg.Go(func() { fn(s) })
	}
	wg.Wait()
}

func encodeInvocation(it *sdk.Invocation, deadline time.Time) (*connectorv1.Invocation, error) {
	pi := &connectorv1.Invocation{
		Id:             it.ID,
		Action:         it.Action,
		ExecutionId:    it.ExecutionID,
		NodeId:         it.NodeID,
		Attempt:        int32(it.Attempt),
		IdempotencyKey: it.IdempotencyKey,
		DeadlineUnixMs: deadline.UnixMilli(),
	}
	var err error
	if pi.ConfigJson, err = json.Marshal(it.Config); err != nil {
		return nil, sdk.Permanent("invalid_config", fmt.Errorf("encode config: %w", err))
	}
	if pi.InputJson, err = json.Marshal(it.Input); err != nil {
		return nil, sdk.Permanent("invalid_input", fmt.Errorf("encode input: %w", err))
	}
	if it.Context != nil {
		if pi.ContextJson, err = json.Marshal(it.Context); err != nil {
			return nil, sdk.Permanent("invalid_context", fmt.Errorf("encode context: %w", err))
		}
	}
	if pi.Connection, err = encodeConnection(it.Connection); err != nil {
		return nil, err
	}
	return pi, nil
}

func encodePoll(req *sdk.PollRequest, deadline time.Time) (*connectorv1.PollRequest, error) {
	pr := &connectorv1.PollRequest{Trigger: req.Trigger, Cursor: req.Cursor, DeadlineUnixMs: deadline.UnixMilli()}
	var err error
	if pr.ConfigJson, err = json.Marshal(req.Config); err != nil {
		return nil, sdk.Permanent("invalid_config", fmt.Errorf("encode config: %w", err))
	}
	if pr.Connection, err = encodeConnection(req.Connection); err != nil {
		return nil, err
	}
	return pr, nil
}

func encodeConnection(c *sdk.Connection) (*connectorv1.Connection, error) {
	if c == nil {
		return nil, nil
	}
	data, err := json.Marshal(c.Data)
	if err != nil {
		// The message would carry secret material: keep it out of the error.
		return nil, sdk.Errorf("invalid_connection", "encode connection of type %s failed", c.Type)
	}
	return &connectorv1.Connection{Type: c.Type, DataJson: data}, nil
}

func decodeResult(r *connectorv1.Result) sdk.Result {
	res := sdk.Result{ID: r.GetId()}
	if e := r.GetError(); e != nil {
		res.Error = decodeError(e)
		return res
	}
	res.Outputs = make([]sdk.Output, len(r.GetOutputs()))
	for i, o := range r.GetOutputs() {
		v, err := sdk.DecodeJSON(o.GetDataJson())
		if err != nil {
			return sdk.Result{ID: r.GetId(), Error: &sdk.Error{Code: "invalid_output", Message: fmt.Sprintf("output %d is not JSON: %v", i, err)}}
		}
		res.Outputs[i] = sdk.Output{Port: o.GetPort(), Data: v}
	}
	return res
}

func decodeError(e *connectorv1.Error) *sdk.Error {
	return &sdk.Error{Code: e.GetCode(), Message: e.GetMessage(), Retryable: e.GetRetryable(), RetryAfter: sdk.RetryAfterFromMs(e.GetRetryAfterMs())}
}
