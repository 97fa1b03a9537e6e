package flowdoc

import "github.com/flowd/flowd/internal/problem"

// CodeDraftNode is the problem of a draft node when the flow is started.
const CodeDraftNode = "draft_node"

// What a draft node lacks first (Draft.Missing), named by the node field that would hold it.
const (
	MissingConnector = "connector" // no component at all
	MissingAction    = "action"    // a connector, but no action or trigger of it
	MissingType      = "type"      // everything but the type
)

// Draft is a draft node of a flow and what it lacks first.
type Draft struct {
	Index   int // in Graph.Nodes
	Node    *Node
	Missing string // MissingConnector, MissingAction or MissingType
}

// Drafts lists the flow's draft nodes, in node order.
func Drafts(f *Flow) []Draft {
	var out []Draft
	for i := range f.Graph.Nodes {
		n := &f.Graph.Nodes[i]
		if !n.IsDraft() {
			continue
		}
		d := Draft{Index: i, Node: n, Missing: MissingType}
		switch {
		case n.Connector == "":
			d.Missing = MissingConnector
		case n.Action == "" && n.Trigger == "":
			d.Missing = MissingAction
		}
		out = append(out, d)
	}
	return out
}

// StartProblems is what keeps a stored flow from starting besides what a save refuses: each
// draft node, and no trigger at all (which a flow of drafts is stored without).
func StartProblems(f *Flow) problem.List {
	var ps problem.List
	for _, d := range Drafts(f) {
		p := nodePath(d.Index) + "/" + d.Missing
		switch d.Missing {
		case MissingConnector:
			ps = append(ps, problem.New(CodeDraftNode, p, "node %s has no component: set type, connector and action (in an Open Integration Hub document: componentId and function)", d.Node.ID))
		case MissingAction:
			ps = append(ps, problem.New(CodeDraftNode, p, "node %s has no action: set type and one of connector %s's actions (in an Open Integration Hub document: function)", d.Node.ID, d.Node.Connector))
		default:
			ps = append(ps, problem.New(CodeDraftNode, p, "node %s has no type: set %s or %s", d.Node.ID, TypeAction, TypePoll))
		}
	}
	if f.Trigger() == nil {
		ps = append(ps, problem.New(CodeNoTrigger, "/graph/nodes", "the flow has no trigger node (one of %s, %s, %s, %s)", TypeWebhook, TypeKafka, TypeSchedule, TypePoll))
	}
	return finish(ps)
}
