package flowtemplate

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

const crmTemplate = `{
  "name": "crm contact sync",
  "parameters": {"type": "object", "required": ["region"],
    "properties": {"region": {"enum": ["eu", "us"]}, "batch": {"type": "integer", "default": 50}, "tags": {"type": "array"}}},
  "flow": {
    "name": "contacts ${params.region}",
    "graph": {"nodes": [
      {"id": "hook", "type": "trigger.webhook"},
      {"id": "crm", "type": "action", "connector": "http", "action": "request",
       "config": {"url": "https://${params.region}.crm.example/contacts?batch=${params.batch}",
                  "body": {"name": "{{ input.name }}", "tags": {"$param": "tags"}, "note": "costs $${price}"}}}],
      "edges": [{"source": "hook", "target": "crm"}]},
    "settings": {"batch": {"$param": "batch"}}
  }
}`

func decode(t *testing.T, doc string) *Template {
	t.Helper()
	tpl, ps := Decode([]byte(doc))
	if len(ps) > 0 {
		t.Fatalf("decode: %v", ps)
	}
	return tpl
}

func TestInstantiateFillsPlaceholdersAndLeavesExpressions(t *testing.T) {
	tpl := decode(t, crmTemplate)
	flow, ps := tpl.Instantiate(map[string]any{"region": "eu", "tags": []any{"vip"}})
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	got, _ := json.Marshal(flow)
	want := `{"graph":{"edges":[{"source":"hook","target":"crm"}],"nodes":[{"id":"hook","type":"trigger.webhook"},` +
		`{"action":"request","config":{"body":{"name":"{{ input.name }}","note":"costs ${price}","tags":["vip"]},"url":"https://eu.crm.example/contacts?batch=50"},"connector":"http","id":"crm","type":"action"}]},` +
		`"name":"contacts eu","settings":{"batch":50}}`
	if string(got) != want {
		t.Fatalf("instantiated:\n%s\nwant\n%s", got, want)
	}
	if tpl.Flow["name"] != "contacts ${params.region}" {
		t.Fatal("instantiating changed the template")
	}
}

func TestInstantiateRefusesBadParametersWithTheirPaths(t *testing.T) {
	tpl := decode(t, crmTemplate)
	for _, tc := range []struct {
		vals map[string]any
		want string
	}{
		{map[string]any{}, "required@/parameters/region"},
		{map[string]any{"region": 3}, "enum@/parameters/region"},
		{map[string]any{"region": "eu", "batch": "fifty"}, "type@/parameters/batch"},
		{map[string]any{"region": "eu"}, "required@/parameters/tags"}, // used, optional, no default
	} {
		_, ps := tpl.Instantiate(tc.vals)
		var got []string
		for _, p := range ps {
			got = append(got, p.Code+"@"+p.Path)
		}
		if !reflect.DeepEqual(got, []string{tc.want}) {
			t.Errorf("%v: problems %v, want %s", tc.vals, got, tc.want)
		}
	}
}

func TestDecodeChecksPlaceholdersAndTheParametersSchema(t *testing.T) {
	for _, tc := range []struct {
		doc, want string
	}{
		{`{"name":"t","flow":{"name":"${params.nope}"}}`, "unknown_parameter@/flow/name"},
		{`{"name":"t","parameters":{"type":"object","properties":{"a":{}}},"flow":{"x":{"$param":"a","y":1}}}`, "invalid_placeholder@/flow/x"},
		{`{"name":"t","parameters":{"type":"object","properties":{"a":{}}},"flow":{"x":{"$param":7}}}`, "invalid_placeholder@/flow/x/$param"},
		{`{"name":"t","flow":{"x":"price ${5}"}}`, "invalid_placeholder@/flow/x"},
		{`{"name":"t","parameters":{"type":"array"},"flow":{}}`, "invalid_parameters@/parameters/type"},
		{`{"name":"t","parameters":{"type":"object","properties":{"a":{"type":"nope"}}},"flow":{}}`, "invalid_schema@/parameters/properties/a/type"},
		{`{"name":"t"}`, "required@/flow"},
	} {
		_, ps := Decode([]byte(tc.doc))
		var got []string
		for _, p := range ps {
			got = append(got, p.Code+"@"+p.Path)
		}
		if !strings.HasPrefix(strings.Join(got, " "), tc.want) {
			t.Errorf("%s: problems %v, want %s", tc.doc, got, tc.want)
		}
	}
}
