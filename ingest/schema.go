package ingest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/schemaproblem"
)

// compileInput turns payload.inputParameters into a compiled JSON Schema (nil: no contract).
//
// The FlowMate simple form {"firstName": "string", "address": {"city": "string"}} becomes an
// object schema whose every listed property is required and has the named type ("any" allows
// every value, null included; "number" accepts integers; nested objects follow the same rule).
// Properties not listed are allowed: partners send more than a flow needs, and refusing that
// would break them whenever they add a field. A JSON Schema is used as written (draft 2020-12,
// formats asserted, no remote $refs).
func compileInput(flowID string, params map[string]any) (*jsonschema.Schema, error) {
	if len(params) == 0 {
		return nil, nil
	}
	doc := any(params)
	if !flowdoc.IsJSONSchemaParams(params) {
		doc = simpleSchema(params)
	}
	// Round-trip so numbers are json.Number, as the compiler expects.
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode input schema: %w", err)
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decode input schema: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noRemote{})
	url := "urn:flowd:flow:" + flowID + ":input"
	if err := c.AddResource(url, inst); err != nil {
		return nil, fmt.Errorf("input schema: %w", err)
	}
	sch, err := c.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("input schema: %w", err)
	}
	return sch, nil
}

// noRemote refuses every $ref outside the schema: ingest never fetches anything per request.
type noRemote struct{}

func (noRemote) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s is not available: input schemas cannot reference remote documents", url)
}

func simpleSchema(p map[string]any) map[string]any {
	props := make(map[string]any, len(p))
	required := make([]string, 0, len(p))
	for name, v := range p {
		required = append(required, name)
		switch t := v.(type) {
		case map[string]any:
			props[name] = simpleSchema(t)
		case string:
			if t == "any" {
				props[name] = map[string]any{}
			} else {
				props[name] = map[string]any{"type": t}
			}
		default:
			props[name] = map[string]any{} // flow.schema.json rules this out; be lenient
		}
	}
	sort.Strings(required)
	return map[string]any{"type": "object", "properties": props, "required": required}
}

// validateInput checks input (JSON) against sch and returns every problem, each with a JSON
// pointer prefixed by prefix (so /webhooks points into its {"data": ...} envelope).
func validateInput(sch *jsonschema.Schema, input []byte, prefix string) (problem.List, error) {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(input))
	if err != nil {
		return nil, fmt.Errorf("decode input: %w", err)
	}
	err = sch.Validate(inst)
	if err == nil {
		return nil, nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return nil, fmt.Errorf("validate input: %w", err)
	}
	out := schemaproblem.Problems(ve, prefix)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

// shape is what payload.outputParameters declares of a synchronous reply: the fields an
// object keeps (each with the shape of its value), whether undeclared fields stay too, and the
// shape of array items. A nil *shape keeps a value as it is.
type shape struct {
	fields map[string]*shape
	open   bool
	items  *shape
}

// compileShape reads outputParameters. Simple form: only the listed keys stay, nested maps
// shaping nested objects. JSON Schema: "properties" (through "items" for arrays) declare the
// fields; a level with additionalProperties other than false keeps undeclared fields too, and
// a schema without "properties" or "items" (only $ref or anyOf, say) leaves the value as is.
func compileShape(params map[string]any) *shape {
	if len(params) == 0 {
		return nil
	}
	if flowdoc.IsJSONSchemaParams(params) {
		return schemaShape(params)
	}
	return simpleShape(params)
}

func simpleShape(p map[string]any) *shape {
	s := &shape{fields: make(map[string]*shape, len(p))}
	for k, v := range p {
		var child *shape
		if m, ok := v.(map[string]any); ok {
			child = simpleShape(m)
		}
		s.fields[k] = child
	}
	return s
}

func schemaShape(m map[string]any) *shape {
	var s shape
	props, hasProps := m["properties"].(map[string]any)
	if hasProps {
		s.fields = make(map[string]*shape, len(props))
		for k, v := range props {
			var child *shape
			if cm, ok := v.(map[string]any); ok {
				child = schemaShape(cm)
			}
			s.fields[k] = child
		}
		if ap, set := m["additionalProperties"]; set && ap != false {
			s.open = true
		}
	}
	if items, ok := m["items"].(map[string]any); ok {
		s.items = schemaShape(items)
	}
	if !hasProps && s.items == nil {
		return nil
	}
	return &s
}

// apply returns v reduced to what s declares.
func (s *shape) apply(v any) any {
	if s == nil {
		return v
	}
	switch x := v.(type) {
	case map[string]any:
		if s.fields == nil {
			return x
		}
		out := make(map[string]any, len(s.fields))
		for k, val := range x {
			child, declared := s.fields[k]
			switch {
			case declared:
				out[k] = child.apply(val)
			case s.open:
				out[k] = val
			}
		}
		return out
	case []any:
		if s.items == nil {
			return x
		}
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = s.items.apply(e)
		}
		return out
	}
	return v
}

// shapeBody applies s to a JSON body; a body that is not JSON is returned unchanged.
func shapeBody(s *shape, body []byte) []byte {
	if s == nil || len(body) == 0 {
		return body
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber() // keep numbers exactly as the flow wrote them
	var v any
	if err := dec.Decode(&v); err != nil {
		return body
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s.apply(v)); err != nil {
		return body
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
