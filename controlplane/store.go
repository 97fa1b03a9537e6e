package controlplane

import (
	"context"
	"time"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/flowtemplate"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/integration"
	"github.com/flowd/flowd/internal/store"
)

// What the control plane needs of flowd's state, by domain; *store.Store provides each.

// Flows is the flow repository: documents, their revisions and lifecycle.
type Flows interface {
	CreateFlow(ctx context.Context, f *flowdoc.Flow, evs ...events.Event) error
	Flow(ctx context.Context, id string) (*flowdoc.Flow, error)
	AllFlows(ctx context.Context) ([]flowdoc.Flow, error)
	FlowsOwnedBy(ctx context.Context, owners ...flowdoc.Owner) ([]flowdoc.Flow, error)
	UpdateFlow(ctx context.Context, id string, decide func(cur *flowdoc.Flow) (store.Mutation, error)) (*flowdoc.Flow, error)
	DeleteFlow(ctx context.Context, id string, allow func(cur *flowdoc.Flow) ([]events.Event, error)) error
	Revisions(ctx context.Context, id string) ([]flowdoc.Flow, error)
	Revision(ctx context.Context, id string, n int) (*flowdoc.Flow, error)
	TriggerStatus(ctx context.Context, flowID string) ([]byte, error)
	NextRun(ctx context.Context, flowID string) (time.Time, bool, error)
	NextPoll(ctx context.Context, flowID string) (time.Time, bool, error)
}

// Integrations groups flows with shared settings (the flows' writes keep the membership).
type Integrations interface {
	CreateIntegration(ctx context.Context, in *integration.Integration) error
	Integration(ctx context.Context, id string) (*integration.Integration, error)
	AllIntegrations(ctx context.Context) ([]integration.Integration, error)
	IntegrationsOwnedBy(ctx context.Context, owners ...flowdoc.Owner) ([]integration.Integration, error)
	IntegrationFlows(ctx context.Context, id string) ([]flowdoc.Flow, error)
	UpdateIntegration(ctx context.Context, id string, decide func(cur *integration.Integration) (store.IntegrationChange, error)) (*integration.Integration, error)
	DeleteIntegration(ctx context.Context, id string, allow func(cur *integration.Integration) error) error
}

// Templates holds flow templates.
type Templates interface {
	CreateTemplate(ctx context.Context, t *flowtemplate.Template) error
	Template(ctx context.Context, id string) (*flowtemplate.Template, error)
	AllTemplates(ctx context.Context) ([]flowtemplate.Template, error)
	TemplatesFor(ctx context.Context, owners ...flowdoc.Owner) ([]flowtemplate.Template, error)
	UpdateTemplate(ctx context.Context, id string, decide func(cur *flowtemplate.Template) (*flowtemplate.Template, error)) (*flowtemplate.Template, error)
	DeleteTemplate(ctx context.Context, id string, allow func(cur *flowtemplate.Template) error) error
}

// Identity holds tenants, users and their API tokens.
type Identity interface {
	CreateTenant(ctx context.Context, t identity.Tenant) error
	Tenant(ctx context.Context, id string) (*identity.Tenant, error)
	Tenants(ctx context.Context) ([]identity.Tenant, error)
	UpdateTenant(ctx context.Context, id string, decide func(cur *identity.Tenant) (*identity.Tenant, error)) (*identity.Tenant, error)
	CreateUser(ctx context.Context, u identity.User) error
	User(ctx context.Context, id string) (*identity.User, error)
	Users(ctx context.Context) ([]identity.User, error)
	CreateToken(ctx context.Context, t identity.Token) error
	TokenByHash(ctx context.Context, hash string) (*identity.Token, error)
	TokenByID(ctx context.Context, id string) (*identity.Token, error)
	Tokens(ctx context.Context, userID string) ([]identity.Token, error)
	DeleteToken(ctx context.Context, t identity.Token) error
	AdminID(ctx context.Context) (string, error)
	ClaimAdmin(ctx context.Context, u identity.User) error
}

// Connections holds connections with their sealed secrets (internal/connections checks them).
type Connections interface {
	CreateConnection(ctx context.Context, c *store.Connection) error
	Connection(ctx context.Context, id string) (*store.Connection, error)
	ConnectionsOwnedBy(ctx context.Context, uid string) ([]store.Connection, error)
	ConnectionsSharedWith(ctx context.Context, tenant string) ([]store.Connection, error)
	UpdateConnection(ctx context.Context, id string, decide func(cur *store.Connection) (*store.Connection, error)) (*store.Connection, error)
	DeleteConnection(ctx context.Context, id string, allow func(cur *store.Connection) error) error
}

// Executions is what the router recorded of executions, read-only here.
type Executions interface {
	Execution(ctx context.Context, id string) (*envelope.Execution, error)
	ExecutionSteps(ctx context.Context, id string) ([]envelope.Step, error)
	FlowExecutions(ctx context.Context, flowID, status string, offset, limit int) ([]envelope.Execution, int, error)
	ExecutionsOfFlows(ctx context.Context, flowIDs []string, status string, offset, limit int) ([]envelope.Execution, int, error)
	FlowStats(ctx context.Context, flowID string, from, to time.Time) ([]store.StatsBucket, error)
	Counts(ctx context.Context, flowID string) (store.FlowCounts, error)
	History(ctx context.Context) (store.HistoryUsage, error)
	ErrorGroups(ctx context.Context, flowID string) (store.ErrorSummary, error)
	OpenFailures(ctx context.Context, flowID, code string, limit int) ([]string, error)
	ResolveErrors(ctx context.Context, flowID string, ids []string, retention time.Duration) (int, error)
	RetryExecution(ctx context.Context, id string, revision int, ev events.Event, ttl time.Duration) (string, bool, error)
}

// Audit is the audit log: appended to after each change made through the API, never edited.
type Audit interface {
	AppendAudit(ctx context.Context, retention time.Duration, entries ...audit.Entry) error
	AuditLog(ctx context.Context, q store.AuditQuery) ([]audit.Entry, int, error)
}

// Runners says which runner pools have a live runner.
type Runners interface {
	ServedPools(ctx context.Context, pools []string, now time.Time) (map[string]bool, error)
}

// Store is every part of the state the control plane uses; Ping backs its readiness.
type Store interface {
	Flows
	Integrations
	Templates
	Identity
	Connections
	Executions
	Runners
	Audit
	Ping(ctx context.Context) error
}

var _ Store = (*store.Store)(nil)
