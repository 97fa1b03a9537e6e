package controlplane_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// integrationDoc is an integration whose settings schema wants a region and allows retries.
func integrationDoc(name string, settings map[string]any) map[string]any {
	return map[string]any{
		"name": name,
		"settingsSchema": map[string]any{
			"type":     "object",
			"required": []any{"region"},
			"properties": map[string]any{
				"region":  map[string]any{"type": "string", "enum": []any{"eu", "us"}},
				"retries": map[string]any{"type": "integer", "minimum": 0},
			},
		},
		"settings": settings,
	}
}

// memberFlow is the README flow as a member of integration id, with settings of its own.
func memberFlow(t *testing.T, id string, settings map[string]any) map[string]any {
	t.Helper()
	doc := map[string]any{}
	if err := json.Unmarshal(readmeFlow(t), &doc); err != nil {
		t.Fatal(err)
	}
	doc["integration"] = id
	if settings != nil {
		doc["settings"] = settings
	}
	return doc
}

func TestIntegrationsCRUDAndSettingsValidation(t *testing.T) {
	e := newEnv(t)
	ta := e.tenant("acme")
	_, alice := e.user(ta, "alice")

	created := e.must(201, e.call("POST", "/api/v1/integrations", alice, integrationDoc("crm-sync", map[string]any{"region": "eu"})))
	in := created.data()
	id := in["id"].(string)
	if in["revision"] != float64(1) || created.header.Get("ETag") != `"1"` || len(in["owners"].([]any)) != 2 || len(in["flows"].([]any)) != 0 {
		t.Fatalf("created: %s", created.raw)
	}
	e.must(201, e.call("POST", "/api/v1/integrations", alice, integrationDoc("billing", map[string]any{"region": "us"})))
	list := e.must(200, e.call("GET", "/api/v1/integrations?page[size]=1&sort=name", alice, nil))
	if meta := list.body["meta"].(map[string]any); len(list.list()) != 1 || meta["total"] != float64(2) || meta["totalPages"] != float64(2) ||
		list.list()[0].(map[string]any)["name"] != "billing" {
		t.Fatalf("list: %s", list.raw)
	}
	if l := e.must(200, e.call("GET", "/api/v1/integrations?search=CRM", alice, nil)).list(); len(l) != 1 || l[0].(map[string]any)["id"] != id {
		t.Fatalf("search: %v", l)
	}

	before := e.snapshot()
	bad := []struct {
		name string
		body any
		want string
	}{
		{"settings missing a required value", integrationDoc("x", map[string]any{"retries": 2}), "required@/settings/region"},
		{"settings of the wrong type", integrationDoc("x", map[string]any{"region": "eu", "retries": "many"}), "type@/settings/retries"},
		{"settings outside an enum", integrationDoc("x", map[string]any{"region": "mars"}), "enum@/settings/region"},
		{"a schema that is not a JSON Schema", map[string]any{"name": "x", "settingsSchema": map[string]any{"type": "strnig"}}, "invalid_schema@/settingsSchema/type"},
		{"a schema referring elsewhere", map[string]any{"name": "x", "settingsSchema": map[string]any{"$ref": "https://example.com/s.json"}}, "invalid_schema@/settingsSchema"},
		{"no name", map[string]any{"settings": map[string]any{}}, "required@/name"},
		{"an unknown field", map[string]any{"name": "x", "color": "red"}, "additional_property@/color"},
	}
	for _, tc := range bad {
		r := e.must(400, e.call("POST", "/api/v1/integrations", alice, tc.body))
		if codes := strings.Join(r.errCodes(), " "); !strings.Contains(codes, tc.want) {
			t.Errorf("%s: want %s among %s", tc.name, tc.want, codes)
		}
	}
	r := e.must(400, e.call("PATCH", "/api/v1/integrations/"+id, alice, map[string]any{"settings": map[string]any{"region": 7}}))
	if r.errCodes()[0] != "type@/settings/region" {
		t.Fatalf("patch: %s", r.raw)
	}
	r = e.must(400, e.call("PATCH", "/api/v1/integrations/"+id, alice, map[string]any{"settingsSchema": map[string]any{"type": "object", "required": []any{"tier"}}}))
	if r.errCodes()[0] != "required@/settings/tier" {
		t.Fatalf("a schema the settings no longer pass: %s", r.raw)
	}
	if after := e.snapshot(); after != before {
		t.Fatal("rejected integration requests changed stored state")
	}

	e.must(412, e.call("PATCH", "/api/v1/integrations/"+id, alice, map[string]any{"description": "v2"}, "If-Match", `"7"`))
	p := e.must(200, e.call("PATCH", "/api/v1/integrations/"+id, alice, map[string]any{"description": "v2", "revision": 99}, "If-Match", `"1"`)).data()
	if p["revision"] != float64(2) || p["description"] != "v2" || p["settings"].(map[string]any)["region"] != "eu" {
		t.Fatalf("patched: %v", p)
	}
	if same := e.must(200, e.call("PATCH", "/api/v1/integrations/"+id, alice, map[string]any{"description": "v2"})).data(); same["revision"] != float64(2) {
		t.Fatalf("a patch changing nothing made revision %v", same["revision"])
	}
	yaml := "name: from-yaml\nsettings:\n  region: eu\n"
	e.must(201, e.call("POST", "/api/v1/integrations", alice, yaml, "Content-Type", "application/yaml"))
	e.must(204, e.call("DELETE", "/api/v1/integrations/"+id, alice, nil))
	e.must(404, e.call("GET", "/api/v1/integrations/"+id, alice, nil))
}

func TestTenantsNeverSeeEachOthersIntegrations(t *testing.T) {
	e := newEnv(t)
	ta, tb := e.tenant("acme"), e.tenant("globex")
	_, alice := e.user(ta, "alice")
	_, mallory := e.user(tb, "mallory")
	_, bob := e.user(ta, "bob")
	id := e.must(201, e.call("POST", "/api/v1/integrations", alice, integrationDoc("crm-sync", map[string]any{"region": "eu"}))).data()["id"].(string)

	for _, path := range []string{"/api/v1/integrations/" + id, "/api/v1/integrations/" + id + "/stats"} {
		if r := e.must(404, e.call("GET", path, mallory, nil)); r.errCodes()[0] != "not_found@" {
			t.Fatalf("%s: %s", path, r.raw)
		}
	}
	e.must(404, e.call("PATCH", "/api/v1/integrations/"+id, mallory, map[string]any{"name": "mine"}))
	e.must(404, e.call("DELETE", "/api/v1/integrations/"+id, mallory, nil))
	e.must(404, e.call("POST", "/api/v1/integrations/"+id+"/start", mallory, nil))
	e.must(404, e.call("POST", "/api/v1/integrations/"+id+"/stop", mallory, nil))
	if l := e.must(200, e.call("GET", "/api/v1/integrations", mallory, nil)); len(l.list()) != 0 {
		t.Fatalf("mallory lists %s", l.raw)
	}
	// Another tenant's flow cannot join it, whether it exists or not: one answer for both.
	for _, target := range []string{id, "no-such-integration"} {
		r := e.must(400, e.call("POST", "/api/v1/flows", mallory, memberFlow(t, target, nil)))
		if r.errCodes()[0] != "integration_unavailable@/integration" {
			t.Fatalf("joining %s: %s", target, r.raw)
		}
	}
	// Nobody plants an integration in another tenant.
	doc := integrationDoc("planted", map[string]any{"region": "eu"})
	doc["owners"] = []any{map[string]any{"id": ta, "type": "tenant"}}
	if r := e.must(400, e.call("POST", "/api/v1/integrations", mallory, doc)); r.errCodes()[0] != "forbidden_owner@/owners/0" {
		t.Fatalf("planting: %s", r.raw)
	}
	// A member of the same tenant sees it and may add flows to it.
	if l := e.must(200, e.call("GET", "/api/v1/integrations", bob, nil)).list(); len(l) != 1 {
		t.Fatalf("bob lists %d integrations", len(l))
	}
	e.must(201, e.call("POST", "/api/v1/flows", bob, memberFlow(t, id, nil)))
	_, reader := e.user(ta, "reader", "flows.read")
	e.must(403, e.call("POST", "/api/v1/integrations", reader, integrationDoc("x", map[string]any{"region": "eu"})))
	e.must(403, e.call("POST", "/api/v1/integrations/"+id+"/start", reader, nil))
}

// A change of an integration's settings gives every member flow, active or not, a new revision
// carrying them; the revisions before keep the settings they had.
func TestIntegrationSettingsReachEveryMemberAsANewRevision(t *testing.T) {
	e := newEnv(t)
	id := e.must(201, e.call("POST", "/api/v1/integrations", e.admin, integrationDoc("crm-sync", map[string]any{"region": "eu", "retries": 1}))).data()["id"].(string)
	a := e.must(201, e.call("POST", "/api/v1/flows", e.admin, memberFlow(t, id, map[string]any{"retries": 5}))).data()
	// integrationSettings is the server's: a client's value is ignored.
	doc := memberFlow(t, id, nil)
	doc["integrationSettings"] = map[string]any{"region": "forged"}
	b := e.must(201, e.call("POST", "/api/v1/flows", e.admin, doc)).data()
	if s := a["integrationSettings"].(map[string]any); s["region"] != "eu" || a["integration"] != id {
		t.Fatalf("member a: %v", a)
	}
	if s := b["integrationSettings"].(map[string]any); s["region"] != "eu" {
		t.Fatalf("member b took the client's integrationSettings: %v", s)
	}
	aID, bID := a["id"].(string), b["id"].(string)
	e.must(200, e.call("POST", "/api/v1/flows/"+bID+"/start", e.admin, nil))
	view := e.must(200, e.call("GET", "/api/v1/integrations/"+id, e.admin, nil)).data()
	if flows := view["flows"].([]any); len(flows) != 2 {
		t.Fatalf("integration flows: %v", flows)
	}
	if l := e.must(200, e.call("GET", "/api/v1/flows?filter[integration]="+id, e.admin, nil)).list(); len(l) != 2 {
		t.Fatalf("flows of the integration: %d", len(l))
	}

	e.must(200, e.call("PATCH", "/api/v1/integrations/"+id, e.admin, map[string]any{"settings": map[string]any{"region": "us"}}))
	for _, fid := range []string{aID, bID} {
		f := e.must(200, e.call("GET", "/api/v1/flows/"+fid, e.admin, nil)).data()
		if f["revision"] != float64(2) || f["integrationSettings"].(map[string]any)["region"] != "us" || f["integrationSettings"].(map[string]any)["retries"] != float64(1) {
			t.Fatalf("flow %s after the settings change: revision %v, integrationSettings %v", fid, f["revision"], f["integrationSettings"])
		}
		rev1 := e.must(200, e.call("GET", "/api/v1/flows/"+fid+"/revisions/1", e.admin, nil)).data()
		if rev1["integrationSettings"].(map[string]any)["region"] != "eu" {
			t.Fatalf("revision 1 of %s was rewritten: %v", fid, rev1["integrationSettings"])
		}
	}
	if f := e.must(200, e.call("GET", "/api/v1/flows/"+bID, e.admin, nil)).data(); f["status"] != "active" {
		t.Fatalf("the active member: %v", f["status"])
	}
	if got := e.eventsFor(aID, "flow.created", "flow.updated"); got[1] != "flow.updated" {
		t.Fatalf("events of a: %v", got)
	}
	// A change that leaves the settings alone makes no flow revision.
	e.must(200, e.call("PATCH", "/api/v1/integrations/"+id, e.admin, map[string]any{"description": "shared CRM settings"}))
	if f := e.must(200, e.call("GET", "/api/v1/flows/"+aID, e.admin, nil)).data(); f["revision"] != float64(2) {
		t.Fatalf("a description change made flow revision %v", f["revision"])
	}

	// Deleting an integration that has flows is refused until they are gone or moved out.
	if r := e.must(409, e.call("DELETE", "/api/v1/integrations/"+id, e.admin, nil)); r.errCodes()[0] != "integration_not_empty@" {
		t.Fatalf("delete with flows: %s", r.raw)
	}
	moved := e.must(200, e.call("PATCH", "/api/v1/flows/"+aID, e.admin, map[string]any{"integration": nil})).data()
	if moved["integration"] != nil || moved["integrationSettings"] != nil || moved["revision"] != float64(3) {
		t.Fatalf("moved out: %v", moved)
	}
	e.must(200, e.call("POST", "/api/v1/flows/"+bID+"/stop", e.admin, nil))
	e.must(204, e.call("DELETE", "/api/v1/flows/"+bID, e.admin, nil))
	e.must(204, e.call("DELETE", "/api/v1/integrations/"+id, e.admin, nil))
	// A flow cannot name an integration that is gone.
	if r := e.must(400, e.call("PATCH", "/api/v1/flows/"+aID, e.admin, map[string]any{"integration": id})); r.errCodes()[0] != "integration_unavailable@/integration" {
		t.Fatalf("joining a deleted integration: %s", r.raw)
	}
}

func TestIntegrationStartStopAndCounts(t *testing.T) {
	e := newEnv(t)
	id := e.must(201, e.call("POST", "/api/v1/integrations", e.admin, integrationDoc("crm-sync", map[string]any{"region": "eu"}))).data()["id"].(string)
	var ids []string
	for range 2 {
		ids = append(ids, e.must(201, e.call("POST", "/api/v1/flows", e.admin, memberFlow(t, id, nil))).data()["id"].(string))
	}
	e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))) // not a member

	started := e.must(200, e.call("POST", "/api/v1/integrations/"+id+"/start", e.admin, nil)).data()
	flows := started["flows"].([]any)
	if len(flows) != 2 || started["failed"] != float64(0) {
		t.Fatalf("start: %v", started)
	}
	var got []string
	for _, f := range flows {
		if f.(map[string]any)["status"] != "active" {
			t.Fatalf("start: %v", started)
		}
		got = append(got, f.(map[string]any)["id"].(string))
	}
	slices.Sort(got)
	slices.Sort(ids)
	if !slices.Equal(got, ids) {
		t.Fatalf("started %v, want the members %v", got, ids)
	}
	stats := e.must(200, e.call("GET", "/api/v1/integrations/"+id+"/stats", e.admin, nil)).data()
	if fl := stats["flows"].(map[string]any); fl["total"] != float64(2) || fl["active"] != float64(2) || fl["inactive"] != float64(0) {
		t.Fatalf("stats: %v", stats)
	}
	if ex := stats["executions"].(map[string]any); ex["success"] != float64(0) || ex["error"] != float64(0) {
		t.Fatalf("stats: %v", stats)
	}
	// Starting again changes nothing; stopping stops both.
	e.must(200, e.call("POST", "/api/v1/integrations/"+id+"/start", e.admin, nil))
	stopped := e.must(200, e.call("POST", "/api/v1/integrations/"+id+"/stop", e.admin, nil)).data()
	for _, f := range stopped["flows"].([]any) {
		if f.(map[string]any)["status"] != "inactive" {
			t.Fatalf("stop: %v", stopped)
		}
	}
	if fl := e.must(200, e.call("GET", "/api/v1/integrations/"+id+"/stats", e.admin, nil)).data()["flows"].(map[string]any); fl["inactive"] != float64(2) {
		t.Fatalf("stats after stop: %v", fl)
	}
}
