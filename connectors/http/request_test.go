package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/testrig"
)

// testConnector shares one transport across the tests, as the plugin does across calls. Its
// test servers listen on loopback, which the operator allows here as in `flowd dev`.
var testConnector = newConnector(mustPolicy("loopback"), loopbackOnly)

func mustPolicy(allow string) *egress.Policy {
	p, err := egress.Parse(allow)
	if err != nil {
		panic(err)
	}
	return p
}

// errOffLoopback is what loopbackOnly answers instead of connecting: the tests never send a
// packet beyond this machine, even if the policy let an address through.
var errOffLoopback = errors.New("test guard: not connecting beyond loopback")

// loopbackOnly is the underlying dial of the tests' transports: loopback addresses connect,
// anything else fails without a connection attempt.
func loopbackOnly(ctx context.Context, network, addr string) (net.Conn, error) {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Unmap().IsLoopback() {
		return nil, fmt.Errorf("%w: %s", errOffLoopback, addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// recorder is a test server that remembers the last request it received.
type recorder struct {
	mu     sync.Mutex
	header http.Header
	body   []byte
	uri    string
	method string
}

func (r *recorder) record(req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.header, r.body, r.uri, r.method = req.Header.Clone(), b, req.RequestURI, req.Method
}

func (r *recorder) last() (http.Header, []byte, string, string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.header, r.body, r.uri, r.method
}

func newServer(t *testing.T, h http.HandlerFunc) (*httptest.Server, *recorder) {
	t.Helper()
	rec := &recorder{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec.record(r)
		h(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, rec
}

func jsonOK(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"ok":true,"id":12345678901234567890}`)
}

func invoke(t *testing.T, cfg map[string]any, conn *sdk.Connection, key string) sdk.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return sdk.Invoke(ctx, testConnector, sdk.Invocation{
		ID: "1", Action: "request", Config: cfg, Input: map[string]any{"name": "Ada"},
		Connection: conn, ExecutionID: "exec-1", NodeID: "call", Attempt: 1, IdempotencyKey: key,
	})
}

// output returns the single output of res, failing the test on an error result.
func output(t *testing.T, res sdk.Result) (string, map[string]any) {
	t.Helper()
	if res.Error != nil {
		t.Fatalf("unexpected error: %+v", res.Error)
	}
	if len(res.Outputs) != 1 {
		t.Fatalf("want 1 output, got %d: %+v", len(res.Outputs), res.Outputs)
	}
	data, ok := res.Outputs[0].Data.(map[string]any)
	if !ok {
		t.Fatalf("output data is %T, want an object", res.Outputs[0].Data)
	}
	return res.Outputs[0].Port, data
}

// wantError checks res failed with code and returns the error message.
func wantError(t *testing.T, res sdk.Result, code string, retryable bool) string {
	t.Helper()
	if res.Error == nil {
		t.Fatalf("want error %s, got outputs %+v", code, res.Outputs)
	}
	if res.Error.Code != code || res.Error.Retryable != retryable {
		t.Fatalf("want error code %s retryable=%v, got %+v", code, retryable, res.Error)
	}
	return res.Error.Message
}

func TestAuthHeaders(t *testing.T) {
	srv, rec := newServer(t, jsonOK)
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("ada:s3cr:et"))
	cases := []struct {
		name   string
		conn   *sdk.Connection
		header string
		want   string
	}{
		{"basic", &sdk.Connection{Type: "basic", Data: map[string]any{"username": "ada", "password": "s3cr:et"}}, "Authorization", basic},
		{"api_key default header", &sdk.Connection{Type: "api_key", Data: map[string]any{"key": "k-123"}}, "X-API-Key", "k-123"},
		{"api_key custom header", &sdk.Connection{Type: "api_key", Data: map[string]any{"header": "X-Partner-Token", "key": "k-456"}}, "X-Partner-Token", "k-456"},
		{"bearer", &sdk.Connection{Type: "bearer", Data: map[string]any{"token": "tok-789"}}, "Authorization", "Bearer tok-789"},
		{"oauth2", &sdk.Connection{Type: "oauth2", Data: map[string]any{"accessToken": "at-1", "tokenType": "bearer"}}, "Authorization", "Bearer at-1"},
		{"oauth2 without token type", &sdk.Connection{Type: "oauth2", Data: map[string]any{"accessToken": "at-2"}}, "Authorization", "Bearer at-2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// A config header must not override the connection's credential.
			cfg := map[string]any{"url": srv.URL + "/auth", "headers": map[string]any{tc.header: "from-config"}}
			port, _ := output(t, invoke(t, cfg, tc.conn, ""))
			if port != "success" {
				t.Fatalf("port %q, want success", port)
			}
			h, _, _, _ := rec.last()
			if got := h.Values(tc.header); len(got) != 1 || got[0] != tc.want {
				t.Fatalf("%s = %q, want [%q]", tc.header, got, tc.want)
			}
		})
	}

	t.Run("no connection", func(t *testing.T) {
		output(t, invoke(t, map[string]any{"url": srv.URL}, nil, ""))
		if h, _, _, _ := rec.last(); h.Get("Authorization") != "" || h.Get("X-API-Key") != "" {
			t.Fatalf("credential headers sent without a connection: %v", h)
		}
	})
	t.Run("incomplete connection", func(t *testing.T) {
		res := invoke(t, map[string]any{"url": srv.URL}, &sdk.Connection{Type: "bearer", Data: map[string]any{}}, "")
		wantError(t, res, "invalid_connection", false)
	})
	t.Run("unsupported connection", func(t *testing.T) {
		res := invoke(t, map[string]any{"url": srv.URL}, &sdk.Connection{Type: "kerberos", Data: map[string]any{}}, "")
		wantError(t, res, "unsupported_connection", false)
	})
}

func TestIdempotencyKey(t *testing.T) {
	srv, rec := newServer(t, jsonOK)
	output(t, invoke(t, map[string]any{"url": srv.URL, "method": "post", "body": map[string]any{"a": 1}}, nil, "exec-1/call/1"))
	h, _, _, method := rec.last()
	if method != http.MethodPost || h.Get("Idempotency-Key") != "exec-1/call/1" {
		t.Fatalf("method %s, Idempotency-Key %q", method, h.Get("Idempotency-Key"))
	}

	// The config's own header wins, whatever its case.
	output(t, invoke(t, map[string]any{"url": srv.URL, "headers": map[string]any{"idempotency-key": "mine"}}, nil, "exec-1/call/1"))
	if h, _, _, _ := rec.last(); len(h.Values("Idempotency-Key")) != 1 || h.Get("Idempotency-Key") != "mine" {
		t.Fatalf("Idempotency-Key %q, want [mine]", h.Values("Idempotency-Key"))
	}

	output(t, invoke(t, map[string]any{"url": srv.URL}, nil, ""))
	if h, _, _, _ := rec.last(); h.Get("Idempotency-Key") != "" {
		t.Fatalf("Idempotency-Key sent without a key: %q", h.Get("Idempotency-Key"))
	}
}

func TestRequestShape(t *testing.T) {
	srv, rec := newServer(t, jsonOK)
	cases := []struct {
		name     string
		cfg      map[string]any
		method   string
		uri      string
		body     string
		ctype    string
		moreHdrs map[string]string
	}{
		{
			name:   "json body and query",
			cfg:    map[string]any{"method": "PUT", "url": srv.URL + "/items?a=1", "query": map[string]any{"b": "x y", "c": []any{1, true}, "n": json.Number("12345678901234567890")}, "body": map[string]any{"name": "Ada", "n": 1}},
			method: "PUT", uri: "/items?a=1&b=x+y&c=1&c=true&n=12345678901234567890", body: `{"n":1,"name":"Ada"}`, ctype: "application/json",
		},
		{
			name:   "string body as-is",
			cfg:    map[string]any{"method": "POST", "url": srv.URL + "/raw", "body": "a=1&b=2", "headers": map[string]any{"Content-Type": "application/x-www-form-urlencoded", "X-Count": 3}},
			method: "POST", uri: "/raw", body: "a=1&b=2", ctype: "application/x-www-form-urlencoded", moreHdrs: map[string]string{"X-Count": "3"},
		},
		{
			name:   "text body default content type",
			cfg:    map[string]any{"method": "POST", "url": srv.URL + "/text", "body": "hello"},
			method: "POST", uri: "/text", body: "hello", ctype: "text/plain; charset=utf-8",
		},
		{
			name:   "default method, no body",
			cfg:    map[string]any{"url": srv.URL + "/get"},
			method: "GET", uri: "/get",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			output(t, invoke(t, tc.cfg, nil, ""))
			h, body, uri, method := rec.last()
			if method != tc.method || uri != tc.uri || string(body) != tc.body || h.Get("Content-Type") != tc.ctype {
				t.Fatalf("got %s %s body %q content-type %q; want %s %s body %q content-type %q",
					method, uri, body, h.Get("Content-Type"), tc.method, tc.uri, tc.body, tc.ctype)
			}
			for k, v := range tc.moreHdrs {
				if h.Get(k) != v {
					t.Fatalf("%s = %q, want %q", k, h.Get(k), v)
				}
			}
		})
	}
}

func TestResponses(t *testing.T) {
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/json":
			w.Header().Add("Set-Cookie", "a=1")
			w.Header().Add("Set-Cookie", "b=2")
			jsonOK(w, r)
		case "/text":
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "plain text")
		case "/binary":
			w.Header().Set("Content-Type", "application/octet-stream")
			_, _ = w.Write([]byte{0xff, 0xfe, 0x00})
		case "/bad-json":
			w.Header().Set("Content-Type", "application/problem+json")
			_, _ = io.WriteString(w, "{not json")
		case "/missing":
			w.Header().Set("Content-Type", "application/problem+json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = io.WriteString(w, `{"title":"not found"}`)
		case "/created":
			w.WriteHeader(http.StatusCreated)
		}
	})

	t.Run("json", func(t *testing.T) {
		port, data := output(t, invoke(t, map[string]any{"url": srv.URL + "/json"}, nil, ""))
		body, _ := data["body"].(map[string]any)
		hdrs, _ := data["headers"].(map[string]any)
		if port != "success" || data["status"] != json.Number("200") || body["ok"] != true || body["id"] != json.Number("12345678901234567890") {
			t.Fatalf("port %s data %v", port, data)
		}
		if hdrs["content-type"] != "application/json" {
			t.Fatalf("headers %v: want lower-case content-type", hdrs)
		}
		if cookies, _ := hdrs["set-cookie"].([]any); len(cookies) != 2 || cookies[0] != "a=1" || cookies[1] != "b=2" {
			t.Fatalf("set-cookie %v, want [a=1 b=2]", hdrs["set-cookie"])
		}
	})
	t.Run("text", func(t *testing.T) {
		port, data := output(t, invoke(t, map[string]any{"url": srv.URL + "/text"}, nil, ""))
		if port != "success" || data["body"] != "plain text" {
			t.Fatalf("port %s data %v", port, data)
		}
	})
	t.Run("binary", func(t *testing.T) {
		_, data := output(t, invoke(t, map[string]any{"url": srv.URL + "/binary"}, nil, ""))
		if data["body"] != "//4A" || data["bodyEncoding"] != "base64" {
			t.Fatalf("data %v, want base64 body", data)
		}
	})
	t.Run("mislabelled json", func(t *testing.T) {
		_, data := output(t, invoke(t, map[string]any{"url": srv.URL + "/bad-json"}, nil, ""))
		if data["body"] != "{not json" {
			t.Fatalf("body %v, want the text", data["body"])
		}
	})
	t.Run("404 goes to the error port", func(t *testing.T) {
		port, data := output(t, invoke(t, map[string]any{"url": srv.URL + "/missing"}, nil, ""))
		body, _ := data["body"].(map[string]any)
		if port != "error" || data["status"] != json.Number("404") || body["title"] != "not found" {
			t.Fatalf("port %s data %v", port, data)
		}
	})
	t.Run("201 empty body", func(t *testing.T) {
		port, data := output(t, invoke(t, map[string]any{"url": srv.URL + "/created", "method": "POST"}, nil, ""))
		if port != "success" || data["status"] != json.Number("201") || data["body"] != "" {
			t.Fatalf("port %s data %v", port, data)
		}
	})
}

func TestRetryableStatuses(t *testing.T) {
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/busy":
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/slow-down":
			w.Header().Set("Retry-After", time.Now().Add(2*time.Minute).UTC().Format(http.TimeFormat))
			w.WriteHeader(http.StatusTooManyRequests)
		case "/gateway":
			w.Header().Set("Retry-After", "86400")
			w.WriteHeader(http.StatusBadGateway)
		case "/garbled":
			w.Header().Set("Retry-After", "soon")
			w.WriteHeader(http.StatusTooManyRequests)
		case "/broken":
			w.WriteHeader(http.StatusInternalServerError)
		}
	})
	call := func(path, code string) *sdk.Error {
		t.Helper()
		res := invoke(t, map[string]any{"url": srv.URL + path}, nil, "")
		wantError(t, res, code, true)
		return res.Error
	}

	e := call("/busy", "http_5xx")
	if !strings.Contains(e.Message, "503") || !strings.Contains(e.Message, "Retry-After: 30s") || e.RetryAfter != 30*time.Second {
		t.Fatalf("busy: %q, RetryAfter %s: want the status and Retry-After 30s", e.Message, e.RetryAfter)
	}
	e = call("/slow-down", "http_429")
	// An HTTP date two minutes ahead, at second precision, taken a moment ago.
	if !strings.Contains(e.Message, "429") || !regexp.MustCompile(`Retry-After: (1m5\ds|2m0s)`).MatchString(e.Message) ||
		e.RetryAfter < 115*time.Second || e.RetryAfter > 2*time.Minute {
		t.Fatalf("slow-down: %q, RetryAfter %s: want the status and Retry-After about 2m", e.Message, e.RetryAfter)
	}
	if e = call("/gateway", "http_5xx"); e.RetryAfter != time.Hour {
		t.Fatalf("gateway: RetryAfter %s, want a day capped at 1h", e.RetryAfter)
	}
	if e = call("/garbled", "http_429"); e.RetryAfter != 0 || !strings.Contains(e.Message, `Retry-After not understood: "soon"`) {
		t.Fatalf("garbled: %q, RetryAfter %s: want no hint and the header quoted", e.Message, e.RetryAfter)
	}
	if e = call("/broken", "http_5xx"); e.RetryAfter != 0 || strings.Contains(e.Message, "Retry-After") {
		t.Fatalf("broken: %q, RetryAfter %s: want no hint", e.Message, e.RetryAfter)
	}
}

func TestTimeout(t *testing.T) {
	release := make(chan struct{})
	srv, _ := newServer(t, func(_ http.ResponseWriter, r *http.Request) {
		select { // hold the response until the client gives up
		case <-r.Context().Done():
		case <-release:
		}
	})
	defer close(release) // before srv.Close, which waits for handlers
	msg := wantError(t, invoke(t, map[string]any{"url": srv.URL + "/wait?token=abc", "timeoutMs": 100}, nil, ""), "timeout", true)
	if !strings.Contains(msg, "/wait") || strings.Contains(msg, "abc") {
		t.Fatalf("message %q: want the path without the query", msg)
	}
}

func TestConnectionRefused(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	wantError(t, invoke(t, map[string]any{"url": "http://" + addr + "/x"}, nil, ""), "connection", true)
}

func TestResponseSizeCap(t *testing.T) {
	payload := strings.Repeat("x", 4096)
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/chunked" {
			// No Content-Length: the cap must hold while reading.
			_, _ = io.WriteString(w, payload[:2048])
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, payload[2048:])
			return
		}
		_, _ = io.WriteString(w, payload)
	})
	for _, path := range []string{"/sized", "/chunked"} {
		msg := wantError(t, invoke(t, map[string]any{"url": srv.URL + path, "maxResponseBytes": 1024}, nil, ""), "response_too_large", false)
		if !strings.Contains(msg, "1024") {
			t.Fatalf("message %q: want the limit", msg)
		}
	}
	_, data := output(t, invoke(t, map[string]any{"url": srv.URL + "/sized", "maxResponseBytes": 4096}, nil, ""))
	if data["body"] != payload {
		t.Fatalf("body of %d bytes, want %d", len(data["body"].(string)), len(payload))
	}
}

func TestRedirects(t *testing.T) {
	other, otherRec := newServer(t, jsonOK)
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/away":
			http.Redirect(w, r, other.URL+"/landed", http.StatusFound)
		case "/here":
			http.Redirect(w, r, "/landed", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		default:
			jsonOK(w, r)
		}
	})
	key := &sdk.Connection{Type: "api_key", Data: map[string]any{"key": "k-1"}}

	port, data := output(t, invoke(t, map[string]any{"url": srv.URL + "/here"}, key, ""))
	if h, _, uri, _ := rec.last(); port != "success" || uri != "/landed" || h.Get("X-API-Key") != "k-1" {
		t.Fatalf("same-origin redirect: port %s uri %s key %q", port, uri, h.Get("X-API-Key"))
	}
	_ = data

	// Leaving the origin drops the credential, whatever header carries it.
	output(t, invoke(t, map[string]any{"url": srv.URL + "/away"}, key, ""))
	if h, _, uri, _ := otherRec.last(); uri != "/landed" || h.Get("X-API-Key") != "" {
		t.Fatalf("cross-origin redirect: uri %s, X-API-Key %q sent to another origin", uri, h.Get("X-API-Key"))
	}

	port, data = output(t, invoke(t, map[string]any{"url": srv.URL + "/here", "followRedirects": false}, nil, ""))
	if hdrs, _ := data["headers"].(map[string]any); port != "error" || data["status"] != json.Number("302") || hdrs["location"] != "/landed" {
		t.Fatalf("followRedirects false: port %s data %v", port, data)
	}

	wantError(t, invoke(t, map[string]any{"url": srv.URL + "/loop"}, nil, ""), "too_many_redirects", false)
}

func TestInvalidConfig(t *testing.T) {
	cases := map[string]map[string]any{
		"no url":          {},
		"ftp url":         {"url": "ftp://example.com/x"},
		"no host":         {"url": "http:///x"},
		"bad method":      {"url": "http://127.0.0.1/", "method": "GE T"},
		"TRACE":           {"url": "http://127.0.0.1/", "method": "TRACE"},
		"CONNECT":         {"url": "http://127.0.0.1/", "method": "CONNECT"},
		"made-up method":  {"url": "http://127.0.0.1/", "method": "PROPFIND"},
		"timeout too big": {"url": "http://127.0.0.1/", "timeoutMs": 300001},
		"zero cap":        {"url": "http://127.0.0.1/", "maxResponseBytes": 0},
		"header newline":  {"url": "http://127.0.0.1/", "headers": map[string]any{"X-A": "a\r\nX-B: b"}},
		"header object":   {"url": "http://127.0.0.1/", "headers": map[string]any{"X-A": map[string]any{}}},
	}
	for name, cfg := range cases {
		t.Run(name, func(t *testing.T) {
			wantError(t, invoke(t, cfg, nil, ""), "invalid_config", false)
		})
	}
}

// TestSecretsStayOutOfLogsAndErrors runs failing and succeeding calls with debug logging on and
// checks that no credential appears in the log or in an error message.
func TestSecretsStayOutOfLogsAndErrors(t *testing.T) {
	var logBuf testrig.LogBuffer
	prev := slog.Default()
	slog.SetDefault(slog.New(slog.NewJSONHandler(&logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})))
	t.Cleanup(func() { slog.SetDefault(prev) })

	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusBadGateway)
			return
		}
		jsonOK(w, r)
	})
	const secret = "SUPER-SECRET-VALUE"
	conns := []*sdk.Connection{
		{Type: "basic", Data: map[string]any{"username": "ada", "password": secret}},
		{Type: "api_key", Data: map[string]any{"key": secret}},
		{Type: "bearer", Data: map[string]any{"token": secret}},
		{Type: "oauth2", Data: map[string]any{"accessToken": secret}},
		{Type: "bearer", Data: map[string]any{"token": secret + "\n"}},
	}
	var messages []string
	for _, conn := range conns {
		for _, url := range []string{srv.URL + "/ok?key=" + secret, srv.URL + "/fail?key=" + secret, "http://127.0.0.1:1/?key=" + secret} {
			res := invoke(t, map[string]any{"url": url}, conn, "")
			if res.Error != nil {
				messages = append(messages, res.Error.Message)
			}
		}
	}
	if len(messages) == 0 || len(logBuf.String()) == 0 {
		t.Fatalf("expected errors and debug logs to inspect, got %d errors and %d log bytes", len(messages), len(logBuf.String()))
	}
	for _, m := range messages {
		if strings.Contains(m, secret) {
			t.Fatalf("error message leaks the secret: %q", m)
		}
	}
	if strings.Contains(logBuf.String(), secret) {
		t.Fatalf("log leaks the secret:\n%s", logBuf.String())
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"", 0, false},
		{"120", 2 * time.Minute, true},
		{" 0 ", 0, true},
		{"3600", time.Hour, true},
		{"3601", time.Hour, true},                    // capped
		{"99999999999999999999999", time.Hour, true}, // beyond uint64: capped too
		{"Fri, 02 Jan 2026 03:05:05 GMT", time.Minute, true},
		{"Fri, 02 Jan 2026 03:00:00 GMT", 0, true},            // already past
		{"Sat, 03 Jan 2026 03:04:05 GMT", time.Hour, true},    // a day ahead: capped
		{"Friday, 02-Jan-26 03:05:05 GMT", time.Minute, true}, // RFC 850, which HTTP dates allow
		{"soon", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"12abc", 0, false},
	}
	for _, c := range cases {
		if got, ok := retryAfter(c.in, now); got != c.want || ok != c.ok {
			t.Errorf("retryAfter(%q) = %s, %v; want %s, %v", c.in, got, ok, c.want, c.ok)
		}
	}
}

func TestManifest(t *testing.T) {
	m, err := testConnector.Describe()
	if err != nil {
		t.Fatal(err)
	}
	spec, ok := m.Actions["request"]
	if m.Name != "http" || !ok || len(spec.Ports) != 2 {
		t.Fatalf("manifest %+v", m)
	}
	for name, s := range map[string]json.RawMessage{"config": spec.ConfigSchema, "input": spec.InputSchema, "output": spec.OutputSchema} {
		if !json.Valid(s) {
			t.Errorf("%s schema is not valid JSON", name)
		}
	}
}

// TestEgressRefusedBeforeConnecting runs the connector with no allowlist: loopback (by address
// and by a name resolving to it), private, metadata and unspecified destinations are refused
// with a permanent egress_denied error, and a redirect cannot reach them either.
func TestEgressRefusedBeforeConnecting(t *testing.T) {
	srv, rec := newServer(t, func(w http.ResponseWriter, r *http.Request) { jsonOK(w, r) })
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	strict := newConnector(&egress.Policy{}, loopbackOnly)
	call := func(c sdk.Connector, cfg map[string]any) sdk.Result {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return sdk.Invoke(ctx, c, sdk.Invocation{ID: "1", Action: "request", Config: cfg})
	}
	for _, u := range []string{
		srv.URL + "/x",
		fmt.Sprintf("http://localhost:%d/x", port),
		fmt.Sprintf("http://[::ffff:127.0.0.1]:%d/x", port),
		fmt.Sprintf("http://0.0.0.0:%d/x", port),
		"http://10.0.0.1/x",
		"http://169.254.169.254/latest/meta-data/",
		"https://192.168.1.1/",
		"http://[fd00:ec2::254]/",
	} {
		msg := wantError(t, call(strict, map[string]any{"url": u}), "egress_denied", false)
		if !strings.Contains(msg, egress.EnvAllow) {
			t.Errorf("%s: message %q does not say how to allow it", u, msg)
		}
	}
	if _, _, uri, _ := rec.last(); uri != "" {
		t.Fatalf("a refused request reached the server: %s", uri)
	}

	// Allowed: exactly this server's address and port. Its redirects to another loopback port
	// or to the metadata address are refused at dial time.
	other, otherRec := newServer(t, func(w http.ResponseWriter, r *http.Request) { jsonOK(w, r) })
	redirector, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/to-other":
			http.Redirect(w, r, other.URL+"/secret", http.StatusFound)
		case "/to-metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		default:
			jsonOK(w, r)
		}
	})
	allowed := newConnector(mustPolicy(redirector.Listener.Addr().String()), loopbackOnly)
	if port, _ := output(t, call(allowed, map[string]any{"url": redirector.URL + "/ok"})); port != "success" {
		t.Fatalf("allowlisted server: port %s", port)
	}
	wantError(t, call(allowed, map[string]any{"url": redirector.URL + "/to-other"}), "egress_denied", false)
	wantError(t, call(allowed, map[string]any{"url": redirector.URL + "/to-metadata"}), "egress_denied", false)
	wantError(t, call(allowed, map[string]any{"url": other.URL + "/direct"}), "egress_denied", false)
	if _, _, uri, _ := otherRec.last(); uri != "" {
		t.Fatalf("a redirect reached a refused server: %s", uri)
	}
}
