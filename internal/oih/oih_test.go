package oih

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/problem"
)

// seedMinimal is the Flow Repository's own minimal example (seeds/004).
const seedMinimal = `{
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

// pollers knows one trigger: http's poll.
func pollers(connector, function string) bool { return connector == "http" && function == "poll" }

func obj(t *testing.T, doc string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// decode imports doc and decodes the result as the API does, failing on any problem.
func decode(t *testing.T, doc map[string]any) (*flowdoc.Flow, *Imported) {
	t.Helper()
	im := Import(doc, pollers)
	if len(im.Problems) > 0 {
		t.Fatalf("import problems: %v", im.Problems)
	}
	raw, err := json.Marshal(im.Doc)
	if err != nil {
		t.Fatal(err)
	}
	f, ps := flowdoc.Decode(raw, flowdoc.Options{})
	if len(ps) > 0 {
		t.Fatalf("decode problems: %v\n%s", im.Translate(ps), raw)
	}
	return f, im
}

// roundTrip exports f, sends the export through JSON as a client would, imports it again and
// checks that the graph (and the rest of the document) is the same.
func roundTrip(t *testing.T, f *flowdoc.Flow) map[string]any {
	t.Helper()
	exp, err := Export(f, pollers)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(exp)
	if err != nil {
		t.Fatal(err)
	}
	again := obj(t, string(raw))
	if !Detect(again) && hasOIHNodes(f) {
		t.Fatalf("the export is not recognised as an OIH document: %s", raw)
	}
	f2, _ := decode(t, again)
	a, _ := flowdoc.Canonical(f)
	b, _ := flowdoc.Canonical(f2)
	if string(a) != string(b) {
		t.Fatalf("round trip changed the flow:\nbefore %s\nexport %s\nafter  %s", a, raw, b)
	}
	return again
}

func hasOIHNodes(f *flowdoc.Flow) bool {
	for i := range f.Graph.Nodes {
		if fromOIH(&f.Graph.Nodes[i]) {
			return true
		}
	}
	return false
}

func paths(ps problem.List) []string {
	var out []string
	for _, p := range ps {
		out = append(out, p.Code+"@"+p.Path)
	}
	return out
}

func TestSeedMinimalExampleIsAStoredDraft(t *testing.T) {
	doc := obj(t, seedMinimal)
	if !Detect(doc) {
		t.Fatal("the seed's example is not recognised as an OIH document")
	}
	f, im := decode(t, doc)
	if len(im.Warnings) != 0 {
		t.Fatalf("warnings: %v", im.Warnings)
	}
	// The nodes as given, a webhook in front of the first one, after them.
	ns := f.Graph.Nodes
	if len(ns) != 3 || ns[0].ID != "step_1" || !ns[0].IsDraft() || ns[0].Name != "An example origin" || !ns[1].IsDraft() ||
		ns[2].ID != WebhookID || ns[2].Type != flowdoc.TypeWebhook {
		t.Fatalf("nodes: %+v", ns)
	}
	if want := []flowdoc.Edge{{Source: "step_1", Target: "step_2"}, {Source: WebhookID, Target: "step_1"}}; !reflect.DeepEqual(f.Graph.Edges, want) {
		t.Fatalf("edges: %+v", f.Graph.Edges)
	}
	// It cannot start: each node lacks its component, said in the document's terms.
	ps := StartProblems(f)
	want := []string{"draft_node@/graph/nodes/0/componentId", "draft_node@/graph/nodes/1/componentId"}
	if !reflect.DeepEqual(paths(ps), want) {
		t.Fatalf("start problems %v, want %v", paths(ps), want)
	}
	if ps[0].Message != "node step_1 has no component: set componentId (a connector) and function" {
		t.Fatalf("message: %q", ps[0].Message)
	}
	// In flowd's terms, the same nodes.
	if got := paths(flowdoc.StartProblems(f)); !reflect.DeepEqual(got, []string{"draft_node@/graph/nodes/0/connector", "draft_node@/graph/nodes/1/connector"}) {
		t.Fatalf("flowd start problems: %v", got)
	}
	exp := roundTrip(t, f)
	if _, ok := exp["cron"]; ok {
		t.Fatalf("export has a cron: %v", exp)
	}
	g := exp["graph"].(map[string]any)
	if len(g["nodes"].([]any)) != 2 || len(g["edges"].([]any)) != 1 {
		t.Fatalf("the implied webhook is exported: %v", g)
	}
}

func TestDraftsSayWhatTheyLack(t *testing.T) {
	f, _ := decode(t, obj(t, `{"name": "x", "graph": {"nodes": [
		{"id": "a", "componentId": "transform"},
		{"id": "b", "function": "map"}],
		"edges": [{"source": "a", "target": "b"}]}}`))
	got := StartProblems(f)
	if want := []string{"draft_node@/graph/nodes/0/function", "draft_node@/graph/nodes/1/componentId"}; !reflect.DeepEqual(paths(got), want) {
		t.Fatalf("got %v, want %v", paths(got), want)
	}
	if !strings.Contains(got[0].Message, "connector transform") {
		t.Fatalf("message: %q", got[0].Message)
	}
	roundTrip(t, f)
}

func TestCronFlowWithComponents(t *testing.T) {
	doc := obj(t, `{
	  "name": "orders", "cron": "*/5 * * * *",
	  "graph": {
	    "nodes": [
	      {"id": "shape", "name": "Shape", "componentId": "transform", "function": "map",
	       "fields": {"fields": {"total": "input.qty * input.price"}},
	       "nodeSettings": {"retry": {"maxAttempts": 2}, "timeout": "30s"}},
	      {"id": "send", "componentId": "http", "function": "request", "credentials_id": "conn-1",
	       "fields": {"method": "POST", "url": "https://example.com/orders", "body": "{{ steps.shape }}"}}
	    ],
	    "edges": [{"id": "e1", "source": "shape", "target": "send", "config": {"condition": "steps.shape.total > 0"}}]
	  }}`)
	f, im := decode(t, doc)
	if len(im.Warnings) != 0 {
		t.Fatalf("warnings: %v", im.Warnings)
	}
	shape, send, cron := f.Graph.Nodes[0], f.Graph.Nodes[1], f.Graph.Nodes[2]
	if shape.Type != flowdoc.TypeAction || shape.Connector != "transform" || shape.Action != "map" || shape.Timeout != "30s" ||
		shape.Retry == nil || shape.Retry.MaxAttempts != 2 || shape.Config["fields"] == nil {
		t.Fatalf("shape: %+v", shape)
	}
	if send.Type != flowdoc.TypeAction || send.Connection != "conn-1" || send.Config["url"] != "https://example.com/orders" {
		t.Fatalf("send: %+v", send)
	}
	if cron.ID != CronID || cron.Type != flowdoc.TypeSchedule || !reflect.DeepEqual(cron.Config, map[string]any{"cron": "*/5 * * * *"}) {
		t.Fatalf("cron: %+v", cron)
	}
	if want := []flowdoc.Edge{{ID: "e1", Source: "shape", Target: "send", Condition: "steps.shape.total > 0"}, {Source: CronID, Target: "shape"}}; !reflect.DeepEqual(f.Graph.Edges, want) {
		t.Fatalf("edges: %+v", f.Graph.Edges)
	}
	if ps := StartProblems(f); len(ps) != 0 {
		t.Fatalf("start problems: %v", ps)
	}
	exp := roundTrip(t, f)
	// The export is the document that came in.
	delete(doc, "id")
	if !reflect.DeepEqual(exp, doc) {
		a, _ := json.Marshal(doc)
		b, _ := json.Marshal(exp)
		t.Fatalf("export differs from the document imported:\nin  %s\nout %s", a, b)
	}
}

func TestPollTriggerTakesTheCronAsItsInterval(t *testing.T) {
	f, im := decode(t, obj(t, `{"name": "p", "cron": "*/5 * * * *", "graph": {"nodes": [
		{"id": "orders", "componentId": "http", "function": "poll", "fields": {"url": "https://example.com/orders"}},
		{"id": "shape", "componentId": "transform", "function": "map", "fields": {"fields": {"id": "input.id"}}}],
		"edges": [{"source": "orders", "target": "shape"}]}}`))
	p := f.Graph.Nodes[0]
	if len(f.Graph.Nodes) != 2 || p.Type != flowdoc.TypePoll || p.Trigger != "poll" || p.Interval != "5m" {
		t.Fatalf("nodes: %+v", f.Graph.Nodes)
	}
	if got := paths(im.Warnings); !reflect.DeepEqual(got, []string{"cron_to_poll@/cron"}) {
		t.Fatalf("warnings: %v", got)
	}
	exp := roundTrip(t, f)
	n0 := exp["graph"].(map[string]any)["nodes"].([]any)[0].(map[string]any)
	if !reflect.DeepEqual(n0["nodeSettings"], map[string]any{"trigger": true, "interval": "5m"}) || exp["cron"] != nil {
		t.Fatalf("exported poll trigger: %v (cron %v)", n0, exp["cron"])
	}
	// Where no catalog can tell, nodeSettings.trigger still makes the poll trigger; false
	// keeps a node an action.
	im = Import(exp, nil)
	if n := im.Doc["graph"].(map[string]any)["nodes"].([]any)[0].(map[string]any); n["type"] != flowdoc.TypePoll {
		t.Fatalf("without a catalog: %v", n)
	}
	doc := obj(t, `{"name": "p", "graph": {"nodes": [{"id": "a", "componentId": "http", "function": "poll", "nodeSettings": {"trigger": false}}]}}`)
	if n := Import(doc, pollers).Doc["graph"].(map[string]any)["nodes"].([]any)[0].(map[string]any); n["type"] != flowdoc.TypeAction {
		t.Fatalf("trigger false: %v", n)
	}
}

func TestWhatCannotBeKeptIsAWarning(t *testing.T) {
	im := Import(obj(t, `{"name": "w", "tenant": "t1", "flowSettings": {"webhooks": {}},
	  "graph": {"nodes": [
	    {"id": "a", "componentId": "transform", "function": "map", "authorization": {},
	     "nodeSettings": {"idLinking": true, "pool": "fast"}}],
	   "edges": []}}`), pollers)
	want := []string{"not_kept@/tenant", "not_kept@/flowSettings", "not_kept@/graph/nodes/0/authorization", "not_kept@/graph/nodes/0/nodeSettings/idLinking"}
	got := paths(im.Warnings)
	if len(im.Problems) != 0 || len(got) != len(want) {
		t.Fatalf("warnings %v, problems %v", got, im.Problems)
	}
	for _, w := range want {
		if !strings.Contains(strings.Join(got, " "), w) {
			t.Fatalf("warnings %v lack %s", got, w)
		}
	}
	n := im.Doc["graph"].(map[string]any)["nodes"].([]any)[0].(map[string]any)
	if n["pool"] != "fast" || n["authorization"] != nil || im.Doc["tenant"] != nil {
		t.Fatalf("mapped: %v", im.Doc)
	}
	im = Import(obj(t, `{"name": "m", "graph": {"nodes": [{"id": "a", "componentId": "transform", "function": "map"},
	  {"id": "b", "componentId": "transform", "function": "map"}],
	  "edges": [{"source": "a", "target": "b", "config": {"mapper": {"x": "y"}}}]}}`), pollers)
	if got := paths(im.Warnings); !reflect.DeepEqual(got, []string{"not_kept@/graph/edges/0/config/mapper"}) {
		t.Fatalf("mapper: %v", got)
	}
}

func TestWhatCannotBeMappedIsRefused(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "type": "action", "componentId": "http", "function": "request"}]}}`, "mixed_shape@/graph/nodes/0/type"},
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "componentId": "http", "function": "request", "config": {}}]}}`, "mixed_shape@/graph/nodes/0/config"},
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "componentId": 7, "function": "request"}]}}`, "type@/graph/nodes/0/componentId"},
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "componentId": "http", "function": "request", "fields": "url"}]}}`, "type@/graph/nodes/0/fields"},
		{`{"name": "x", "cron": 5, "graph": {"nodes": [{"id": "a", "componentId": "http", "function": "request"}]}}`, "type@/cron"},
		{`{"name": "x", "cron": "@daily", "graph": {"nodes": [{"id": "in", "type": "trigger.webhook"}, {"id": "a", "componentId": "http", "function": "request"}], "edges": [{"source": "in", "target": "a"}]}}`, "invalid@/cron"},
		{`{"name": "x", "cron": "0 8 * * MON", "graph": {"nodes": [{"id": "a", "componentId": "http", "function": "poll"}]}}`, "invalid@/cron"},
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "componentId": "http", "function": "poll"}, {"id": "b", "componentId": "http", "function": "poll", "nodeSettings": {"trigger": true}}], "edges": [{"source": "a", "target": "b"}]}}`, "invalid@/graph/nodes/1/nodeSettings/trigger"},
		{`{"name": "x", "graph": {"nodes": [{"id": "a", "componentId": "http", "function": "request"}, {"id": "b", "componentId": "http", "function": "request"}], "edges": [{"source": "a", "target": "b", "condition": "true", "config": {"condition": "false"}}]}}`, "mixed_shape@/graph/edges/0/condition"},
	} {
		im := Import(obj(t, c.doc), pollers)
		if got := paths(im.Problems); len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: problems %v, want [%s]", c.doc, got, c.want)
		}
	}
}

// flowd's own problems of an imported document point into the OIH document.
func TestProblemPathsPointIntoTheOIHDocument(t *testing.T) {
	im := Import(obj(t, `{"name": "x", "cron": "61 * * * *", "graph": {"nodes": [
		{"id": "a", "componentId": "http", "function": "request", "fields": {"url": "{{ input.id"}},
		{"id": "b", "componentId": "http", "function": "request", "nodeSettings": {"timeout": "forever"}}],
		"edges": [{"source": "a", "target": "b", "config": {"condition": "1 +"}}]}}`), pollers)
	raw, _ := json.Marshal(im.Doc)
	_, ps := flowdoc.Decode(raw, flowdoc.Options{})
	got := strings.Join(paths(im.Translate(ps)), " ")
	for _, want := range []string{"@/cron", "invalid_expression@/graph/nodes/0/fields/url", "@/graph/nodes/1/nodeSettings/timeout", "invalid_expression@/graph/edges/0/config/condition"} {
		if !strings.Contains(got, want) {
			t.Errorf("problems %s lack %s", got, want)
		}
	}
}

// Nodes written the flowd way pass through, so an export keeps what OIH cannot say.
func TestFlowdNodesRoundTrip(t *testing.T) {
	f, _ := decode(t, obj(t, `{"name": "mixed", "graph": {"nodes": [
		{"id": "hook", "type": "trigger.webhook", "config": {"mode": "sync"}},
		{"id": "check", "type": "if", "config": {"condition": "input.n > 1"}},
		{"id": "big", "type": "action", "connector": "transform", "action": "map", "config": {"fields": {"n": "input.n"}}, "pool": "fast"},
		{"id": "reply", "type": "respond"},
		{"id": "cron", "type": "action", "connector": "http", "action": "poll"}],
		"edges": [{"source": "hook", "target": "check"}, {"source": "check", "target": "big", "port": "true"},
		          {"source": "check", "target": "reply", "port": "false"}, {"source": "big", "target": "reply", "condition": "true"},
		          {"source": "big", "target": "cron"}]}}`))
	exp := roundTrip(t, f)
	nodes := exp["graph"].(map[string]any)["nodes"].([]any)
	if nodes[1].(map[string]any)["type"] != "if" || nodes[2].(map[string]any)["componentId"] != "transform" {
		t.Fatalf("export: %v", nodes)
	}
	// A flow whose cron node is its own: written the flowd way, it stays the same too.
	f, _ = decode(t, obj(t, `{"name": "own cron", "cron": "@hourly", "graph": {"nodes": [
		{"id": "cron", "componentId": "transform", "function": "map"}]}}`))
	if f.Graph.Nodes[1].ID != "cron-2" {
		t.Fatalf("implied trigger id: %+v", f.Graph.Nodes)
	}
	roundTrip(t, f)
	// A webhook trigger of a flow without one, behind the onError handler's root.
	f, _ = decode(t, obj(t, `{"name": "handled", "onError": {"node": "alert"}, "graph": {"nodes": [
		{"id": "alert", "componentId": "http", "function": "poll"},
		{"id": "a", "componentId": "http", "function": "poll"}]}}`))
	if f.Graph.Nodes[0].Type != flowdoc.TypeAction || f.Graph.Nodes[1].Type != flowdoc.TypePoll {
		t.Fatalf("the handler's root became the trigger: %+v", f.Graph.Nodes)
	}
	roundTrip(t, f)
}

func TestInterval(t *testing.T) {
	for cron, want := range map[string]string{
		"*/5 * * * *": "5m", "* * * * *": "1m", "0 */2 * * *": "2h", "0 * * * *": "1h", "*/10 * * * * *": "10s",
		"@every 30s": "30s", "@hourly": "1h", "@daily": "24h",
		"5 * * * *": "", "0 8 * * MON": "", "@every soon": "", "@weekly": "", "": "",
	} {
		got, ok := Interval(cron)
		if ok != (want != "") || got != want && ok {
			t.Errorf("Interval(%q) = %q, %v; want %q", cron, got, ok, want)
		}
	}
}
