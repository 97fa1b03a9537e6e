// Package flowdoc defines the flow document (the graph a user saves and the router runs) and
// checks it: JSON Schema first for shape, then semantic checks for what a schema cannot say
// (dangling edges, cycles, ports, expressions). Every problem is reported at once, each with a
// code and a JSON pointer, because a person fixing a flow wants the whole list, not one at a time.
package flowdoc

import (
	"bytes"
	"encoding/json"
	"strings"
	"time"
)

// Node types.
const (
	TypeWebhook  = "trigger.webhook"
	TypeKafka    = "trigger.kafka"
	TypeSchedule = "trigger.schedule"
	TypePoll     = "trigger.poll"
	TypeAction   = "action"
	TypeIf       = "if"
	TypeSwitch   = "switch"
	TypeFilter   = "filter"
	TypeMerge    = "merge"
	TypeSplit    = "split"
	TypeRespond  = "respond"
)

// NodeTypes lists every known node type, in schema order.
var NodeTypes = []string{
	TypeWebhook, TypeKafka, TypeSchedule, TypePoll,
	TypeAction, TypeIf, TypeSwitch, TypeFilter, TypeMerge, TypeSplit, TypeRespond,
}

// Flow statuses (server-managed).
const (
	StatusInactive = "inactive"
	StatusStarting = "starting"
	StatusActive   = "active"
	StatusStopping = "stopping"
	// StatusFailed: the router could not run the flow; StatusReason says why. It runs nothing
	// and can be started again, stopped, changed or deleted.
	StatusFailed = "failed"
)

// Statuses lists every flow status.
var Statuses = []string{StatusInactive, StatusStarting, StatusActive, StatusStopping, StatusFailed}

// Owner types.
const (
	OwnerUser   = "user"
	OwnerTenant = "tenant"
)

// Well-known edge ports.
const (
	PortTrue    = "true"
	PortFalse   = "false"
	PortDefault = "default" // switch: taken when no case matches
	PortSuccess = "success" // action: same as no port
	PortError   = "error"   // action: taken when the action fails for good
)

// Flow is a flow document. ID, Type, Status, StatusReason, Revision, CreatedAt and UpdatedAt
// are managed by the server; clients may echo them back.
type Flow struct {
	ID           string        `json:"id,omitempty"`
	Name         string        `json:"name"`
	Description  string        `json:"description,omitempty"`
	Type         string        `json:"type,omitempty"` // derived: trigger kind: webhook|kafka|schedule|poll
	Status       string        `json:"status,omitempty"`
	StatusReason *StatusReason `json:"statusReason,omitempty"`
	Revision     int           `json:"revision,omitempty"`
	Graph        Graph         `json:"graph"`
	Owners       []Owner       `json:"owners,omitempty"`
	FromTemplate string        `json:"fromTemplate,omitempty"`
	Payload      *Payload      `json:"payload,omitempty"`
	Retry        *Retry        `json:"retry,omitempty"` // default of the action nodes' retry
	OnError      *OnError      `json:"onError,omitempty"`
	// Notifications tell people when an execution of the flow fails.
	Notifications *Notifications `json:"notifications,omitempty"`
	Settings      map[string]any `json:"settings,omitempty"`
	History       *History       `json:"history,omitempty"`
	CreatedAt     *time.Time     `json:"createdAt,omitempty"`
	UpdatedAt     *time.Time     `json:"updatedAt,omitempty"`

	// FromTemplateVersion is the version of template FromTemplate the flow was made from.
	FromTemplateVersion int `json:"fromTemplateVersion,omitempty"`
	// Integration is the id of the integration the flow belongs to ("" for none).
	Integration string `json:"integration,omitempty"`
	// IntegrationSettings is the integration's settings as of this revision (server-managed):
	// a revision carries them so that an execution keeps the settings it started with.
	IntegrationSettings map[string]any `json:"integrationSettings,omitempty"`
}

// Graph is the nodes and the edges between them.
type Graph struct {
	Nodes []Node `json:"nodes"`
	Edges []Edge `json:"edges"`
}

// Node is one step of a flow.
type Node struct {
	ID          string         `json:"id"`
	Name        string         `json:"name,omitempty"`
	Description string         `json:"description,omitempty"`
	Type        string         `json:"type,omitempty"` // "" for a draft
	Connector   string         `json:"connector,omitempty"`
	Action      string         `json:"action,omitempty"`
	Trigger     string         `json:"trigger,omitempty"`
	Config      map[string]any `json:"config,omitempty"`
	Connection  string         `json:"connection,omitempty"`
	Retry       *Retry         `json:"retry,omitempty"`
	Timeout     string         `json:"timeout,omitempty"` // each attempt's deadline (actions)
	// Interval is how often a trigger.poll node polls (default DefaultPollInterval).
	Interval string `json:"interval,omitempty"`
	Pool     string `json:"pool,omitempty"`
}

// Bounds and default of a poll trigger's interval.
const (
	DefaultPollInterval = time.Minute
	MinPollInterval     = time.Second
	MaxPollInterval     = 24 * time.Hour
)

// PollInterval is how often n polls: its interval, else the default.
func PollInterval(n *Node) time.Duration {
	if d, err := time.ParseDuration(n.Interval); err == nil && d >= MinPollInterval && d <= MaxPollInterval {
		return d
	}
	return DefaultPollInterval
}

// Edge carries data from Source to Target, optionally from a named output Port of the source
// and only when Condition holds.
type Edge struct {
	ID        string `json:"id,omitempty"`
	Name      string `json:"name,omitempty"`
	Source    string `json:"source"`
	Target    string `json:"target"`
	Port      string `json:"port,omitempty"`
	Condition string `json:"condition,omitempty"`
}

// Owner grants access to a flow.
type Owner struct {
	ID   string `json:"id"`
	Type string `json:"type"`
}

// Payload is the webhook contract of a flow (FlowMate). Each side is either a JSON Schema or the
// simple form {"firstName": "string"}; see IsJSONSchemaParams.
type Payload struct {
	InputParameters  map[string]any `json:"inputParameters,omitempty"`
	OutputParameters map[string]any `json:"outputParameters,omitempty"`
}

// History says what is kept of the flow's executions once they end; zero fields take the
// router's defaults.
type History struct {
	// Succeeded is what a succeeded or filtered execution keeps: all, summary or none. A
	// failed one keeps everything.
	Succeeded string `json:"succeeded,omitempty"`
	// MaxAge bounds how long an ended execution is kept (a Go duration).
	MaxAge string `json:"maxAge,omitempty"`
	// MaxCount bounds how many succeeded and filtered executions are kept; the oldest go first.
	MaxCount int `json:"maxCount,omitempty"`
}

// History bounds.
const (
	MinHistoryAge = time.Minute
	MaxHistoryAge = 90 * 24 * time.Hour
)

// Retry is a node's retry policy; zero fields mean the runner's defaults.
type Retry struct {
	MaxAttempts     int      `json:"maxAttempts,omitempty"`
	InitialInterval string   `json:"initialInterval,omitempty"`
	MaxInterval     string   `json:"maxInterval,omitempty"`
	Multiplier      float64  `json:"multiplier,omitempty"`
	Jitter          *float64 `json:"jitter,omitempty"` // a pointer: 0 (no jitter) is a choice
	On              []string `json:"on,omitempty"`
	// Exhausted is what becomes of a step whose retryable failure ran out of attempts:
	// ExhaustedFail (the default) fails it (its error port, else the execution);
	// ExhaustedDeadLetter parks it on flowd.dlq until the dead letter is replayed or discarded.
	Exhausted string `json:"exhausted,omitempty"`
	// Backoff and MaxBackoff are the former names of InitialInterval and MaxInterval, still
	// read (the new names win when both are set).
	Backoff    string `json:"backoff,omitempty"`
	MaxBackoff string `json:"maxBackoff,omitempty"`
}

// Values of Retry.Exhausted.
const (
	ExhaustedFail       = "fail"
	ExhaustedDeadLetter = "deadLetter"
)

// OnError names the root of the sub-graph that runs when an execution fails: a node no edge
// leads to, with the nodes reachable from it, apart from the trigger's graph. It receives
// {"error": {code, message, ...}, "execution": {"id", "flowId", "revision"}} as its input.
type OnError struct {
	Node string `json:"node"`
}

// Notifications say whom to tell when an execution fails: the first failure at once, the
// ones that follow within Digest in one digest at its end.
type Notifications struct {
	Webhook *WebhookNotification `json:"webhook,omitempty"`
	Email   *EmailNotification   `json:"email,omitempty"`
	Digest  string               `json:"digest,omitempty"` // window of a digest [5m]
}

// WebhookNotification is a POST of the failure summary, signed with HMAC-SHA256 by the secret
// of Connection (an api_key or bearer connection the flow's owners may use) when it is set.
type WebhookNotification struct {
	URL        string `json:"url"`
	Connection string `json:"connection,omitempty"`
}

// EmailNotification is a plain-text mail to every address.
type EmailNotification struct {
	To []string `json:"to"`
}

// Bounds of Notifications.Digest.
const (
	DefaultDigest = 5 * time.Minute
	MinDigest     = time.Second
	MaxDigest     = 24 * time.Hour
)

// DigestWindow is n's digest window, or the default.
func (n *Notifications) DigestWindow() time.Duration {
	if d, err := time.ParseDuration(n.Digest); err == nil && d >= MinDigest && d <= MaxDigest {
		return d
	}
	return DefaultDigest
}

// IsDraft reports whether the node is a draft: it has no type yet (an Open Integration Hub
// node without its component or function, say). A flow with drafts is stored, but does not
// start until each has a type (StartProblems).
func (n *Node) IsDraft() bool { return n.Type == "" }

// IsTrigger reports whether the node starts executions.
func (n *Node) IsTrigger() bool { return strings.HasPrefix(n.Type, "trigger.") }

// Trigger returns the first trigger node, or nil if the flow has none.
func (f *Flow) Trigger() *Node {
	for i := range f.Graph.Nodes {
		if f.Graph.Nodes[i].IsTrigger() {
			return &f.Graph.Nodes[i]
		}
	}
	return nil
}

// Kind returns the trigger kind ("webhook", "kafka", "schedule", "poll"), or "" without one.
func (f *Flow) Kind() string {
	if t := f.Trigger(); t != nil {
		return strings.TrimPrefix(t.Type, "trigger.")
	}
	return ""
}

// DerivedType is the value the server stores in Flow.Type.
func DerivedType(f *Flow) string { return f.Kind() }

// Node returns the node with the given id, or nil.
func (f *Flow) Node(id string) *Node {
	for i := range f.Graph.Nodes {
		if f.Graph.Nodes[i].ID == id {
			return &f.Graph.Nodes[i]
		}
	}
	return nil
}

// IsJSONSchemaParams tells the two forms of payload parameters apart, with the same rule as
// flow.schema.json: a JSON Schema has $schema, $ref, properties, allOf/anyOf/oneOf or
// type "object"; anything else is the simple form.
func IsJSONSchemaParams(p map[string]any) bool {
	for _, k := range []string{"$schema", "$ref", "properties", "allOf", "anyOf", "oneOf"} {
		if _, ok := p[k]; ok {
			return true
		}
	}
	return p["type"] == "object"
}

// Canonical marshals the flow the way it is stored: map keys sorted, no HTML escaping, and empty
// node/edge lists as [] so the result validates again.
func Canonical(f *Flow) ([]byte, error) {
	c := *f
	if c.Graph.Nodes == nil {
		c.Graph.Nodes = []Node{}
	}
	if c.Graph.Edges == nil {
		c.Graph.Edges = []Edge{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(&c); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// EffectiveSettings is what expressions see as `settings`: the integration's settings with the
// flow's own deep-merged over them (objects merge key by key; any other value of the flow's
// replaces the integration's). Neither input is changed.
func (f *Flow) EffectiveSettings() map[string]any {
	if len(f.IntegrationSettings) == 0 {
		return f.Settings
	}
	return MergeSettings(f.IntegrationSettings, f.Settings)
}

// MergeSettings deep-merges over onto base into a new map: over wins, objects merge.
func MergeSettings(base, over map[string]any) map[string]any {
	out := make(map[string]any, len(base)+len(over))
	for k, v := range base {
		out[k] = v
	}
	for k, v := range over {
		bo, baseIsObj := out[k].(map[string]any)
		oo, overIsObj := v.(map[string]any)
		if baseIsObj && overIsObj {
			out[k] = MergeSettings(bo, oo)
			continue
		}
		out[k] = v
	}
	return out
}
