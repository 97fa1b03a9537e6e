// Package ingest is flowd's HTTP front door: webhooks in, records on flowd.ingest out.
//
// Routes:
//
//	POST|GET /hooks/{flowId}[/{suffix...}]   start an execution of the flow (suffix → request.path)
//	HEAD     /hooks/{flowId}                 200 when the hook takes requests, else 404 (no body)
//	POST     /webhooks/{flowId}              FlowMate form: body {"data": {...}}, input = data
//	GET      /livez (alias /healthz), /readyz (package health)
//
// A 2xx means the record is durable: it is sent only after the broker acknowledged it with
// acks=all. When the broker is away the answer is 503 with Retry-After, and the shared writer
// recovers by itself when the broker returns.
//
// Per-flow settings live in the config of the flow's trigger.webhook node:
//
//	{"mode": "async" | "sync", "timeoutMs": 30000,
//	 "auth": {"type": "none"}
//	       | {"type": "bearer", "connection": "<bearer connection id>"}
//	       | {"type": "hmac", "connection": "<api_key or basic connection id>",
//	          "header": "X-Signature", "prefix": "sha256="}}
package ingest

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/secrets"
)

// Defaults of Config.
const (
	DefaultBodyLimit       = 1 << 20
	DefaultIdempotencyTTL  = 24 * time.Hour
	DefaultSyncTimeout     = 30 * time.Second
	DefaultProduceTimeout  = 5 * time.Second
	DefaultCacheTTL        = 30 * time.Second
	DefaultRetryAfter      = 2 * time.Second
	DefaultBreakerCooldown = time.Second
	DefaultShutdownTimeout = 10 * time.Second
	defaultCacheEntries    = 100_000
)

// Config wires ingest to its dependencies. Zero values mean the defaults above.
type Config struct {
	Kafka kafkax.Config
	Store Store
	// Secrets opens the secret of a flow's auth connection (and nothing else). Without it,
	// flows with bearer or hmac auth refuse every request.
	Secrets *secrets.Keyring
	Log     *slog.Logger
	// Writer is the process's one Kafka producer (kafkax.NewProducer), when it is shared with
	// other roles; nil makes one, which Close closes.
	Writer *kafkax.Producer
	// Replies delivers the replies of synchronous webhooks; nil uses Store (WaitReply).
	Replies ReplyWaiter

	BodyLimit      int           // largest request body; larger ones get 413
	IdempotencyTTL time.Duration // how long an Idempotency-Key is remembered
	SyncTimeout    time.Duration // sync flows without config.timeoutMs (capped at MaxSyncTimeout)
	ProduceTimeout time.Duration // longest wait for the broker's acknowledgement before 503
	CacheTTL       time.Duration // flow metadata is reloaded at least this often
	RetryAfter     time.Duration // Retry-After of 503 answers
	// BreakerCooldown is how long produce attempts are refused after the broker failed,
	// before one request probes it again.
	BreakerCooldown time.Duration
	ShutdownTimeout time.Duration // bounded drain of in-flight requests
	Now             func() time.Time
	// Health answers /livez, /healthz and /readyz; New adds the ingest's own conditions to it
	// (the broker acknowledging, the flow events followed). Nil: a Checker of Store's ping.
	Health *health.Checker
}

func (c *Config) defaults() {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.BodyLimit <= 0 {
		c.BodyLimit = DefaultBodyLimit
	}
	if c.IdempotencyTTL <= 0 {
		c.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if c.SyncTimeout <= 0 {
		c.SyncTimeout = DefaultSyncTimeout
	}
	c.SyncTimeout = min(c.SyncTimeout, MaxSyncTimeout)
	if c.ProduceTimeout <= 0 {
		c.ProduceTimeout = DefaultProduceTimeout
	}
	if c.CacheTTL <= 0 {
		c.CacheTTL = DefaultCacheTTL
	}
	if c.RetryAfter <= 0 {
		c.RetryAfter = DefaultRetryAfter
	}
	if c.BreakerCooldown <= 0 {
		c.BreakerCooldown = DefaultBreakerCooldown
	}
	if c.ShutdownTimeout <= 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Server is one ingest instance.
type Server struct {
	cfg       Config
	log       *slog.Logger
	app       *fiber.App
	w         *kafkax.Producer
	ownWriter bool
	topic     string
	maxRecord int
	flows     *flowCache
	brk       *breaker
	replies   ReplyWaiter
	running   atomic.Bool
	ready     chan struct{} // closed once the events watcher is subscribed
	readyOnce sync.Once
	// stopping ends when shutdown begins, releasing requests that wait for a sync reply.
	stopping context.Context
	stop     context.CancelFunc
}

// New builds the server; Run (or Serve) starts it.
func New(cfg Config) (*Server, error) {
	if cfg.Store == nil {
		return nil, errors.New("ingest: a store is required")
	}
	if len(cfg.Kafka.Brokers) == 0 && cfg.Writer == nil {
		return nil, errors.New("ingest: no Kafka brokers configured")
	}
	if cfg.Kafka.RecordKeys == nil {
		return nil, errors.New("ingest: no record keys (" + busauth.EnvKey + ") to sign ingest records with")
	}
	cfg.defaults()
	s := &Server{cfg: cfg, log: cfg.Log, w: cfg.Writer, topic: cfg.Kafka.Topic(envelope.TopicIngest),
		brk: &breaker{cooldown: cfg.BreakerCooldown}, replies: cfg.Replies, ready: make(chan struct{})}
	if s.w == nil {
		s.w, s.ownWriter = kafkax.NewProducer(cfg.Kafka), true
	}
	s.maxRecord = kafkax.MaxRecordBytes
	if s.replies == nil {
		s.replies = cfg.Store // the router pushes replies onto a per-execution list there
	}
	s.stopping, s.stop = context.WithCancel(context.Background())
	s.flows = newFlowCache(cfg.CacheTTL, defaultCacheEntries, s.loadFlow)
	if s.cfg.Health == nil {
		s.cfg.Health = health.New(health.Probe{Name: "redis", Check: cfg.Store.Ping})
	}
	s.cfg.Health.Add(health.Probe{Name: "kafka acknowledgements", Check: func(context.Context) error {
		if s.brk.open() {
			return errors.New("the broker is not acknowledging records")
		}
		return nil
	}},
		// Until then a flow's lifecycle changes would not reach this process's cache.
		health.Until("flow events", s.ready))
	s.app = s.newApp()
	return s, nil
}

func (s *Server) newApp() *fiber.App {
	app := fiber.New(fiber.Config{
		AppName:               "flowd-ingest",
		BodyLimit:             s.cfg.BodyLimit,
		DisableStartupMessage: true,
		ReadTimeout:           30 * time.Second,
		// Written after the handler returns; a sync request's wait is not counted.
		WriteTimeout: 30 * time.Second,
		IdleTimeout:  2 * time.Minute,
		ErrorHandler: httpproblem.Handler{BodyLimit: s.cfg.BodyLimit, RetryAfter: s.cfg.RetryAfter, Log: s.log}.Handle,
	})
	s.cfg.Health.Mount(app) // first, so that it sees every request

	// HEAD first and GET through Add: fiber's Get also registers HEAD, and HEAD has its own
	// meaning here.
	app.Head("/hooks/:flowId", s.head)
	app.Head("/hooks/:flowId/*", s.head)
	for _, m := range []string{fiber.MethodGet, fiber.MethodPost} {
		app.Add(m, "/hooks/:flowId", s.hook)
		app.Add(m, "/hooks/:flowId/*", s.hook)
	}
	app.Post("/webhooks/:flowId", s.flowMate)
	// A webhook URL exists for every method; the ones it does not take are 405, not 404.
	for path, allow := range map[string]string{
		"/hooks/:flowId": "GET, POST, HEAD", "/hooks/:flowId/*": "GET, POST, HEAD", "/webhooks/:flowId": "POST",
	} {
		app.All(path, func(c *fiber.Ctx) error {
			return fail(fiber.StatusMethodNotAllowed, problem.New(codeMethodNotAllowed, "", "%s takes %s, not %s", c.Path(), allow, c.Method())).
				With(fiber.HeaderAllow, allow)
		})
	}
	app.Use(func(c *fiber.Ctx) error {
		return fail(fiber.StatusNotFound, problem.New(codeNotFound, "", "no route %s %s", c.Method(), c.Path()))
	})
	return app
}

// App is the fiber app, for tests and for mounting.
func (s *Server) App() *fiber.App { return s.app }

// Ready is closed once Run follows flowd.events: from then on a flow's start, stop or delete
// reaches the flow cache within moments, not after CacheTTL.
func (s *Server) Ready() <-chan struct{} { return s.ready }

// Run is the role's background work, until ctx ends: the flowd.events watcher that drops
// cached flows as they change. Serving webhooks without it leaves every hook on its cached
// status for CacheTTL (a started flow answers 404, a stopped or deleted one keeps taking
// webhooks), so every process that serves ingest runs it: `flowd ingest` and `flowd dev` alike.
func (s *Server) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("ingest: Run called twice")
	}
	s.watchEvents(ctx)
	return nil
}

// ListenAndServe listens on addr and serves until ctx ends, then drains within ShutdownTimeout.
// Run must run alongside (it follows the flows' lifecycle).
func (s *Server) ListenAndServe(ctx context.Context, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("ingest: listen on %s: %w", addr, err)
	}
	return s.Serve(ctx, ln)
}

// Serve is ListenAndServe on a listener the caller opened (tests pick a free port this way).
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	tl := newTrackingListener(ln)
	errc := make(chan error, 1)
	go func() { errc <- s.app.Listener(httpproblem.Listener(tl)) }()
	s.log.Info("ingest listening", "addr", ln.Addr().String(), "topic", s.topic)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down ingest")
	left := s.cfg.Health.DrainFor(s.cfg.ShutdownTimeout)
	s.stop() // sync waits still left answer 504 now rather than hold the shutdown
	// Until the listener is closed inside the shutdown, spare connections may still arrive.
	shutDown := make(chan struct{})
	go func() {
		t := time.NewTicker(100 * time.Millisecond)
		defer t.Stop()
		for {
			tl.closeUnused()
			select {
			case <-shutDown:
				return
			case <-t.C:
			}
		}
	}()
	err := s.app.ShutdownWithTimeout(left)
	close(shutDown)
	if err != nil {
		return fmt.Errorf("ingest: shutdown: %w", err)
	}
	return nil
}

// Close releases the writer if New made it, after its pending batches are written.
func (s *Server) Close() error {
	s.stop()
	if !s.ownWriter {
		return nil
	}
	if err := s.w.Close(); err != nil {
		return fmt.Errorf("ingest: close writer: %w", err)
	}
	return nil
}
