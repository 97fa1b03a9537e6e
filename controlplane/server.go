// Package controlplane is flowd's control plane over HTTP (fiber): the flow repository,
// identity and tokens, under /api/v1 and, for clients of the FlowMate partner API, also at
// /flows and /users; and the web console at /.
package controlplane

import (
	"context"
	"io/fs"
	"log/slog"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/console"
	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/topicpolicy"
)

// Relay is the event outbox as the API needs it.
type Relay interface {
	Kick()
	Flush(ctx context.Context) error
}

// Config wires the API to its dependencies.
type Config struct {
	Store Store
	Relay Relay
	Log   *slog.Logger
	// BodyLimit caps request bodies (default 1 MiB); larger ones get 413.
	BodyLimit int
	// AutoConfirm makes the API itself move starting→active and stopping→inactive, for
	// deployments where no router confirms lifecycle changes.
	AutoConfirm bool
	// LifecycleWait is how long start/stop wait for the router to confirm (when AutoConfirm
	// is off) before answering 202 with the transient state.
	LifecycleWait time.Duration
	// Validation hooks (connector config schemas, ports) for flow documents.
	Validation flowdoc.Options
	// Now is the clock (tests may pin it).
	Now func() time.Time
	// Secrets seals connection secrets; without it the connection routes answer 503.
	Secrets *secrets.Keyring
	// DevEcho serves POST /dev/echo (no auth) for the example flow of `flowd dev`.
	DevEcho bool
	// Catalog lists the installed connectors; when it has any, flows are validated against
	// their manifests (unknown connectors, config schemas, ports).
	Catalog *catalog.Catalog
	// ReservedTopic says which Kafka topics no flow may name (kafkax.Config.Reserved of the
	// deployment's topic prefix; the default prefix's when nil).
	ReservedTopic func(topic string) bool
	// PartnerTopicsRestricted makes tenants without a partner-topic list of their own use no
	// partner topic at all (administrators set lists with PATCH /api/v1/tenants/{id}).
	PartnerTopicsRestricted bool
	// DeadLetters lists, replays and discards dead letters; without it those routes answer 503.
	DeadLetters DeadLetters
	// Health answers /livez, /healthz and /readyz; by default ready while the store answers.
	Health *health.Checker
	// Console is the web console's built files (console.Files), served at / and /assets
	// without a token: the app asks for one itself. Nil serves no console.
	Console fs.FS
	// AuditRetention is how long audit log entries are kept (default audit.DefaultRetention).
	AuditRetention time.Duration
}

// Server holds the handlers' dependencies.
type Server struct {
	cfg    Config
	st     Store
	log    *slog.Logger
	topics topicpolicy.Policy
}

// DefaultBodyLimit is the largest request body accepted by default.
const DefaultBodyLimit = 1 << 20

// retryAfter is the Retry-After of the API's 503 answers.
const retryAfter = 5 * time.Second

// New builds the fiber app with every route mounted.
func New(cfg Config) *fiber.App {
	if cfg.BodyLimit <= 0 {
		cfg.BodyLimit = DefaultBodyLimit
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Catalog == nil {
		cfg.Catalog = catalog.Empty()
	}
	if cfg.Validation.Lookup == nil && cfg.Validation.ConfigSchema == nil && cfg.Validation.ActionPorts == nil {
		cfg.Validation = cfg.Catalog.ValidationOptions()
	}
	if cfg.AuditRetention <= 0 {
		cfg.AuditRetention = audit.DefaultRetention
	}
	if cfg.ReservedTopic == nil {
		cfg.ReservedTopic = kafkax.Config{}.Reserved
	}
	cfg.Validation.ReservedTopic = cfg.ReservedTopic
	s := &Server{cfg: cfg, st: cfg.Store, log: cfg.Log,
		topics: topicpolicy.Policy{Directory: cfg.Store, Restricted: cfg.PartnerTopicsRestricted}}
	app := fiber.New(fiber.Config{
		AppName:               "flowd",
		BodyLimit:             cfg.BodyLimit,
		DisableStartupMessage: true,
		ReadTimeout:           30 * time.Second,
		WriteTimeout:          30 * time.Second,
		IdleTimeout:           2 * time.Minute,
		ErrorHandler:          httpproblem.Handler{BodyLimit: cfg.BodyLimit, RetryAfter: retryAfter, Log: cfg.Log}.Handle,
	})
	if cfg.Health == nil {
		cfg.Health = health.New(health.Probe{Name: "redis", Check: cfg.Store.Ping})
	}
	cfg.Health.Mount(app) // first, so that it sees every request
	app.Use(s.auditTrail) // around every route: it appends what a successful request changed
	if cfg.DevEcho {
		app.Post("/dev/echo", echo)
	}

	// Before the /api/v1 group, whose middleware authenticates.
	app.Get(PathOpenAPI, serveOpenAPI)

	// Filled once every route is mounted, before the app serves.
	routes := &routeTable{}
	v1 := app.Group("/api/v1", routes.check, s.authenticate)
	s.mountFlows(v1)
	v1.Post("/flows/:id/clone", s.cloneFlow)
	s.mountIntegrations(v1)
	s.mountTemplates(v1)
	s.mountIdentity(v1)
	s.mountConnections(v1)
	s.mountConnectors(v1)
	s.mountExecutions(v1)
	s.mountDeadLetters(v1)
	s.mountErrors(v1)
	s.mountAudit(v1)

	// FlowMate partner API routes, same handlers and shapes. They sit at the root, so only their
	// prefixes authenticate: any other path is a 404, with or without a token.
	app.Use("/flows", routes.check, s.authenticate)
	app.Use("/users", routes.check, s.authenticate)
	s.mountFlows(app)
	app.Get("/users", s.listUsersFlowMate)
	app.Get("/users/:id", s.getUser)

	// Last: its top-level route takes only the app's own files and passes any other name on.
	if cfg.Console != nil {
		console.Mount(app, cfg.Console)
	}

	app.Use(notFoundRoute)
	*routes = *newRouteTable(app)
	return app
}

func fail(status int, ps ...problem.Problem) error {
	return httpproblem.New(status, ps...)
}

func notFound(what string) error {
	return fail(fiber.StatusNotFound, problem.New("not_found", "", "%s not found", what))
}

func forbidden(perm string) error {
	return fail(fiber.StatusForbidden, problem.New("forbidden", "", "this token lacks the %q permission", perm))
}
