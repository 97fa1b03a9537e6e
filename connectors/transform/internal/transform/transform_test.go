package transform

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/sdk"
)

func invoke(t *testing.T, c sdk.Connector, config map[string]any, input any, callCtx map[string]any) sdk.Result {
	t.Helper()
	return sdk.Invoke(context.Background(), c, sdk.Invocation{
		ID: "1", Action: "map", Config: config, Input: input, Context: callCtx,
	})
}

// only returns the single default-port output as JSON, for stable comparison.
func only(t *testing.T, res sdk.Result) string {
	t.Helper()
	if res.Error != nil {
		t.Fatalf("unexpected error: %+v", res.Error)
	}
	if len(res.Outputs) != 1 || res.Outputs[0].Port != "" {
		t.Fatalf("want one default-port output, got %+v", res.Outputs)
	}
	b, err := json.Marshal(res.Outputs[0].Data)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestMapFields(t *testing.T) {
	c := Connector()
	callCtx := map[string]any{
		"steps":     map[string]any{"lookup": map[string]any{"body": map[string]any{"tier": "gold"}}},
		"flow":      map[string]any{"id": "f1"},
		"settings":  map[string]any{"currency": "EUR"},
		"execution": map[string]any{"id": "e1"},
	}
	input := map[string]any{"first": "Ada", "last": "Lovelace", "qty": 3, "price": 2.5}
	got := only(t, invoke(t, c, map[string]any{"fields": map[string]any{
		"name":     "input.first + ' ' + input.last",
		"total":    "input.qty * input.price",
		"tier":     "steps.lookup.body.tier",
		"currency": "settings.currency",
		"ref":      "flow.id + '/' + execution.id",
		"missing":  "steps.nope?.x ?? 'none'",
		"tags":     "map([1, 2], # * 2)",
	}}, input, callCtx))
	want := `{"currency":"EUR","missing":"none","name":"Ada Lovelace","ref":"f1/e1","tags":[2,4],"tier":"gold","total":7.5}`
	if got != want {
		t.Fatalf("output\n got %s\nwant %s", got, want)
	}
}

func TestMapMerge(t *testing.T) {
	c := Connector()
	// 2^63-1 does not survive float64: merge must pass untouched input values through exactly.
	input := json.RawMessage(`{"id": 9223372036854775807, "name": "ada", "keep": {"a": [1, 2]}}`)
	got := only(t, invoke(t, c, map[string]any{
		"merge":  true,
		"fields": map[string]any{"name": "upper(input.name)", "added": "true"},
	}, input, nil))
	want := `{"added":true,"id":9223372036854775807,"keep":{"a":[1,2]},"name":"ADA"}`
	if got != want {
		t.Fatalf("output\n got %s\nwant %s", got, want)
	}

	// Without merge only the fields come out.
	got = only(t, invoke(t, c, map[string]any{"fields": map[string]any{"n": "input.name"}}, input, nil))
	if got != `{"n":"ada"}` {
		t.Fatalf("output without merge = %s", got)
	}

	// Merge of a null input is just the fields.
	got = only(t, invoke(t, c, map[string]any{"merge": true, "fields": map[string]any{"x": "1"}}, nil, nil))
	if got != `{"x":1}` {
		t.Fatalf("output for null input = %s", got)
	}
}

func TestMapErrors(t *testing.T) {
	c := Connector()
	tests := []struct {
		name     string
		config   map[string]any
		input    any
		callCtx  map[string]any
		code     string
		contains []string
	}{
		{
			name:     "compile error names the field",
			config:   map[string]any{"fields": map[string]any{"good": "1", "bad": "input.x +"}},
			code:     "invalid_expression",
			contains: []string{`field "bad"`, "line 1"},
		},
		{
			name:     "unknown top-level name",
			config:   map[string]any{"fields": map[string]any{"typo": "inptu.x"}},
			code:     "invalid_expression",
			contains: []string{`field "typo"`, "inptu"},
		},
		{
			name:     "empty expression",
			config:   map[string]any{"fields": map[string]any{"blank": " "}},
			code:     "invalid_expression",
			contains: []string{`field "blank"`, "empty"},
		},
		{
			name:     "runtime error names the field",
			config:   map[string]any{"fields": map[string]any{"deep": "input.a.b.c"}},
			input:    map[string]any{"a": "str"},
			code:     "expression_failed",
			contains: []string{`field "deep"`},
		},
		{
			name:     "merge needs an object",
			config:   map[string]any{"merge": true, "fields": map[string]any{}},
			input:    []any{1, 2},
			code:     "invalid_input",
			contains: []string{"an array"},
		},
		{
			name:     "context entry must be an object",
			config:   map[string]any{"fields": map[string]any{"x": "1"}},
			callCtx:  map[string]any{"steps": "oops"},
			code:     "invalid_context",
			contains: []string{"context.steps"},
		},
		{
			name:   "config of the wrong type",
			config: map[string]any{"fields": []any{"x"}},
			code:   "invalid_config",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := invoke(t, c, tt.config, tt.input, tt.callCtx)
			if res.Error == nil {
				t.Fatalf("want error %s, got outputs %+v", tt.code, res.Outputs)
			}
			if res.Error.Code != tt.code || res.Error.Retryable {
				t.Fatalf("error = %+v, want permanent %s", res.Error, tt.code)
			}
			for _, s := range tt.contains {
				if !strings.Contains(res.Error.Message, s) {
					t.Errorf("message %q does not contain %q", res.Error.Message, s)
				}
			}
		})
	}
}

func TestProgramCacheIsBounded(t *testing.T) {
	c := newProgramCache(3)
	for i := range 10 {
		if _, err := c.get(fmt.Sprintf("input.x + %d", i)); err != nil {
			t.Fatal(err)
		}
	}
	if n := c.len(); n != 3 {
		t.Fatalf("cache holds %d programs, want 3", n)
	}
	// A hit returns the very same program; the most recent sources survived eviction.
	a, _ := c.get("input.x + 9")
	b, _ := c.get("input.x + 9")
	if a != b {
		t.Fatal("cache hit compiled again")
	}
	if _, ok := c.items["input.x + 0"]; ok {
		t.Fatal("oldest source was not evicted")
	}
	if _, err := c.get("input.x +"); err == nil {
		t.Fatal("bad source compiled")
	}
	if n := c.len(); n != 3 {
		t.Fatalf("a failed compile changed the cache size to %d", n)
	}
}

func TestManifest(t *testing.T) {
	m, err := Connector().Describe()
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != Name || m.Version != Version || m.Actions["map"].Title == "" {
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
