package controlplane_test

import (
	"strings"
	"testing"
)

// crmTemplate makes a webhook → http flow whose CRM host depends on the region parameter.
func crmTemplate(name string) map[string]any {
	return map[string]any{
		"name": name,
		"parameters": map[string]any{
			"type":     "object",
			"required": []any{"region"},
			"properties": map[string]any{
				"region": map[string]any{"type": "string", "enum": []any{"eu", "us"}},
				"batch":  map[string]any{"type": "integer", "minimum": 1, "default": 50},
			},
		},
		"flow": map[string]any{
			"name": "contacts ${params.region}",
			"graph": map[string]any{
				"nodes": []any{
					map[string]any{"id": "hook", "type": "trigger.webhook"},
					map[string]any{"id": "crm", "type": "action", "connector": "http", "action": "request", "config": map[string]any{
						"method": "POST", "url": "https://${params.region}.crm.example/contacts",
						"body": map[string]any{"name": "{{ input.name }}"},
					}},
				},
				"edges": []any{map[string]any{"source": "hook", "target": "crm"}},
			},
			"settings": map[string]any{"batch": map[string]any{"$param": "batch"}},
		},
	}
}

func TestTemplatesInstantiateIntoFlows(t *testing.T) {
	e := newEnv(t)
	ta, tb := e.tenant("acme"), e.tenant("globex")
	_, alice := e.user(ta, "alice")
	_, mallory := e.user(tb, "mallory")
	_, reader := e.user(ta, "reader", "flows.read")
	_, user := e.user(ta, "templater", "templates.read", "flows.read", "flows.update")

	created := e.must(201, e.call("POST", "/api/v1/templates", alice, crmTemplate("crm contacts")))
	tpl := created.data()
	id := tpl["id"].(string)
	if tpl["version"] != float64(1) || created.header.Get("ETag") != `"1"` {
		t.Fatalf("created: %s", created.raw)
	}
	e.must(403, e.call("GET", "/api/v1/templates", reader, nil)) // templates.read
	if l := e.must(200, e.call("GET", "/api/v1/templates?search=crm", user, nil)).list(); len(l) != 1 {
		t.Fatalf("the tenant's templates: %v", l)
	}
	if l := e.must(200, e.call("GET", "/api/v1/templates", mallory, nil)).list(); len(l) != 0 {
		t.Fatalf("another tenant lists %v", l)
	}
	e.must(404, e.call("GET", "/api/v1/templates/"+id, mallory, nil))
	e.must(404, e.call("POST", "/api/v1/templates/"+id+"/instantiate", mallory, map[string]any{"parameters": map[string]any{"region": "eu"}}))

	before := e.snapshot()
	for _, tc := range []struct {
		name string
		body map[string]any
		want string
	}{
		{"a missing parameter", map[string]any{"parameters": map[string]any{}}, "required@/parameters/region"},
		{"a wrong-typed parameter", map[string]any{"parameters": map[string]any{"region": 7}}, "type@/parameters/region"},
		{"a value outside the enum", map[string]any{"parameters": map[string]any{"region": "mars"}}, "enum@/parameters/region"},
		{"below a minimum", map[string]any{"parameters": map[string]any{"region": "eu", "batch": 0}}, "range@/parameters/batch"},
		{"parameters that are no object", map[string]any{"parameters": []any{"eu"}}, "type@/parameters"},
	} {
		r := e.must(400, e.call("POST", "/api/v1/templates/"+id+"/instantiate", user, tc.body))
		if codes := strings.Join(r.errCodes(), " "); !strings.Contains(codes, tc.want) {
			t.Errorf("%s: want %s among %s", tc.name, tc.want, codes)
		}
	}
	if after := e.snapshot(); after != before {
		t.Fatal("refused instantiations changed stored state")
	}

	f := e.must(201, e.call("POST", "/api/v1/templates/"+id+"/instantiate", user, map[string]any{
		"parameters": map[string]any{"region": "eu"}, "description": "EU contacts"})).data()
	url := f["graph"].(map[string]any)["nodes"].([]any)[1].(map[string]any)["config"].(map[string]any)["url"]
	if f["fromTemplate"] != id || f["fromTemplateVersion"] != float64(1) || f["name"] != "contacts eu" || f["description"] != "EU contacts" ||
		url != "https://eu.crm.example/contacts" || f["settings"].(map[string]any)["batch"] != float64(50) || f["status"] != "inactive" {
		t.Fatalf("instantiated flow: %v", f)
	}
	if body := f["graph"].(map[string]any)["nodes"].([]any)[1].(map[string]any)["config"].(map[string]any)["body"].(map[string]any); body["name"] != "{{ input.name }}" {
		t.Fatalf("the flow's own expressions were touched: %v", body)
	}
	e.must(200, e.call("GET", "/api/v1/flows/"+f["id"].(string), alice, nil))

	// A new version: flows made from now on record it; the earlier flow keeps version 1.
	e.must(412, e.call("PATCH", "/api/v1/templates/"+id, alice, map[string]any{"description": "v2"}, "If-Match", `"9"`))
	p := e.must(200, e.call("PATCH", "/api/v1/templates/"+id, alice, map[string]any{"description": "v2"}, "If-Match", `"1"`)).data()
	if p["version"] != float64(2) {
		t.Fatalf("patched: %v", p)
	}
	f2 := e.must(201, e.call("POST", "/api/v1/templates/"+id+"/instantiate", user, map[string]any{
		"parameters": map[string]any{"region": "us", "batch": 10}, "name": "US contacts"})).data()
	if f2["fromTemplateVersion"] != float64(2) || f2["name"] != "US contacts" || f2["settings"].(map[string]any)["batch"] != float64(10) {
		t.Fatalf("second flow: %v", f2)
	}
	if again := e.must(200, e.call("GET", "/api/v1/flows/"+f["id"].(string), alice, nil)).data(); again["fromTemplateVersion"] != float64(1) {
		t.Fatalf("the first flow's version moved: %v", again["fromTemplateVersion"])
	}

	// A template whose result is no valid flow is refused at instantiation, with the flow's paths.
	broken := crmTemplate("broken")
	broken["flow"].(map[string]any)["graph"].(map[string]any)["edges"] = []any{map[string]any{"source": "hook", "target": "${params.region}"}}
	bid := e.must(201, e.call("POST", "/api/v1/templates", alice, broken)).data()["id"].(string)
	r := e.must(400, e.call("POST", "/api/v1/templates/"+bid+"/instantiate", user, map[string]any{"parameters": map[string]any{"region": "eu"}}))
	if !strings.Contains(strings.Join(r.errCodes(), " "), "unknown_node@/graph/edges/0/target") {
		t.Fatalf("a broken result: %s", r.raw)
	}
	// Placeholders must name declared parameters; only administrators publish.
	bad := crmTemplate("bad")
	bad["flow"].(map[string]any)["description"] = "for ${params.tenant}"
	if r := e.must(400, e.call("POST", "/api/v1/templates", alice, bad)); r.errCodes()[0] != "unknown_parameter@/flow/description" {
		t.Fatalf("an undeclared parameter: %s", r.raw)
	}
	pub := crmTemplate("public")
	pub["public"] = true
	if r := e.must(400, e.call("POST", "/api/v1/templates", alice, pub)); r.errCodes()[0] != "forbidden_field@/public" {
		t.Fatalf("a tenant publishing: %s", r.raw)
	}
	pid := e.must(201, e.call("POST", "/api/v1/templates", e.admin, pub)).data()["id"].(string)
	e.must(200, e.call("GET", "/api/v1/templates/"+pid, mallory, nil))
	e.must(404, e.call("PATCH", "/api/v1/templates/"+pid, mallory, map[string]any{"description": "mine"}))
	e.must(201, e.call("POST", "/api/v1/templates/"+pid+"/instantiate", mallory, map[string]any{"parameters": map[string]any{"region": "us"}}))

	e.must(404, e.call("DELETE", "/api/v1/templates/"+id, mallory, nil))
	e.must(204, e.call("DELETE", "/api/v1/templates/"+id, alice, nil))
	e.must(404, e.call("GET", "/api/v1/templates/"+id, alice, nil))
}
