package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

type greetConfig struct {
	Greeting string `json:"greeting"`
}

type person struct {
	Name string `json:"name"`
}

func testConnector() Connector {
	return Connector{
		Manifest: Manifest{Name: "greeter", Version: "0.1.0"},
		Actions: map[string]Handler{
			"greet": Action(ActionSpec{Title: "Greet", Ports: []string{"vip"}},
				func(_ context.Context, call Call[greetConfig, person]) ([]Output, error) {
					if call.Input.Name == "" {
						return nil, Errorf("no_name", "input has no name")
					}
					out := Output{Data: map[string]any{
						"text":    call.Config.Greeting + ", " + call.Input.Name,
						"attempt": call.Attempt,
						"key":     call.IdempotencyKey,
						"conn":    call.Connection != nil && call.Connection.Data["token"] == "t0k",
					}}
					if call.Input.Name == "Ada" {
						out.Port = "vip"
					}
					return []Output{out}, nil
				}),
			"sleep": Action(ActionSpec{Title: "Sleep"}, func(ctx context.Context, _ Call[any, any]) ([]Output, error) {
				<-ctx.Done() // honours ctx: returns its error
				return nil, ctx.Err()
			}),
			"stubborn": Action(ActionSpec{Title: "Stubborn"}, func(context.Context, Call[any, any]) ([]Output, error) {
				time.Sleep(time.Hour) // ignores ctx: the SDK must answer anyway
				return nil, nil
			}),
			"panic": Action(ActionSpec{Title: "Panic"}, func(context.Context, Call[any, any]) ([]Output, error) {
				var items []int
				return nil, fmt.Errorf("unreachable %d", items[3]) // index out of range
			}),
			"badport": Action(ActionSpec{Title: "Bad port"}, func(context.Context, Call[any, any]) ([]Output, error) {
				return []Output{{Port: "nowhere", Data: 1}}, nil
			}),
			"unencodable": Action(ActionSpec{Title: "Unencodable"}, func(context.Context, Call[any, any]) ([]Output, error) {
				return []Output{{Data: func() {}}}, nil
			}),
		},
		Triggers: map[string]TriggerHandler{
			"tick": Poller(TriggerSpec{Title: "Tick"}, func(_ context.Context, call PollCall[struct{ N int }]) (PollResult, error) {
				return PollResult{Items: []any{call.Config.N}, Cursor: call.Cursor + "+"}, nil
			}),
		},
	}
}

func TestInvokeTyped(t *testing.T) {
	c := testConnector()
	res := Invoke(context.Background(), c, Invocation{
		ID: "1", Action: "greet",
		Config:         map[string]any{"greeting": "Hello"},
		Input:          map[string]any{"name": "Ada"},
		Attempt:        2,
		IdempotencyKey: "k-1",
		Connection:     &Connection{Type: "bearer", Data: map[string]any{"token": "t0k"}},
	})
	if res.Error != nil {
		t.Fatal(res.Error)
	}
	if res.ID != "1" || len(res.Outputs) != 1 || res.Outputs[0].Port != "vip" {
		t.Fatalf("result %+v", res)
	}
	got, _ := json.Marshal(res.Outputs[0].Data)
	if want := `{"attempt":2,"conn":true,"key":"k-1","text":"Hello, Ada"}`; string(got) != want {
		t.Fatalf("output %s, want %s", got, want)
	}
}

func TestInvokeErrors(t *testing.T) {
	c := testConnector()
	short := time.Now().Add(50 * time.Millisecond)
	cases := []struct {
		name      string
		inv       Invocation
		code      string
		retryable bool
	}{
		{"handler error", Invocation{Action: "greet", Input: map[string]any{}}, "no_name", false},
		{"input type", Invocation{Action: "greet", Input: []any{1}}, "invalid_input", false},
		{"config type", Invocation{Action: "greet", Config: map[string]any{"greeting": 5}}, "invalid_config", false},
		{"unknown action", Invocation{Action: "nope"}, "unknown_action", false},
		{"ctx honoured", Invocation{Action: "sleep", Deadline: short}, "deadline_exceeded", true},
		{"ctx ignored", Invocation{Action: "stubborn", Deadline: short}, "deadline_exceeded", true},
		{"panic", Invocation{Action: "panic"}, "panic", false},
		{"undeclared port", Invocation{Action: "badport"}, "invalid_output", false},
		{"unencodable output", Invocation{Action: "unencodable"}, "invalid_output", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.inv.ID = "x"
			res := Invoke(context.Background(), c, tc.inv)
			if res.Error == nil {
				t.Fatalf("no error; outputs %+v", res.Outputs)
			}
			if res.Error.Code != tc.code || res.Error.Retryable != tc.retryable {
				t.Fatalf("error %+v, want code %s retryable %v", res.Error, tc.code, tc.retryable)
			}
		})
	}
}

func TestConcurrencyBound(t *testing.T) {
	var active, peak atomic.Int32
	release := make(chan struct{})
	running := make(chan struct{}, 10)
	c := Connector{
		Manifest:       Manifest{Name: "bound", Version: "1.0.0"},
		MaxConcurrency: 2,
		Actions: map[string]Handler{"block": Action(ActionSpec{}, func(context.Context, Call[any, any]) ([]Output, error) {
			n := active.Add(1)
			for p := peak.Load(); n > p; p = peak.Load() {
				if peak.CompareAndSwap(p, n) {
					break
				}
			}
			running <- struct{}{}
			<-release
			active.Add(-1)
			return nil, nil
		})},
	}
	e, err := newEngine(c, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	items := make([]wireInvocation, 6)
	for i := range items {
		items[i] = wireInvocation{ID: string(rune('a' + i)), Action: "block"}
	}
	done := make(chan []Result)
	go func() { done <- e.executeBatch(context.Background(), items) }()
	// Fill both slots, then let handlers finish one at a time, each release admitting the next
	// one: with a working bound no more than two ever run.
	<-running
	<-running
	for range len(items) - 2 {
		release <- struct{}{}
		<-running
	}
	release <- struct{}{}
	release <- struct{}{}
	results := <-done
	for i, r := range results {
		if r.Error != nil || r.ID != items[i].ID {
			t.Fatalf("result %d: %+v", i, r)
		}
	}
	if p := peak.Load(); p != 2 {
		t.Fatalf("peak concurrency %d, want 2", p)
	}
}

func TestDescribeFillsSpecs(t *testing.T) {
	m, err := testConnector().Describe()
	if err != nil {
		t.Fatal(err)
	}
	if m.Actions["greet"].Title != "Greet" || len(m.Actions) != 6 || m.Triggers["tick"].Title != "Tick" {
		t.Fatalf("manifest %+v", m)
	}
	c := testConnector()
	c.Manifest.Actions = map[string]ActionSpec{"ghost": {Title: "Ghost"}}
	if _, err := c.Describe(); err == nil || !strings.Contains(err.Error(), "ghost") {
		t.Fatalf("declared action without handler: err %v", err)
	}
	c = testConnector()
	c.Actions["zero"] = Handler{}
	if _, err := c.Describe(); err == nil || !strings.Contains(err.Error(), "zero") {
		t.Fatalf("zero handler: err %v", err)
	}
}

func TestPoll(t *testing.T) {
	e, err := newEngine(testConnector(), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	out, perr := e.poll(context.Background(), &wirePoll{Trigger: "tick", Config: []byte(`{"N":3}`), Cursor: "c"})
	if perr != nil {
		t.Fatal(perr)
	}
	if out.Cursor != "c+" || len(out.Items) != 1 || string(out.Items[0].(json.RawMessage)) != "3" {
		t.Fatalf("poll %+v", out)
	}
	if _, perr := e.poll(context.Background(), &wirePoll{Trigger: "nope"}); perr == nil || perr.Code != "unknown_trigger" {
		t.Fatalf("unknown trigger: %v", perr)
	}
}

func TestFilterStdout(t *testing.T) {
	line := "1|1|unix|/tmp/plugin123|grpc|MIIBcert\n"
	in := "early noise\n" + "partial " + line + "late noise\n" + line
	var out, errOut bytes.Buffer
	filterStdout(strings.NewReader(in), &out, &errOut)
	if out.String() != line {
		t.Fatalf("stdout %q, want only the handshake line", out.String())
	}
	if want := "early noise\npartial late noise\n" + line; errOut.String() != want {
		t.Fatalf("stderr %q, want %q", errOut.String(), want)
	}
}

func TestLoggerWritesHCLogJSON(t *testing.T) {
	var buf bytes.Buffer
	newLogger(&buf).Info("hello", "n", 1)
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["@message"] != "hello" || rec["@level"] != "info" || rec["n"] != 1.0 {
		t.Fatalf("record %v", rec)
	}
	if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", rec["@timestamp"].(string)); err != nil {
		t.Fatalf("timestamp: %v", err)
	}
}

func TestDecodeJSONKeepsLargeIntegers(t *testing.T) {
	v, err := DecodeJSON([]byte(`{"id": 12345678901234567890}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := v.(map[string]any)["id"].(json.Number).String(); got != "12345678901234567890" {
		t.Fatalf("id %s", got)
	}
	if _, err := DecodeJSON([]byte(`1 2`)); err == nil {
		t.Fatal("trailing data accepted")
	}
}

func TestHandlerErrorMapping(t *testing.T) {
	if e := handlerError(errors.New("x")); e.Code != "error" || e.Retryable {
		t.Fatalf("plain error: %+v", e)
	}
	if e := handlerError(fmtWrap(Retryable("busy", errors.New("later")))); e.Code != "busy" || !e.Retryable {
		t.Fatalf("wrapped sdk error: %+v", e)
	}
	if e := handlerError(fmtWrap(context.DeadlineExceeded)); e.Code != "deadline_exceeded" || !e.Retryable {
		t.Fatalf("deadline: %+v", e)
	}
}

func fmtWrap(err error) error { return fmt.Errorf("wrapped: %w", err) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestErrorJSON: RetryAfter is written as retryAfterMs (rounded up), left out when there is no
// hint, and read back; the other fields keep their names.
func TestErrorJSON(t *testing.T) {
	cases := []struct {
		err  Error
		json string
		back time.Duration
	}{
		{Error{Code: "c", Message: "m"}, `{"code":"c","message":"m","retryable":false}`, 0},
		{Error{Message: "m", Retryable: true, RetryAfter: 1500 * time.Millisecond}, `{"message":"m","retryable":true,"retryAfterMs":1500}`, 1500 * time.Millisecond},
		{Error{Message: "m", Retryable: true, RetryAfter: 1500 * time.Microsecond}, `{"message":"m","retryable":true,"retryAfterMs":2}`, 2 * time.Millisecond},
		{Error{Message: "m", Retryable: true, RetryAfter: -time.Second}, `{"message":"m","retryable":true}`, 0},
	}
	for _, c := range cases {
		for _, v := range []any{c.err, &c.err, Result{Error: &c.err}} {
			raw, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			if got := string(raw); !strings.Contains(got, c.json) {
				t.Errorf("%T %+v encodes as %s, want %s", v, c.err, got, c.json)
			}
		}
		var back Error
		if err := json.Unmarshal([]byte(c.json), &back); err != nil {
			t.Fatal(err)
		}
		if want := (Error{Code: c.err.Code, Message: c.err.Message, Retryable: c.err.Retryable, RetryAfter: c.back}); !reflect.DeepEqual(back, want) {
			t.Errorf("%s decodes as %+v, want %+v", c.json, back, want)
		}
	}
	var huge Error
	if err := json.Unmarshal([]byte(`{"message":"m","retryAfterMs":9223372036854775807}`), &huge); err != nil || huge.RetryAfter != math.MaxInt64 {
		t.Errorf("a huge retryAfterMs decodes as %v (%v), want the longest duration", huge.RetryAfter, err)
	}
}

// blockingConnector has one action that runs until release is closed and a Close that records
// whether that action was still running.
type blockingConnector struct {
	started, release chan struct{}
	running          atomic.Int32
	closes           atomic.Int32
	closedWhile      chan int32 // the running count Close saw
	closeBlocks      bool       // Close ignores its ctx and never returns
}

func newBlockingConnector() *blockingConnector {
	return &blockingConnector{started: make(chan struct{}, 8), release: make(chan struct{}), closedWhile: make(chan int32, 8)}
}

func (b *blockingConnector) connector() Connector {
	return Connector{
		Manifest: Manifest{Name: "blocking", Version: "1.0.0"},
		Actions: map[string]Handler{"block": Action(ActionSpec{}, func(context.Context, Call[any, any]) ([]Output, error) {
			b.running.Add(1)
			defer b.running.Add(-1)
			b.started <- struct{}{}
			<-b.release // ignores ctx on purpose
			return nil, nil
		})},
		MaxConcurrency: 2,
		Close: func(context.Context) error {
			b.closes.Add(1)
			b.closedWhile <- b.running.Load()
			if b.closeBlocks {
				select {}
			}
			return nil
		},
	}
}

// TestShutdownClosesAfterRunningHandlers: Close runs once, after the handler that was running
// has returned; the shutdown waits for it.
func TestShutdownClosesAfterRunningHandlers(t *testing.T) {
	b := newBlockingConnector()
	e, err := newEngine(b.connector(), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	e.drainTimeout = time.Minute // only the handler's return may end the wait
	go e.execute(context.Background(), &wireInvocation{ID: "1", Action: "block"})
	<-b.started
	done := make(chan struct{})
	go func() { e.shutdown(); close(done) }()

	// The shutdown holds the free slot and waits for the busy one.
	waitUntil(t, "shutdown to take the free handler slot", func() bool { return len(e.slots) == cap(e.slots) })
	select {
	case n := <-b.closedWhile:
		t.Fatalf("Close ran while %d handler(s) still ran", n)
	case <-done:
		t.Fatal("shutdown returned while a handler still ran")
	default:
	}
	close(b.release)
	<-done
	if n := <-b.closedWhile; n != 0 {
		t.Fatalf("Close saw %d running handler(s), want 0", n)
	}
	e.shutdown() // a second request (SIGTERM after the host's stop) does not close again
	if n := b.closes.Load(); n != 1 {
		t.Fatalf("Close ran %d times, want once", n)
	}
}

// TestShutdownIsBounded: a handler that never returns and a Close that ignores its ctx hold
// the exit up only for the drain and close timeouts.
func TestShutdownIsBounded(t *testing.T) {
	b := newBlockingConnector()
	b.closeBlocks = true
	t.Cleanup(func() { close(b.release) })
	e, err := newEngine(b.connector(), discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	e.drainTimeout, e.closeTimeout = 20*time.Millisecond, 20*time.Millisecond
	go e.execute(context.Background(), &wireInvocation{ID: "1", Action: "block"})
	<-b.started
	done := make(chan struct{})
	go func() { e.shutdown(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("shutdown did not return: it waited for a handler or a Close that never return")
	}
	if n := <-b.closedWhile; n != 1 {
		t.Fatalf("Close saw %d running handler(s), want the stuck one", n)
	}
}

// waitUntil polls cond until it holds or 10 seconds pass.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestRawFields(t *testing.T) {
	ok := []struct {
		schema string
		want   []string
	}{
		{``, nil},
		{`{"type":"object","properties":{"a":{"type":"string"}}}`, nil},
		{`{"properties":{"source":{"type":"string","x-flowd-raw":true},"n":{"type":"integer","x-flowd-raw":false}}}`, []string{"/source"}},
		{`{"properties":{"opts":{"properties":{"body":{"x-flowd-raw":true},"a/b~":{"x-flowd-raw":true}}}}}`, []string{"/opts/a~1b~0", "/opts/body"}},
		{`{"properties":{"script":{"$ref":"#/$defs/js","x-flowd-raw":true}},"$defs":{"js":{"type":"string"}}}`, []string{"/script"}},
		{`{"x-flowd-raw":true}`, []string{""}},
		{`{"properties":{"s":{"default":{"x-flowd-raw":1},"enum":[{"x-flowd-raw":"no"}]}}}`, nil}, // values, not schemas
	}
	for _, c := range ok {
		got, err := RawFields(json.RawMessage(c.schema))
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("RawFields(%s) = %q, %v; want %q", c.schema, got, err, c.want)
		}
	}
	bad := map[string]string{
		`{"properties":{"s":{"x-flowd-raw":"yes"}}}`:                         "/properties/s/x-flowd-raw",
		`{"$defs":{"js":{"type":"string","x-flowd-raw":true}}}`:              "/$defs/js/x-flowd-raw",
		`{"properties":{"l":{"items":{"x-flowd-raw":true}}}}`:                "/properties/l/items/x-flowd-raw",
		`{"anyOf":[{"properties":{"s":{"x-flowd-raw":true}}}]}`:              "/anyOf/0/properties/s/x-flowd-raw",
		`{"properties":{"m":{"additionalProperties":{"x-flowd-raw":true}}}}`: "/properties/m/additionalProperties/x-flowd-raw",
	}
	for schema, at := range bad {
		_, err := RawFields(json.RawMessage(schema))
		var rfe *RawFieldError
		if !errors.As(err, &rfe) || rfe.Pointer != at {
			t.Errorf("RawFields(%s) = %v, want a RawFieldError at %s", schema, err, at)
		}
	}
	if _, err := RawFields(json.RawMessage(`{"x-flowd-raw":`)); err == nil {
		t.Error("a schema that is not JSON passed")
	}
}

func TestInvokePoll(t *testing.T) {
	c := testConnector()
	res, err := InvokePoll(context.Background(), c, PollRequest{Trigger: "tick", Config: map[string]any{"n": 3}, Cursor: "c"})
	if err != nil || len(res.Items) != 1 || res.Items[0] != json.Number("3") || res.Cursor != "c+" {
		t.Fatalf("poll: %+v %v", res, err)
	}
	if _, err := InvokePoll(context.Background(), c, PollRequest{Trigger: "nope"}); err == nil || err.Code != "unknown_trigger" {
		t.Fatalf("unknown trigger: %v", err)
	}
	if _, err := InvokePoll(context.Background(), c, PollRequest{Trigger: "tick", Config: map[string]any{"n": "three"}}); err == nil || err.Code != "invalid_config" {
		t.Fatalf("undecodable config: %v", err)
	}
}
