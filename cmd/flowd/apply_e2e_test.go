package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowd/flowd/internal/flowsync"
)

const ordersFlow = `# Answers each order with whether it is a big one.
name: orders
description: Sorts orders by size
graph:
  nodes:
    - id: hook
      type: trigger.webhook
    - id: big
      type: if
      config: {condition: "input.total > 100"}
    - id: yes
      type: respond
      config: {status: 200, body: {big: true}}
    - id: no
      type: respond
      config: {status: 200, body: {big: false}}
  edges:
    - {source: hook, target: big}
    - {source: big, target: yes, port: true}
    - {source: big, target: no, port: false}
`

const contactsFlow = `{
  "name": "contacts",
  "graph": {
    "nodes": [
      {"id": "hook", "type": "trigger.webhook"},
      {"id": "shape", "type": "action", "connector": "transform", "action": "map", "config": {"fields": {"name": "input.firstName"}}},
      {"id": "answer", "type": "respond", "config": {"status": 200}}
    ],
    "edges": [{"source": "hook", "target": "shape"}, {"source": "shape", "target": "answer"}]
  },
  "settings": {"team": "crm"}
}`

// withoutLogs drops the log lines of the roles running in the test's process.
func withoutLogs(stderr string) string {
	var keep []string
	for _, l := range strings.SplitAfter(stderr, "\n") {
		if !strings.HasPrefix(l, "time=") {
			keep = append(keep, l)
		}
	}
	return strings.Join(keep, "")
}

func writeFile(t *testing.T, path, body string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// flowsByName are the flows the API lists, by name.
func (p *pipeline) flowsByName() map[string]map[string]any {
	p.t.Helper()
	st, m := p.get("/api/v1/flows?page[size]=100", p.token)
	if st != 200 {
		p.t.Fatalf("list flows: %d %v", st, m)
	}
	out := map[string]map[string]any{}
	for _, f := range m["data"].([]any) {
		f := f.(map[string]any)
		out[f["name"].(string)] = f
	}
	return out
}

// Flows as code on a running API: apply creates, then changes nothing, updates with the
// revision the plan saw, prunes, and export writes files apply reads back unchanged.
func TestApplyMakesTheServerMatchTheFiles(t *testing.T) {
	p := newPipeline(t, 1, connectorPolicy{})
	p.startAPIRole()
	apply := func(dir string, flags ...string) (string, string, error) {
		// The API runs in this process: --log-level keeps its logs out of the command's stderr.
		out, errOut, err := run(append([]string{"apply", "-f", dir, "--server", p.base, "--token", p.token,
			"--connectors-dir", filepath.Join(p.dir, "connectors"), "--log-level", "error"}, flags...)...)
		return out, withoutLogs(errOut), err
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "orders.yaml"), ordersFlow)
	writeFile(t, filepath.Join(dir, "team", "contacts.json"), contactsFlow)
	writeFile(t, filepath.Join(dir, "README.md"), "not a flow")

	t.Run("bad input touches nothing", func(t *testing.T) {
		bad := t.TempDir()
		writeFile(t, filepath.Join(bad, "a.yaml"), strings.Replace(ordersFlow, "name: orders", "name: twin", 1))
		writeFile(t, filepath.Join(bad, "b.json"), strings.Replace(contactsFlow, `"contacts"`, `"twin"`, 1))
		writeFile(t, filepath.Join(bad, "c.json"), strings.Replace(contactsFlow, `"target": "answer"`, `"target": "nowhere"`, 1))
		out, errOut, err := apply(bad)
		if err == nil || err.Error() != "2 of 3 documents are invalid; nothing was applied" || out != "" {
			t.Fatalf("err %v, stdout %q", err, out)
		}
		lines := strings.Split(strings.TrimSpace(errOut), "\n")
		want := []string{
			filepath.Join(bad, "c.json") + `: /graph/edges/1/target: no node has id "nowhere" (unknown_node)`,
			filepath.Join(bad, "c.json") + `: /graph/nodes/2/id: node "answer" is not reachable from the trigger (unreachable)`,
			filepath.Join(bad, "b.json") + `: /name: flow name "twin" is also stated by ` + filepath.Join(bad, "a.yaml"),
		}
		if len(lines) != len(want) {
			t.Fatalf("want one line per problem, got:\n%s", errOut)
		}
		for i, w := range want {
			if !strings.HasPrefix(lines[i], w) {
				t.Fatalf("line %d %q, want it to start with %q", i, lines[i], w)
			}
		}
		if n := len(p.flowsByName()); n != 0 {
			t.Fatalf("the server has %d flows", n)
		}
	})

	t.Run("creates", func(t *testing.T) {
		out, _, err := apply(dir)
		if err != nil {
			t.Fatal(err)
		}
		if out != "+ create orders\n+ create contacts\napply: 2 created, 0 updated, 0 deleted, 0 unchanged\n" {
			t.Fatalf("output %q", out)
		}
		flows := p.flowsByName()
		if len(flows) != 2 || flows["orders"]["revision"] != float64(1) || flows["contacts"]["revision"] != float64(1) ||
			flows["orders"]["description"] != "Sorts orders by size" || flows["orders"]["status"] != "inactive" {
			t.Fatalf("flows %v", flows)
		}
	})

	t.Run("again changes nothing", func(t *testing.T) {
		out, _, err := apply(dir)
		if err != nil || out != "no changes\n" {
			t.Fatalf("output %q, err %v", out, err)
		}
		for name, f := range p.flowsByName() {
			if f["revision"] != float64(1) {
				t.Fatalf("%s is at revision %v", name, f["revision"])
			}
		}
	})

	t.Run("an edit is planned, a dry run changes nothing, apply makes revision 2", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "orders.yaml"), strings.Replace(ordersFlow, "Sorts orders by size", "Sorts orders by total", 1))
		out, _, err := apply(dir, "--dry-run")
		if err != nil || out != "~ update orders (revision 1): fields description\n= contacts unchanged\n"+
			"plan: 0 to create, 1 to update, 0 to delete, 1 unchanged (dry run: nothing changed)\n" {
			t.Fatalf("dry run: %q, %v", out, err)
		}
		if f := p.flowsByName()["orders"]; f["revision"] != float64(1) || f["description"] != "Sorts orders by size" {
			t.Fatalf("a dry run changed %v", f)
		}
		out, _, err = apply(dir)
		if err != nil || out != "~ update orders (revision 1): fields description\n= contacts unchanged\n"+
			"apply: 0 created, 1 updated, 0 deleted, 1 unchanged\n" {
			t.Fatalf("apply: %q, %v", out, err)
		}
		if f := p.flowsByName()["orders"]; f["revision"] != float64(2) || f["description"] != "Sorts orders by total" {
			t.Fatalf("orders %v", f)
		}
	})

	t.Run("a concurrent edit is not overwritten", func(t *testing.T) {
		writeFile(t, filepath.Join(dir, "orders.yaml"), strings.Replace(ordersFlow, "Sorts orders by size", "Sorts orders", 1))
		id := p.flowsByName()["orders"]["id"].(string)
		applyPlanned = func(context.Context, *flowsync.Plan) {
			if st, m := p.call("PATCH", "/api/v1/flows/"+id, p.token, `{"description":"edited meanwhile"}`); st != 200 {
				t.Errorf("concurrent edit: %d %v", st, m)
			}
		}
		defer func() { applyPlanned = nil }()
		out, errOut, err := apply(dir)
		if err == nil || err.Error() != "1 of 1 changes failed" || !strings.HasPrefix(out, "~ update orders (revision 2): fields description\n") ||
			errOut != "conflict: orders changed on the server since the plan (revision 2 → 3); run apply again\n" {
			t.Fatalf("err %v\nstdout %q\nstderr %q", err, out, errOut)
		}
		if f := p.flowsByName()["orders"]; f["revision"] != float64(3) || f["description"] != "edited meanwhile" {
			t.Fatalf("the concurrent edit was lost: %v", f)
		}
	})

	t.Run("a running flow is updated with --restart only", func(t *testing.T) {
		contacts := p.flowsByName()["contacts"]["id"].(string)
		if st, m := p.post("/api/v1/flows/"+contacts+"/start", ""); st != 200 {
			t.Fatalf("start: %d %v", st, m)
		}
		// The file takes the concurrent edit on; only contacts differs.
		writeFile(t, filepath.Join(dir, "orders.yaml"), strings.Replace(ordersFlow, "Sorts orders by size", "edited meanwhile", 1))
		writeFile(t, filepath.Join(dir, "team", "contacts.json"), strings.Replace(contactsFlow, `"crm"`, `"sales"`, 1))
		out, errOut, err := apply(dir)
		if err == nil || out != "= orders unchanged\n~ update contacts (revision 1): fields settings\napply: 0 created, 0 updated, 0 deleted, 1 unchanged\n" ||
			errOut != "contacts is active: stop it first (flowd flows stop "+contacts+"), or apply with --restart\n" {
			t.Fatalf("err %v\nstdout %q\nstderr %q", err, out, errOut)
		}
		if f := p.flowsByName()["contacts"]; f["revision"] != float64(1) || f["status"] != "active" {
			t.Fatalf("contacts %v", f)
		}
		out, _, err = apply(dir, "--restart")
		if err != nil || !strings.HasSuffix(out, "apply: 0 created, 1 updated, 0 deleted, 1 unchanged\n") {
			t.Fatalf("restart: %q, %v", out, err)
		}
		f := p.flowsByName()["contacts"]
		if f["revision"] != float64(2) || f["status"] != "active" || f["settings"].(map[string]any)["team"] != "sales" {
			t.Fatalf("contacts %v", f)
		}
		if out, _, err := apply(dir); err != nil || out != "no changes\n" {
			t.Fatalf("after the restart: %q, %v", out, err)
		}
	})

	t.Run("export then apply changes nothing", func(t *testing.T) {
		exported := filepath.Join(t.TempDir(), "flows")
		out, _, err := run("export", "-o", exported, "--server", p.base, "--token", p.token)
		if err != nil {
			t.Fatal(err)
		}
		if out != "contacts → "+filepath.Join(exported, "contacts.yaml")+"\norders → "+filepath.Join(exported, "orders.yaml")+"\n" {
			t.Fatalf("export: %q", out)
		}
		body, err := os.ReadFile(filepath.Join(exported, "orders.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(string(body), "name: orders\ndescription: edited meanwhile\ngraph:\n") ||
			strings.Contains(string(body), "revision") || strings.Contains(string(body), "owners") {
			t.Fatalf("orders.yaml:\n%s", body)
		}
		if out, _, err := apply(exported); err != nil || out != "no changes\n" {
			t.Fatalf("apply of the export: %q, %v", out, err)
		}
		// One flow, by name, as JSON.
		one := t.TempDir()
		if out, _, err := run("export", "contacts", "--format", "json", "-o", one, "--server", p.base, "--token", p.token); err != nil ||
			out != "contacts → "+filepath.Join(one, "contacts.json")+"\n" {
			t.Fatalf("export contacts: %q, %v", out, err)
		}
		if out, _, err := apply(filepath.Join(one, "contacts.json")); err != nil || out != "no changes\n" {
			t.Fatalf("apply of contacts.json: %q, %v", out, err)
		}
		if _, _, err := run("export", "nope", "-o", one, "--server", p.base, "--token", p.token); err == nil ||
			err.Error() != `no flow you can see has the name or id "nope"` {
			t.Fatalf("export nope: %v", err)
		}
	})

	t.Run("prune deletes what no file states", func(t *testing.T) {
		if err := os.Remove(filepath.Join(dir, "team", "contacts.json")); err != nil {
			t.Fatal(err)
		}
		// Without --prune the other flow is left alone.
		out, errOut, err := apply(dir)
		if err != nil || out != "no changes\n" || errOut != "1 other flows on the server are left as they are (--prune deletes them)\n" {
			t.Fatalf("without prune: %q %q %v", out, errOut, err)
		}
		out, _, err = apply(dir, "--prune", "--dry-run")
		if err != nil || out != "= orders unchanged\n- delete contacts\nplan: 0 to create, 0 to update, 1 to delete, 1 unchanged (dry run: nothing changed)\n" {
			t.Fatalf("prune dry run: %q, %v", out, err)
		}
		contacts := p.flowsByName()["contacts"]["id"].(string)
		// It runs: refused, with what to do.
		_, errOut, err = apply(dir, "--prune")
		if err == nil || errOut != "contacts is active: stop it first (flowd flows stop "+contacts+") to delete it\n" {
			t.Fatalf("pruning a running flow: %q, %v", errOut, err)
		}
		if st, m := p.post("/api/v1/flows/"+contacts+"/stop", ""); st != 200 {
			t.Fatalf("stop: %d %v", st, m)
		}
		out, _, err = apply(dir, "--prune")
		if err != nil || out != "= orders unchanged\n- delete contacts\napply: 0 created, 0 updated, 1 deleted, 1 unchanged\n" {
			t.Fatalf("prune: %q, %v", out, err)
		}
		if st, _ := p.get("/api/v1/flows/"+contacts, p.token); st != 404 {
			t.Fatalf("contacts is still there: %d", st)
		}
	})

	t.Run("two server flows of a file's name are refused", func(t *testing.T) {
		twin := strings.Replace(contactsFlow, `"contacts"`, `"twin"`, 1)
		_, a := p.post("/api/v1/flows", twin)
		_, b := p.post("/api/v1/flows", twin)
		ida, idb := a["data"].(map[string]any)["id"].(string), b["data"].(map[string]any)["id"].(string)
		one := filepath.Join(t.TempDir(), "twin.json")
		writeFile(t, one, twin)
		out, _, err := apply(one)
		if err == nil || out != "" || !strings.HasPrefix(err.Error(), `2 flows on the server are named "twin" (ids `) ||
			!strings.Contains(err.Error(), ida) || !strings.Contains(err.Error(), idb) {
			t.Fatalf("out %q, err %v", out, err)
		}
	})
}
