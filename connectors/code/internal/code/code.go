// Package code is the built-in `code` connector: its `run` action executes a JavaScript
// function body (github.com/dop251/goja) over the step's input, with no I/O and bounded time,
// call depth, output and memory (see limits.go).
package code

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/dop251/goja"
	"github.com/dop251/goja/parser"

	"github.com/flowd/flowd/connectors/sdk"
)

// Name and Version identify the connector in its manifest.
const (
	Name    = "code"
	Version = "1.1.0" // 1.1: source is raw (never template-rendered)
)

// Emit modes.
const (
	EmitSingle = "single" // the result is one output (the default)
	EmitEach   = "each"   // the result must be an array; each element is one output
)

// RunConfig is the config of the `run` action.
type RunConfig struct {
	// Source is the body of a function: it returns the result with `return`. A body without a
	// return yields null.
	Source         string `json:"source"`
	TimeoutMs      int    `json:"timeoutMs"`      // default 1000, at most 30000
	MaxOutputBytes int    `json:"maxOutputBytes"` // default 1 MiB, at most 16 MiB
	Emit           string `json:"emit"`           // "single" (default) or "each"
}

// scriptName appears in stack traces; the source is wrapped in a function whose first line is
// the wrapper's, hence lineOffset.
const (
	scriptName = "code.js"
	wrapBefore = "(function () {\n"
	wrapAfter  = "\n})()"
	lineOffset = 1
)

// globals are what the script sees: input and the Invocation.Context entries.
var contextKeys = []string{"steps", "flow", "settings", "execution"}

// Connector returns the code connector.
func Connector() sdk.Connector {
	return sdk.Connector{
		Manifest: sdk.Manifest{
			Name:        Name,
			Version:     Version,
			Description: "Runs a JavaScript function body over the input, without I/O, within time and memory limits.",
		},
		Actions: map[string]sdk.Handler{
			"run": sdk.Action(runSpec, func(ctx context.Context, call sdk.Call[RunConfig, json.RawMessage]) ([]sdk.Output, error) {
				items, err := Run(ctx, call.Config, call.Input, call.Context)
				if err != nil {
					return nil, err
				}
				outs := make([]sdk.Output, len(items))
				for i, it := range items {
					outs[i] = sdk.Output{Data: it}
				}
				return outs, nil
			}),
		},
		// Scripts are CPU-bound: more at once than cores only adds latency, and fewer scripts in
		// flight keep the process-wide memory measure attributable.
		MaxConcurrency: max(2, runtime.GOMAXPROCS(0)),
	}
}

type limits struct {
	timeout   time.Duration
	maxOutput int
	each      bool
}

func checkConfig(cfg RunConfig) (limits, error) {
	l := limits{timeout: DefaultTimeout, maxOutput: DefaultMaxOutputBytes}
	switch {
	case cfg.Source == "":
		return l, sdk.Errorf("invalid_config", "source is empty")
	case len(cfg.Source) > MaxSourceBytes:
		return l, sdk.Errorf("invalid_config", "source is %d bytes, the limit is %d", len(cfg.Source), MaxSourceBytes)
	case cfg.TimeoutMs < 0 || time.Duration(cfg.TimeoutMs)*time.Millisecond > MaxTimeout:
		return l, sdk.Errorf("invalid_config", "timeoutMs must be between 1 and %d", MaxTimeout.Milliseconds())
	case cfg.MaxOutputBytes < 0 || cfg.MaxOutputBytes > MaxOutputBytesLimit:
		return l, sdk.Errorf("invalid_config", "maxOutputBytes must be between 1 and %d", MaxOutputBytesLimit)
	}
	switch cfg.Emit {
	case "", EmitSingle:
	case EmitEach:
		l.each = true
	default:
		return l, sdk.Errorf("invalid_config", "emit must be %q or %q, not %q", EmitSingle, EmitEach, cfg.Emit)
	}
	if cfg.TimeoutMs > 0 {
		l.timeout = time.Duration(cfg.TimeoutMs) * time.Millisecond
	}
	if cfg.MaxOutputBytes > 0 {
		l.maxOutput = cfg.MaxOutputBytes
	}
	return l, nil
}

// Run executes the script in a fresh runtime (nothing leaks between calls) and returns its
// result as JSON: one item, or one per array element with emit "each".
func Run(ctx context.Context, cfg RunConfig, input json.RawMessage, callCtx map[string]any) ([]json.RawMessage, error) {
	lim, err := checkConfig(cfg)
	if err != nil {
		return nil, err
	}
	prog, err := compile(cfg.Source)
	if err != nil {
		return nil, err
	}

	vm := goja.New()
	vm.SetMaxCallStackSize(MaxCallStackSize)
	if err := setGlobals(vm, input, callCtx); err != nil {
		return nil, err
	}

	running.Add(1)
	defer running.Add(-1)
	stop := watch(ctx, vm, lim.timeout)
	defer stop()

	var result string
	err = func() error {
		v, err := vm.RunProgram(prog)
		if err != nil {
			return err
		}
		// Serialise inside the VM, still under the watchdog: toJSON methods are script code.
		s, err := stringify(vm, v)
		result = s
		return err
	}()
	if err != nil {
		return nil, runError(ctx, err)
	}
	if len(result) > lim.maxOutput {
		return nil, sdk.Errorf("output_too_large", "the result is %d bytes of JSON, the limit is %d (maxOutputBytes)", len(result), lim.maxOutput)
	}
	if !lim.each {
		return []json.RawMessage{json.RawMessage(result)}, nil
	}
	if result == "" || result[0] != '[' {
		return nil, sdk.Errorf("invalid_result", "emit %q needs the script to return an array", EmitEach)
	}
	var items []json.RawMessage
	if err := json.Unmarshal([]byte(result), &items); err != nil {
		return nil, sdk.Permanent("invalid_result", fmt.Errorf("result: %w", err))
	}
	return items, nil
}

// setGlobals hands the script plain JavaScript values (JSON.parse in the VM) rather than
// wrapped Go maps, so Array.isArray, spreading and mutation behave as in any JS engine.
func setGlobals(vm *goja.Runtime, input json.RawMessage, callCtx map[string]any) error {
	parse, ok := goja.AssertFunction(vm.Get("JSON").ToObject(vm).Get("parse"))
	if !ok {
		return errors.New("code: JSON.parse is not a function")
	}
	set := func(name string, raw []byte) error {
		v, err := parse(goja.Undefined(), vm.ToValue(string(raw)))
		if err != nil {
			return sdk.Permanent("invalid_input", fmt.Errorf("%s: %w", name, err))
		}
		return vm.Set(name, v)
	}
	in := bytes.TrimSpace(input)
	if len(in) == 0 {
		in = []byte("null")
	}
	if err := set("input", in); err != nil {
		return err
	}
	for _, k := range contextKeys {
		raw := []byte("{}")
		if v, ok := callCtx[k]; ok && v != nil {
			b, err := json.Marshal(v)
			if err != nil {
				return sdk.Permanent("invalid_context", fmt.Errorf("context.%s: %w", k, err))
			}
			raw = b
		}
		if err := set(k, raw); err != nil {
			return err
		}
	}
	return nil
}

// watch interrupts vm when the timeout passes, ctx ends, or the heap outgrows the budget. The
// returned stop ends the watchdog; interrupts after the script returned are harmless because
// the runtime is discarded.
func watch(ctx context.Context, vm *goja.Runtime, timeout time.Duration) (stop func()) {
	done := make(chan struct{})
	base := heapBytes()
	go func() {
		timer := time.NewTimer(timeout)
		defer timer.Stop()
		tick := time.NewTicker(memCheckEvery)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-ctx.Done():
				vm.Interrupt(ctx.Err())
				return
			case <-timer.C:
				vm.Interrupt(errTimeout)
				return
			case <-tick.C:
				if overBudget(base, MemoryBudget) {
					vm.Interrupt(memoryError{shared: running.Load() > 1})
					return
				}
			}
		}
	}()
	return func() { close(done) }
}

type memoryError struct{ shared bool }

func (memoryError) Error() string { return errMemory.Error() }
func (memoryError) Unwrap() error { return errMemory }

// stringify serialises v with the VM's JSON.stringify; undefined (and functions) become null.
func stringify(vm *goja.Runtime, v goja.Value) (string, error) {
	fn, ok := goja.AssertFunction(vm.Get("JSON").ToObject(vm).Get("stringify"))
	if !ok {
		return "", errors.New("code: JSON.stringify is not a function")
	}
	s, err := fn(goja.Undefined(), v)
	if err != nil {
		return "", err
	}
	if goja.IsUndefined(s) {
		return "null", nil
	}
	return s.String(), nil
}

// compile parses with goja's parser directly: goja.Compile flattens parse errors into a string,
// and the position must be re-based past the wrapper's first line.
func compile(source string) (*goja.Program, error) {
	ast, err := parser.ParseFile(nil, scriptName, wrapBefore+source+wrapAfter, 0)
	if err != nil {
		var list parser.ErrorList
		if errors.As(err, &list) && len(list) > 0 {
			e := list[0]
			return nil, sdk.Errorf("syntax_error", "SyntaxError: %s (line %d, column %d)", e.Message, e.Position.Line-lineOffset, e.Position.Column)
		}
		return nil, sdk.Permanent("syntax_error", err)
	}
	prog, err := goja.CompileAST(ast, true)
	if err != nil {
		// Early errors the parser lets through (e.g. assigning to eval in strict mode).
		var se *goja.CompilerSyntaxError
		if errors.As(err, &se) && se.File != nil {
			p := se.File.Position(se.Offset)
			return nil, sdk.Errorf("syntax_error", "SyntaxError: %s (line %d, column %d)", se.Message, p.Line-lineOffset, p.Column)
		}
		return nil, sdk.Permanent("syntax_error", err)
	}
	return prog, nil
}

func runError(ctx context.Context, err error) error {
	var ie *goja.InterruptedError
	if errors.As(err, &ie) {
		reason, _ := ie.Value().(error)
		var me memoryError
		switch {
		case errors.Is(reason, errTimeout):
			return sdk.Errorf("timeout", "the script ran past its time limit (timeoutMs)")
		case errors.As(reason, &me) && me.shared:
			return sdk.Retryable("memory_limit", fmt.Errorf("the connector's heap grew past %d MiB while this and other scripts ran", MemoryBudget>>20))
		case errors.As(reason, &me):
			return sdk.Errorf("memory_limit", "the script used more than %d MiB", MemoryBudget>>20)
		case reason != nil && ctx.Err() != nil:
			return fmt.Errorf("code: script stopped: %w", ctx.Err())
		}
		return sdk.Permanent("interrupted", err)
	}
	var so *goja.StackOverflowError
	if errors.As(err, &so) {
		return sdk.Errorf("stack_overflow", "the script exceeded %d nested calls", MaxCallStackSize)
	}
	var ex *goja.Exception
	if errors.As(err, &ex) {
		return sdk.Errorf("script_error", "%s", describe(ex))
	}
	return sdk.Permanent("script_error", err)
}

// describe is the thrown value and where in the user's source it was thrown.
func describe(ex *goja.Exception) string {
	msg := "exception"
	if v := ex.Value(); v != nil {
		msg = v.String()
	}
	for _, f := range ex.Stack() {
		if f.SrcName() != scriptName {
			continue
		}
		p := f.Position()
		if line := p.Line - lineOffset; line >= 1 {
			return fmt.Sprintf("%s (line %d, column %d)", msg, line, p.Column)
		}
	}
	return msg
}

var runSpec = sdk.ActionSpec{
	Title: "Run JavaScript",
	Description: "Runs `source` as the body of a JavaScript function (ES5.1 and most of ES2015+, strict mode) " +
		"and outputs what it returns, serialised as JSON (null when it returns nothing). The script sees " +
		"`input`, `steps`, `flow`, `settings` and `execution` as plain values. There is no I/O: no require, " +
		"no fetch, no timers, no console. With emit \"each\" the script returns an array and every element " +
		"becomes one output (an empty array, no output). Limits: source 64 KiB; timeoutMs (default 1000, " +
		"max 30000); 1024 nested calls; maxOutputBytes (default 1 MiB, max 16 MiB); 64 MiB of heap growth.",
	ConfigSchema: json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "source": {"type": "string", "minLength": 1, "maxLength": 65536, "x-flowd-raw": true, "description": "A function body; use return to produce the result, e.g. return {total: input.qty * input.price}; It reaches the script as written: {{ }} is not rendered here (use input, steps, settings instead)."},
    "timeoutMs": {"type": "integer", "minimum": 1, "maximum": 30000, "default": 1000},
    "maxOutputBytes": {"type": "integer", "minimum": 1, "maximum": 16777216, "default": 1048576},
    "emit": {"enum": ["single", "each"], "default": "single", "description": "each: the result must be an array, one output per element."}
  },
  "required": ["source"],
  "additionalProperties": false
}`),
	InputSchema: json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "description": "Any JSON value, visible to the script as input."
}`),
	OutputSchema: json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "description": "The script's result (or one element of it with emit each), as JSON."
}`),
}
