package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/sdk"
)

// TestThroughHost builds the connector binary and runs one batch through the plugin host, as a
// runner does: every auth type, the idempotency key, bodies, ports and retryable failures.
func TestThroughHost(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"http": "."})

	var (
		mu   sync.Mutex
		seen = map[string]http.Header{} // by path
		body = map[string]string{}
	)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		seen[r.URL.Path], body[r.URL.Path] = r.Header.Clone(), string(b)
		mu.Unlock()
		switch {
		case strings.HasPrefix(r.URL.Path, "/auth/"), r.URL.Path == "/orders":
			jsonOK(w, r)
		case r.URL.Path == "/text":
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = io.WriteString(w, "hello from the server")
		case r.URL.Path == "/missing":
			http.NotFound(w, r)
		case r.URL.Path == "/busy":
			w.Header().Set("Retry-After", "7")
			w.WriteHeader(http.StatusServiceUnavailable)
		case r.URL.Path == "/limited":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
		case r.URL.Path == "/slow":
			select { // hold the response until the connector gives up
			case <-r.Context().Done():
			case <-release:
			}
		case r.URL.Path == "/big":
			_, _ = io.WriteString(w, strings.Repeat("x", 4096))
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) }) // runs before srv.Close, which waits for handlers

	// The test server is on loopback: allowed the way an operator allows it.
	h, err := host.New(host.Options{Dir: dir, Env: []string{egress.EnvAllow + "=loopback"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })

	conn := func(typ string, data map[string]any) *sdk.Connection { return &sdk.Connection{Type: typ, Data: data} }
	items := []sdk.Invocation{
		{ID: "basic", Config: map[string]any{"url": srv.URL + "/auth/basic"}, Connection: conn("basic", map[string]any{"username": "ada", "password": "pw"})},
		{ID: "api_key", Config: map[string]any{"url": srv.URL + "/auth/api_key"}, Connection: conn("api_key", map[string]any{"key": "k1"})},
		{ID: "api_key_custom", Config: map[string]any{"url": srv.URL + "/auth/api_key_custom"}, Connection: conn("api_key", map[string]any{"header": "X-Partner-Key", "key": "k2"})},
		{ID: "bearer", Config: map[string]any{"url": srv.URL + "/auth/bearer"}, Connection: conn("bearer", map[string]any{"token": "t1"})},
		{ID: "oauth2", Config: map[string]any{"url": srv.URL + "/auth/oauth2"}, Connection: conn("oauth2", map[string]any{"accessToken": "at1", "tokenType": "Bearer"})},
		{ID: "post", Config: map[string]any{"method": "POST", "url": srv.URL + "/orders", "body": map[string]any{"sku": "A-1", "qty": 2}}, IdempotencyKey: "exec-9/order/1"},
		{ID: "text", Config: map[string]any{"url": srv.URL + "/text"}},
		{ID: "missing", Config: map[string]any{"url": srv.URL + "/missing"}},
		{ID: "busy", Config: map[string]any{"url": srv.URL + "/busy"}},
		{ID: "limited", Config: map[string]any{"url": srv.URL + "/limited"}},
		{ID: "slow", Config: map[string]any{"url": srv.URL + "/slow", "timeoutMs": 200}},
		{ID: "big", Config: map[string]any{"url": srv.URL + "/big", "maxResponseBytes": 1000}},
	}
	for i := range items {
		items[i].Action = "request"
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	results, err := h.Execute(ctx, "http", items)
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]sdk.Result{}
	for _, r := range results {
		byID[r.ID] = r
	}
	header := func(path, name string) string {
		mu.Lock()
		defer mu.Unlock()
		return seen[path].Get(name)
	}

	// Each auth type's header arrived as the server expects it.
	for id, want := range map[string][2]string{
		"basic":          {"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("ada:pw"))},
		"api_key":        {"X-API-Key", "k1"},
		"api_key_custom": {"X-Partner-Key", "k2"},
		"bearer":         {"Authorization", "Bearer t1"},
		"oauth2":         {"Authorization", "Bearer at1"},
	} {
		if port, _ := output(t, byID[id]); port != "success" {
			t.Errorf("%s: port %q, want success", id, port)
		}
		if got := header("/auth/"+id, want[0]); got != want[1] {
			t.Errorf("%s: %s = %q, want %q", id, want[0], got, want[1])
		}
	}

	port, data := output(t, byID["post"])
	mu.Lock()
	posted := body["/orders"]
	mu.Unlock()
	if port != "success" || header("/orders", "Idempotency-Key") != "exec-9/order/1" || posted != `{"qty":2,"sku":"A-1"}` {
		t.Errorf("post: port %s, Idempotency-Key %q, body %q", port, header("/orders", "Idempotency-Key"), posted)
	}
	if b, _ := data["body"].(map[string]any); b["ok"] != true || data["status"] != json.Number("200") {
		t.Errorf("post: output %v, want the decoded JSON body and status 200", data)
	}

	if port, data := output(t, byID["text"]); port != "success" || data["body"] != "hello from the server" {
		t.Errorf("text: port %s data %v", port, data)
	}
	if port, data := output(t, byID["missing"]); port != "error" || data["status"] != json.Number("404") {
		t.Errorf("missing: port %s data %v, want the error port with status 404", port, data)
	}
	// Retry-After crosses the plugin boundary as the error's RetryAfter.
	if msg := wantError(t, byID["busy"], "http_5xx", true); !strings.Contains(msg, "Retry-After: 7s") || byID["busy"].Error.RetryAfter != 7*time.Second {
		t.Errorf("busy: message %q, RetryAfter %s: want Retry-After 7s", msg, byID["busy"].Error.RetryAfter)
	}
	if msg := wantError(t, byID["limited"], "http_429", true); !strings.Contains(msg, "Retry-After: 3s") || byID["limited"].Error.RetryAfter != 3*time.Second {
		t.Errorf("limited: message %q, RetryAfter %s: want Retry-After 3s", msg, byID["limited"].Error.RetryAfter)
	}
	wantError(t, byID["slow"], "timeout", true)
	wantError(t, byID["big"], "response_too_large", false)

	m, err := h.Manifest(ctx, "http")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Actions["request"]; m.Name != "http" || !ok || len(m.CredentialTypes) != 4 {
		t.Errorf("manifest %+v", m)
	}
}

// TestEgressThroughHost runs the connector binary as a runner does. Without an allowlist,
// loopback, 10.x, the cloud metadata address and a name resolving to 127.0.0.1 are refused
// with egress_denied; with the operator's allowlist the loopback server answers and the rest
// stay refused. The refusal happens before connect (TestEgressRefusedBeforeConnecting and the
// egress package show it with a dial that cannot leave loopback); the 1 ms timeouts keep even a
// broken policy from waiting on an address beyond this machine.
func TestEgressThroughHost(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"http": "."})
	hits := make(chan string, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits <- r.URL.Path
		jsonOK(w, r)
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	items := []sdk.Invocation{
		{ID: "loopback", Config: map[string]any{"url": srv.URL + "/loopback"}},
		{ID: "localhost", Config: map[string]any{"url": fmt.Sprintf("http://localhost:%d/localhost", port)}},
		{ID: "private", Config: map[string]any{"url": "http://10.255.255.1/", "timeoutMs": 1}},
		{ID: "metadata", Config: map[string]any{"url": "http://169.254.169.254/latest/meta-data/", "timeoutMs": 1}},
	}
	for i := range items {
		items[i].Action = "request"
	}
	run := func(env []string) map[string]sdk.Result {
		t.Helper()
		h, err := host.New(host.Options{Dir: dir, Env: env, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = h.Close() }()
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		results, err := h.Execute(ctx, "http", items)
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]sdk.Result{}
		for _, r := range results {
			byID[r.ID] = r
		}
		return byID
	}

	byID := run(nil)
	for _, id := range []string{"loopback", "localhost", "private", "metadata"} {
		if msg := wantError(t, byID[id], "egress_denied", false); !strings.Contains(msg, egress.EnvAllow) {
			t.Errorf("%s: message %q does not say how to allow it", id, msg)
		}
	}
	select {
	case path := <-hits:
		t.Fatalf("a refused request reached the server: %s", path)
	default:
	}

	byID = run([]string{egress.EnvAllow + "=127.0.0.1/32"})
	for _, id := range []string{"loopback", "localhost"} {
		if port, _ := output(t, byID[id]); port != "success" {
			t.Errorf("%s with loopback allowed: port %q", id, port)
		}
	}
	wantError(t, byID["private"], "egress_denied", false)
	wantError(t, byID["metadata"], "egress_denied", false)
}

// TestPollThroughHost runs the poll trigger in the connector binary, as the router will: the
// config and connection cross the plugin boundary, a cursor comes back and the next poll
// resumes from it, and errors keep their code, retryability and Retry-After.
func TestPollThroughHost(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"http": "."})
	src := &feed{}
	src.add(150)
	var seen requests
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r)
		if r.URL.Path == "/busy" {
			w.Header().Set("Retry-After", "9")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		src.serve(w, r)
	}))
	t.Cleanup(srv.Close)
	h, err := host.New(host.Options{Dir: dir, Env: []string{egress.EnvAllow + "=loopback"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	req := sdk.PollRequest{
		Trigger:    "poll",
		Config:     map[string]any{"url": srv.URL + "/orders", "cursorField": "id", "cursorParam": "after"},
		Connection: &sdk.Connection{Type: "basic", Data: map[string]any{"username": "ada", "password": "pw"}},
	}
	res, err := h.Poll(ctx, "http", req)
	if err != nil {
		t.Fatal(err)
	}
	if got := ids(t, res.Items); !reflect.DeepEqual(got, seq(1, 150)) {
		t.Fatalf("first poll: %d items, want ids 1..150 in order", len(got))
	}
	uris, hdrs := seen.take()
	if !reflect.DeepEqual(uris, []string{"/orders", "/orders?after=0&page=2"}) || hdrs[1].Get("Authorization") != "Basic "+base64.StdEncoding.EncodeToString([]byte("ada:pw")) {
		t.Fatalf("first poll requested %v with Authorization %q", uris, hdrs[len(hdrs)-1].Get("Authorization"))
	}

	src.add(2)
	req.Cursor = res.Cursor
	if res, err = h.Poll(ctx, "http", req); err != nil {
		t.Fatal(err)
	}
	if got := ids(t, res.Items); !reflect.DeepEqual(got, []string{"151", "152"}) {
		t.Fatalf("second poll: items %v, want 151, 152", got)
	}
	if uris, _ := seen.take(); !reflect.DeepEqual(uris, []string{"/orders?after=150"}) {
		t.Fatalf("second poll requested %v", uris)
	}

	req.Cursor = "garbage"
	_, err = h.Poll(ctx, "http", req)
	if e := sdk.AsError(err); e.Code != "invalid_cursor" || e.Retryable {
		t.Fatalf("bad cursor: %+v, want a permanent invalid_cursor", e)
	}
	_, err = h.Poll(ctx, "http", sdk.PollRequest{Trigger: "poll", Config: map[string]any{"url": srv.URL + "/busy"}})
	if e := sdk.AsError(err); e.Code != "http_5xx" || !e.Retryable || e.RetryAfter != 9*time.Second {
		t.Fatalf("503: %+v, want a retryable http_5xx after 9s", e)
	}

	m, err := h.Manifest(ctx, "http")
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := m.Triggers["poll"]; !ok || m.Version != version {
		t.Fatalf("manifest through the host: triggers %v, version %s", m.Triggers, m.Version)
	}
}
