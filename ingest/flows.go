package ingest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
)

// Trigger modes of config.mode.
const (
	modeAsync = "async"
	modeSync  = "sync"
)

// MaxSyncTimeout caps config.timeoutMs: a caller holding a connection longer than that is
// better served by the asynchronous mode and the executions API.
const MaxSyncTimeout = 120 * time.Second

// flowMeta is what a webhook request needs to know about its flow, kept in memory.
type flowMeta struct {
	id       string
	open     bool // the flow is active and starts with trigger.webhook: the hook takes requests
	revision int
	owners   []flowdoc.Owner
	sync     bool
	timeout  time.Duration
	auth     authConfig
	secret   []byte // the auth secret, opened from its connection (never logged or written out)
	input    *jsonschema.Schema
	output   *shape
	// misconfig, when set, makes the hook refuse every request (fail closed) until the flow
	// is fixed: a flow whose auth cannot be checked must not run unauthenticated.
	misconfig error
	warned    atomic.Bool // misconfig was logged
	loaded    time.Time
}

// loadFlow builds the metadata of one flow from the store; nil, nil when there is no such flow.
// Transient failures (Redis) are errors and are not cached; problems of the flow itself end up
// in misconfig and are cached like any other state.
func (s *Server) loadFlow(ctx context.Context, id string) (*flowMeta, error) {
	f, err := s.cfg.Store.Flow(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load flow %s: %w", id, err)
	}
	m := &flowMeta{id: id, revision: f.Revision, owners: f.Owners, loaded: s.cfg.Now()}
	trig := f.Trigger()
	if f.Status != flowdoc.StatusActive || trig == nil || trig.Type != flowdoc.TypeWebhook {
		return m, nil
	}
	m.open = true
	if m.sync, m.timeout, m.auth, err = parseTrigger(trig.Config, s.cfg.SyncTimeout); err != nil {
		m.misconfig = err
		return m, nil
	}
	if f.Payload != nil {
		if m.input, err = compileInput(id, f.Payload.InputParameters); err != nil {
			m.misconfig = fmt.Errorf("%w: payload.inputParameters: %w", errMisconfigured, err)
			return m, nil
		}
		m.output = compileShape(f.Payload.OutputParameters)
	}
	if m.auth.Type != connections.WebhookAuthNone {
		m.secret, err = s.loadSecret(ctx, m.auth, f.Owners)
		if errors.Is(err, errMisconfigured) {
			m.misconfig = err
		} else if err != nil {
			return nil, err
		}
	}
	return m, nil
}

// parseTrigger reads the webhook trigger's config: mode, timeoutMs and auth.
func parseTrigger(cfg map[string]any, defTimeout time.Duration) (isSync bool, timeout time.Duration, auth authConfig, err error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: trigger config: %s", errMisconfigured, fmt.Sprintf(format, args...))
	}
	switch mode := cfg["mode"]; mode {
	case nil, "", modeAsync:
	case modeSync:
		isSync = true
	default:
		return false, 0, auth, bad("mode must be %q or %q, not %v", modeAsync, modeSync, mode)
	}
	timeout = defTimeout
	if v, ok := cfg["timeoutMs"]; ok {
		ms, isNum := v.(float64)
		if !isNum || ms <= 0 || ms != math.Trunc(ms) {
			return false, 0, auth, bad("timeoutMs must be a positive whole number of milliseconds")
		}
		timeout = time.Duration(ms) * time.Millisecond
	}
	timeout = min(timeout, MaxSyncTimeout)

	auth = authConfig{Type: connections.WebhookAuthNone}
	raw, ok := cfg["auth"]
	if !ok || raw == nil {
		return isSync, timeout, auth, nil
	}
	a, ok := raw.(map[string]any)
	if !ok {
		return false, 0, auth, bad("auth must be an object")
	}
	str := func(k string) (string, error) {
		switch v := a[k].(type) {
		case nil:
			return "", nil
		case string:
			return v, nil
		default:
			return "", bad("auth.%s must be a string", k)
		}
	}
	if auth.Type, err = str("type"); err != nil {
		return false, 0, auth, err
	}
	if auth.Connection, err = str("connection"); err != nil {
		return false, 0, auth, err
	}
	if auth.Header, err = str("header"); err != nil {
		return false, 0, auth, err
	}
	if auth.Prefix, err = str("prefix"); err != nil {
		return false, 0, auth, err
	}
	switch auth.Type {
	case "", connections.WebhookAuthNone:
		auth = authConfig{Type: connections.WebhookAuthNone}
	case connections.WebhookAuthBearer, connections.WebhookAuthHMAC:
		if auth.Connection == "" {
			return false, 0, auth, bad("auth.connection (the id of a stored connection holding the secret) is required for %s auth", auth.Type)
		}
		if _, ok := a["token"]; ok {
			return false, 0, auth, bad("auth.token: secrets do not belong in a flow; store the token as a bearer connection and name it in auth.connection")
		}
		if auth.Type == connections.WebhookAuthHMAC && auth.Header == "" {
			auth.Header = DefaultSignatureHeader
		}
		auth.Header = http.CanonicalHeaderKey(auth.Header)
	default:
		return false, 0, auth, bad("auth.type must be none, bearer or hmac, not %q", auth.Type)
	}
	return isSync, timeout, auth, nil
}

// flowCache keeps flowMeta per flow id. Entries are dropped when flowd.events says the flow
// changed, and expire after ttl in any case: events published while this process could not
// read them are otherwise never noticed. Unknown ids are not cached, so requests for random
// ids cannot grow the cache; maxEntries bounds it anyway.
type flowCache struct {
	ttl        time.Duration
	maxEntries int
	load       func(ctx context.Context, id string) (*flowMeta, error)

	mu       sync.Mutex
	entries  map[string]*flowMeta
	inflight map[string]*loadCall
	// epoch counts invalidations: a load that raced one may have read the old flow, so its
	// result serves the requests waiting for it but is not cached.
	epoch uint64
}

type loadCall struct {
	done chan struct{}
	m    *flowMeta
	err  error
}

// loadTimeout bounds a load shared by concurrent requests, whoever started it.
const loadTimeout = 10 * time.Second

func newFlowCache(ttl time.Duration, maxEntries int, load func(context.Context, string) (*flowMeta, error)) *flowCache {
	return &flowCache{ttl: ttl, maxEntries: maxEntries, load: load, entries: map[string]*flowMeta{}, inflight: map[string]*loadCall{}}
}

// get returns the flow's metadata (nil for an unknown flow), loading it once for all
// concurrent callers when it is missing or expired.
func (fc *flowCache) get(ctx context.Context, id string, now time.Time) (*flowMeta, error) {
	fc.mu.Lock()
	if m, ok := fc.entries[id]; ok && now.Sub(m.loaded) < fc.ttl {
		fc.mu.Unlock()
		return m, nil
	}
	call, ok := fc.inflight[id]
	if !ok {
		call = &loadCall{done: make(chan struct{})}
		fc.inflight[id] = call
		epoch := fc.epoch
		fc.mu.Unlock()
		go fc.run(id, call, epoch)
	} else {
		fc.mu.Unlock()
	}
	select {
	case <-call.done:
		return call.m, call.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// run loads on its own context: the request that happened to start the load may give up
// while others still wait for it.
func (fc *flowCache) run(id string, call *loadCall, epoch uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), loadTimeout)
	defer cancel()
	call.m, call.err = fc.load(ctx, id)
	fc.mu.Lock()
	delete(fc.inflight, id)
	if call.err == nil && call.m != nil && fc.epoch == epoch {
		if len(fc.entries) >= fc.maxEntries {
			fc.entries = map[string]*flowMeta{}
		}
		fc.entries[id] = call.m
	}
	fc.mu.Unlock()
	close(call.done)
}

func (fc *flowCache) invalidate(id string) {
	fc.mu.Lock()
	delete(fc.entries, id)
	fc.epoch++
	fc.mu.Unlock()
}

func (fc *flowCache) clear() {
	fc.mu.Lock()
	fc.entries = map[string]*flowMeta{}
	fc.epoch++
	fc.mu.Unlock()
}

// watchEvents drops cache entries as flowd.events announces changes, in broadcast mode (every
// ingest process sees every event). When the consumer fails (the broker is away) it starts
// again after a pause, and the whole cache is dropped: events may have been missed meanwhile.
func (s *Server) watchEvents(ctx context.Context) {
	b := backoff.New(200*time.Millisecond, 10*time.Second)
	for ctx.Err() == nil {
		started := time.Now()
		subscribed := func() { s.readyOnce.Do(func() { close(s.ready) }) }
		err := events.ConsumeBroadcast(ctx, s.cfg.Kafka, subscribed, func(_ context.Context, ev events.Event) error {
			if ev.FlowID != "" {
				s.flows.invalidate(ev.FlowID)
			}
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		s.flows.clear()
		if time.Since(started) > time.Minute {
			b.Reset() // it ran fine for a while: retry promptly
		}
		s.log.Warn("flow events consumer stopped; restarting", "err", err, "in", b.Peek())
		if !b.Wait(ctx) {
			return
		}
	}
}
