package flowsync_test

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/flowsync"
)

// decode reads a document as apply reads a file.
func decode(t *testing.T, doc string) *flowdoc.Flow {
	t.Helper()
	j, ps := flowdoc.ToJSON([]byte(doc), "")
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	f, ps := flowdoc.Decode(j, flowdoc.Options{})
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	return f
}

// stored is the flow as the server keeps it after creating it from doc: server fields set,
// empty edge lists as [], the creator's owners added.
func stored(t *testing.T, id string, rev int, doc string, owners ...flowdoc.Owner) flowdoc.Flow {
	t.Helper()
	f := decode(t, doc)
	raw, err := flowdoc.Canonical(f)
	if err != nil {
		t.Fatal(err)
	}
	var out flowdoc.Flow
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatal(err)
	}
	out.ID, out.Revision, out.Status, out.Type = id, rev, flowdoc.StatusInactive, "webhook"
	out.Owners = append(out.Owners, owners...)
	return out
}

var (
	me   = flowdoc.Owner{ID: "u1", Type: flowdoc.OwnerUser}
	ten  = flowdoc.Owner{ID: "t1", Type: flowdoc.OwnerTenant}
	self = []flowdoc.Owner{me, ten}
)

const ordersYAML = `
name: orders
description: New orders to the ERP
graph:
  nodes:
    - id: hook
      type: trigger.webhook
    - id: big
      type: if
      config: {condition: "input.amount > 100"}
    - id: call
      type: action
      connector: http
      action: request
      config: {url: "https://erp.example.com/orders", method: POST}
  edges:
    - {source: hook, target: big}
    - {source: big, target: call, port: true}
retry:
  maxAttempts: 5
  jitter: 0.2
settings:
  team: NO
`

// The same flow as the server shows it: JSON, keys in another order, server fields, the
// creator's owners, the boolean port as the string it is stored as.
const ordersJSON = `{"graph":{"edges":[{"target":"big","source":"hook"},{"port":"true","target":"call","source":"big"}],
 "nodes":[{"type":"trigger.webhook","id":"hook"},{"id":"big","type":"if","config":{"condition":"input.amount > 100"}},
 {"id":"call","type":"action","connector":"http","action":"request","config":{"method":"POST","url":"https://erp.example.com/orders"}}]},
 "settings":{"team":"NO"},"retry":{"jitter":0.2,"maxAttempts":5},"description":"New orders to the ERP","name":"orders"}`

const minimal = `{"name":"%s","graph":{"nodes":[{"id":"hook","type":"trigger.webhook"}]}}`

func named(name string) string { return strings.Replace(minimal, "%s", name, 1) }

func TestSameFlowWrittenDifferentlyIsUnchanged(t *testing.T) {
	srcs := []flowsync.Source{{Path: "orders.yaml", Flow: decode(t, ordersYAML)}}
	p, err := flowsync.Make(srcs, []flowdoc.Flow{stored(t, "f1", 3, ordersJSON, me, ten)}, flowsync.Options{Self: self})
	if err != nil {
		t.Fatal(err)
	}
	if !p.Empty() || len(p.Changes) != 1 || p.Changes[0].Line() != "= orders unchanged" {
		t.Fatalf("plan %+v", p.Changes)
	}
}

func TestPlanCreatesUpdatesAndLeavesOthersAlone(t *testing.T) {
	edited := strings.Replace(ordersYAML, "New orders to the ERP", "Orders to the ERP", 1)
	edited = strings.Replace(edited, "  jitter: 0.2\n", "", 1)
	edited = strings.Replace(edited, "settings:\n  team: NO\n", "", 1)
	srcs := []flowsync.Source{
		{Path: "a/orders.yaml", Flow: decode(t, edited)},
		{Path: "b/fresh.json", Flow: decode(t, named("fresh"))},
	}
	current := []flowdoc.Flow{stored(t, "f1", 3, ordersJSON, me), stored(t, "f2", 1, named("legacy"))}
	p, err := flowsync.Make(srcs, current, flowsync.Options{Self: self})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range p.Changes {
		lines = append(lines, c.Line())
	}
	want := []string{"~ update orders (revision 3): fields description, retry, settings", "+ create fresh"}
	if !reflect.DeepEqual(lines, want) {
		t.Fatalf("plan %q, want %q", lines, want)
	}
	if p.Empty() || p.Count(flowsync.Update) != 1 || p.Count(flowsync.Create) != 1 || p.Count(flowsync.Delete) != 0 {
		t.Fatalf("counts of %+v", p.Changes)
	}
	if !reflect.DeepEqual(p.Untracked, []string{"legacy"}) {
		t.Fatalf("untracked %v", p.Untracked)
	}
	up := p.Changes[0]
	if up.ID != "f1" || up.Revision != 3 || up.Path != "a/orders.yaml" {
		t.Fatalf("update %+v", up)
	}
	// A removed field is null; an object keeps what did not change and drops what went.
	var patch map[string]any
	if err := json.Unmarshal(up.Patch, &patch); err != nil {
		t.Fatal(err)
	}
	wantPatch := map[string]any{"description": "Orders to the ERP", "retry": map[string]any{"jitter": nil}, "settings": nil}
	if !reflect.DeepEqual(patch, wantPatch) {
		t.Fatalf("patch %s", up.Patch)
	}
	// The creation sends the file's writable fields.
	var doc map[string]any
	if err := json.Unmarshal(p.Changes[1].Doc, &doc); err != nil || doc["name"] != "fresh" || doc["id"] != nil {
		t.Fatalf("create doc %s (%v)", p.Changes[1].Doc, err)
	}
}

func TestGraphChangesReplaceTheChangedLists(t *testing.T) {
	edited := strings.Replace(ordersYAML, "method: POST", "method: PUT", 1)
	p, err := flowsync.Make([]flowsync.Source{{Path: "o.yaml", Flow: decode(t, edited)}},
		[]flowdoc.Flow{stored(t, "f1", 7, ordersYAML, me)}, flowsync.Options{Self: self})
	if err != nil {
		t.Fatal(err)
	}
	c := p.Changes[0]
	if c.Line() != "~ update orders (revision 7): fields graph" {
		t.Fatalf("line %q", c.Line())
	}
	var patch struct {
		Graph map[string][]map[string]any `json:"graph"`
	}
	if err := json.Unmarshal(c.Patch, &patch); err != nil {
		t.Fatal(err)
	}
	// Arrays are replaced whole by a merge patch: the node list goes in full, the edges not at all.
	if _, ok := patch.Graph["edges"]; ok || len(patch.Graph["nodes"]) != 3 {
		t.Fatalf("patch %s", c.Patch)
	}
}

func TestOwnersCompareWithoutTheCallersOwn(t *testing.T) {
	partner := flowdoc.Owner{ID: "t9", Type: flowdoc.OwnerTenant}
	withOwners := func(os ...string) string {
		return strings.Replace(named("o"), `"graph"`, `"owners":[`+strings.Join(os, ",")+`],"graph"`, 1)
	}
	for _, tc := range []struct {
		name   string
		file   string
		server []flowdoc.Owner
		want   string // the owners patched, "" for unchanged
	}{
		{"a file without owners leaves them alone", named("o"), []flowdoc.Owner{me, partner}, ""},
		{"the creator's entries do not count", withOwners(`{"id":"t9","type":"tenant"}`), []flowdoc.Owner{partner, me, ten}, ""},
		{"order does not count", withOwners(`{"id":"t9","type":"tenant"}`, `{"id":"x","type":"user"}`),
			[]flowdoc.Owner{{ID: "x", Type: "user"}, partner}, ""},
		{"a new owner is set, the caller's kept", withOwners(`{"id":"t9","type":"tenant"}`), []flowdoc.Owner{me},
			`[{"id":"t9","type":"tenant"},{"id":"u1","type":"user"}]`},
		{"a removed owner goes", withOwners(`{"id":"x","type":"user"}`), []flowdoc.Owner{{ID: "x", Type: "user"}, partner, ten},
			`[{"id":"x","type":"user"},{"id":"t1","type":"tenant"}]`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := flowsync.Make([]flowsync.Source{{Path: "o.json", Flow: decode(t, tc.file)}},
				[]flowdoc.Flow{stored(t, "f1", 2, named("o"), tc.server...)}, flowsync.Options{Self: self})
			if err != nil {
				t.Fatal(err)
			}
			c := p.Changes[0]
			if tc.want == "" {
				if c.Op != flowsync.Unchanged {
					t.Fatalf("%s: %s", c.Line(), c.Patch)
				}
				return
			}
			if c.Line() != "~ update o (revision 2): fields owners" || string(c.Patch) != `{"owners":`+tc.want+`}` {
				t.Fatalf("%s: %s", c.Line(), c.Patch)
			}
		})
	}
}

func TestPruneDeletesWhatNoFileStates(t *testing.T) {
	current := []flowdoc.Flow{stored(t, "f3", 4, named("zeta")), stored(t, "f1", 1, named("keep")), stored(t, "f2", 2, named("alpha"))}
	p, err := flowsync.Make([]flowsync.Source{{Path: "keep.json", Flow: decode(t, named("keep"))}}, current, flowsync.Options{Prune: true})
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, c := range p.Changes {
		lines = append(lines, c.Line()+" "+c.ID)
	}
	want := []string{"= keep unchanged f1", "- delete alpha f2", "- delete zeta f3"}
	if !reflect.DeepEqual(lines, want) || len(p.Untracked) != 0 || p.Count(flowsync.Delete) != 2 {
		t.Fatalf("plan %q, untracked %v", lines, p.Untracked)
	}
}

func TestTwoServerFlowsOfOneNameAreRefused(t *testing.T) {
	current := []flowdoc.Flow{stored(t, "f1", 1, named("dup")), stored(t, "f2", 1, named("dup")), stored(t, "f3", 1, named("other")), stored(t, "f4", 1, named("other"))}
	// Only names the files state matter: "other" is left alone.
	_, err := flowsync.Make([]flowsync.Source{{Path: "d.json", Flow: decode(t, named("dup"))}}, current, flowsync.Options{})
	if err == nil || err.Error() != `2 flows on the server are named "dup" (ids f1, f2): rename or delete all but one` {
		t.Fatalf("got %v", err)
	}
}

func TestCheckNamesReportsEachRepeat(t *testing.T) {
	srcs := []flowsync.Source{
		{Path: "a.json", Flow: decode(t, named("x"))},
		{Path: "b.json", Flow: decode(t, named("y"))},
		{Path: "c.json", Flow: decode(t, named("x"))},
	}
	ps := flowsync.CheckNames(srcs)
	if len(ps) != 1 || ps[0].Path != "c.json" || ps[0].Problem.String() !=
		`/name: flow name "x" is also stated by a.json; names must be unique among the files (duplicate_name)` {
		t.Fatalf("got %+v", ps)
	}
}

// What export writes, apply reads back as the same flow, whatever the values look like.
func TestExportReadsBackUnchanged(t *testing.T) {
	doc := `{"name":"Orders: EU/US","description":"line one\nline two\n","owners":[{"id":"u1","type":"user"},{"id":"t9","type":"tenant"}],
	 "graph":{"nodes":[{"id":"hook","type":"trigger.webhook","name":"on"},
	  {"id":"t","type":"action","connector":"transform","action":"map","config":{"z":"NO","a":"01234","n":1.5,"big":12345678901234,
	   "b":"true","f":"1.0","e":"","lt":"<b> & \"q\"","nested":{"y":["yes",null,false,0]},"date":"2024-01-02"}}],
	  "edges":[{"source":"hook","target":"t"}]},
	 "settings":{"tags":["a","b"],"~":"tilde"},"history":{"succeeded":"summary","maxAge":"72h"},"retry":{"maxAttempts":3,"jitter":0}}`
	f := decode(t, doc)
	server := stored(t, "f1", 5, doc, ten)
	for _, format := range []string{flowsync.FormatYAML, flowsync.FormatJSON} {
		out, err := flowsync.Export(&server, format, self)
		if err != nil {
			t.Fatal(err)
		}
		back := decode(t, string(out))
		if back.Name != f.Name || !reflect.DeepEqual(back.Owners, []flowdoc.Owner{{ID: "t9", Type: "tenant"}}) {
			t.Fatalf("%s: name %q, owners %v (the caller's own are left out)\n%s", format, back.Name, back.Owners, out)
		}
		p, err := flowsync.Make([]flowsync.Source{{Path: "x", Flow: back}}, []flowdoc.Flow{server}, flowsync.Options{Self: self})
		if err != nil {
			t.Fatal(err)
		}
		if !p.Empty() {
			t.Fatalf("%s: %s %s\n%s", format, p.Changes[0].Line(), p.Changes[0].Patch, out)
		}
		for _, ro := range []string{"revision", "status", "createdAt", "f1", ": webhook\n", "\"webhook\""} {
			if strings.Contains(string(out), ro) {
				t.Fatalf("%s: exported a server field (%q):\n%s", format, ro, out)
			}
		}
		// Stable: the document's order, name first.
		if !strings.HasPrefix(string(out), "name: ") && !strings.HasPrefix(string(out), "{\n  \"name\": ") {
			t.Fatalf("%s does not start with the name:\n%s", format, out)
		}
		again, _ := flowsync.Export(&server, format, self)
		if string(again) != string(out) {
			t.Fatalf("%s: two exports differ", format)
		}
	}
	if _, err := flowsync.Export(&server, "toml", nil); err == nil {
		t.Fatal("an unknown format was accepted")
	}
}

func TestFileNames(t *testing.T) {
	got := flowsync.FileNames([]string{"Orders: EU/US", "orders eu us", "!!!", "Ünïcode 2"}, "yaml")
	want := []string{"orders-eu-us.yaml", "orders-eu-us-2.yaml", "flow.yaml", "ünïcode-2.yaml"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q", got)
	}
}
