package host

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/sdk"
)

// strictHost runs testdata/strict, whose handlers count their runs.
func strictHost(t *testing.T) *Host {
	t.Helper()
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"strict": "./testdata/strict"})
	h, _ := newHost(t, Options{Dir: dir})
	return h
}

// handled asks the connector how often its handlers ran.
func handled(t *testing.T, h *Host) string {
	t.Helper()
	res, err := h.Execute(ctxT(t), "strict", []sdk.Invocation{{ID: "n", Action: "calls"}})
	if err != nil || res[0].Error != nil {
		t.Fatalf("calls: %v %+v", err, res)
	}
	return res[0].Outputs[0].Data.(json.Number).String()
}

func problemPaths(e *sdk.Error) []string {
	var out []string
	for _, p := range e.Problems {
		out = append(out, p.Code+"@"+p.Path)
	}
	return out
}

// TestSchemasAreEnforcedBeforeTheHandler: items whose config or input the action's schemas
// refuse get a permanent error with the problems' paths and never reach the connector; the
// valid items of the same batch do.
func TestSchemasAreEnforcedBeforeTheHandler(t *testing.T) {
	h := strictHost(t)
	input := map[string]any{"id": 7}
	items := []sdk.Invocation{
		{ID: "missing", Action: "create", Config: map[string]any{}, Input: input},
		{ID: "unknown", Action: "create", Config: map[string]any{"name": "a", "colour": "red"}, Input: input},
		{ID: "valid", Action: "create", Config: map[string]any{"name": "Ada", "template": "{{ left as it is }}"}, Input: input},
		{ID: "input", Action: "create", Config: map[string]any{"name": "b"}, Input: []any{1}},
		{ID: "no-input", Action: "create", Config: map[string]any{"name": "c"}},
	}
	res, err := h.Execute(ctxT(t), "strict", items)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]struct {
		code     string
		problems []string
	}{
		"missing":  {sdk.CodeInvalidConfig, []string{"required@/config/name"}},
		"unknown":  {sdk.CodeInvalidConfig, []string{"additional_property@/config/colour"}},
		"input":    {sdk.CodeInvalidInput, []string{"type@/input"}},
		"no-input": {sdk.CodeInvalidInput, []string{"type@/input"}},
	}
	for _, r := range res {
		w, refused := want[r.ID]
		if !refused {
			continue
		}
		e := r.Error
		if e == nil || e.Code != w.code || e.Retryable {
			t.Fatalf("%s: %+v, want a permanent %s", r.ID, r, w.code)
		}
		if got := problemPaths(e); !slices.Equal(got, w.problems) {
			t.Fatalf("%s: problems %v, want %v", r.ID, got, w.problems)
		}
		if path := w.problems[0][strings.Index(w.problems[0], "@")+1:]; !strings.Contains(e.Message, path) {
			t.Fatalf("%s: message %q does not name %s", r.ID, e.Message, path)
		}
	}
	v := res[2]
	if v.ID != "valid" || v.Error != nil || len(v.Outputs) != 1 {
		t.Fatalf("the valid item of the batch: %+v", v)
	}
	// A raw field holds the flow's value, {{ and all: valid as the string it is.
	if out := v.Outputs[0].Data.(map[string]any); out["handled"] != "Ada" || out["template"] != "{{ left as it is }}" {
		t.Fatalf("valid item's output %v", out)
	}
	if n := handled(t, h); n != "1" {
		t.Fatalf("the handler ran %s times: want 1, for the valid item only", n)
	}
}

// TestPollSchemaIsEnforced: a poll whose config the trigger's schema refuses fails as a poll
// does, with a permanent *sdk.Error, and the trigger never runs.
func TestPollSchemaIsEnforced(t *testing.T) {
	h := strictHost(t)
	for _, tc := range []struct {
		config map[string]any
		want   string
	}{
		{nil, "required@/config/source"},
		{map[string]any{"source": "s", "page": 2}, "additional_property@/config/page"},
	} {
		_, err := h.Poll(ctxT(t), "strict", sdk.PollRequest{Trigger: "list", Config: tc.config})
		var e *sdk.Error
		if !errors.As(err, &e) || e.Code != sdk.CodeInvalidConfig || e.Retryable || !slices.Equal(problemPaths(e), []string{tc.want}) {
			t.Fatalf("poll with %v: %v, want a permanent invalid_config at %s", tc.config, err, tc.want)
		}
	}
	if n := handled(t, h); n != "0" {
		t.Fatalf("the trigger ran %s times on refused polls", n)
	}
	out, err := h.Poll(ctxT(t), "strict", sdk.PollRequest{Trigger: "list", Config: map[string]any{"source": "s"}})
	if err != nil || len(out.Items) != 1 || out.Items[0] != "s" {
		t.Fatalf("valid poll: %+v, %v", out, err)
	}
}
