package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// freeAddr is a loopback address nothing listens on (closed again at once).
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// fetch is one GET: status and body, or status 0 when nothing answers.
func fetch(url string) (int, string) {
	c := &http.Client{Timeout: 5 * time.Second}
	res, err := c.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = res.Body.Close() }()
	b, _ := io.ReadAll(res.Body)
	return res.StatusCode, string(b)
}

// waitAnswer polls url until it answers status with body, or fails the test at the deadline.
func waitAnswer(t *testing.T, url string, status int, body string, within time.Duration) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		s, b := fetch(url)
		if s == status && (body == "" || b == body) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s = %d %s; want %d %s within %v", url, s, b, status, body, within)
		}
		time.Sleep(20 * time.Millisecond) // poll interval, not synchronisation
	}
}

const (
	liveBody     = `{"status":"ok"}`
	readyBody    = `{"status":"ready"}`
	drainingBody = `{"errors":[{"code":"not_ready","message":"not ready: shutting down","path":""}]}`
)

// On shutdown /readyz answers 503 at once while the request in flight still gets its answer,
// and the listener closes only after it.
func TestShutdownDrainsWhileNotReady(t *testing.T) {
	chk := health.New(health.Probe{Name: "redis", Check: func(context.Context) error { return nil }})
	app := fiber.New(fiber.Config{DisableStartupMessage: true})
	chk.Mount(app)
	entered, release := make(chan struct{}), make(chan struct{})
	app.Post("/slow", func(c *fiber.Ctx) error {
		close(entered)
		<-release
		return c.Status(fiber.StatusAccepted).JSON(fiber.Map{"executionId": "e1"})
	})
	addr := freeAddr(t)
	base := "http://" + addr
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ready, done := make(chan struct{}), make(chan error, 1)
	go func() { done <- listenAndServe(ctx, app, chk, addr, func() { close(ready) }) }()
	<-ready
	if s, b := fetch(base + "/readyz"); s != 200 || b != readyBody {
		t.Fatalf("readyz before shutdown = %d %s", s, b)
	}

	type answer struct {
		status int
		body   string
	}
	slow := make(chan answer, 1)
	go func() {
		res, err := http.Post(base+"/slow", "application/json", nil)
		if err != nil {
			slow <- answer{0, err.Error()}
			return
		}
		defer func() { _ = res.Body.Close() }()
		b, _ := io.ReadAll(res.Body)
		slow <- answer{res.StatusCode, string(b)}
	}()
	<-entered
	cancel() // what SIGTERM does

	waitAnswer(t, base+"/readyz", 503, drainingBody, 5*time.Second)
	if s, b := fetch(base + "/livez"); s != 200 || b != liveBody {
		t.Errorf("livez while draining = %d %s", s, b)
	}
	select {
	case err := <-done:
		t.Fatalf("listener shut down with a request in flight: %v", err)
	default:
	}
	close(release)
	if a := <-slow; a.status != 202 || a.body != `{"executionId":"e1"}` {
		t.Errorf("in-flight request answered %d %s, want its normal 202", a.status, a.body)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("listenAndServe: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("listenAndServe did not return after the drain")
	}
}

// /readyz follows Redis and Kafka: 200 with both reachable, 503 naming the one that is not.
func TestReadyzFollowsDependencies(t *testing.T) {
	brokers, redisURL := testrig.Kafka(t), testrig.Redis(t)
	closed := freeAddr(t)
	checker := func(redisURL string, brokers []string) *health.Checker {
		in := &infra{redisURL: redisURL}
		rdb, _, err := in.redisClient()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = rdb.Close() })
		c := &conn{st: store.New(rdb, testrig.Unique("h")+":"), kcfg: in.kafka()}
		c.kcfg.Brokers = brokers
		return health.New(c.probes()...)
	}
	for _, tc := range []struct {
		name    string
		redis   string
		brokers []string
		status  int
		body    string
	}{
		{"both up", redisURL, brokers, 200, readyBody},
		{"redis down", "redis://" + closed + "/0", brokers, 503, `{"errors":[{"code":"not_ready","message":"not ready: redis","path":""}]}`},
		{"kafka down", redisURL, []string{closed}, 503, `{"errors":[{"code":"not_ready","message":"not ready: kafka","path":""}]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			chk := checker(tc.redis, tc.brokers)
			for _, path := range []string{"/readyz", "/livez"} {
				rec := httptest.NewRecorder()
				chk.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
				want, wantBody := tc.status, tc.body
				if path == "/livez" {
					want, wantBody = 200, liveBody
				}
				if rec.Code != want || rec.Body.String() != wantBody {
					t.Errorf("GET %s = %d %s, want %d %s", path, rec.Code, rec.Body.String(), want, wantBody)
				}
			}
		})
	}
}

// Every role answers the probes: the one listener of the in-process pipeline (as flowd dev),
// and the router and the runner on --health-addr.
func TestEveryRoleAnswersProbes(t *testing.T) {
	p := startPipeline(t)
	for path, body := range map[string]string{"/livez": liveBody, "/healthz": liveBody, "/readyz": readyBody} {
		if s, b := fetch(p.base + path); s != 200 || b != body {
			t.Errorf("pipeline GET %s = %d %s", path, s, b)
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	routerAddr, runnerAddr := freeAddr(t), freeAddr(t)
	routerDone, runnerDone := make(chan error, 1), make(chan error, 1)
	go func() { routerDone <- runRouter(ctx, p.in, routerOptions{healthAddr: routerAddr}) }()
	go func() {
		runnerDone <- serveRunner(ctx, p.in, runnerOptions{connectorsDir: filepath.Join(p.dir, "connectors"), healthAddr: runnerAddr})
	}()
	for _, base := range []string{"http://" + routerAddr, "http://" + runnerAddr} {
		waitAnswer(t, base+"/readyz", 200, readyBody, 60*time.Second)
		if s, b := fetch(base + "/livez"); s != 200 || b != liveBody {
			t.Errorf("GET %s/livez = %d %s", base, s, b)
		}
	}
	cancel()
	for name, done := range map[string]chan error{"router": routerDone, "runner": runnerDone} {
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(60 * time.Second):
			t.Fatalf("%s did not stop", name)
		}
	}
	// The roles have drained: their probes are gone with them.
	for _, addr := range []string{routerAddr, runnerAddr} {
		if s, _ := fetch("http://" + addr + "/livez"); s != 0 {
			t.Errorf("%s still answers after the role stopped: %d", addr, s)
		}
	}
}
