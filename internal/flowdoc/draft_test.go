package flowdoc

import (
	"reflect"
	"testing"
)

// A node without a type is a draft: stored (no problem, not even "no trigger" for a flow of
// drafts), but start lists what each lacks.
func TestDraftsAreStoredButDoNotStart(t *testing.T) {
	t.Parallel()
	f, probs := Decode([]byte(`{"name": "draft", "graph": {"nodes": [
		{"id": "a", "name": "origin"},
		{"id": "b", "connector": "http", "timeout": "1s"},
		{"id": "c", "connector": "http", "action": "request"}],
		"edges": [{"source": "a", "target": "b"}, {"source": "b", "target": "c", "port": "anything"}]}}`), Options{})
	if len(probs) > 0 {
		t.Fatalf("draft refused:\n%s", dump(probs))
	}
	var got []string
	for _, p := range StartProblems(f) {
		got = append(got, p.Code+"@"+p.Path)
	}
	want := []string{"no_trigger@/graph/nodes", "draft_node@/graph/nodes/0/connector", "draft_node@/graph/nodes/1/action", "draft_node@/graph/nodes/2/type"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("start problems %v, want %v", got, want)
	}
	// A flow without drafts has nothing more to say at start.
	f, probs = Decode([]byte(`{"name": "ok", "graph": {"nodes": [{"id": "in", "type": "trigger.webhook"}]}}`), Options{})
	if len(probs) > 0 || len(StartProblems(f)) > 0 {
		t.Fatalf("problems %v, start %v", probs, StartProblems(f))
	}
}
