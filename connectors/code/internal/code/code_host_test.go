package code_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/sdk"
)

// TestThroughHost builds the code binary and runs scripts in it through the host, including one
// that never ends: its time limit stops it, and the same plugin process serves the next call.
func TestThroughHost(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"code": "github.com/flowd/flowd/connectors/code"})
	h, err := host.New(host.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	m, err := h.Manifest(ctx, "code")
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "code" || m.Actions["run"].ConfigSchema == nil {
		t.Fatalf("manifest = %+v", m)
	}

	results, err := h.Execute(ctx, "code", []sdk.Invocation{
		{
			ID: "single", Action: "run",
			Config: map[string]any{"source": "const lines = input.lines;\n" +
				"return {count: lines.length, sum: lines.reduce((a, l) => a + l.qty, 0), flow: flow.id};"},
			Input:   map[string]any{"lines": []any{map[string]any{"qty": 2}, map[string]any{"qty": 5}}},
			Context: map[string]any{"flow": map[string]any{"id": "f1"}},
		},
		{
			ID: "each", Action: "run",
			Config: map[string]any{"source": "return input.lines.map(l => ({sku: l.sku}));", "emit": "each"},
			Input:  map[string]any{"lines": []any{map[string]any{"sku": "A"}, map[string]any{"sku": "B"}}},
		},
		{
			ID: "loop", Action: "run",
			Config: map[string]any{"source": "while (true) {}", "timeoutMs": 100},
		},
		{
			ID: "throws", Action: "run",
			Config: map[string]any{"source": "\nthrow new RangeError('qty ' + input.qty);"},
			Input:  map[string]any{"qty": -1},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	byID := map[string]sdk.Result{}
	for _, r := range results {
		byID[r.ID] = r
	}
	if got := outputsJSON(t, byID["single"]); got != `[{"count":2,"flow":"f1","sum":7}]` {
		t.Fatalf("single = %s", got)
	}
	if got := outputsJSON(t, byID["each"]); got != `[{"sku":"A"},{"sku":"B"}]` {
		t.Fatalf("each = %s", got)
	}
	if e := byID["loop"].Error; e == nil || e.Code != "timeout" || e.Retryable {
		t.Fatalf("endless loop = %+v, want a permanent timeout error", byID["loop"])
	}
	if e := byID["throws"].Error; e == nil || e.Code != "script_error" || e.Message != "RangeError: qty -1 (line 2, column 7)" {
		t.Fatalf("throws = %+v", byID["throws"])
	}

	// The loop was stopped inside the plugin, not by killing it: the next call is served.
	again, err := h.Execute(ctx, "code", []sdk.Invocation{{ID: "after", Action: "run", Config: map[string]any{"source": "return 1 + 1;"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := outputsJSON(t, again[0]); got != `[2]` {
		t.Fatalf("call after the loop = %s", got)
	}
}

func outputsJSON(t *testing.T, r sdk.Result) string {
	t.Helper()
	if r.Error != nil {
		t.Fatalf("result %s: %+v", r.ID, r.Error)
	}
	data := make([]any, len(r.Outputs))
	for i, o := range r.Outputs {
		if o.Port != "" {
			t.Fatalf("result %s: output on port %q", r.ID, o.Port)
		}
		data[i] = o.Data
	}
	b, err := json.Marshal(data)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
