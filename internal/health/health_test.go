package health_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/health"
)

func get(t *testing.T, h http.Handler, path string) (int, string) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
	return rec.Code, rec.Body.String()
}

func TestProbes(t *testing.T) {
	var fail atomic.Bool
	chk := health.New(health.Probe{Name: "redis", Check: func(context.Context) error {
		if fail.Load() {
			return errors.New("dial tcp 10.0.0.1:6379: connection refused")
		}
		return nil
	}})
	chk.CacheTTL = 0
	for _, tc := range []struct {
		path   string
		fail   bool
		status int
		body   string
	}{
		{"/livez", false, 200, `{"status":"ok"}`},
		{"/healthz", false, 200, `{"status":"ok"}`},
		{"/readyz", false, 200, `{"status":"ready"}`},
		{"/livez", true, 200, `{"status":"ok"}`},
		// The cause stays in the log: /readyz may be reachable from outside.
		{"/readyz", true, 503, `{"errors":[{"code":"not_ready","message":"not ready: redis","path":""}]}`},
		{"/other", false, 404, `{"errors":[{"code":"not_found","message":"no route GET /other","path":""}]}`},
	} {
		fail.Store(tc.fail)
		status, body := get(t, chk, tc.path)
		if status != tc.status || body != tc.body {
			t.Errorf("GET %s (failing %v) = %d %s, want %d %s", tc.path, tc.fail, status, body, tc.status, tc.body)
		}
	}
}

func TestNotReadyWithoutConditionsOrWhenDraining(t *testing.T) {
	chk := health.New()
	if status, body := get(t, chk, "/readyz"); status != 503 || body != `{"errors":[{"code":"not_ready","message":"not ready: starting","path":""}]}` {
		t.Errorf("no conditions: %d %s", status, body)
	}
	started := make(chan struct{})
	chk.Add(health.Until("router consumers", started))
	if status, body := get(t, chk, "/readyz"); status != 503 || body != `{"errors":[{"code":"not_ready","message":"not ready: router consumers","path":""}]}` {
		t.Errorf("not started: %d %s", status, body)
	}
	close(started)
	chk.Add() // Add forgets the cached answer
	if status, _ := get(t, chk, "/readyz"); status != 200 {
		t.Errorf("started: %d", status)
	}
	chk.Drain()
	if status, body := get(t, chk, "/readyz"); status != 503 || body != `{"errors":[{"code":"not_ready","message":"not ready: shutting down","path":""}]}` {
		t.Errorf("draining: %d %s", status, body)
	}
	if status, _ := get(t, chk, "/livez"); status != 200 {
		t.Errorf("livez while draining: %d", status)
	}
}

// A probe storm reaches the dependencies once per CacheTTL.
func TestChecksAreCached(t *testing.T) {
	var calls atomic.Int32
	chk := health.New(health.Probe{Name: "kafka", Check: func(context.Context) error { calls.Add(1); return nil }})
	chk.CacheTTL = time.Hour
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if err := chk.Ready(context.Background()); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := calls.Load(); n != 1 {
		t.Errorf("50 probes checked the dependency %d times, want 1", n)
	}
}

// A probe that hangs is cut off by ProbeTimeout.
func TestProbeTimeout(t *testing.T) {
	chk := health.New(health.Probe{Name: "kafka", Check: func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }})
	chk.ProbeTimeout = 10 * time.Millisecond
	var nr *health.NotReadyError
	if err := chk.Ready(context.Background()); !errors.As(err, &nr) || nr.What != "kafka" || !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Ready = %v, want kafka not ready on its deadline", err)
	}
}

// Mount answers the probes on a fiber app before its own routes, and DrainFor waits for the
// app's requests in flight but not for probes.
func TestMountAndDrainFor(t *testing.T) {
	chk := health.New(health.Probe{Name: "redis", Check: func(context.Context) error { return nil }})
	app := fiber.New()
	chk.Mount(app)
	release, entered := make(chan struct{}), make(chan struct{})
	app.Get("/slow", func(c *fiber.Ctx) error { close(entered); <-release; return c.SendString("done") })
	for path, want := range map[string]string{"/livez": `{"status":"ok"}`, "/healthz": `{"status":"ok"}`, "/readyz": `{"status":"ready"}`} {
		res, err := app.Test(httptest.NewRequest(http.MethodGet, path, nil))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(res.Body)
		if res.StatusCode != 200 || string(b) != want || res.Header.Get("Content-Type") != "application/json" {
			t.Errorf("GET %s = %d %s (%s)", path, res.StatusCode, b, res.Header.Get("Content-Type"))
		}
	}
	slow := make(chan string, 1)
	go func() {
		res, err := app.Test(httptest.NewRequest(http.MethodGet, "/slow", nil), -1)
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(res.Body)
		slow <- string(b)
	}()
	<-entered
	drained := make(chan time.Duration, 1)
	go func() { drained <- chk.DrainFor(time.Minute) }()
	// DrainFor runs on its own goroutine: wait until it has begun the drain.
	for deadline := time.Now().Add(10 * time.Second); !chk.Draining(); {
		if time.Now().After(deadline) {
			t.Fatal("DrainFor never began the drain")
		}
		time.Sleep(time.Millisecond) // polling the flag with a deadline
	}
	res, err := app.Test(httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if err != nil {
		t.Fatal(err)
	}
	if res.StatusCode != 503 {
		t.Errorf("readyz while draining = %d, want 503", res.StatusCode)
	}
	select {
	case <-drained:
		t.Fatal("DrainFor returned with a request in flight")
	default:
	}
	close(release)
	if got := <-slow; got != "done" {
		t.Errorf("in-flight request answered %q", got)
	}
	if left := <-drained; left < 30*time.Second {
		t.Errorf("DrainFor left %v of a minute", left)
	}
}
