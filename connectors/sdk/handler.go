package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"time"

	"go.opentelemetry.io/otel/trace"
)

// Call is one invocation of an action, with config and input decoded into the handler's types.
type Call[C, I any] struct {
	Action         string
	Config         C
	Input          I
	Context        map[string]any // steps, flow, settings, execution
	Connection     *Connection    // nil when the node has no connection
	ExecutionID    string
	NodeID         string
	Attempt        int
	IdempotencyKey string
	Deadline       time.Time // zero when the runner set none; ctx carries it too
}

// Handler is an action built with Action. The zero Handler is not usable.
type Handler struct {
	spec ActionSpec
	run  func(ctx context.Context, w *wireInvocation) ([]Output, error)
}

// Spec is the action's manifest entry.
func (h Handler) Spec() ActionSpec { return h.spec }

// Action builds a handler whose config and input are decoded from JSON into C and I.
// Decoding failures become permanent errors (invalid_config, invalid_input) without calling fn.
// Use json.RawMessage for I to pass input through untouched.
func Action[C, I any](spec ActionSpec, fn func(ctx context.Context, call Call[C, I]) ([]Output, error)) Handler {
	return Handler{spec: spec, run: func(ctx context.Context, w *wireInvocation) ([]Output, error) {
		call := Call[C, I]{
			Action:         w.Action,
			ExecutionID:    w.ExecutionID,
			NodeID:         w.NodeID,
			Attempt:        w.Attempt,
			IdempotencyKey: w.IdempotencyKey,
			Deadline:       w.Deadline,
		}
		if err := decodeJSON(w.Config, &call.Config); err != nil {
			return nil, Permanent("invalid_config", fmt.Errorf("config: %w", err))
		}
		if err := decodeJSON(w.Input, &call.Input); err != nil {
			return nil, Permanent("invalid_input", fmt.Errorf("input: %w", err))
		}
		if err := decodeJSON(w.Context, &call.Context); err != nil {
			return nil, Permanent("invalid_context", fmt.Errorf("context: %w", err))
		}
		conn, err := w.connection()
		if err != nil {
			return nil, err
		}
		call.Connection = conn
		return fn(ctx, call)
	}}
}

// PollCall is one poll of a trigger, with config decoded into the handler's type.
type PollCall[C any] struct {
	Trigger    string
	Config     C
	Cursor     string      // "" on the first poll
	Connection *Connection // nil when the trigger has no connection
	Deadline   time.Time
}

// TriggerHandler is a polling trigger built with Poller. The zero TriggerHandler is not usable.
type TriggerHandler struct {
	spec TriggerSpec
	run  func(ctx context.Context, w *wirePoll) (PollResult, error)
}

// Spec is the trigger's manifest entry.
func (h TriggerHandler) Spec() TriggerSpec { return h.spec }

// Poller builds a polling trigger whose config is decoded from JSON into C.
func Poller[C any](spec TriggerSpec, fn func(ctx context.Context, call PollCall[C]) (PollResult, error)) TriggerHandler {
	return TriggerHandler{spec: spec, run: func(ctx context.Context, w *wirePoll) (PollResult, error) {
		call := PollCall[C]{Trigger: w.Trigger, Cursor: w.Cursor, Deadline: w.Deadline}
		if err := decodeJSON(w.Config, &call.Config); err != nil {
			return PollResult{}, Permanent("invalid_config", fmt.Errorf("config: %w", err))
		}
		conn, err := w.conn.decode()
		if err != nil {
			return PollResult{}, err
		}
		call.Connection = conn
		return fn(ctx, call)
	}}
}

// Connector is everything a connector binary serves. Action and trigger specs come from the
// handlers, so they are declared once: leave Manifest.Actions and Manifest.Triggers empty.
type Connector struct {
	Manifest Manifest
	Actions  map[string]Handler
	Triggers map[string]TriggerHandler
	// MaxConcurrency bounds the handlers running at once in the process, across batches;
	// 0 means DefaultMaxConcurrency.
	MaxConcurrency int
	// Close, when set, releases what the connector holds (connections, producers, files)
	// before the process exits: when the host stops the plugin, on SIGTERM, or when the
	// plugin's parent is gone. It is called once, after running handlers have returned (or
	// after 500 ms), and ctx ends after CloseTimeout.
	Close func(ctx context.Context) error
}

// DefaultMaxConcurrency suits I/O-bound handlers; CPU-bound connectors should lower it.
const DefaultMaxConcurrency = 64

// Describe returns the manifest with the handlers' specs filled in, or an error when the
// connector is inconsistent (no name, a declared action without a handler, a zero Handler).
func (c Connector) Describe() (Manifest, error) {
	m := c.Manifest
	if m.Name == "" {
		return m, fmt.Errorf("sdk: manifest has no name")
	}
	m.Actions = maps.Clone(m.Actions)
	if m.Actions == nil && len(c.Actions) > 0 {
		m.Actions = make(map[string]ActionSpec, len(c.Actions))
	}
	for name := range m.Actions {
		if _, ok := c.Actions[name]; !ok {
			return m, fmt.Errorf("sdk: action %q is declared in the manifest but has no handler", name)
		}
	}
	for name, h := range c.Actions {
		if h.run == nil {
			return m, fmt.Errorf("sdk: action %q has no handler: build it with sdk.Action", name)
		}
		spec := h.spec
		if spec.Title == "" {
			spec.Title = name
		}
		m.Actions[name] = spec
	}
	m.Triggers = maps.Clone(m.Triggers)
	if m.Triggers == nil && len(c.Triggers) > 0 {
		m.Triggers = make(map[string]TriggerSpec, len(c.Triggers))
	}
	for name := range m.Triggers {
		if _, ok := c.Triggers[name]; !ok {
			return m, fmt.Errorf("sdk: trigger %q is declared in the manifest but has no handler", name)
		}
	}
	for name, h := range c.Triggers {
		if h.run == nil {
			return m, fmt.Errorf("sdk: trigger %q has no handler: build it with sdk.Poller", name)
		}
		spec := h.spec
		if spec.Title == "" {
			spec.Title = name
		}
		m.Triggers[name] = spec
	}
	return m, nil
}

// wireInvocation is an Invocation as it arrives: JSON still undecoded, so each handler decodes
// straight into its own types.
type wireInvocation struct {
	ID, Action             string
	Config, Input, Context []byte
	conn                   wireConnection
	ExecutionID, NodeID    string
	Attempt                int
	IdempotencyKey         string
	Deadline               time.Time
	// parent is the host's span of the call for this invocation, when the host traces.
	parent trace.SpanContext
}

func (w *wireInvocation) connection() (*Connection, error) { return w.conn.decode() }

type wirePoll struct {
	Trigger  string
	Config   []byte
	Cursor   string
	conn     wireConnection
	Deadline time.Time
}

type wireConnection struct {
	present bool
	typ     string
	data    []byte
}

func (c wireConnection) decode() (*Connection, error) {
	if !c.present {
		return nil, nil
	}
	conn := &Connection{Type: c.typ}
	if err := decodeJSON(c.data, &conn.Data); err != nil {
		return nil, Permanent("invalid_connection", fmt.Errorf("connection: %w", err))
	}
	return conn, nil
}

// decodeJSON leaves v at its zero value for an absent or null document.
func decodeJSON(data []byte, v any) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 || bytes.Equal(data, []byte("null")) {
		return nil
	}
	return json.Unmarshal(data, v)
}
