package console_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/console"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
)

var (
	indexHTML = `<!doctype html><html><head><script type="module" src="/assets/index-4f2a.js"></script></head><body><div id="root"></div></body></html>`
	// Long enough for the compressor, which leaves small bodies alone.
	appJS = strings.Repeat("export const flows = () => fetch('/api/v1/flows');\n", 40)
)

func built() fstest.MapFS {
	return fstest.MapFS{
		".gitkeep":               {},
		".stamp":                 {},
		"index.html":             {Data: []byte(indexHTML)},
		"favicon.svg":            {Data: []byte(`<svg xmlns="http://www.w3.org/2000/svg"/>`)},
		"assets/index-4f2a.js":   {Data: []byte(appJS)},
		"assets/index-9c1d.css":  {Data: []byte("body{margin:0}")},
		"assets/logo-77aa.png":   {Data: []byte("\x89PNG")},
		"assets/fonts/x-1.woff2": {Data: []byte("wOF2")},
		"assets/.hidden":         {Data: []byte("no")},
		"assets/data.unknownext": {Data: []byte("?")},
	}
}

// newApp serves fsys as the API does: the console, then a 404 for anything else, through
// flowd's error handler.
func newApp(fsys fs.FS) *fiber.App {
	h := httpproblem.Handler{Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	app := fiber.New(fiber.Config{DisableStartupMessage: true, ErrorHandler: h.Handle})
	console.Mount(app, fsys)
	app.Use(func(c *fiber.Ctx) error {
		return httpproblem.New(fiber.StatusNotFound, problem.New(httpproblem.CodeNotFound, "", "no route %s %s", c.Method(), c.Path()))
	})
	return app
}

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) errors(t *testing.T) []problem.Problem {
	t.Helper()
	var env struct {
		Errors []problem.Problem `json:"errors"`
	}
	if err := json.Unmarshal(a.body, &env); err != nil || len(env.Errors) == 0 {
		t.Fatalf("status %d: not an error body: %q", a.status, a.body)
	}
	return env.Errors
}

func do(t *testing.T, app *fiber.App, method, target string, header ...string) answer {
	t.Helper()
	req := httptest.NewRequest(method, "http://flowd.test/", nil)
	req.URL.Path, req.URL.RawPath, req.RequestURI = "", "", ""
	req.URL.Opaque = target // sent as written: the encoded traversals must reach the server
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	res, err := app.Test(req, 5_000)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	defer func() { _ = res.Body.Close() }()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return answer{status: res.StatusCode, header: res.Header, body: body}
}

func wantSecurityHeaders(t *testing.T, what string, h http.Header) {
	t.Helper()
	want := map[string]string{
		"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
		"X-Content-Type-Options":  "nosniff",
		"Referrer-Policy":         "no-referrer",
		"X-Frame-Options":         "DENY",
	}
	for k, v := range want {
		if got := h.Get(k); got != v {
			t.Errorf("%s: %s %q, want %q", what, k, got, v)
		}
	}
}

func TestServesTheAppWithItsHeaders(t *testing.T) {
	app := newApp(built())
	for _, tc := range []struct {
		target, ctype, cache, body string
	}{
		{"/", "text/html; charset=utf-8", "no-cache", indexHTML},
		{"/assets/index-4f2a.js", "text/javascript; charset=utf-8", "public, max-age=31536000, immutable", appJS},
		{"/assets/index-9c1d.css", "text/css; charset=utf-8", "public, max-age=31536000, immutable", "body{margin:0}"},
		{"/assets/logo-77aa.png", "image/png", "public, max-age=31536000, immutable", "\x89PNG"},
		{"/assets/fonts/x-1.woff2", "font/woff2", "public, max-age=31536000, immutable", "wOF2"},
		{"/assets/data.unknownext", "application/octet-stream", "public, max-age=31536000, immutable", "?"},
		{"/favicon.svg", "image/svg+xml", "no-cache", `<svg xmlns="http://www.w3.org/2000/svg"/>`},
		{"/FAVICON.SVG", "image/svg+xml", "no-cache", `<svg xmlns="http://www.w3.org/2000/svg"/>`}, // routes ignore case
		{"/index.html", "text/html; charset=utf-8", "no-cache", indexHTML},
	} {
		a := do(t, app, "GET", tc.target)
		if a.status != 200 || string(a.body) != tc.body {
			t.Errorf("GET %s: %d %.80q", tc.target, a.status, a.body)
			continue
		}
		if got := a.header.Get("Content-Type"); got != tc.ctype {
			t.Errorf("GET %s: Content-Type %q, want %q", tc.target, got, tc.ctype)
		}
		if got := a.header.Get("Cache-Control"); got != tc.cache {
			t.Errorf("GET %s: Cache-Control %q, want %q", tc.target, got, tc.cache)
		}
		if a.header.Get("Content-Encoding") != "" {
			t.Errorf("GET %s: Content-Encoding %q without Accept-Encoding", tc.target, a.header.Get("Content-Encoding"))
		}
		wantSecurityHeaders(t, "GET "+tc.target, a.header)
	}
}

func TestIndexRevalidates(t *testing.T) {
	app := newApp(built())
	a := do(t, app, "GET", "/")
	tag := a.header.Get("ETag")
	if !strings.HasPrefix(tag, `W/"`) {
		t.Fatalf("ETag %q, want a weak tag", tag)
	}
	if b := do(t, app, "GET", "/", "If-None-Match", tag); b.status != 304 || len(b.body) != 0 {
		t.Fatalf("If-None-Match the current tag: %d %q", b.status, b.body)
	}
	if b := do(t, app, "GET", "/", "If-None-Match", `W/"1-1"`); b.status != 200 {
		t.Fatalf("If-None-Match another tag: %d", b.status)
	}
}

func TestGzipWhenAccepted(t *testing.T) {
	app := newApp(built())
	a := do(t, app, "GET", "/assets/index-4f2a.js", "Accept-Encoding", "gzip")
	if a.status != 200 || a.header.Get("Content-Encoding") != "gzip" {
		t.Fatalf("%d, Content-Encoding %q", a.status, a.header.Get("Content-Encoding"))
	}
	zr, err := gzip.NewReader(bytes.NewReader(a.body))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil || string(plain) != appJS {
		t.Fatalf("gunzipped %d bytes (%v), want the file", len(plain), err)
	}
	if len(a.body) >= len(appJS) {
		t.Errorf("compressed %d bytes into %d", len(appJS), len(a.body))
	}
	if !strings.Contains(a.header.Get("Vary"), "Accept-Encoding") {
		t.Errorf("Vary %q", a.header.Get("Vary"))
	}
	if a.header.Get("Cache-Control") != "public, max-age=31536000, immutable" {
		t.Errorf("Cache-Control %q", a.header.Get("Cache-Control"))
	}
	wantSecurityHeaders(t, "gzipped asset", a.header)
}

func TestUnknownAssetsAreNotFound(t *testing.T) {
	app := newApp(built())
	for _, target := range []string{
		"/assets/nope.js",
		"/assets/",
		"/assets/fonts",  // a directory: never listed
		"/assets/fonts/", // idem
		"/assets/.hidden",
		"/assets/fonts/../.hidden",
	} {
		a := do(t, app, "GET", target)
		if a.status != 404 {
			t.Errorf("GET %s: %d %q, want 404", target, a.status, a.body)
			continue
		}
		if e := a.errors(t)[0]; e.Code != "not_found" || e.Message == "" {
			t.Errorf("GET %s: %+v", target, e)
		}
		if !strings.HasPrefix(a.header.Get("Content-Type"), "application/json") {
			t.Errorf("GET %s: Content-Type %q", target, a.header.Get("Content-Type"))
		}
	}
	wantSecurityHeaders(t, "404", do(t, app, "GET", "/assets/nope.js").header)
}

// Nothing outside assets/ is reachable through it, however the path is spelt: fiber routes the
// path as sent, and the console refuses dot segments, escaped or not.
func TestTraversalIsRefused(t *testing.T) {
	fsys := built()
	app := newApp(fsys)
	for _, target := range []string{
		"/assets/../console.go",
		"/assets/../../console.go",
		"/assets/%2e%2e/console.go",
		"/assets/%2E%2E/%2E%2E/console.go",
		"/assets/..%2fconsole.go",
		"/assets/..%2F..%2Fconsole.go",
		"/assets/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
		"/assets/%252e%252e/console.go",
		"/assets/fonts/../index-4f2a.js", // inside, yet refused: browsers resolve dot segments themselves
		"/assets/%2e%2e/favicon.svg",
		"/%2e%2e/console.go",
		"/%2e%2e%2fconsole.go",
		"/assets/..\\console.go",
		"/assets//etc/passwd",
		"/assets/%2fetc%2fpasswd",
		"/assets/%00",
		"/.gitkeep",
		"/.stamp",
		"/assets",
	} {
		a := do(t, app, "GET", target)
		if a.status != 404 {
			t.Errorf("GET %s: %d %q, want 404", target, a.status, a.body)
		}
	}
	// The requests above reach the console as written: escaped names of its files do serve them.
	for _, target := range []string{"/assets/index%2d4f2a.js", "/assets/fonts%2Fx-1.woff2", "/favicon%2esvg"} {
		if a := do(t, app, "GET", target); a.status != 200 {
			t.Errorf("GET %s: %d %q, want 200", target, a.status, a.body)
		}
	}
}

func TestHead(t *testing.T) {
	app := newApp(built())
	for target, want := range map[string]int{"/": 200, "/assets/index-9c1d.css": 200, "/favicon.svg": 200, "/assets/nope.js": 404} {
		a := do(t, app, "HEAD", target)
		if a.status != want || len(a.body) != 0 {
			t.Errorf("HEAD %s: %d with %d bytes, want %d and none", target, a.status, len(a.body), want)
		}
		if want == 200 && a.header.Get("Content-Type") == "" {
			t.Errorf("HEAD %s: no Content-Type", target)
		}
	}
}

// The console takes only its own files: anything else reaches the app's next handler as before.
func TestOtherPathsPassOn(t *testing.T) {
	app := newApp(built())
	for _, tc := range []struct{ method, target string }{
		{"GET", "/nope"},
		{"GET", "/nope.svg"},
		{"GET", "/flows/x"},
		{"POST", "/"},
		{"DELETE", "/assets/index-4f2a.js"},
		{"PUT", "/favicon.svg"},
	} {
		a := do(t, app, tc.method, tc.target)
		if a.status != 404 {
			t.Errorf("%s %s: %d, want the next handler's 404", tc.method, tc.target, a.status)
			continue
		}
		if e := a.errors(t)[0]; !strings.HasPrefix(e.Message, "no route ") {
			t.Errorf("%s %s: %q, want the next handler's answer", tc.method, tc.target, e.Message)
		}
	}
}

func TestNotBuilt(t *testing.T) {
	app := newApp(fstest.MapFS{".gitkeep": {}})
	a := do(t, app, "GET", "/")
	if a.status != 503 {
		t.Fatalf("GET /: %d %q, want 503", a.status, a.body)
	}
	e := a.errors(t)[0]
	if e.Code != console.CodeNotBuilt || !strings.Contains(e.Message, "make build") {
		t.Fatalf("GET /: %+v", e)
	}
	wantSecurityHeaders(t, "not built", a.header)
	if h := do(t, app, "HEAD", "/"); h.status != 503 {
		t.Fatalf("HEAD /: %d", h.status)
	}
	for _, target := range []string{"/assets/index-4f2a.js", "/.gitkeep", "/index.html"} {
		if a := do(t, app, "GET", target); a.status != 404 {
			t.Errorf("GET %s: %d, want 404", target, a.status)
		}
	}
}

func TestFilesIsRootedAtDist(t *testing.T) {
	fsys, built := console.Files()
	if built != console.Built(fsys) {
		t.Fatalf("Files says built=%v, Built says %v", built, console.Built(fsys))
	}
	entries, err := fs.ReadDir(fsys, ".")
	if err != nil || len(entries) == 0 {
		t.Fatalf("embedded dist: %v entries, %v", len(entries), err)
	}
	for _, e := range entries {
		if e.Name() == "dist" || e.Name() == "console.go" {
			t.Fatalf("Files is not rooted at dist/: it has %s", e.Name())
		}
	}
}
