package controlplane_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/connectors/host/hosttest"
)

// builtinCatalog installs the built-in http and transform connectors.
func builtinCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{
		"http":      "github.com/flowd/flowd/connectors/http",
		"transform": "github.com/flowd/flowd/connectors/transform",
	})
	cat, err := catalog.Load(context.Background(), dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return cat
}

// seedFlow is the Open Integration Hub Flow Repository's minimal example (seeds/004).
const seedFlow = `{
  "name": "Example Integration Flow",
  "description": "Transfers data from the example origin to the example destination",
  "graph": {
    "nodes": [
      {"id": "step_1", "name": "An example origin"},
      {"id": "step_2", "name": "An example destination"}
    ],
    "edges": [{"source": "step_1", "target": "step_2"}]
  }
}`

func problemsOf(r resp) [][3]string {
	var out [][3]string
	errs, _ := r.body["errors"].([]any)
	for _, e := range errs {
		m := e.(map[string]any)
		out = append(out, [3]string{m["code"].(string), m["path"].(string), m["message"].(string)})
	}
	return out
}

func graphOf(t *testing.T, flow map[string]any) string {
	t.Helper()
	b, err := json.Marshal(flow["graph"])
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// The seed's minimal example is stored as it is (a draft), start says what each node lacks and
// leaves it inactive; once the nodes have components (a PATCH in the OIH shape) it starts.
func TestOIHMinimalExampleIsADraftUntilItHasComponents(t *testing.T) {
	e := newEnv(t, withCatalog(builtinCatalog(t)))
	created := e.must(201, e.call("POST", "/flows", e.admin, seedFlow)).data()
	id := created["id"].(string)
	nodes := created["graph"].(map[string]any)["nodes"].([]any)
	if created["status"] != "inactive" || created["type"] != "webhook" || len(nodes) != 3 {
		t.Fatalf("created: %v", created)
	}
	for i, want := range []map[string]any{
		{"id": "step_1", "name": "An example origin"},
		{"id": "step_2", "name": "An example destination"},
		{"id": "webhook", "type": "trigger.webhook"},
	} {
		if !reflect.DeepEqual(nodes[i], want) {
			t.Fatalf("node %d: %v, want %v", i, nodes[i], want)
		}
	}
	before := e.snapshot()

	// On the Flow Repository's route: in the terms of the OIH document.
	r := e.must(400, e.call("POST", "/flows/"+id+"/start", e.admin, nil))
	want := [][3]string{
		{"draft_node", "/graph/nodes/0/componentId", "node step_1 has no component: set componentId (a connector) and function"},
		{"draft_node", "/graph/nodes/1/componentId", "node step_2 has no component: set componentId (a connector) and function"},
	}
	if got := problemsOf(r); !reflect.DeepEqual(got, want) {
		t.Fatalf("start: %v, want %v", got, want)
	}
	// Under /api/v1: in flowd's terms.
	r = e.must(400, e.call("POST", "/api/v1/flows/"+id+"/start", e.admin, nil))
	if got := r.errCodes(); !reflect.DeepEqual(got, []string{"draft_node@/graph/nodes/0/connector", "draft_node@/graph/nodes/1/connector"}) {
		t.Fatalf("start under /api/v1: %s", r.raw)
	}
	if after := e.snapshot(); after != before {
		t.Fatal("a refused start changed the stored state")
	}
	if got := e.must(200, e.call("GET", "/flows/"+id, e.admin, nil)).data(); got["status"] != "inactive" {
		t.Fatalf("status after a refused start: %v", got["status"])
	}

	// Its OIH document is the example again.
	exp := e.must(200, e.call("GET", "/flows/"+id+"?format=oih", e.admin, nil)).data()
	var seed map[string]any
	_ = json.Unmarshal([]byte(seedFlow), &seed)
	if graphOf(t, exp) != graphOf(t, seed) || exp["name"] != seed["name"] || exp["cron"] != nil {
		t.Fatalf("export: %v", exp)
	}

	// Components given, in the OIH shape: it starts.
	patch := `{"graph": {"nodes": [
		{"id": "step_1", "name": "An example origin", "componentId": "transform", "function": "map", "fields": {"fields": {"n": "input.n"}}},
		{"id": "step_2", "name": "An example destination", "componentId": "transform", "function": "map", "fields": {"fields": {"m": "steps.step_1.n"}}}]}}`
	patched := e.must(200, e.call("PATCH", "/flows/"+id, e.admin, patch)).data()
	pn := patched["graph"].(map[string]any)["nodes"].([]any)
	if patched["revision"] != float64(2) || len(pn) != 3 || pn[0].(map[string]any)["type"] != "action" || pn[2].(map[string]any)["id"] != "webhook" {
		t.Fatalf("patched: %v", patched)
	}
	if started := e.must(200, e.call("POST", "/flows/"+id+"/start", e.admin, nil)).data(); started["status"] != "active" {
		t.Fatalf("start: %v", started)
	}
}

// An OIH flow with components and a cron: what maps is mapped, what cannot is named in
// warnings; its export creates the same flow again, as the README example's does.
func TestOIHFlowExportsAndImportsAsTheSameFlow(t *testing.T) {
	e := newEnv(t, withCatalog(builtinCatalog(t)))
	doc := `{
	  "name": "orders", "cron": "*/5 * * * *", "tenant": "acme",
	  "graph": {
	    "nodes": [
	      {"id": "shape", "componentId": "transform", "function": "map",
	       "fields": {"fields": {"total": "input.qty * input.price"}},
	       "nodeSettings": {"retry": {"maxAttempts": 2}, "idLinking": true}},
	      {"id": "send", "componentId": "http", "function": "request",
	       "fields": {"method": "POST", "url": "https://example.com/orders", "body": "{{ steps.shape }}"}}
	    ],
	    "edges": [{"source": "shape", "target": "send", "config": {"condition": "steps.shape.total > 0", "mapper": {}}}]
	  }}`
	r := e.must(201, e.call("POST", "/api/v1/flows", e.admin, doc))
	created := r.data()
	var warned []string
	for _, w := range problemsOf(resp{body: map[string]any{"errors": r.body["warnings"]}}) {
		warned = append(warned, w[0]+"@"+w[1])
	}
	if strings.Join(warned, " ") != "not_kept@/tenant not_kept@/graph/nodes/0/nodeSettings/idLinking not_kept@/graph/edges/0/config/mapper" {
		t.Fatalf("warnings: %v", warned)
	}
	if created["type"] != "schedule" {
		t.Fatalf("created: %v", created)
	}
	g := created["graph"].(map[string]any)
	cron := g["nodes"].([]any)[2].(map[string]any)
	edges := g["edges"].([]any)
	if cron["type"] != "trigger.schedule" || cron["config"].(map[string]any)["cron"] != "*/5 * * * *" ||
		edges[0].(map[string]any)["condition"] != "steps.shape.total > 0" || edges[1].(map[string]any)["target"] != "shape" {
		t.Fatalf("mapped graph: %v", g)
	}

	for _, src := range []map[string]any{created, e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))).data()} {
		id := src["id"].(string)
		exp := e.must(200, e.call("GET", "/flows/"+id+"?format=oih", e.admin, nil)).data()
		again := e.must(201, e.call("POST", "/flows", e.admin, exp)).data()
		if graphOf(t, again) != graphOf(t, src) || again["id"] == id || again["name"] != src["name"] {
			t.Fatalf("re-imported:\n%s\nwant\n%s", graphOf(t, again), graphOf(t, src))
		}
		if !reflect.DeepEqual(again["payload"], src["payload"]) {
			t.Fatalf("payload: %v, want %v", again["payload"], src["payload"])
		}
	}
	// The README flow's connector steps are OIH nodes in its export; its control nodes stay.
	readme := e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))).data()
	exp := e.must(200, e.call("GET", "/api/v1/flows/"+readme["id"].(string)+"?format=oih", e.admin, nil)).data()
	en := exp["graph"].(map[string]any)["nodes"].([]any)
	if en[2].(map[string]any)["componentId"] != "http" || en[2].(map[string]any)["function"] != "request" || en[1].(map[string]any)["type"] != "if" {
		t.Fatalf("README flow export: %v", en)
	}
	e.must(400, e.call("GET", "/flows/"+readme["id"].(string)+"?format=xml", e.admin, nil))
}

// A first node whose function is a connector's trigger becomes the poll trigger, polling at
// the cron's interval.
func TestOIHPollTrigger(t *testing.T) {
	e := newEnv(t, withCatalog(builtinCatalog(t)))
	r := e.must(201, e.call("POST", "/flows", e.admin, `{"name": "poller", "cron": "*/5 * * * *", "graph": {"nodes": [
		{"id": "orders", "componentId": "http", "function": "poll", "fields": {"url": "https://example.com/orders"}},
		{"id": "shape", "componentId": "transform", "function": "map", "fields": {"fields": {"id": "input.id"}}}],
		"edges": [{"source": "orders", "target": "shape"}]}}`))
	n := r.data()["graph"].(map[string]any)["nodes"].([]any)[0].(map[string]any)
	if r.data()["type"] != "poll" || n["type"] != "trigger.poll" || n["trigger"] != "poll" || n["interval"] != "5m" {
		t.Fatalf("poll flow: %s", r.raw)
	}
	if ws, _ := r.body["warnings"].([]any); len(ws) != 1 || ws[0].(map[string]any)["code"] != "cron_to_poll" {
		t.Fatalf("warnings: %v", r.body["warnings"])
	}
}

// What flowd refuses in an OIH document is named at its path in that document, and nothing is
// stored.
func TestOIHProblemsPointIntoTheDocument(t *testing.T) {
	e := newEnv(t, withCatalog(builtinCatalog(t)))
	before := e.snapshot()
	for _, c := range []struct{ doc, want string }{
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "componentId": "ftp", "function": "get"}]}}`, "unknown_connector@/graph/nodes/0/componentId"},
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "componentId": "http", "function": "fetch"}]}}`, "unknown_action@/graph/nodes/0/function"},
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "componentId": "http", "function": "request", "fields": {"method": 42, "url": "https://example.com"}}]}}`, "invalid_config@/graph/nodes/0/fields/method"},
		{`{"name": "x", "cron": "61 * * * *", "graph": {"nodes": [{"id": "a", "componentId": "transform", "function": "map", "fields": {"fields": {}}}]}}`, "invalid_schedule@/cron"},
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "type": "action", "componentId": "transform", "function": "map", "fields": {"fields": {}}}]}}`, "mixed_shape@/graph/nodes/0/type"},
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "componentId": "transform", "function": "map", "fields": {"fields": {}}}, {"id": "b"}],
		  "edges": [{"source": "a", "target": "b", "config": {"condition": "1 +"}}]}}`, "invalid_expression@/graph/edges/0/config/condition"},
	} {
		r := e.must(400, e.call("POST", "/flows", e.admin, c.doc))
		if got := r.errCodes(); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: %v, want [%s]", c.doc, got, c.want)
		}
	}
	if after := e.snapshot(); after != before {
		t.Fatal("refused documents changed the stored state")
	}
}
