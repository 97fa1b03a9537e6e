// Package audit defines the audit log's entries: who changed what through the API, and when.
// The control plane notes an entry for each change a request made and appends it once the
// request succeeded; internal/store keeps the entries, per tenant, for a retention. Entries say
// what changed, never with which values: no request bodies, no secrets, field names only.
package audit

import (
	"strings"
	"time"
)

// DefaultRetention is how long entries are kept unless configured otherwise (90 days).
const DefaultRetention = 90 * 24 * time.Hour

// Actions: "<target type>.<verb>", except the error dashboard's "errors.<verb>" (their target
// is the flow whose failed executions they act on). A new audited route adds one here.
const (
	FlowCreate        = "flow.create"
	FlowUpdate        = "flow.update"
	FlowDelete        = "flow.delete"
	FlowStart         = "flow.start"
	FlowStop          = "flow.stop"
	ConnectionCreate  = "connection.create"
	ConnectionUpdate  = "connection.update"
	ConnectionDelete  = "connection.delete"
	UserCreate        = "user.create"
	TokenCreate       = "token.create"
	TokenDelete       = "token.delete"
	TenantCreate      = "tenant.create"
	TenantUpdate      = "tenant.update"
	ExecutionRetry    = "execution.retry"
	ErrorsRetry       = "errors.retry"
	ErrorsResolve     = "errors.resolve"
	DeadLetterReplay  = "deadletter.replay"
	DeadLetterDiscard = "deadletter.discard"
	IntegrationCreate = "integration.create"
	IntegrationUpdate = "integration.update"
	IntegrationDelete = "integration.delete"
	IntegrationClone  = "integration.clone"
	IntegrationImport = "integration.import"
	TemplateCreate    = "template.create"
	TemplateUpdate    = "template.update"
	TemplateDelete    = "template.delete"
)

// Target types.
const (
	TargetFlow        = "flow"
	TargetConnection  = "connection"
	TargetUser        = "user"
	TargetToken       = "token"
	TargetTenant      = "tenant"
	TargetExecution   = "execution"
	TargetDeadLetter  = "deadletter"
	TargetIntegration = "integration"
	TargetTemplate    = "template"
)

// Actor is the user who made the change.
type Actor struct {
	ID       string `json:"id"`
	Username string `json:"username"`
}

// Target is what was changed; Name is its name as its tenant sees it, where there is one.
type Target struct {
	Type string `json:"type"`
	ID   string `json:"id"`
	Name string `json:"name,omitempty"`
}

// Entry is one change made through the API.
type Entry struct {
	ID   string    `json:"id"`
	Time time.Time `json:"time"`
	// Actor and Tenant: who, and the tenant the entry belongs to (the actor's; "" for users of
	// no tenant, such as the bootstrap administrator).
	Actor  Actor  `json:"actor"`
	Tenant string `json:"tenant"`
	Action string `json:"action"`
	Target Target `json:"target"`
	// RevisionBefore and RevisionAfter are a flow's revision before and after the change (0:
	// none, before a create and after a delete).
	RevisionBefore int `json:"revisionBefore,omitempty"`
	RevisionAfter  int `json:"revisionAfter,omitempty"`
	// Changes names the fields an update changed: names only, never values.
	Changes []string `json:"changes,omitempty"`
	// Count is how many things an action on many changed (executions retried or resolved).
	Count int `json:"count,omitempty"`
}

// Filter selects entries; zero fields select everything.
type Filter struct {
	// Action is an action ("flow.update") or a family of them ("flow").
	Action     string
	Actor      string // the actor's user id
	TargetType string
	TargetID   string
	From, To   time.Time // inclusive bounds of Time
}

// Match reports whether e passes every condition of f.
func (f Filter) Match(e *Entry) bool {
	switch {
	case f.Action != "" && e.Action != f.Action && !strings.HasPrefix(e.Action, f.Action+"."):
		return false
	case f.Actor != "" && e.Actor.ID != f.Actor:
		return false
	case f.TargetType != "" && e.Target.Type != f.TargetType:
		return false
	case f.TargetID != "" && e.Target.ID != f.TargetID:
		return false
	case !f.From.IsZero() && e.Time.Before(f.From):
		return false
	case !f.To.IsZero() && e.Time.After(f.To):
		return false
	}
	return true
}
