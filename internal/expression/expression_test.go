package expression

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func testEnv() Env {
	return Env{
		"input": map[string]any{"name": "Ada", "count": 3.0, "flag": true, "word": "yes",
			"items": []any{1.0, 2.0}, "nested": map[string]any{"k": "v"}},
		"steps":     map[string]any{"fetch": map[string]any{"status": 200.0, "body": map[string]any{"id": "x1"}}},
		"flow":      map[string]any{"id": "f1"},
		"settings":  map[string]any{"region": "eu"},
		"execution": map[string]any{"id": "e1"},
	}
}

func TestCompileAndEval(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src     string
		want    any
		compile string // substring of the compile error, "" for success
		eval    string // substring of the eval error
	}{
		{src: "input.count + 1", want: 4.0},
		{src: "upper(input.name)", want: "ADA"},
		{src: "steps.fetch.body.id", want: "x1"},
		{src: `steps["fetch"].status == 200`, want: true},
		{src: "flow.id + '/' + execution.id", want: "f1/e1"},
		{src: "settings.region", want: "eu"},
		{src: "len(input.items)", want: 2},
		{src: "steps.missing ?? 'none'", want: "none"},
		{src: "steps.missing?.x", want: nil},
		{src: "inptu.name", compile: "unknown name inptu"},
		{src: "nosuchfunc(1)", compile: "unknown name nosuchfunc"},
		{src: "input.name +", compile: "line 1"},
		{src: "", compile: "empty"},
		{src: "   ", compile: "empty"},
		{src: strings.Repeat("1+", 2100) + "1", compile: "limit is 4096"},
		{src: strings.Repeat("1+", 1500) + "1", compile: "nodes"},
		{src: "input.nested.k.z.w", eval: "line 1"},
	}
	for _, tt := range tests {
		name := tt.src
		if len(name) > 40 {
			name = name[:40]
		}
		t.Run(name, func(t *testing.T) {
			p, err := Compile(tt.src)
			if tt.compile != "" {
				if err == nil || !strings.Contains(err.Error(), tt.compile) {
					t.Fatalf("Compile error = %v, want containing %q", err, tt.compile)
				}
				return
			}
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			got, err := p.Eval(testEnv())
			if tt.eval != "" {
				if err == nil || !strings.Contains(err.Error(), tt.eval) {
					t.Fatalf("Eval error = %v, want containing %q", err, tt.eval)
				}
				return
			}
			if err != nil {
				t.Fatalf("Eval: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Eval = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestCondition(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src     string
		env     Env
		want    bool
		compile bool // expect compile error
		eval    bool // expect eval error
	}{
		{src: "input.flag", env: testEnv(), want: true},
		{src: "input.count > 2 && settings.region == 'eu'", env: testEnv(), want: true},
		{src: "input.count > 5", env: testEnv(), want: false},
		{src: "'Ada' in [input.name]", env: testEnv(), want: true},
		{src: "input.word", env: testEnv(), eval: true}, // dynamically not a bool
		{src: "1 + 2", compile: true},                   // statically not a bool
		{src: "upper('x')", compile: true},
		{src: "inptu.flag", compile: true},
		// Missing top-level keys behave as empty maps.
		{src: "steps.a == nil", env: Env{}, want: true},
		{src: "input.x == nil", env: nil, want: true},
		// input may be an array (a webhook body need not be an object).
		{src: "input[0] == 1", env: Env{"input": []any{1}}, want: true},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			p, err := CompileCondition(tt.src)
			if tt.compile {
				if err == nil {
					t.Fatal("expected compile error")
				}
				return
			}
			if err != nil {
				t.Fatalf("CompileCondition: %v", err)
			}
			got, err := p.EvalBool(tt.env)
			if tt.eval {
				if err == nil {
					t.Fatalf("expected eval error, got %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("EvalBool: %v", err)
			}
			if got != tt.want {
				t.Fatalf("EvalBool = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestTemplate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		src     string
		want    any
		compile bool
		eval    bool
	}{
		{src: "plain text", want: "plain text"},
		{src: "", want: ""},
		{src: "{{ input.count }}", want: 3.0},
		{src: "{{input.nested}}", want: map[string]any{"k": "v"}},
		{src: "{{ input.items }}", want: []any{1.0, 2.0}},
		{src: "n={{ input.count }}", want: "n=3"},
		{src: "Hello {{ input.name }}, id {{ steps.fetch.body.id }}!", want: "Hello Ada, id x1!"},
		{src: "{{ input.nested }} and {{ input.flag }}", want: `{"k":"v"} and true`},
		{src: "x{{ steps.none?.y }}y", want: "xy"},
		{src: `{{ {"a": {"b": 1}}.a.b }}`, want: 1},
		{src: `{{ "}}" + input.name }}`, want: "}}Ada"},
		{src: `{{ '{{' }}`, want: "{{"},
		{src: `literal \{{ not an expression }}`, want: "literal {{ not an expression }}"},
		{src: " {{ input.count }}", want: " 3"},
		{src: "{{ 1.5 }}", want: 1.5},
		{src: "{{ 1.0 / 3 * 3 }} ", want: "1 "},
		{src: "{{ input.name", compile: true},
		{src: "{{ }}", compile: true},
		{src: "{{ inptu.name }}", compile: true},
		{src: "a {{ 'x }}", compile: true},
		{src: "{{ input.nested.k.z.w }}", eval: true},
	}
	for _, tt := range tests {
		t.Run(tt.src, func(t *testing.T) {
			tpl, err := CompileTemplate(tt.src)
			if tt.compile {
				if err == nil {
					t.Fatal("expected compile error")
				}
				return
			}
			if err != nil {
				t.Fatalf("CompileTemplate: %v", err)
			}
			got, err := tpl.Render(testEnv())
			if tt.eval {
				if err == nil {
					t.Fatalf("expected render error, got %v", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("Render = %#v, want %#v", got, tt.want)
			}
		})
	}
}

func TestTemplateErrorPosition(t *testing.T) {
	t.Parallel()
	tests := []struct{ src, want string }{
		{"Bearer {{ secrets.token }}", "unknown name secrets (line 1, column 11)"},
		{"é {{ input.a }} {{ nope }}", "unknown name nope (line 1, column 20)"},
		{"line1\nx {{ input.a +", "missing closing '}}' after '{{' (line 2, column 3)"},
		{"{{ 1 + }}", "line 1, column 7"},
	}
	for _, tt := range tests {
		_, err := CompileTemplate(tt.src)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%q: error %v, want containing %q", tt.src, err, tt.want)
		}
	}
}

func TestValue(t *testing.T) {
	t.Parallel()
	in := map[string]any{
		"url":     "https://api/{{ input.name }}",
		"count":   "{{ input.count }}",
		"static":  "no templates",
		"num":     7.0,
		"headers": map[string]any{"X-Id": "{{ execution.id }}"},
		"list":    []any{"{{ flow.id }}", true, nil},
	}
	v, err := CompileValue(in)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Render(testEnv())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"url":     "https://api/Ada",
		"count":   3.0,
		"static":  "no templates",
		"num":     7.0,
		"headers": map[string]any{"X-Id": "e1"},
		"list":    []any{"f1", true, nil},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Render = %#v\nwant %#v", got, want)
	}
	// The source value is untouched and a second render is independent of the first.
	if in["url"] != "https://api/{{ input.name }}" {
		t.Fatal("CompileValue/Render modified the input")
	}
	got.(map[string]any)["headers"].(map[string]any)["X-Id"] = "changed"
	again, _ := v.Render(testEnv())
	if again.(map[string]any)["headers"].(map[string]any)["X-Id"] != "e1" {
		t.Fatal("renders share state")
	}
}

// TestValueExcept: values at the raw pointers, and within them, are neither compiled nor
// rendered; the rest is.
func TestValueExcept(t *testing.T) {
	t.Parallel()
	in := map[string]any{
		"source":  "return `{{ not an expression`;",
		"escaped": `\{{ kept }}`,
		"opts":    map[string]any{"tmpl": "{{ input.name", "list": []any{"{{"}},
		"name":    "{{ input.name }}",
	}
	raw := []string{"/escaped", "/opts", "/source"}
	if _, err := CompileValue(in); err == nil {
		t.Fatal("the raw fields compile as templates: the test proves nothing")
	}
	v, err := CompileValueExcept(in, raw)
	if err != nil {
		t.Fatal(err)
	}
	got, err := v.Render(testEnv())
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"source":  "return `{{ not an expression`;",
		"escaped": `\{{ kept }}`,
		"opts":    map[string]any{"tmpl": "{{ input.name", "list": []any{"{{"}},
		"name":    "Ada",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Render = %#v\nwant %#v", got, want)
	}
	if !v.Templated() {
		t.Fatal("Templated() = false with a template in name")
	}
	// A raw object comes out as a copy: changing one render changes neither the next nor the input.
	got.(map[string]any)["opts"].(map[string]any)["tmpl"] = "changed"
	again, _ := v.Render(testEnv())
	if again.(map[string]any)["opts"].(map[string]any)["tmpl"] != "{{ input.name" || in["opts"].(map[string]any)["tmpl"] != "{{ input.name" {
		t.Fatal("renders share the raw object")
	}

	delete(in, "name")
	if v, err := CompileValueExcept(in, raw); err != nil || v.Templated() {
		t.Fatalf("only raw fields left: Templated() = %v, %v; want false", v != nil && v.Templated(), err)
	}
	if v, err := CompileValueExcept(in, []string{""}); err != nil || v.Templated() {
		t.Fatalf("the whole value raw: %v", err)
	}
	// An escaped `\{{` outside the raw fields is rendered (unescaped) too.
	v, err = CompileValueExcept(map[string]any{"a": `\{{ literal }}`, "n": 1.0}, nil)
	if err != nil || !v.Templated() {
		t.Fatalf("an escaped {{: Templated() = false, %v; want true", err)
	}
	if got, _ := v.Render(nil); !reflect.DeepEqual(got, map[string]any{"a": "{{ literal }}", "n": 1.0}) {
		t.Fatalf("Render = %#v", got)
	}
	if v, _ := CompileValueExcept(map[string]any{"a": "plain", "n": 1.0}, nil); v.Templated() {
		t.Fatal("Templated() = true without any {{")
	}
}

func TestValueErrorPaths(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in       any
		path     string
		render   bool
		renderAt string
	}{
		{in: map[string]any{"a": map[string]any{"b/c": []any{"ok", "{{ bad( }}"}}}, path: "/a/b~1c/1"},
		{in: map[string]any{"z": "{{ nope }}", "a": "{{ nope2 }}"}, path: "/a"}, // sorted: first is /a
		{in: "{{ x }}", path: ""},
		{in: map[string]any{"t~": []any{map[string]any{"q": "{{ input.a.b.c }}"}}}, render: true, renderAt: "/t~0/0/q"},
	}
	for _, tt := range tests {
		v, err := CompileValue(tt.in)
		if tt.render {
			if err != nil {
				t.Fatalf("CompileValue: %v", err)
			}
			_, err = v.Render(Env{"input": map[string]any{}})
			tt.path = tt.renderAt
		}
		var pe *PathError
		if !errors.As(err, &pe) {
			t.Fatalf("%v: error %v is not a *PathError", tt.in, err)
		}
		if pe.Path != tt.path {
			t.Fatalf("%v: path %q, want %q", tt.in, pe.Path, tt.path)
		}
		if tt.path != "" && !strings.Contains(err.Error(), tt.path) {
			t.Fatalf("error %q does not name the path", err)
		}
	}
}

func TestEvalRecoversPanics(t *testing.T) {
	t.Parallel()
	p, err := Compile("input.f()")
	if err != nil {
		t.Skip("expr rejects the call statically:", err)
	}
	if _, err := p.Eval(Env{"input": map[string]any{"f": func() any { panic("boom") }}}); err == nil {
		t.Fatal("expected an error from a panicking function")
	}
}

func TestConcurrentEval(t *testing.T) {
	t.Parallel()
	p, err := CompileCondition("input.count > 1")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	for i := 0; i < 8; i++ {
		go func() {
			var err error
			for j := 0; j < 200 && err == nil; j++ {
				_, err = p.EvalBool(testEnv())
			}
			done <- err
		}()
	}
	for i := 0; i < 8; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
}
