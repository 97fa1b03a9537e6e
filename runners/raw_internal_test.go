package runners

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

// rawExecutor answers every invocation with the config it received; raw says which fields an
// action ("connector/action") marks raw, rawErr fails the question.
type rawExecutor struct {
	raw    map[string][]string
	rawErr error

	mu    sync.Mutex
	asked int // RawFields calls
}

func (e *rawExecutor) Execute(_ context.Context, _ string, items []sdk.Invocation) ([]sdk.Result, error) {
	out := make([]sdk.Result, len(items))
	for i, it := range items {
		out[i] = sdk.Result{ID: it.ID, Outputs: []sdk.Output{{Data: it.Config}}}
	}
	return out, nil
}

func (e *rawExecutor) RawFields(_ context.Context, connector, action string) ([]string, error) {
	e.mu.Lock()
	e.asked++
	e.mu.Unlock()
	return e.raw[connector+"/"+action], e.rawErr
}

// stepRunner is a runner that executes steps through exec, without Kafka.
func stepRunner(t *testing.T, exec Executor) *Runner {
	t.Helper()
	r, err := New(Config{
		Kafka: kafkax.Config{Brokers: []string{"unused:9092"}, RecordKeys: testrig.RecordKeys()},
		Host:  exec, Store: newFakeRuns(),
	})
	if err != nil {
		t.Fatal(err)
	}
	r.batchers = &batchers{exec: exec, max: 1, wait: time.Millisecond, ctx: context.Background(), m: map[string]*batcher{}}
	return r
}

func runStep(t *testing.T, r *Runner, node flowdoc.Node, input string) *envelope.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	w := &envelope.Work{ExecutionID: "x1", FlowID: "f1", Revision: 1, Token: "tok", Attempt: 1, Node: node, Input: json.RawMessage(input)}
	res, err := r.execute(ctx, w, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func outputOf(t *testing.T, res *envelope.Result) any {
	t.Helper()
	if res.Error != nil || len(res.Outputs) != 1 {
		t.Fatalf("result: error %+v, %d outputs; want one output", res.Error, len(res.Outputs))
	}
	var v any
	if err := json.Unmarshal(res.Outputs[0].Data, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestRawFieldsReachTheConnectorUnrendered: the fields an action marks raw reach it as the
// flow has them, `{{` and all, while its other fields are rendered.
func TestRawFieldsReachTheConnectorUnrendered(t *testing.T) {
	t.Parallel()
	exec := &rawExecutor{raw: map[string][]string{"c/raw": {"/opts", "/script"}}}
	r := stepRunner(t, exec)
	config := map[string]any{
		"script": "{{ not an expression",
		"opts":   map[string]any{"greeting": "Hello {{ input.name }}", "list": []any{"{{"}},
		"name":   "{{ input.name }}",
		"n":      "{{ input.n + 1 }}",
	}
	node := flowdoc.Node{ID: "A", Type: flowdoc.TypeAction, Connector: "c", Action: "raw", Config: config}
	got := outputOf(t, runStep(t, r, node, `{"name":"Ada","n":1}`))
	want := map[string]any{
		"script": "{{ not an expression",
		"opts":   map[string]any{"greeting": "Hello {{ input.name }}", "list": []any{"{{"}},
		"name":   "Ada",
		"n":      2.0,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("the connector got config %#v, want %#v", got, want)
	}

	// The same config for an action without raw fields is rendered throughout, and fails: the
	// compiled configs are not shared between the two.
	node.Action = "plain"
	if res := runStep(t, r, node, `{"name":"Ada","n":1}`); res.Error == nil || res.Error.Code != CodeInvalidConfig {
		t.Fatalf("action without raw fields: %+v, want %s", res.Error, CodeInvalidConfig)
	}

	// A config without templates is sent as it is, without asking for raw fields.
	asked := exec.asked
	node.Config = map[string]any{"script": "plain"}
	if got := outputOf(t, runStep(t, r, node, `{}`)); !reflect.DeepEqual(got, map[string]any{"script": "plain"}) {
		t.Fatalf("config %#v", got)
	}
	if exec.asked != asked {
		t.Fatal("raw fields asked for a config without templates")
	}

	// An escaped \{{ is unescaped in a rendered field, and kept in a raw one.
	node.Action = "raw"
	node.Config = map[string]any{"script": `\{{ kept }}`, "note": `\{{ literal }}`}
	got = outputOf(t, runStep(t, r, node, `{}`))
	if want := map[string]any{"script": `\{{ kept }}`, "note": "{{ literal }}"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("config %#v, want %#v", got, want)
	}
}

// TestRawFieldsUnknown: when the host cannot say which fields are raw (the connector does not
// start), the step fails as a call to it would, and is not rendered blindly.
func TestRawFieldsUnknown(t *testing.T) {
	t.Parallel()
	exec := &rawExecutor{rawErr: unavailableError()}
	r := stepRunner(t, exec)
	node := flowdoc.Node{ID: "A", Type: flowdoc.TypeAction, Connector: "c", Action: "raw", Config: map[string]any{"script": "{{ input.name }}"}}
	res := runStep(t, r, node, `{"name":"Ada"}`)
	if res.Error == nil || res.Error.Code != host.CodeUnavailable || !res.Error.Retryable {
		t.Fatalf("result error %+v, want retryable %s", res.Error, host.CodeUnavailable)
	}
}

func unavailableError() error {
	return errors.Join(errors.New("connector \"c\""), &sdk.Error{Code: host.CodeUnavailable, Message: "start failed", Retryable: true})
}

// TestCodeSourceIsRaw runs the built-in code connector through the plugin host, as a runner
// does: its JavaScript source reaches the script untouched, `{{` included, while a template in
// another field is rendered.
func TestCodeSourceIsRaw(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "connectors")
	hosttest.Build(t, dir, map[string]string{"code": "github.com/flowd/flowd/connectors/code"})
	h, err := host.New(host.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	r := stepRunner(t, h)
	node := flowdoc.Node{ID: "js", Type: flowdoc.TypeAction, Connector: "code", Action: "run", Config: map[string]any{
		"source":    "return '{{ not an expression' + ' ' + input.name;",
		"timeoutMs": "{{ input.ms }}", // a number only once rendered
	}}
	if got := outputOf(t, runStep(t, r, node, `{"name":"Ada","ms":2000}`)); got != "{{ not an expression Ada" {
		t.Fatalf("output %#v, want the source's own string", got)
	}
}
