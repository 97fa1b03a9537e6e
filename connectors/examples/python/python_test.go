// Package python holds the tests of the Python example connector (greeter/) and of the scaffold's
// Python template: they run the connectors through the Go host, handshake, AutoMTLS, actions and
// polls, proving the plugin protocol is language-neutral.
package python

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/testrig"
)

func TestGreeterThroughHost(t *testing.T) {
	greeterDir, err := filepath.Abs("greeter")
	if err != nil {
		t.Fatal(err)
	}
	python := testrig.GreeterPython(t, greeterDir)
	logs := newTestWriter(t) // registered first: its cleanup runs after the host's

	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(greeterDir, "greeter"), filepath.Join(dir, "greeter")); err != nil {
		t.Fatal(err)
	}
	h, err := host.New(host.Options{
		Dir:    dir,
		Env:    []string{"FLOWD_CONNECTOR_PYTHON=" + python},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = h.Close()
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	m, err := h.Manifest(ctx, "greeter")
	if err != nil {
		t.Fatalf("start greeter through the host: %v", err)
	}
	greet, ok := m.Actions["greet"]
	if m.Name != "greeter" || m.Version == "" || !ok {
		t.Fatalf("manifest %+v: want connector greeter with action greet", m)
	}
	var cfg, in, out struct {
		Properties map[string]any `json:"properties"`
	}
	for _, s := range []struct {
		raw  json.RawMessage
		into any
	}{{greet.ConfigSchema, &cfg}, {greet.InputSchema, &in}, {greet.OutputSchema, &out}} {
		if err := json.Unmarshal(s.raw, s.into); err != nil {
			t.Fatalf("schema %s: %v", s.raw, err)
		}
	}
	if cfg.Properties["greeting"] == nil || in.Properties["name"] == nil || out.Properties["message"] == nil {
		t.Fatalf("schemas: config %v, input %v, output %v: want greeting, name, message", cfg.Properties, in.Properties, out.Properties)
	}

	results, err := h.Execute(ctx, "greeter", []sdk.Invocation{
		{ID: "ada", Action: "greet", Config: map[string]any{"greeting": "Hello"}, Input: map[string]any{"name": "Ada"}},
		{ID: "grace", Action: "greet", Input: map[string]any{"name": "Grace"}},
		{ID: "nobody", Action: "greet", Config: map[string]any{"greeting": "Hi"}, Input: map[string]any{}},
		{ID: "wave", Action: "wave", Input: map[string]any{"name": "Ada"}},
		// The connection type greeter defines reaches it with every field, as the runner's
		// resolver hands it over; another type is refused.
		{ID: "signed", Action: "greet", Input: map[string]any{"name": "Ada"},
			Connection: &sdk.Connection{Type: "greeter.guestbook", Data: map[string]any{"url": "https://guests.example/book", "token": "tok-guestbook"}}},
		{ID: "foreign", Action: "greet", Input: map[string]any{"name": "Ada"},
			Connection: &sdk.Connection{Type: "bearer", Data: map[string]any{"token": "tok-bearer"}}},
	})
	if err != nil {
		t.Fatalf("execute: %v", err)
	}
	want := []struct {
		message, errCode string
		extra            map[string]any
	}{{"Hello, Ada!", "", nil}, {"Hello, Grace!", "", nil}, {"", "invalid_input", nil}, {"", "unknown_action", nil},
		{"Hello, Ada!", "", map[string]any{"guestbook": "https://guests.example/book"}}, {"", "invalid_connection", nil}}
	if len(results) != len(want) {
		t.Fatalf("%d results, want %d", len(results), len(want))
	}
	for i, r := range results {
		w := want[i]
		if w.errCode != "" {
			if r.Error == nil || r.Error.Code != w.errCode || r.Error.Retryable {
				t.Errorf("result %s: %+v, want permanent error %s", r.ID, r, w.errCode)
			}
			continue
		}
		if r.Error != nil || len(r.Outputs) != 1 || r.Outputs[0].Port != "" {
			t.Errorf("result %s: %+v, want one output on the default port", r.ID, r)
			continue
		}
		wantData := map[string]any{"message": w.message}
		maps.Copy(wantData, w.extra)
		if got := r.Outputs[0].Data; !reflect.DeepEqual(got, wantData) {
			t.Errorf("result %s: output %v, want %v", r.ID, got, wantData)
		}
	}

	checkArrivals(ctx, t, h, m)

	// Close asks the connector to shut down (go-plugin's GRPCController); it must exit.
	var script string
	if runtime.GOOS == "linux" {
		// The launcher execs greeter.py by its real path.
		if script, err = filepath.EvalSymlinks(filepath.Join(greeterDir, "greeter.py")); err != nil {
			t.Fatal(err)
		}
		if len(childrenRunning(script)) == 0 {
			t.Fatal("no greeter process found before Close: the exit check below would prove nothing")
		}
	}
	closed = true
	if err := h.Close(); err != nil {
		t.Errorf("close host: %v", err)
	}
	if script != "" {
		waitNoProcess(t, script, 10*time.Second)
	}
}

// checkArrivals polls the greeter's arrivals trigger through the host, as the router does: the
// first poll from an empty cursor returns the first guests and a cursor, each next poll with
// the cursor it got returns the following guests, none repeated, until total; bad config, a
// cursor that is not the trigger's and an unknown trigger are permanent errors.
func checkArrivals(ctx context.Context, t *testing.T, h *host.Host, m *sdk.Manifest) {
	t.Helper()
	arrivals, ok := m.Triggers["arrivals"]
	if !ok {
		t.Fatalf("manifest triggers %v: want arrivals", m.Triggers)
	}
	var cfg struct {
		Properties map[string]any `json:"properties"`
	}
	if err := json.Unmarshal(arrivals.ConfigSchema, &cfg); err != nil || cfg.Properties["batch"] == nil || cfg.Properties["total"] == nil {
		t.Fatalf("arrivals config schema %s (%v): want batch and total", arrivals.ConfigSchema, err)
	}

	config := map[string]any{"batch": 3, "total": 8}
	var (
		cursor string
		got    []string
		seen   = map[string]bool{}
	)
	for i, want := range [][]string{{"guest-1", "guest-2", "guest-3"}, {"guest-4", "guest-5", "guest-6"}, {"guest-7", "guest-8"}, nil} {
		res, err := h.Poll(ctx, "greeter", sdk.PollRequest{Trigger: "arrivals", Config: config, Cursor: cursor})
		if err != nil {
			t.Fatalf("poll %d (cursor %q): %v", i+1, cursor, err)
		}
		got = got[:0]
		for _, it := range res.Items {
			item, _ := it.(map[string]any)
			id, _ := item["id"].(string)
			if seen[id] {
				t.Errorf("poll %d: %s again", i+1, id)
			}
			seen[id] = true
			got = append(got, id)
			if n := strings.TrimPrefix(id, "guest-"); item["number"] != json.Number(n) || item["name"] != "Guest "+n {
				t.Errorf("poll %d: item %v, want number %s and name Guest %s", i+1, item, n, n)
			}
		}
		if !slices.Equal(got, want) {
			t.Fatalf("poll %d (cursor %q): items %v, want %v", i+1, cursor, got, want)
		}
		switch {
		case len(want) > 0 && (res.Cursor == "" || res.Cursor == cursor):
			t.Fatalf("poll %d: cursor %q after cursor %q: want a new one", i+1, res.Cursor, cursor)
		case len(want) == 0 && res.Cursor != cursor:
			t.Fatalf("poll with nothing new: cursor %q, want %q unchanged", res.Cursor, cursor)
		}
		cursor = res.Cursor
	}

	// Without total the guests keep coming; the default batch is 3.
	res, err := h.Poll(ctx, "greeter", sdk.PollRequest{Trigger: "arrivals", Cursor: cursor})
	if err != nil || len(res.Items) != 3 || res.Items[0].(map[string]any)["id"] != "guest-9" {
		t.Fatalf("poll without config after %q: %v, %v: want guest-9..11", cursor, res.Items, err)
	}

	for _, tc := range []struct {
		req  sdk.PollRequest
		code string
	}{
		{sdk.PollRequest{Trigger: "arrivals", Cursor: "not-a-number"}, "invalid_cursor"},
		{sdk.PollRequest{Trigger: "arrivals", Config: map[string]any{"batch": 0}}, "invalid_config"},
		{sdk.PollRequest{Trigger: "departures"}, "unknown_trigger"},
	} {
		_, err := h.Poll(ctx, "greeter", tc.req)
		var e *sdk.Error
		if !errors.As(err, &e) || e.Code != tc.code || e.Retryable {
			t.Errorf("poll %+v: %v, want a permanent %s", tc.req, err, tc.code)
		}
	}
}

func TestGreeterDescribe(t *testing.T) {
	greeterDir, err := filepath.Abs("greeter")
	if err != nil {
		t.Fatal(err)
	}
	python := testrig.GreeterPython(t, greeterDir)
	cmd := exec.Command(filepath.Join(greeterDir, "greeter"), "describe")
	cmd.Env = append(os.Environ(), "FLOWD_CONNECTOR_PYTHON="+python)
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("greeter describe: %v", err)
	}
	var m sdk.Manifest
	if err := json.Unmarshal(out, &m); err != nil {
		t.Fatalf("greeter describe printed %q: %v", out, err)
	}
	if _, ok := m.Actions["greet"]; m.Name != "greeter" || !ok {
		t.Fatalf("manifest %+v", m)
	}
	if _, ok := m.Triggers["arrivals"]; !ok {
		t.Fatalf("manifest triggers %v: want arrivals", m.Triggers)
	}
	// Its own connection type passes the host's checks, with the token secret.
	if _, err := host.ValidateManifest("greeter", out); err != nil {
		t.Fatalf("greeter's manifest: %v", err)
	}
	if gb, ok := m.Credentials["guestbook"]; !ok || !slices.Equal(gb.Secret, []string{"token"}) {
		t.Fatalf("manifest credentials %+v: want guestbook with secret token", m.Credentials)
	}

	// Started by hand, without the host's cookie, it refuses and says why.
	cmd = exec.Command(filepath.Join(greeterDir, "greeter"))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "FLOWD_CONNECTOR_PYTHON=" + python}
	out, err = cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || !strings.Contains(string(out), "This binary is a plugin") {
		t.Fatalf("greeter without the cookie: err %v, output %q", err, out)
	}
}

// TestGreeterHandshake checks the plugin side of go-plugin's protocol directly: the handshake
// line, the AutoMTLS certificate in it, that only the host's certificate gets in, and that the
// connector exits when the host it was started for is gone.
func TestGreeterHandshake(t *testing.T) {
	greeterDir, err := filepath.Abs("greeter")
	if err != nil {
		t.Fatal(err)
	}
	python := testrig.GreeterPython(t, greeterDir)
	hostCert, hostCertPEM := selfSigned(t)
	env := []string{
		"PATH=" + os.Getenv("PATH"),
		"FLOWD_CONNECTOR_PYTHON=" + python,
		"FLOWD_CONNECTOR_PLUGIN=7c1e5f0a9b3d4e62a8f1c0d9e7b6a534",
		"PLUGIN_PROTOCOL_VERSIONS=3,1,2",
		"PLUGIN_CLIENT_CERT=" + string(hostCertPEM),
	}
	cmd := exec.Command(filepath.Join(greeterDir, "greeter"))
	cmd.Env = append(env, fmt.Sprintf("%s=%d", sdk.ParentPIDEnv, os.Getpid()))
	cmd.Stderr = newTestWriter(t)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	line := firstLine(t, stdout, 30*time.Second)

	parts := strings.Split(strings.TrimSpace(line), "|")
	if len(parts) != 6 || parts[0] != "1" || parts[1] != "1" || parts[2] != "tcp" || parts[4] != "grpc" ||
		!strings.HasPrefix(parts[3], "127.0.0.1:") {
		t.Fatalf("handshake %q: want 1|1|tcp|127.0.0.1:PORT|grpc|CERT", line)
	}
	der, err := base64.RawStdEncoding.DecodeString(parts[5]) // as go-plugin's client decodes it
	if err != nil {
		t.Fatalf("certificate field: %v", err)
	}
	serverCert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	if err := serverCert.VerifyHostname("localhost"); err != nil {
		t.Fatal(err)
	}
	if pub, ok := serverCert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("server key %T: want ECDSA P-256", serverCert.PublicKey)
	}
	roots := x509.NewCertPool()
	roots.AddCert(serverCert)

	check := func(certs []tls.Certificate) error {
		creds := credentials.NewTLS(&tls.Config{Certificates: certs, RootCAs: roots, ServerName: "localhost", MinVersion: tls.VersionTLS12})
		conn, err := grpc.NewClient(parts[3], grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "plugin"})
		if err != nil {
			return err
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("health %v", resp.GetStatus())
		}
		return nil
	}
	if err := check([]tls.Certificate{hostCert}); err != nil {
		t.Fatalf("health check with the host's certificate: %v", err)
	}
	if err := check(nil); err == nil {
		t.Fatal("health check without a client certificate succeeded: mTLS is not enforced")
	}
	other, _ := selfSigned(t)
	if err := check([]tls.Certificate{other}); err == nil {
		t.Fatal("health check with a stranger's certificate succeeded: mTLS is not enforced")
	}

	// Without the host's certificate it refuses to serve rather than serve plaintext.
	noCert := exec.Command(filepath.Join(greeterDir, "greeter"))
	noCert.Env = append(slices.DeleteFunc(slices.Clone(env), func(kv string) bool { return strings.HasPrefix(kv, "PLUGIN_CLIENT_CERT=") }),
		fmt.Sprintf("%s=%d", sdk.ParentPIDEnv, os.Getpid()))
	out, err := noCert.Output()
	if !errors.As(err, new(*exec.ExitError)) || len(out) != 0 {
		t.Fatalf("greeter without PLUGIN_CLIENT_CERT: err %v, stdout %q: want a failure exit and no handshake", err, out)
	}

	// Started for a host that is not its parent (that host is gone), it exits at once.
	orphan := exec.Command(filepath.Join(greeterDir, "greeter"))
	orphan.Env = append(env, sdk.ParentPIDEnv+"=999999999")
	done := make(chan error, 1)
	if err := orphan.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- orphan.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("orphaned greeter exited 0, want a failure exit")
		}
	case <-time.After(30 * time.Second):
		_ = orphan.Process.Kill()
		t.Fatal("orphaned greeter still runs after 30s")
	}
}

// TestPythonTemplateThroughHost renders the scaffold's Python template as the scaffold does (its
// three placeholders, in file names and contents) and runs what a new connector starts as: its
// unit tests, describe, and its action and trigger through the host.
func TestPythonTemplateThroughHost(t *testing.T) {
	greeterDir, err := filepath.Abs("greeter")
	if err != nil {
		t.Fatal(err)
	}
	sdkDir, err := filepath.Abs(filepath.Join("..", "..", "sdk", "python"))
	if err != nil {
		t.Fatal(err)
	}
	python := testrig.GreeterPython(t, greeterDir)
	const name, module = "tick-echo", "tick_echo"
	src := filepath.Join(t.TempDir(), name)
	renderTemplate(t, filepath.Join("..", "..", "scaffold", "templates", "python"), src,
		strings.NewReplacer("__name__", name), strings.NewReplacer("{{.Name}}", name, "{{.Module}}", module, "{{.SDKDir}}", sdkDir))

	unit := exec.Command(python, "-B", "-m", "unittest")
	unit.Dir = src
	if out, err := unit.CombinedOutput(); err != nil {
		t.Fatalf("python -m unittest in the rendered connector: %v\n%s", err, out)
	}
	describe := exec.Command(filepath.Join(src, name), "describe")
	describe.Env = append(os.Environ(), "FLOWD_CONNECTOR_PYTHON="+python)
	out, err := describe.Output()
	if err != nil {
		t.Fatalf("%s describe: %v", name, err)
	}
	var described sdk.Manifest
	if err := json.Unmarshal(out, &described); err != nil || described.Name != name {
		t.Fatalf("%s describe printed %q (%v): want the manifest of %s", name, out, err, name)
	}

	logs := newTestWriter(t) // registered first: its cleanup runs after the host's
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(src, name), filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
	h, err := host.New(host.Options{
		Dir:    dir,
		Env:    []string{"FLOWD_CONNECTOR_PYTHON=" + python},
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	m, err := h.Manifest(ctx, name) // the host validates it against the manifest schema
	if err != nil {
		t.Fatalf("start %s through the host: %v", name, err)
	}
	if _, ok := m.Actions["echo"]; !ok {
		t.Fatalf("manifest actions %v: want echo", m.Actions)
	}
	if _, ok := m.Triggers["ticks"]; !ok {
		t.Fatalf("manifest triggers %v: want ticks", m.Triggers)
	}

	results, err := h.Execute(ctx, name, []sdk.Invocation{
		{ID: "hi", Action: "echo", Config: map[string]any{"prefix": "> "}, Input: map[string]any{"text": "hi"}},
		{ID: "none", Action: "echo", Input: map[string]any{}},
	})
	if err != nil {
		t.Fatalf("execute: %v", err)
	}
	if r := results[0]; r.Error != nil || len(r.Outputs) != 1 || !reflect.DeepEqual(r.Outputs[0].Data, map[string]any{"message": "> hi"}) {
		t.Errorf("echo: %+v, want one output {message: \"> hi\"}", r)
	}
	if r := results[1]; r.Error == nil || r.Error.Code != "invalid_input" || r.Error.Retryable {
		t.Errorf("echo without text: %+v, want a permanent invalid_input", r)
	}

	cursor := ""
	for i, want := range [][]string{{"tick-1", "tick-2"}, {"tick-3"}, nil} {
		res, err := h.Poll(ctx, name, sdk.PollRequest{Trigger: "ticks", Config: map[string]any{"total": 3, "batch": 2}, Cursor: cursor})
		if err != nil {
			t.Fatalf("poll %d (cursor %q): %v", i+1, cursor, err)
		}
		var got []string
		for _, it := range res.Items {
			item, _ := it.(map[string]any)
			id, _ := item["id"].(string)
			got = append(got, id)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("poll %d (cursor %q): items %v, want %v", i+1, cursor, got, want)
		}
		cursor = res.Cursor
	}
	if cursor != "3" {
		t.Errorf("cursor after the last tick: %q, want 3", cursor)
	}
}

// renderTemplate writes the template directory tmpl into dst with names and contents replaced,
// the launcher (the file named __name__) executable, as connectors/scaffold renders it.
func renderTemplate(t *testing.T, tmpl, dst string, names, contents *strings.Replacer) {
	t.Helper()
	entries, err := os.ReadDir(tmpl)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(dst, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(tmpl, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if e.Name() == "__name__" {
			mode = 0o755
		}
		target := filepath.Join(dst, contents.Replace(names.Replace(e.Name())))
		if err := os.WriteFile(target, []byte(contents.Replace(string(data))), mode); err != nil {
			t.Fatal(err)
		}
	}
}

// selfSigned makes a certificate shaped like the host's client certificate (connectors/host
// newClientTLS: go-plugin's AutoMTLS shape with P-256, which gRPC's BoringSSL accepts).
func selfSigned(t *testing.T) (tls.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"flowd"}},
		DNSNames:              []string{"localhost"},
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		NotBefore:             time.Now().Add(-30 * time.Second),
		NotAfter:              time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// firstLine reads one line from r, failing t when none arrives within timeout.
func firstLine(t *testing.T, r io.Reader, timeout time.Duration) string {
	t.Helper()
	got := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(r).ReadString('\n')
		got <- line
	}()
	select {
	case line := <-got:
		return line
	case <-time.After(timeout):
		t.Fatalf("no handshake line on stdout within %s", timeout)
		return ""
	}
}

// waitNoProcess polls /proc until no child of this test process runs script, failing t after
// timeout. Children only: another test run on the machine may run the greeter too.
func waitNoProcess(t *testing.T, script string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pids := childrenRunning(script)
		if len(pids) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("connector processes %v still run %s %s after the host closed", pids, script, timeout)
		}
		time.Sleep(50 * time.Millisecond) // polling /proc: there is nothing to wait on
	}
}

func childrenRunning(script string) []string {
	entries, _ := os.ReadDir("/proc")
	me := strconv.Itoa(os.Getpid())
	var pids []string
	for _, e := range entries {
		stat, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid ...: comm may hold spaces, so split after its closing paren.
		fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
		if len(fields) < 2 || fields[1] != me {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if slices.Contains(strings.Split(string(cmdline), "\x00"), script) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// testWriter sends the host's log lines to the test log, where they show on failure, until the
// test ends (a late line from a plugin's stderr must not log into a finished test).
type testWriter struct {
	t    *testing.T
	mu   sync.Mutex
	done bool
}

func newTestWriter(t *testing.T) *testWriter {
	w := &testWriter{t: t}
	t.Cleanup(func() {
		w.mu.Lock()
		defer w.mu.Unlock()
		w.done = true
	})
	return w
}

func (w *testWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.done {
		return len(p), nil
	}
	sc := bufio.NewScanner(strings.NewReader(string(p)))
	for sc.Scan() {
		w.t.Log(sc.Text())
	}
	return len(p), nil
}

// TestGreeterPinnedByPackage: a script connector is pinned by the digest of its package (the
// folder of its launcher), not by the launcher alone: pinned so, it starts; once a module
// beside the launcher changes, the host refuses it, naming the package.
func TestGreeterPinnedByPackage(t *testing.T) {
	greeterDir, err := filepath.Abs("greeter")
	if err != nil {
		t.Fatal(err)
	}
	python := testrig.GreeterPython(t, greeterDir)
	logs := newTestWriter(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A copy of the package, whose files the test changes; a .venv of the checkout stays out.
	pkg := filepath.Join(t.TempDir(), "greeter")
	if err := os.MkdirAll(pkg, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(greeterDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		data, err := os.ReadFile(filepath.Join(greeterDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(pkg, e.Name()), data, info.Mode().Perm()); err != nil {
			t.Fatal(err)
		}
	}
	if pkg, err = filepath.EvalSymlinks(pkg); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(pkg, "greeter"), filepath.Join(dir, "greeter")); err != nil {
		t.Fatal(err)
	}
	pins, err := host.Pins(ctx, dir)
	if err != nil || len(pins) != 1 || pins[0].Name != "greeter" || pins[0].Covers != pkg {
		t.Fatalf("pins %+v, %v: want greeter covering %s", pins, err, pkg)
	}
	pinFile := filepath.Join(t.TempDir(), "connectors.sha256")
	writePins := func(content string) {
		t.Helper()
		if err := os.WriteFile(pinFile, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	greet := func(h *host.Host) error {
		res, err := h.Execute(ctx, "greeter", []sdk.Invocation{{ID: "1", Action: "greet", Input: map[string]any{"name": "Ada"}}})
		if err == nil && res[0].Error != nil {
			err = res[0].Error
		}
		return err
	}
	newHost := func() *host.Host {
		t.Helper()
		h, err := host.New(host.Options{
			Dir: dir, PinFile: pinFile,
			Env:    []string{"FLOWD_CONNECTOR_PYTHON=" + python},
			Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		return h
	}

	// The launcher's own sha256 does not pin a script connector.
	launcher, err := os.ReadFile(filepath.Join(pkg, "greeter"))
	if err != nil {
		t.Fatal(err)
	}
	writePins(fmt.Sprintf("%x  greeter\n", sha256.Sum256(launcher)))
	if err := greet(newHost()); !errors.Is(err, host.ErrChecksumMismatch) {
		t.Fatalf("pinned by the launcher's sha256: %v, want %v", err, host.ErrChecksumMismatch)
	}

	writePins(pins[0].Line() + "\n")
	h := newHost()
	if err := greet(h); err != nil {
		t.Fatalf("pinned by its package digest: %v", err)
	}

	// One module of the package changes: the running process is replaced on reload, and the
	// new one is refused.
	module := filepath.Join(pkg, "greeter.py")
	src, err := os.ReadFile(module)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(module, append(src, "\n# changed after pinning\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if ch, err := h.Reload(ctx); err != nil || !slices.Equal(ch.Changed, []string{"greeter"}) {
		t.Fatalf("reload: %+v, %v: want greeter changed", ch, err)
	}
	for _, h := range []*host.Host{h, newHost()} {
		err := greet(h)
		if !errors.Is(err, host.ErrChecksumMismatch) || !strings.Contains(err.Error(), "package "+pkg) {
			t.Fatalf("a module changed after pinning: %v, want %v naming the package %s", err, host.ErrChecksumMismatch, pkg)
		}
	}
}
