package flowdoc

import (
	"bytes"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TestRawFields: templates in the fields a connector marks raw are not compiled, the rest
// are; a raw field's `{{` is a value like any other for the config schema.
func TestRawFields(t *testing.T) {
	t.Parallel()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(`{
		"type": "object",
		"properties": {
			"source": {"type": "string", "maxLength": 10},
			"note": {"type": "string", "maxLength": 10},
			"opts": {"type": "object"}
		}
	}`)))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("mem://code/run.json", doc); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("mem://code/run.json")
	if err != nil {
		t.Fatal(err)
	}
	flow := func() *Flow {
		return &Flow{Name: "raw", Graph: Graph{
			Nodes: []Node{
				{ID: "in", Type: TypeWebhook},
				{ID: "js", Type: TypeAction, Connector: "code", Action: "run", Config: map[string]any{
					"source": "{{ not an expression, and too long",
					"opts":   map[string]any{"t": []any{"{{ nor this"}},
					"note":   "{{ input.n ",
				}},
			},
			Edges: []Edge{{Source: "in", Target: "js"}},
		}}
	}
	opts := Options{
		ConfigSchema: func(string, string) (*jsonschema.Schema, bool) { return sch, true },
		RawFields: func(conn, action string) []string {
			if conn == "code" && action == "run" {
				return []string{"/opts", "/source"}
			}
			return nil
		},
	}
	probs := Validate(flow(), opts)
	if len(probs) != 2 || !has(probs, CodeInvalidExpression, "/graph/nodes/1/config/note") ||
		!has(probs, CodeInvalidConfig, "/graph/nodes/1/config/source") {
		t.Fatalf("problems %v: want the template in note and source's length, nothing about opts", probs)
	}

	// Without knowing the raw fields, every template is compiled, and failures at a template
	// are left to run time.
	opts.RawFields = nil
	probs = Validate(flow(), opts)
	if len(probs) != 3 || !has(probs, CodeInvalidExpression, "/graph/nodes/1/config/note") ||
		!has(probs, CodeInvalidExpression, "/graph/nodes/1/config/source") || !has(probs, CodeInvalidExpression, "/graph/nodes/1/config/opts/t/0") {
		t.Fatalf("problems %v: want the three templates", probs)
	}
}
