package httpproblem_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
)

const limit = 1 << 10

func newApp() *fiber.App {
	h := httpproblem.Handler{BodyLimit: limit, RetryAfter: 2500e6, Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	app := fiber.New(fiber.Config{BodyLimit: limit, DisableStartupMessage: true, ErrorHandler: h.Handle})
	app.Get("/conflict", func(*fiber.Ctx) error {
		return httpproblem.New(fiber.StatusConflict, problem.New("busy", "/a", "busy")).With("X-Why", "because")
	})
	app.Get("/own-retry", func(*fiber.Ctx) error {
		return httpproblem.New(fiber.StatusServiceUnavailable, problem.New("unavailable", "", "later")).With(fiber.HeaderRetryAfter, "9")
	})
	app.Get("/boom", func(*fiber.Ctx) error { return errors.New("secret detail") })
	app.Get("/slow", func(*fiber.Ctx) error { return context.DeadlineExceeded })
	app.Post("/echo", func(c *fiber.Ctx) error { return c.Send(c.Body()) })
	return app
}

type answer struct {
	status int
	header http.Header
	raw    []byte
	errors []problem.Problem
}

func read(t *testing.T, res *http.Response) answer {
	t.Helper()
	defer func() { _ = res.Body.Close() }()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	a := answer{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 && res.StatusCode >= 400 {
		var env struct {
			Errors []problem.Problem `json:"errors"`
		}
		if err := json.Unmarshal(raw, &env); err != nil || len(env.Errors) == 0 {
			t.Fatalf("%d %q is not the error envelope: %v", res.StatusCode, raw, err)
		}
		a.errors = env.Errors
	}
	return a
}

func TestErrorsAreTheEnvelope(t *testing.T) {
	app := newApp()
	for _, tc := range []struct {
		method, path string
		status       int
		code, msg    string
		header       [2]string
	}{
		{"GET", "/conflict", 409, "busy", "busy", [2]string{"X-Why", "because"}},
		{"GET", "/boom", 500, "internal", "internal error; see the server log", [2]string{}},
		{"GET", "/slow", 503, "timeout", "the request took too long; try again", [2]string{"Retry-After", "3"}},
		{"GET", "/own-retry", 503, "unavailable", "later", [2]string{"Retry-After", "9"}},
		{"GET", "/nowhere", 404, "not_found", "Cannot GET /nowhere", [2]string{}},
		{"GET", "/echo", 405, "method_not_allowed", "Method Not Allowed", [2]string{}},
	} {
		req, _ := http.NewRequest(tc.method, tc.path, nil)
		res, err := app.Test(req, -1)
		if err != nil {
			t.Fatal(err)
		}
		a := read(t, res)
		if a.status != tc.status || len(a.errors) != 1 || a.errors[0].Code != tc.code || a.errors[0].Message != tc.msg ||
			a.header.Get(fiber.HeaderContentType) != fiber.MIMEApplicationJSON {
			t.Errorf("%s %s: %d %s %s", tc.method, tc.path, a.status, a.header, a.raw)
		}
		if tc.header[0] != "" && a.header.Get(tc.header[0]) != tc.header[1] {
			t.Errorf("%s %s: %s %q, want %q", tc.method, tc.path, tc.header[0], a.header.Get(tc.header[0]), tc.header[1])
		}
		if strings.Contains(string(a.raw), "secret detail") {
			t.Errorf("%s %s: the cause of a 500 reached the client: %s", tc.method, tc.path, a.raw)
		}
	}
	// A HEAD answer has the status and headers, and no body.
	req, _ := http.NewRequest("HEAD", "/conflict", nil)
	res, err := app.Test(req, -1)
	if err != nil {
		t.Fatal(err)
	}
	if a := read(t, res); a.status != 409 || len(a.raw) != 0 || a.header.Get("X-Why") != "because" {
		t.Errorf("HEAD: %d %s %q", a.status, a.header, a.raw)
	}
}

// serve runs app on a loopback port behind httpproblem.Listener, as the roles serve.
func serve(t *testing.T, app *fiber.App) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- app.Listener(httpproblem.Listener(ln)) }()
	t.Cleanup(func() {
		if err := app.Shutdown(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + ln.Addr().String()
}

// A body over the limit is answered 413 with the envelope, and the client reads that answer
// even while it is still uploading: the connection is not reset under it. Two kinds of client:
// net/http's, which reads the answer while it still sends, and one that sends the whole body
// before reading anything. The bodies are far larger than the socket buffers, so both are
// mid-upload when refused; a reset fails the first one now and then and the second one always.
func TestBodyOverTheLimitIsAnswered(t *testing.T) {
	base := serve(t, newApp())
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	big := bytes.Repeat([]byte("a"), 16<<20)
	check := func(how string, res *http.Response) {
		t.Helper()
		closes := res.Close // the answer ends the connection: the rest of the body is never read
		a := read(t, res)
		if a.status != 413 || len(a.errors) != 1 || a.errors[0].Code != "too_large" ||
			a.errors[0].Message != "request body is larger than the limit of 1 KiB" || !closes {
			t.Fatalf("%s: %d %s %s (Connection: close %v)", how, a.status, a.header, a.raw, closes)
		}
	}
	for _, tc := range []struct {
		name string
		body func() io.Reader
	}{
		{"content-length", func() io.Reader { return bytes.NewReader(big) }},
		{"chunked", func() io.Reader { return io.MultiReader(bytes.NewReader(big)) }},
	} {
		for i := range 3 {
			res, err := client.Post(base+"/echo", "application/json", tc.body())
			if err != nil {
				t.Fatalf("%s #%d: %v", tc.name, i, err)
			}
			check(tc.name, res)
		}
	}
	for _, chunked := range []bool{false, true} {
		conn, err := net.Dial("tcp", strings.TrimPrefix(base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		head, body := fmt.Sprintf("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(big)), big
		if chunked {
			head = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
			body = append(append(fmt.Appendf(nil, "%x\r\n", len(big)), big...), "\r\n0\r\n\r\n"...)
		}
		if _, err := conn.Write(append([]byte(head), body...)); err != nil {
			t.Fatalf("whole body first (chunked %v): the connection broke while sending: %v", chunked, err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("whole body first (chunked %v): %v", chunked, err)
		}
		check(fmt.Sprintf("whole body first (chunked %v)", chunked), res)
		_ = conn.Close()
	}
	// The server goes on serving, and a body within the limit is taken.
	res, err := client.Post(base+"/echo", "text/plain", strings.NewReader("hello"))
	if err != nil {
		t.Fatal(err)
	}
	if a := read(t, res); a.status != 200 || string(a.raw) != "hello" {
		t.Fatalf("within the limit: %d %q", a.status, a.raw)
	}
}

func TestBytes(t *testing.T) {
	for n, want := range map[int]string{1 << 20: "1 MiB", 64 << 10: "64 KiB", 1000: "1000 bytes", 3 << 20: "3 MiB", 1<<20 + 1: "1048577 bytes"} {
		if got := httpproblem.Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
