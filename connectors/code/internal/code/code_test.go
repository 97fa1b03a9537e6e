package code

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/sdk"
)

func invoke(t *testing.T, config map[string]any, input any, callCtx map[string]any) sdk.Result {
	t.Helper()
	return sdk.Invoke(context.Background(), Connector(), sdk.Invocation{
		ID: "1", Action: "run", Config: config, Input: input, Context: callCtx,
	})
}

// outputs returns each default-port output as JSON.
func outputs(t *testing.T, res sdk.Result) []string {
	t.Helper()
	if res.Error != nil {
		t.Fatalf("unexpected error: %+v", res.Error)
	}
	out := make([]string, len(res.Outputs))
	for i, o := range res.Outputs {
		if o.Port != "" {
			t.Fatalf("output %d on port %q, want the default port", i, o.Port)
		}
		b, err := json.Marshal(o.Data)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = string(b)
	}
	return out
}

func wantError(t *testing.T, res sdk.Result, code string, retryable bool, contains ...string) {
	t.Helper()
	if res.Error == nil {
		t.Fatalf("want error %s, got outputs %+v", code, res.Outputs)
	}
	if res.Error.Code != code || res.Error.Retryable != retryable {
		t.Fatalf("error = %+v, want code %s retryable=%v", res.Error, code, retryable)
	}
	for _, s := range contains {
		if !strings.Contains(res.Error.Message, s) {
			t.Errorf("message %q does not contain %q", res.Error.Message, s)
		}
	}
}

func TestReturnValues(t *testing.T) {
	callCtx := map[string]any{
		"steps":     map[string]any{"fetch": map[string]any{"status": 200}},
		"flow":      map[string]any{"id": "f1"},
		"settings":  map[string]any{"rate": 1.5},
		"execution": map[string]any{"id": "e1"},
	}
	input := map[string]any{"qty": 4, "items": []any{"a", "b"}, "name": "ada"}
	tests := []struct{ src, want string }{
		{`return {total: input.qty * settings.rate, status: steps.fetch.status, ref: flow.id + "/" + execution.id};`,
			`{"ref":"f1/e1","status":200,"total":6}`},
		{`return Array.isArray(input.items) && input.items.map(function (s) { return s.toUpperCase(); });`, `["A","B"]`},
		{`const {name, ...rest} = input; return [name, Object.keys(rest).sort()];`, `["ada",["items","qty"]]`},
		{`return "plain string";`, `"plain string"`},
		{`return 42;`, `42`},
		{`input.qty = 5;`, `null`}, // no return: null
		{`return undefined;`, `null`},
		{`return {d: new Date(0), toJSON: undefined};`, `{"d":"1970-01-01T00:00:00.000Z"}`},
		// No I/O and no module system.
		{`return [typeof require, typeof fetch, typeof setTimeout, typeof console, typeof process];`,
			`["undefined","undefined","undefined","undefined","undefined"]`},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			got := outputs(t, invoke(t, map[string]any{"source": tt.src}, input, callCtx))
			if len(got) != 1 || got[0] != tt.want {
				t.Fatalf("outputs = %v, want [%s]", got, tt.want)
			}
		})
	}
}

func TestFreshRuntimePerCall(t *testing.T) {
	src := `if (typeof leaked !== "undefined") { return "leaked"; } globalThis.leaked = 1; input.x = 2; return "clean";`
	for i := range 2 {
		got := outputs(t, invoke(t, map[string]any{"source": src}, map[string]any{}, nil))
		if got[0] != `"clean"` {
			t.Fatalf("call %d saw state from an earlier call: %v", i, got)
		}
	}
}

func TestEmitEach(t *testing.T) {
	got := outputs(t, invoke(t, map[string]any{
		"source": `return input.map(function (n) { return {n: n * 2}; });`,
		"emit":   "each",
	}, []any{1, 2, 3}, nil))
	if strings.Join(got, ",") != `{"n":2},{"n":4},{"n":6}` {
		t.Fatalf("outputs = %v", got)
	}
	// An empty array emits nothing: the step filters the item out.
	if got := outputs(t, invoke(t, map[string]any{"source": `return [];`, "emit": "each"}, nil, nil)); len(got) != 0 {
		t.Fatalf("outputs for [] = %v", got)
	}
	wantError(t, invoke(t, map[string]any{"source": `return {a: 1};`, "emit": "each"}, nil, nil),
		"invalid_result", false, "array")
}

func TestScriptErrors(t *testing.T) {
	t.Run("exception with line", func(t *testing.T) {
		src := "const a = 1;\nconst b = input.missing;\nreturn b.deeper;"
		wantError(t, invoke(t, map[string]any{"source": src}, map[string]any{}, nil),
			"script_error", false, "TypeError", "line 3")
	})
	t.Run("thrown error", func(t *testing.T) {
		wantError(t, invoke(t, map[string]any{"source": "\n\nthrow new Error('bad order ' + input.id);"}, map[string]any{"id": 7}, nil),
			"script_error", false, "Error: bad order 7", "line 3")
	})
	t.Run("syntax error with line", func(t *testing.T) {
		wantError(t, invoke(t, map[string]any{"source": "const a = 1;\nreturn a +;"}, nil, nil),
			"syntax_error", false, "SyntaxError", "line 2")
	})
	t.Run("require is not defined", func(t *testing.T) {
		wantError(t, invoke(t, map[string]any{"source": `const fs = require("fs"); return fs.readFileSync("/etc/passwd");`}, nil, nil),
			"script_error", false, "ReferenceError", "require is not defined", "line 1")
	})
	t.Run("strict mode", func(t *testing.T) {
		wantError(t, invoke(t, map[string]any{"source": `undeclared = 1; return undeclared;`}, nil, nil),
			"script_error", false, "ReferenceError")
	})
	t.Run("unserialisable result", func(t *testing.T) {
		wantError(t, invoke(t, map[string]any{"source": `const o = {}; o.self = o; return o;`}, nil, nil),
			"script_error", false, "circular")
	})
}

func TestEndlessLoopStoppedByTimeout(t *testing.T) {
	for _, src := range []string{
		`while (true) {}`,
		`for (;;) { try { while (true) {} } catch (e) {} finally { continue; } }`, // the interrupt cannot be caught
	} {
		t.Run(src, func(t *testing.T) {
			res := invoke(t, map[string]any{"source": src, "timeoutMs": 50}, nil, nil)
			wantError(t, res, "timeout", false, "timeoutMs")
		})
	}
}

func TestCallDeadlineStopsScript(t *testing.T) {
	// The runner's deadline is shorter than timeoutMs: the call answers with a retryable
	// deadline error rather than waiting for the script's own limit.
	res := sdk.Invoke(context.Background(), Connector(), sdk.Invocation{
		ID: "1", Action: "run",
		Config:   map[string]any{"source": `while (true) {}`, "timeoutMs": 30000},
		Deadline: time.Now().Add(50 * time.Millisecond),
	})
	if res.Error == nil || !res.Error.Retryable {
		t.Fatalf("want a retryable deadline error, got %+v", res)
	}
}

func TestStackOverflow(t *testing.T) {
	wantError(t, invoke(t, map[string]any{"source": `function f(n) { return f(n + 1) + 1; } return f(0);`}, nil, nil),
		"stack_overflow", false)
}

func TestMemoryLimit(t *testing.T) {
	// Hold ever more memory; the watchdog interrupts once the heap grew past the budget. The
	// timeout is generous so that only the memory limit can stop it.
	src := `const keep = []; while (true) { keep.push(new Array(1024).fill("x" + keep.length)); }`
	res := invoke(t, map[string]any{"source": src, "timeoutMs": 30000}, nil, nil)
	wantError(t, res, "memory_limit", false, "MiB")
}

func TestOutputSizeCap(t *testing.T) {
	src := `return "x".repeat(2000);`
	wantError(t, invoke(t, map[string]any{"source": src, "maxOutputBytes": 1000}, nil, nil),
		"output_too_large", false, "1000")
	if got := outputs(t, invoke(t, map[string]any{"source": src, "maxOutputBytes": 2002}, nil, nil)); len(got[0]) != 2002 {
		t.Fatalf("output of %d bytes, want 2002", len(got[0]))
	}
}

func TestConfigLimits(t *testing.T) {
	for name, cfg := range map[string]map[string]any{
		"empty source":       {"source": ""},
		"source too large":   {"source": "//" + strings.Repeat("x", MaxSourceBytes)},
		"timeout too long":   {"source": "return 1;", "timeoutMs": 30001},
		"negative timeout":   {"source": "return 1;", "timeoutMs": -1},
		"output cap too big": {"source": "return 1;", "maxOutputBytes": MaxOutputBytesLimit + 1},
		"unknown emit":       {"source": "return 1;", "emit": "all"},
	} {
		t.Run(name, func(t *testing.T) {
			wantError(t, invoke(t, cfg, nil, nil), "invalid_config", false)
		})
	}
}

func TestManifest(t *testing.T) {
	m, err := Connector().Describe()
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != Name || m.Version != Version || m.Actions["run"].Title == "" {
		t.Fatalf("manifest = %+v", m)
	}
	// The host's own check: schemas/connector.schema.json, and every embedded schema compiles.
	doc, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := host.ValidateManifest(Name, doc); err != nil {
		t.Fatal(err)
	}
}
