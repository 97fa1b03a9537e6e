// Package health answers the liveness and readiness probes of every flowd role:
//
//	GET /livez (and /healthz)  200 {"status":"ok"} while the process serves
//	GET /readyz                200 {"status":"ready"} when the role can do its work, else
//	                           503 {"errors":[{"code":"not_ready","message":"...","path":""}]}
//
// A Checker holds the conditions of one process (Redis and Kafka reachable, the role's
// consumers started) and its drain: once Drain is called /readyz answers 503, so a load
// balancer stops sending while the requests in flight finish. The HTTP roles mount it on
// their fiber app (Mount); the router and the runner serve it on a listener of its own
// (Serve).
package health

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/gofiber/fiber/v2/middleware/adaptor"

	"github.com/flowd/flowd/internal/metrics"
	"github.com/flowd/flowd/internal/problem"
)

// Paths of the probes.
const (
	PathLive    = "/livez"
	PathHealthz = "/healthz" // the older name of /livez, kept for existing probes
	PathReady   = "/readyz"
)

// CodeNotReady is the error code of a 503 from /readyz.
const CodeNotReady = "not_ready"

const (
	// DefaultCacheTTL bounds how often a probe storm reaches Redis and Kafka.
	DefaultCacheTTL = time.Second
	// DefaultProbeTimeout bounds one condition's check: a probe answers fast or not at all.
	DefaultProbeTimeout = 2 * time.Second
)

// Probe is one condition of readiness. Name says which dependency it is, in the 503's message.
type Probe struct {
	Name  string
	Check func(ctx context.Context) error
}

// Until is a probe that fails until ch is closed: a role's Ready channel.
func Until(name string, ch <-chan struct{}) Probe {
	return Probe{Name: name, Check: func(context.Context) error {
		select {
		case <-ch:
			return nil
		default:
			return errors.New("not started yet")
		}
	}}
}

// NotReadyError says which condition failed.
type NotReadyError struct {
	What string // the probe's name, or "shutting down"
	Err  error
}

func (e *NotReadyError) Error() string {
	if e.Err == nil {
		return e.What
	}
	return e.What + ": " + e.Err.Error()
}

func (e *NotReadyError) Unwrap() error { return e.Err }

// Checker is the readiness of one process. The zero value is not usable; call New.
type Checker struct {
	// CacheTTL and ProbeTimeout may be changed before the Checker is used.
	CacheTTL     time.Duration
	ProbeTimeout time.Duration
	Log          *slog.Logger

	draining atomic.Bool
	inflight atomic.Int64

	mu        sync.Mutex // held while checking, so concurrent probes share one check
	probes    []Probe
	checkedAt time.Time
	last      error
}

// New is a Checker of the given conditions. A Checker without any is not ready ("starting"):
// roles that serve probes before they are connected add their conditions later.
func New(probes ...Probe) *Checker {
	return &Checker{CacheTTL: DefaultCacheTTL, ProbeTimeout: DefaultProbeTimeout, Log: slog.Default(), probes: probes}
}

// Add adds conditions; the next check runs them at once.
func (c *Checker) Add(probes ...Probe) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.probes = append(c.probes, probes...)
	c.checkedAt = time.Time{}
}

// Drain makes the process not ready from now on: it is shutting down.
func (c *Checker) Drain() { c.draining.Store(true) }

// Draining says whether Drain was called.
func (c *Checker) Draining() bool { return c.draining.Load() }

// Ready is nil when the process can do its work, else a *NotReadyError. The conditions'
// result is reused for CacheTTL; the drain is seen at once.
func (c *Checker) Ready(ctx context.Context) error {
	if c.draining.Load() {
		return &NotReadyError{What: "shutting down"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.checkedAt.IsZero() && time.Since(c.checkedAt) < c.CacheTTL {
		return c.last
	}
	err := c.check(ctx)
	if err != nil && (c.last == nil || c.last.Error() != err.Error()) {
		c.Log.Warn("not ready", "err", err)
	} else if err == nil && c.last != nil {
		c.Log.Info("ready again")
	}
	c.last, c.checkedAt = err, time.Now()
	return err
}

func (c *Checker) check(ctx context.Context) error {
	if len(c.probes) == 0 {
		return &NotReadyError{What: "starting"}
	}
	for _, p := range c.probes {
		pctx, cancel := context.WithTimeout(ctx, c.ProbeTimeout)
		err := p.Check(pctx)
		cancel()
		if err != nil {
			return &NotReadyError{What: p.Name, Err: err}
		}
	}
	return nil
}

// DrainFor starts the drain (Drain) and waits, within timeout, until no request other than a
// probe is in flight (see Mount), while the listener still takes connections: a load balancer
// sees /readyz fail and stops sending, and requests it sent meanwhile are still answered. It
// returns what is left of timeout, for the shutdown that follows. Polled: it runs once.
func (c *Checker) DrainFor(timeout time.Duration) time.Duration {
	c.Drain()
	deadline := time.Now().Add(timeout)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for c.inflight.Load() > 0 && time.Now().Before(deadline) {
		<-t.C
	}
	// The shutdown gets a moment even when the drain used up the time.
	return max(time.Until(deadline), time.Second)
}

// answer is the status and JSON body of a probe path, ok is false for any other path.
func (c *Checker) answer(ctx context.Context, path string) (status int, body []byte, ok bool) {
	switch path {
	case PathLive, PathHealthz:
		return http.StatusOK, []byte(`{"status":"ok"}`), true
	case PathReady:
		err := c.Ready(ctx)
		if err == nil {
			return http.StatusOK, []byte(`{"status":"ready"}`), true
		}
		// The message names the condition only: the cause (addresses, broker errors) goes to
		// the log, since /readyz may be reachable from outside.
		what := err.Error()
		var nr *NotReadyError
		if errors.As(err, &nr) {
			what = nr.What
		}
		b, _ := json.Marshal(map[string]problem.List{"errors": {problem.New(CodeNotReady, "", "not ready: %s", what)}})
		return http.StatusServiceUnavailable, b, true
	}
	return 0, nil, false
}

// PathMetrics serves the process's Prometheus metrics (internal/metrics) beside the probes.
const PathMetrics = "/metrics"

// Mount serves the probes and the metrics on app and counts its other requests for WaitIdle.
// Call it before any other route or middleware is registered, so that it sees every request.
func (c *Checker) Mount(app *fiber.App) {
	serveMetrics := adaptor.HTTPHandler(metrics.Handler())
	app.Use(func(fc *fiber.Ctx) error {
		if m := fc.Method(); m == fiber.MethodGet || m == fiber.MethodHead {
			if fc.Path() == PathMetrics {
				return serveMetrics(fc)
			}
			if status, body, ok := c.answer(fc.UserContext(), fc.Path()); ok {
				fc.Set(fiber.HeaderContentType, fiber.MIMEApplicationJSON)
				fc.Set(fiber.HeaderCacheControl, "no-store")
				return fc.Status(status).Send(body)
			}
		}
		c.inflight.Add(1)
		defer c.inflight.Add(-1)
		return fc.Next()
	})
}

// ServeHTTP serves the probes and the metrics over net/http (404 for any other path).
func (c *Checker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == PathMetrics && r.Method == http.MethodGet {
		metrics.Handler().ServeHTTP(w, r)
		return
	}
	status, body, ok := c.answer(r.Context(), r.URL.Path)
	if !ok || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
		status = http.StatusNotFound
		body, _ = json.Marshal(map[string]problem.List{"errors": {problem.New("not_found", "", "no route %s %s", r.Method, r.URL.Path)}})
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// Serve serves the probes on addr for roles without an HTTP listener of their own, until stop
// is called; when ctx ends first the process drains (not ready) while the probes still answer.
// Off when addr is empty. It returns once listening, so a taken port fails the start.
func Serve(ctx context.Context, addr string, c *Checker) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("health listener on %s: %w", addr, err)
	}
	srv := &http.Server{Handler: c, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			c.Log.Warn("health listener stopped", "err", err)
		}
	}()
	closed := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			c.Drain()
		case <-closed:
		}
	}()
	c.Log.Info("health listening", "addr", ln.Addr().String())
	var once sync.Once
	return func() { once.Do(func() { close(closed); _ = srv.Close() }) }, nil
}
