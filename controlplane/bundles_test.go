package controlplane_test

import (
	"encoding/json"
	"strings"
	"testing"
)

// bundleFixture is tenant A's integration: settings, and two flows, one calling a CRM with
// connection "crm" (an API key whose secret must never leave flowd).
type bundleFixture struct {
	alice, integ, conn string
	flows              []string
}

const crmSecret = "s3cret-of-tenant-a"

func newBundleFixture(t *testing.T, e *env, tenant string) bundleFixture {
	t.Helper()
	_, alice := e.user(tenant, "alice")
	conn := e.must(201, e.call("POST", "/api/v1/connections", alice, map[string]any{
		"name": "crm", "type": "api_key", "data": map[string]any{"header": "X-API-Key", "key": crmSecret}})).data()["id"].(string)
	integ := e.must(201, e.call("POST", "/api/v1/integrations", alice, integrationDoc("crm-sync", map[string]any{"region": "eu"}))).data()["id"].(string)
	withConn := memberFlow(t, integ, map[string]any{"retries": 2})
	withConn["name"] = "push contacts"
	withConn["graph"].(map[string]any)["nodes"].([]any)[2].(map[string]any)["connection"] = conn
	plain := memberFlow(t, integ, nil)
	plain["name"] = "echo"
	f := bundleFixture{alice: alice, integ: integ, conn: conn}
	for _, doc := range []map[string]any{withConn, plain} {
		f.flows = append(f.flows, e.must(201, e.call("POST", "/api/v1/flows", alice, doc)).data()["id"].(string))
	}
	return f
}

func TestCloneAnIntegrationWithItsFlows(t *testing.T) {
	e := newEnv(t)
	fx := newBundleFixture(t, e, e.tenant("acme"))
	e.must(200, e.call("POST", "/api/v1/flows/"+fx.flows[1]+"/start", fx.alice, nil)) // a running flow is copied too, inactive

	cp := e.must(201, e.call("POST", "/api/v1/integrations/"+fx.integ+"/clone", fx.alice, map[string]any{"name": "crm-sync staging"})).data()
	if cp["id"] == fx.integ || cp["name"] != "crm-sync staging" || cp["settings"].(map[string]any)["region"] != "eu" || len(cp["flows"].([]any)) != 2 {
		t.Fatalf("clone: %v", cp)
	}
	for _, id := range cp["flows"].([]any) {
		f := e.must(200, e.call("GET", "/api/v1/flows/"+id.(string), fx.alice, nil)).data()
		if f["integration"] != cp["id"] || f["status"] != "inactive" || f["revision"] != float64(1) || f["integrationSettings"].(map[string]any)["region"] != "eu" {
			t.Fatalf("cloned flow: %v", f)
		}
		if f["name"] == "push contacts" && f["graph"].(map[string]any)["nodes"].([]any)[2].(map[string]any)["connection"] != fx.conn {
			t.Fatalf("the copy lost its connection: %v", f["graph"])
		}
	}
	if def := e.must(201, e.call("POST", "/api/v1/integrations/"+fx.integ+"/clone", fx.alice, nil)).data(); def["name"] != "crm-sync (copy)" {
		t.Fatalf("default name: %v", def["name"])
	}
	if src := e.must(200, e.call("GET", "/api/v1/integrations/"+fx.integ, fx.alice, nil)).data(); len(src["flows"].([]any)) != 2 {
		t.Fatalf("the source changed: %v", src)
	}
	_, mallory := e.user(e.tenant("globex"), "mallory")
	e.must(404, e.call("POST", "/api/v1/integrations/"+fx.integ+"/clone", mallory, nil))
}

func TestExportAndImportIntoAnotherTenant(t *testing.T) {
	e := newEnv(t)
	fx := newBundleFixture(t, e, e.tenant("acme"))

	exp := e.must(200, e.call("GET", "/api/v1/integrations/"+fx.integ+"/export", fx.alice, nil))
	raw := string(exp.raw)
	if strings.Contains(raw, crmSecret) || strings.Contains(raw, fx.conn) || strings.Contains(raw, fx.integ) || strings.Contains(raw, "owners") {
		t.Fatalf("the export leaks a secret or an id of this tenant: %s", raw)
	}
	if !strings.Contains(exp.header.Get("Content-Disposition"), `filename="crm-sync.json"`) {
		t.Fatalf("Content-Disposition %q", exp.header.Get("Content-Disposition"))
	}
	var b map[string]any
	if err := json.Unmarshal(exp.raw, &b); err != nil {
		t.Fatal(err)
	}
	flows := b["flows"].([]any)
	if b["format"] != "flowd.integration/v1" || len(flows) != 2 ||
		flows[0].(map[string]any)["graph"].(map[string]any)["nodes"].([]any)[2].(map[string]any)["connection"] != "crm" ||
		b["connections"].([]any)[0].(map[string]any)["type"] != "api_key" {
		t.Fatalf("bundle: %s", raw)
	}
	yml := e.must(200, e.call("GET", "/api/v1/integrations/"+fx.integ+"/export?format=yaml", fx.alice, nil))
	if !strings.HasPrefix(yml.header.Get("Content-Type"), "application/yaml") || strings.Contains(string(yml.raw), crmSecret) ||
		!strings.HasPrefix(string(yml.raw), "format: flowd.integration/v1\n") {
		t.Fatalf("yaml export: %s %s", yml.header.Get("Content-Type"), yml.raw)
	}

	// Tenant B has no connection named crm yet: refused, naming it, and nothing is written.
	tb := e.tenant("globex")
	_, bob := e.user(tb, "bob")
	before := e.snapshot()
	r := e.must(400, e.call("POST", "/api/v1/integrations/import", bob, exp.raw))
	if r.errCodes()[0] != "connection_not_found@/flows/0/graph/nodes/2/connection" || !strings.Contains(string(r.raw), `\"crm\"`) {
		t.Fatalf("missing connection: %s", r.raw)
	}
	if e.snapshot() != before {
		t.Fatal("a refused import changed stored state")
	}
	// A connection of that name but of another type is refused too.
	wrong := e.must(201, e.call("POST", "/api/v1/connections", bob, map[string]any{"name": "CRM", "type": "bearer", "data": map[string]any{"token": "t"}})).data()["id"].(string)
	if r := e.must(400, e.call("POST", "/api/v1/integrations/import", bob, exp.raw)); r.errCodes()[0] != "connection_type@/flows/0/graph/nodes/2/connection" {
		t.Fatalf("a connection of another type: %s", r.raw)
	}
	e.must(204, e.call("DELETE", "/api/v1/connections/"+wrong, bob, nil))
	bconn := e.must(201, e.call("POST", "/api/v1/connections", bob, map[string]any{
		"name": "crm", "type": "api_key", "data": map[string]any{"header": "X-API-Key", "key": "tenant-b-key"}})).data()["id"].(string)

	before = e.snapshot()
	plan := e.must(200, e.call("POST", "/api/v1/integrations/import?dryRun=true", bob, exp.raw)).data()
	if plan["dryRun"] != true || plan["integration"].(map[string]any)["action"] != "create" || len(plan["flows"].([]any)) != 2 ||
		plan["flows"].([]any)[0].(map[string]any)["action"] != "create" || plan["connections"].([]any)[0].(map[string]any)["id"] != bconn {
		t.Fatalf("dry run: %v", plan)
	}
	if e.snapshot() != before {
		t.Fatal("a dry run changed stored state")
	}
	done := e.must(201, e.call("POST", "/api/v1/integrations/import", bob, exp.raw)).data()
	newInteg := done["integration"].(map[string]any)["id"].(string)
	in := e.must(200, e.call("GET", "/api/v1/integrations/"+newInteg, bob, nil)).data()
	if in["name"] != "crm-sync" || in["settings"].(map[string]any)["region"] != "eu" || len(in["flows"].([]any)) != 2 {
		t.Fatalf("imported integration: %v", in)
	}
	pushed := e.must(200, e.call("GET", "/api/v1/flows/"+done["flows"].([]any)[0].(map[string]any)["id"].(string), bob, nil)).data()
	if pushed["graph"].(map[string]any)["nodes"].([]any)[2].(map[string]any)["connection"] != bconn || pushed["integration"] != newInteg ||
		pushed["settings"].(map[string]any)["retries"] != float64(2) {
		t.Fatalf("imported flow: %v", pushed)
	}
	e.must(404, e.call("GET", "/api/v1/integrations/"+newInteg, fx.alice, nil))

	// Importing again changes what differs: the integration's settings, and with them every
	// flow's revision; an identical flow is otherwise left as it is.
	b["integration"].(map[string]any)["settings"] = map[string]any{"region": "us"}
	plan = e.must(200, e.call("POST", "/api/v1/integrations/import?dryRun=true", bob, b)).data()
	if plan["integration"].(map[string]any)["action"] != "update" || plan["integration"].(map[string]any)["id"] != newInteg ||
		plan["flows"].([]any)[0].(map[string]any)["action"] != "unchanged" {
		t.Fatalf("second dry run: %v", plan)
	}
	e.must(200, e.call("POST", "/api/v1/integrations/import", bob, b))
	if again := e.must(200, e.call("GET", "/api/v1/flows/"+pushed["id"].(string), bob, nil)).data(); again["revision"] != float64(2) ||
		again["integrationSettings"].(map[string]any)["region"] != "us" {
		t.Fatalf("after the second import: %v", again)
	}

	// The YAML export imports as well, into a third tenant.
	_, carol := e.user(e.tenant("initech"), "carol")
	e.must(201, e.call("POST", "/api/v1/connections", carol, map[string]any{
		"name": "crm", "type": "api_key", "data": map[string]any{"header": "X-API-Key", "key": "tenant-c-key"}}))
	e.must(201, e.call("POST", "/api/v1/integrations/import", carol, yml.raw, "Content-Type", "application/yaml"))
}
