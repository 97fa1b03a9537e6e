package host

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/problem"
)

// childEnv makes the test binary act as a host process that a test can SIGKILL.
const childEnv = "FLOWD_HOST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		os.Exit(childHost())
	}
	if os.Getenv(plaintextEnv) == "1" {
		plaintextPlugin() // never returns
	}
	code := m.Run()
	for _, dir := range []string{builtDir, builtV2Dir} {
		if dir != "" {
			_ = os.RemoveAll(dir)
		}
	}
	os.Exit(code)
}

// childHost starts the crasher through a Host, prints the plugin's PID and waits to be killed.
func childHost() int {
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	h, err := New(Options{Dir: os.Getenv(childEnv + "_DIR"), Logger: log})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	res, err := h.Execute(context.Background(), "crasher", []sdk.Invocation{{ID: "1", Action: "pid"}})
	if err != nil || res[0].Error != nil {
		fmt.Fprintln(os.Stderr, "child host:", err, res)
		return 1
	}
	fmt.Printf("PID %v\n", res[0].Outputs[0].Data)
	select {}
}

var (
	buildOnce sync.Once
	builtDir  string
)

// crasherDir builds the test connector once per test binary (TestMain removes it) and returns
// the directory holding it.
func crasherDir(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("flowd-host-test-%d", os.Getpid()))
		hosttest.Build(t, dir, map[string]string{"crasher": "./testdata/crasher"})
		builtDir = dir
	})
	if builtDir == "" {
		t.Fatal("building the crasher connector failed in an earlier test")
	}
	return builtDir
}

// logBuffer collects the host's log records so tests can assert on what connectors logged.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newHost(t *testing.T, opts Options) (*Host, *logBuffer) {
	t.Helper()
	if opts.Dir == "" {
		opts.Dir = crasherDir(t)
	}
	logs := &logBuffer{}
	var w io.Writer = logs
	if testing.Verbose() {
		w = io.MultiWriter(logs, t.Output())
	}
	opts.Logger = slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
	h, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	return h, logs
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// pidOf asks the crasher for its PID: it identifies the process that served the call.
func pidOf(t *testing.T, h *Host) int {
	t.Helper()
	res, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{{ID: "pid", Action: "pid"}})
	if err != nil || res[0].Error != nil {
		t.Fatalf("pid: %v %v", err, res)
	}
	pid, err := strconv.Atoi(res[0].Outputs[0].Data.(json.Number).String())
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

func TestDescribeSubcommand(t *testing.T) {
	bin := filepath.Join(crasherDir(t), "crasher")
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(bin, "describe")
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("describe: %v\n%s", err, stderr.String())
	}
	m, err := ValidateManifest("crasher", stdout.Bytes())
	if err != nil {
		t.Fatalf("describe output %q: %v", stdout.String(), err)
	}
	if m.Name != "crasher" || m.Actions["sleep"].ConfigSchema == nil || m.Triggers["count"].Title != "Count" {
		t.Fatalf("manifest %+v", m)
	}
	// The binary prints a line before Serve: it belongs on stderr, not in the JSON.
	if !strings.Contains(stderr.String(), "stray print before Serve") {
		t.Fatalf("stray print not on stderr: %q", stderr.String())
	}
}

func TestListAndManifest(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, filepath.Join(crasherDir(t), "crasher"), filepath.Join(dir, "crasher"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "README"), []byte("not a connector"), 0o644)
	_ = os.WriteFile(filepath.Join(dir, ".hidden"), []byte("#!/bin/sh\n"), 0o755)
	h, _ := newHost(t, Options{Dir: dir})
	if got := h.List(); len(got) != 1 || got[0] != "crasher" {
		t.Fatalf("List %v", got)
	}
	m, err := h.Manifest(ctxT(t), "crasher")
	if err != nil {
		t.Fatal(err)
	}
	if m.Version != "1.0.0" || len(m.Actions) != 8 {
		t.Fatalf("manifest %+v", m)
	}
	if _, err := h.Manifest(ctxT(t), "nope"); !errors.Is(err, ErrUnknownConnector) {
		t.Fatalf("unknown connector: %v", err)
	}
	if _, err := New(Options{Dir: filepath.Join(dir, "missing")}); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("missing dir: %v", err)
	}
}

func TestEcho(t *testing.T) {
	h, logs := newHost(t, Options{})
	res, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{{
		ID:     "a",
		Action: "echo",
		Config: map[string]any{"port": "copy", "print": true},
		Input:  map[string]any{"n": json.Number("12345678901234567890"), "s": "x"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res) != 1 || res[0].ID != "a" || res[0].Error != nil || len(res[0].Outputs) != 2 {
		t.Fatalf("result %+v", res)
	}
	for i, port := range []string{"", "copy"} {
		o := res[0].Outputs[i]
		got, _ := json.Marshal(o.Data)
		if o.Port != port || string(got) != `{"n":12345678901234567890,"s":"x"}` {
			t.Fatalf("output %d: port %q data %s", i, o.Port, got)
		}
	}
	// A print to stdout inside the handler reaches the host's log, not the protocol.
	waitFor(t, "handler's stray print in the host log", func() bool {
		return strings.Contains(logs.String(), "stray print inside a handler") &&
			strings.Contains(logs.String(), "stray print before Serve")
	})
}

func TestBatchAndConcurrentCalls(t *testing.T) {
	h, _ := newHost(t, Options{})
	pid := pidOf(t, h)

	batch := make([]sdk.Invocation, 100)
	for i := range batch {
		batch[i] = sdk.Invocation{ID: fmt.Sprintf("b%d", i), Action: "echo", Input: i}
	}
	res, err := h.Execute(ctxT(t), "crasher", batch)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range res {
		if r.ID != batch[i].ID || r.Error != nil || r.Outputs[0].Data.(json.Number).String() != strconv.Itoa(i) {
			t.Fatalf("batch item %d: %+v", i, r)
		}
	}

	var wg sync.WaitGroup
	errs := make(chan error, 100)
	for i := range 100 {
		wg.Go(func() {
			res, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{{ID: "c", Action: "echo", Input: i}})
			switch {
			case err != nil:
				errs <- err
			case res[0].Error != nil:
				errs <- res[0].Error
			case res[0].Outputs[0].Data.(json.Number).String() != strconv.Itoa(i):
				errs <- fmt.Errorf("call %d got %v", i, res[0].Outputs[0].Data)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := pidOf(t, h); got != pid {
		t.Fatalf("calls were served by pid %d and %d: want one process", pid, got)
	}
}

func TestCrashIsRetryableAndRestarts(t *testing.T) {
	h, _ := newHost(t, Options{})
	before := pidOf(t, h)
	res, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{
		{ID: "boom", Action: "crash"},
		{ID: "bystander", Action: "sleep", Config: map[string]any{"ms": 2000}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range res {
		if r.Error == nil || r.Error.Code != CodeCrashed || !r.Error.Retryable {
			t.Fatalf("item %s: %+v, want retryable %s", r.ID, r.Error, CodeCrashed)
		}
	}
	res, err = h.Execute(ctxT(t), "crasher", []sdk.Invocation{{ID: "next", Action: "echo", Input: "ok"}})
	if err != nil || res[0].Error != nil {
		t.Fatalf("call after crash: %v %+v", err, res)
	}
	after := pidOf(t, h)
	if after == before {
		t.Fatalf("pid %d served before and after the crash: not restarted", after)
	}
	waitGone(t, before)
}

func TestDeadlines(t *testing.T) {
	h, _ := newHost(t, Options{CallTimeout: 2 * time.Second})
	pid := pidOf(t, h)
	res, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{
		{ID: "slow", Action: "sleep", Config: map[string]any{"ms": 60_000}, Deadline: time.Now().Add(300 * time.Millisecond)},
		{ID: "fast", Action: "echo", Input: 1, Deadline: time.Now().Add(time.Minute)},
		{ID: "no-deadline", Action: "sleep", Config: map[string]any{"ms": 60_000}}, // bounded by CallTimeout
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, i := range []int{0, 2} {
		if e := res[i].Error; e == nil || e.Code != CodeDeadline || !e.Retryable {
			t.Fatalf("%s: %+v, want retryable %s", res[i].ID, e, CodeDeadline)
		}
	}
	if res[1].Error != nil || res[1].Outputs[0].Data.(json.Number).String() != "1" {
		t.Fatalf("fast item in the same batch: %+v", res[1])
	}
	if got := pidOf(t, h); got != pid {
		t.Fatalf("plugin restarted after a deadline (pid %d -> %d)", pid, got)
	}
	// The caller's own deadline bounds the call too.
	ctx, cancel := context.WithTimeout(ctxT(t), 300*time.Millisecond)
	defer cancel()
	res, err = h.Execute(ctx, "crasher", []sdk.Invocation{{ID: "s", Action: "sleep", Config: map[string]any{"ms": 60_000}}})
	if err != nil || res[0].Error == nil || res[0].Error.Code != CodeDeadline {
		t.Fatalf("ctx deadline: %v %+v", err, res)
	}
}

func TestPanicAndErrorsArePerItem(t *testing.T) {
	h, _ := newHost(t, Options{})
	pid := pidOf(t, h)
	res, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{
		{ID: "p", Action: "panic"},
		{ID: "f", Action: "fail"},
		{ID: "u", Action: "unknown"},
		{ID: "e", Action: "echo", Input: "fine"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		code      string
		retryable bool
	}{{"panic", false}, {"upstream_busy", true}, {"unknown_action", false}}
	for i, w := range want {
		if e := res[i].Error; e == nil || e.Code != w.code || e.Retryable != w.retryable {
			t.Fatalf("%s: %+v, want code %s retryable %v", res[i].ID, e, w.code, w.retryable)
		}
	}
	if res[3].Error != nil {
		t.Fatalf("echo beside a panic: %+v", res[3])
	}
	if got := pidOf(t, h); got != pid {
		t.Fatalf("plugin restarted after a panic (pid %d -> %d)", pid, got)
	}
}

// TestRetryAfterCrossesTheBoundary: the wait a connector asks for reaches the host's caller,
// from actions and triggers, in whole milliseconds rounded up.
func TestRetryAfterCrossesTheBoundary(t *testing.T) {
	h, _ := newHost(t, Options{})
	cases := []struct {
		id         string
		after, got time.Duration
	}{
		{"none", 0, 0},
		{"ms", 1500 * time.Millisecond, 1500 * time.Millisecond},
		{"sub-ms", time.Nanosecond, time.Millisecond},
		{"hour", time.Hour, time.Hour},
	}
	items := make([]sdk.Invocation, len(cases))
	for i, c := range cases {
		items[i] = sdk.Invocation{ID: c.id, Action: "fail", Config: map[string]any{"retryAfterNs": int64(c.after)}}
	}
	res, err := h.Execute(ctxT(t), "crasher", items)
	if err != nil {
		t.Fatal(err)
	}
	for i, c := range cases {
		if e := res[i].Error; e == nil || e.Code != "upstream_busy" || !e.Retryable || e.RetryAfter != c.got {
			t.Errorf("%s: %#v, want retryable upstream_busy with RetryAfter %s", c.id, e, c.got)
		}
	}

	_, err = h.Poll(ctxT(t), "crasher", sdk.PollRequest{Trigger: "busy", Config: map[string]any{"retryAfterNs": int64(2 * time.Second)}})
	if e := sdk.AsError(err); e == nil || e.Code != "upstream_busy" || !e.Retryable || e.RetryAfter != 2*time.Second {
		t.Fatalf("poll: %#v, want retryable upstream_busy with RetryAfter 2s", e)
	}
}

// TestRawFields: the host reads the raw config fields from the running connector's manifest.
func TestRawFields(t *testing.T) {
	h, _ := newHost(t, Options{})
	raw, err := h.RawFields(ctxT(t), "crasher", "config")
	if err != nil || !slices.Equal(raw, []string{"/script"}) {
		t.Fatalf("RawFields(config) = %q, %v; want [/script]", raw, err)
	}
	for _, action := range []string{"echo", "nope"} {
		if raw, err := h.RawFields(ctxT(t), "crasher", action); err != nil || raw != nil {
			t.Fatalf("RawFields(%s) = %q, %v; want none", action, raw, err)
		}
	}
	if _, err := h.RawFields(ctxT(t), "ghost", "a"); !errors.Is(err, ErrUnknownConnector) {
		t.Fatalf("unknown connector: %v", err)
	}
}

func TestPoll(t *testing.T) {
	h, _ := newHost(t, Options{})
	out, err := h.Poll(ctxT(t), "crasher", sdk.PollRequest{Trigger: "count", Config: map[string]any{"N": 2}, Cursor: "c0"})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(out)
	if want := `{"items":[{"after":"c0","i":0},{"after":"c0","i":1}],"cursor":"c2"}`; string(got) != want {
		t.Fatalf("poll %s, want %s", got, want)
	}
	_, err = h.Poll(ctxT(t), "crasher", sdk.PollRequest{Trigger: "nope"})
	if e := sdk.AsError(err); e == nil || e.Code != "unknown_trigger" {
		t.Fatalf("unknown trigger: %v", err)
	}
}

func TestPinFile(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "crasher")
	copyFile(t, filepath.Join(crasherDir(t), "crasher"), bin, 0o755)
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	pins := filepath.Join(t.TempDir(), "connectors.sha256")
	call := func(h *Host) error {
		_, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{{ID: "1", Action: "echo"}})
		return err
	}

	// sha256sum's own format, path and all.
	writeFile(t, pins, fmt.Sprintf("%x  %s\n", sum, bin))
	h, _ := newHost(t, Options{Dir: dir, PinFile: pins})
	if err := call(h); err != nil {
		t.Fatalf("matching pin refused: %v", err)
	}

	writeFile(t, pins, fmt.Sprintf("%s  crasher\n", strings.Repeat("ab", 32)))
	h, _ = newHost(t, Options{Dir: dir, PinFile: pins})
	err = call(h)
	if !errors.Is(err, ErrChecksumMismatch) || !strings.Contains(err.Error(), bin) {
		t.Fatalf("mismatching pin: %v, want %v naming the binary", err, ErrChecksumMismatch)
	}
	if err := call(h); !errors.Is(err, ErrChecksumMismatch) { // refused again, at once
		t.Fatalf("second call: %v", err)
	}

	writeFile(t, pins, fmt.Sprintf("%s  other\n", hex.EncodeToString(sum[:])))
	h, _ = newHost(t, Options{Dir: dir, PinFile: pins})
	if err := call(h); !errors.Is(err, ErrNotPinned) {
		t.Fatalf("unpinned binary: %v", err)
	}

	writeFile(t, pins, "xyz  crasher\n")
	if _, err := New(Options{Dir: dir, PinFile: pins}); err == nil || !strings.Contains(err.Error(), ":1:") {
		t.Fatalf("malformed pin file: %v", err)
	}
}

func TestManifestNameMustMatchBinary(t *testing.T) {
	dir := t.TempDir()
	copyFile(t, filepath.Join(crasherDir(t), "crasher"), filepath.Join(dir, "other"), 0o755)
	h, _ := newHost(t, Options{Dir: dir})
	_, err := h.Manifest(ctxT(t), "other")
	var problems problem.List
	if !errors.Is(err, ErrInvalidManifest) || !errors.As(err, &problems) || problems[0].Path != "/name" {
		t.Fatalf("err %v, want %v with a /name problem", err, ErrInvalidManifest)
	}
}

func TestValidateManifest(t *testing.T) {
	ok := `{"name":"x","version":"1.2.3","actions":{"a":{"title":"A","configSchema":{"type":"object"},"ports":["success","error"]}},"credentialTypes":["oauth2"]}`
	if _, err := ValidateManifest("x", []byte(ok)); err != nil {
		t.Fatalf("valid manifest: %v", err)
	}
	cases := map[string]struct{ doc, path string }{
		"not json":         {`{`, ""},
		"no actions":       {`{"name":"x","version":"1.0.0"}`, ""},
		"bad version":      {`{"name":"x","version":"one","actions":{"a":{"title":"A"}}}`, "/version"},
		"missing title":    {`{"name":"x","version":"1.0.0","actions":{"a":{}}}`, "/actions/a/title"},
		"unknown field":    {`{"name":"x","version":"1.0.0","actions":{"a":{"title":"A","tilte":"B"}}}`, "/actions/a/tilte"},
		"bad schema":       {`{"name":"x","version":"1.0.0","actions":{"a":{"title":"A","configSchema":{"type":"strnig"}}}}`, "/actions/a/configSchema/type"},
		"dangling ref":     {`{"name":"x","version":"1.0.0","actions":{"a":{"title":"A","inputSchema":{"$ref":"#/$defs/nope"}}}}`, "/actions/a/inputSchema"},
		"bad credential":   {`{"name":"x","version":"1.0.0","actions":{"a":{"title":"A"}},"credentialTypes":["magic"]}`, "/credentialTypes/0"},
		"bad trigger name": {`{"name":"x","version":"1.0.0","triggers":{"9x":{"title":"T"}}}`, "/triggers/9x"},
		"misplaced raw":    {`{"name":"x","version":"1.0.0","actions":{"a":{"title":"A","configSchema":{"$defs":{"js":{"x-flowd-raw":true}}}}}}`, "/actions/a/configSchema/$defs/js/x-flowd-raw"},
		"raw not boolean":  {`{"name":"x","version":"1.0.0","triggers":{"t":{"title":"T","configSchema":{"properties":{"s":{"x-flowd-raw":"yes"}}}}}}`, "/triggers/t/configSchema/properties/s/x-flowd-raw"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ValidateManifest("x", []byte(tc.doc))
			var problems problem.List
			if !errors.Is(err, ErrInvalidManifest) || !errors.As(err, &problems) {
				t.Fatalf("err %v, want %v with problems", err, ErrInvalidManifest)
			}
			for _, p := range problems {
				if p.Path == tc.path {
					return
				}
			}
			t.Fatalf("problems %v: none at %q", problems, tc.path)
		})
	}
}

func TestHealthCheckNoticesDeadPlugin(t *testing.T) {
	h, logs := newHost(t, Options{HealthInterval: 50 * time.Millisecond, RestartBackoff: time.Millisecond})
	pid := pidOf(t, h)
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the health check to retire the dead plugin", func() bool {
		return strings.Contains(logs.String(), "connector died")
	})
	if got := pidOf(t, h); got == pid {
		t.Fatalf("still pid %d", got)
	}
}

func TestCloseKillsPlugins(t *testing.T) {
	h, _ := newHost(t, Options{})
	pid := pidOf(t, h)
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	waitGone(t, pid)
	if _, err := h.Execute(ctxT(t), "crasher", []sdk.Invocation{{ID: "1", Action: "echo"}}); !errors.Is(err, ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
}

// TestCloseRunsTheConnectorsClose: stopping the host, or SIGTERM to the plugin, lets the
// connector release what it holds (its Close writes a marker) before the process exits.
func TestCloseRunsTheConnectorsClose(t *testing.T) {
	t.Run("host closes", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "closed")
		h, _ := newHost(t, Options{Env: []string{"FLOWD_CONNECTOR_CLOSE_MARKER=" + marker}})
		pid := pidOf(t, h)
		if _, err := os.Stat(marker); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("marker before Close: %v", err)
		}
		if err := h.Close(); err != nil {
			t.Fatal(err)
		}
		if !processGone(pid) {
			t.Fatalf("plugin %d still running after Close", pid)
		}
		if got, err := os.ReadFile(marker); err != nil || string(got) != "closed" {
			t.Fatalf("marker %q, %v: the connector's Close did not run", got, err)
		}
	})
	t.Run("SIGTERM", func(t *testing.T) {
		marker := filepath.Join(t.TempDir(), "closed")
		h, _ := newHost(t, Options{Env: []string{"FLOWD_CONNECTOR_CLOSE_MARKER=" + marker}})
		pid := pidOf(t, h)
		if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		waitGone(t, pid)
		if got, err := os.ReadFile(marker); err != nil || string(got) != "closed" {
			t.Fatalf("marker %q, %v: the connector's Close did not run", got, err)
		}
	})
}

func TestBackoff(t *testing.T) {
	s := &supervisor{h: &Host{opts: Options{RestartBackoff: 100 * time.Millisecond, MaxRestartBackoff: time.Second}}}
	ms := time.Millisecond
	for i, want := range []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second} {
		if got := s.backoff(i + 1); got != want {
			t.Fatalf("backoff(%d) = %s, want %s", i+1, got, want)
		}
	}
}

// TestSIGKILLOfHostLeavesNoPlugin runs a host in a child process (this test binary again),
// SIGKILLs it, and checks that its plugin does not outlive it.
func TestSIGKILLOfHostLeavesNoPlugin(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"=1", childEnv+"_DIR="+crasherDir(t))
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := readPID(t, out)
	if processGone(pid) {
		t.Fatalf("plugin %d not running before the kill", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitGone(t, pid)
}

// TestPluginExitsWhenParentDies checks the SDK's own guarantee, without the host's help: the
// plugin's parent is a shell that gets SIGKILLed.
func TestPluginExitsWhenParentDies(t *testing.T) {
	bin := filepath.Join(crasherDir(t), "crasher")
	cmd := exec.Command("sh", "-c", sdk.ParentPIDEnv+`=$$ "$0" >/dev/null 2>&1 & echo "PID $!"; wait`, bin)
	cmd.Env = append(os.Environ(), sdk.Handshake.MagicCookieKey+"="+sdk.Handshake.MagicCookieValue, "PLUGIN_PROTOCOL_VERSIONS=1")
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	pid := readPID(t, out)
	if processGone(pid) {
		t.Fatalf("plugin %d not running before the kill", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	waitGone(t, pid)
}

func readPID(t *testing.T, r io.Reader) int {
	t.Helper()
	line := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "PID ") {
				line <- sc.Text()
				return
			}
		}
		close(line)
	}()
	select {
	case l, ok := <-line:
		if !ok {
			t.Fatal("child exited without printing the plugin PID")
		}
		pid, err := strconv.Atoi(strings.TrimPrefix(l, "PID "))
		if err != nil {
			t.Fatal(err)
		}
		return pid
	case <-time.After(time.Minute):
		t.Fatal("no PID from the child within a minute")
	}
	return 0
}

// processGone: no such process, or only its zombie (it has exited; its new parent reaps it).
func processGone(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// Format: pid (comm) state ...; comm may contain spaces and parentheses.
	s := string(stat)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return false
	}
	state := s[i+2]
	return state == 'Z' || state == 'X'
}

func waitGone(t *testing.T, pid int) {
	t.Helper()
	waitFor(t, fmt.Sprintf("process %d to exit", pid), func() bool { return processGone(pid) })
}

// waitFor polls cond until it holds or 30 seconds pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	data, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, data, mode); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
