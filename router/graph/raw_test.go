package graph

import (
	"testing"

	"github.com/flowd/flowd/internal/flowdoc"
)

// TestCompileLeavesConnectorConfigToTheRunner: the router never renders a connector node's
// config, and cannot tell which fields its connector marks raw (a script's `{{` is no
// template), so a `{{` that does not compile there does not refuse the flow.
func TestCompileLeavesConnectorConfigToTheRunner(t *testing.T) {
	t.Parallel()
	js := flowdoc.Node{ID: "js", Type: flowdoc.TypeAction, Connector: "code", Action: "run",
		Config: map[string]any{"source": "return '{{ not an expression';"}}
	if _, err := Compile(flow([]flowdoc.Node{js}, e("t", "js"))); err != nil {
		t.Fatalf("Compile: %v", err)
	}
	// Its own nodes' templates are still checked.
	bad := n("r", flowdoc.TypeRespond, "body", "{{ input.")
	if _, err := Compile(flow([]flowdoc.Node{bad}, e("t", "r"))); err == nil {
		t.Fatal("a respond node with a broken template compiled")
	}
}
