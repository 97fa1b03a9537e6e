package sdk

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
)

// strictConnector's action refuses unknown config fields and needs config.name and an object
// input with an id; calls counts the handler's runs.
func strictConnector(calls *atomic.Int32) Connector {
	spec := ActionSpec{
		ConfigSchema: json.RawMessage(`{"type":"object","required":["name"],"additionalProperties":false,
			"properties":{"name":{"type":"string"},"script":{"type":"string","x-flowd-raw":true}}}`),
		InputSchema: json.RawMessage(`{"type":"object","required":["id"]}`),
	}
	return Connector{
		Manifest: Manifest{Name: "strict", Version: "1.0.0"},
		Actions: map[string]Handler{
			"greet": Action(spec, func(_ context.Context, call Call[map[string]any, map[string]any]) ([]Output, error) {
				calls.Add(1)
				return []Output{{Data: "handled " + call.Config["name"].(string)}}, nil
			}),
			"any": Action(ActionSpec{
				InputSchema: json.RawMessage(`{"$schema":"https://json-schema.org/draft/2020-12/schema","description":"anything"}`),
			}, func(context.Context, Call[any, any]) ([]Output, error) {
				calls.Add(1)
				return nil, nil
			}),
		},
	}
}

func problemsAt(e *Error) []string {
	var out []string
	for _, p := range e.Problems {
		out = append(out, p.Code+"@"+p.Path)
	}
	return out
}

// Invoke refuses what the host refuses, before the handler runs, with the problems' paths.
func TestInvokeChecksSchemas(t *testing.T) {
	var calls atomic.Int32
	c := strictConnector(&calls)
	input := map[string]any{"id": 1}
	for _, tc := range []struct {
		name     string
		inv      Invocation
		code     string
		problems []string
	}{
		{"missing required", Invocation{Action: "greet", Config: map[string]any{}, Input: input},
			CodeInvalidConfig, []string{"required@/config/name"}},
		{"no config at all is {}", Invocation{Action: "greet", Input: input},
			CodeInvalidConfig, []string{"required@/config/name"}},
		{"unknown field", Invocation{Action: "greet", Config: map[string]any{"name": "a", "colour": "b"}, Input: input},
			CodeInvalidConfig, []string{"additional_property@/config/colour"}},
		{"wrong type", Invocation{Action: "greet", Config: map[string]any{"name": 5}, Input: input},
			CodeInvalidConfig, []string{"type@/config/name"}},
		{"config first", Invocation{Action: "greet", Config: map[string]any{}, Input: "x"},
			CodeInvalidConfig, []string{"required@/config/name"}},
		{"input", Invocation{Action: "greet", Config: map[string]any{"name": "a"}, Input: map[string]any{"n": 1}},
			CodeInvalidInput, []string{"required@/input/id"}},
		{"null input", Invocation{Action: "greet", Config: map[string]any{"name": "a"}},
			CodeInvalidInput, []string{"type@/input"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.inv.ID = "x"
			res := Invoke(context.Background(), c, tc.inv)
			e := res.Error
			if e == nil || e.Code != tc.code || e.Retryable {
				t.Fatalf("result %+v, want a permanent %s", res, tc.code)
			}
			if got := problemsAt(e); !slices.Equal(got, tc.problems) {
				t.Fatalf("problems %v, want %v", got, tc.problems)
			}
			for _, p := range tc.problems {
				if path := p[strings.Index(p, "@")+1:]; !strings.Contains(e.Message, path) {
					t.Fatalf("message %q does not name %s", e.Message, path)
				}
			}
		})
	}
	if n := calls.Load(); n != 0 {
		t.Fatalf("the handler ran %d times on refused calls", n)
	}

	// Valid calls reach the handler; a raw field is checked as the value it is, {{ and all.
	res := Invoke(context.Background(), c, Invocation{ID: "ok", Action: "greet",
		Config: map[string]any{"name": "Ada", "script": "{{ not rendered"}, Input: input})
	if res.Error != nil || len(res.Outputs) != 1 || res.Outputs[0].Data != "handled Ada" {
		t.Fatalf("valid call: %+v", res)
	}
	// An input schema of annotations only takes anything, null included.
	if res := Invoke(context.Background(), c, Invocation{ID: "any", Action: "any"}); res.Error != nil {
		t.Fatalf("annotation-only input schema: %+v", res.Error)
	}
	if n := calls.Load(); n != 2 {
		t.Fatalf("the handler ran %d times, want 2", n)
	}
}

func TestInvokeRefusesABrokenSchema(t *testing.T) {
	c := Connector{
		Manifest: Manifest{Name: "broken", Version: "1.0.0"},
		Actions: map[string]Handler{"a": Action(ActionSpec{ConfigSchema: json.RawMessage(`{"type":"nope"}`)},
			func(context.Context, Call[any, any]) ([]Output, error) { return nil, nil })},
	}
	res := Invoke(context.Background(), c, Invocation{ID: "1", Action: "a"})
	if res.Error == nil || res.Error.Code != "invalid_connector" || !strings.Contains(res.Error.Message, "/actions/a/configSchema") {
		t.Fatalf("result %+v, want invalid_connector naming the schema", res)
	}
}

func TestCheckPoll(t *testing.T) {
	s, err := CompileSchemas(Manifest{Name: "p", Triggers: map[string]TriggerSpec{
		"tick": {ConfigSchema: json.RawMessage(`{"type":"object","additionalProperties":false,"properties":{"n":{"type":"integer"}}}`)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ok := range []string{``, `null`, `{}`, `{"n":2}`} {
		if e := s.CheckPoll("tick", []byte(ok)); e != nil {
			t.Errorf("config %q: %v", ok, e)
		}
	}
	e := s.CheckPoll("tick", []byte(`{"n":1.5,"x":1}`))
	if e == nil || e.Code != CodeInvalidConfig || e.Retryable || !slices.Equal(problemsAt(e), []string{"type@/config/n", "additional_property@/config/x"}) {
		t.Fatalf("got %+v", e)
	}
	if !strings.HasPrefix(e.Message, `config does not match the configSchema of trigger "tick": /config/n: `) {
		t.Fatalf("message %q", e.Message)
	}
	if e := s.CheckPoll("other", []byte(`{"x":1}`)); e != nil {
		t.Fatalf("an unknown trigger is the connector's to answer: %v", e)
	}
	var none *Schemas
	if none.CheckPoll("tick", []byte(`1`)) != nil || none.CheckInvocation("a", []byte(`1`), nil) != nil {
		t.Fatal("nil Schemas must check nothing")
	}
}

// Many problems: the message lists the first ten, Problems has them all.
func TestCheckListsEveryProblem(t *testing.T) {
	s, err := CompileSchemas(Manifest{Name: "p", Actions: map[string]ActionSpec{
		"a": {ConfigSchema: json.RawMessage(`{"type":"object","additionalProperties":false}`)},
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := map[string]int{}
	for i := range 12 {
		cfg[string(rune('a'+i))] = i
	}
	raw, _ := json.Marshal(cfg)
	e := s.CheckInvocation("a", raw, nil)
	if e == nil || len(e.Problems) != 12 || !strings.HasSuffix(e.Message, "(and 2 more)") || strings.Contains(e.Message, "/config/k") {
		t.Fatalf("got %+v", e)
	}
	out, _ := json.Marshal(e)
	if !strings.Contains(string(out), `"problems":[{"code":"additional_property","message":"property \"a\" is not allowed here","path":"/config/a"}`) {
		t.Fatalf("JSON %s", out)
	}
	var back Error
	if err := json.Unmarshal(out, &back); err != nil || len(back.Problems) != 12 || back.Problems[11].Path != "/config/l" {
		t.Fatalf("decoded %+v, %v", back, err)
	}
}
