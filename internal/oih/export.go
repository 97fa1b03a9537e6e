package oih

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/problem"
)

// Export writes f as an OIH document, the inverse of Import: importing the result gives f's
// graph again. Actions, poll triggers and drafts become OIH nodes (a poll trigger with
// nodeSettings.trigger true; an action Import would take for the poll trigger with
// nodeSettings.trigger false); the trigger an import added becomes the flow's cron again, or
// nothing for the webhook; every other node is written as flowd writes it. The flow's other
// fields are kept, but its derived type (OIH's type means something else).
func Export(f *flowdoc.Flow, isTrigger IsTrigger) (map[string]any, error) {
	raw, err := flowdoc.Canonical(f)
	if err != nil {
		return nil, fmt.Errorf("oih: encode flow %s: %w", f.ID, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber() // numbers come out as they went in
	var doc map[string]any
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("oih: decode flow %s: %w", f.ID, err)
	}
	delete(doc, "type")
	graph, _ := doc["graph"].(map[string]any)
	jnodes, _ := graph["nodes"].([]any)
	jedges, _ := graph["edges"].([]any)
	if len(jnodes) != len(f.Graph.Nodes) || len(jedges) != len(f.Graph.Edges) {
		return nil, fmt.Errorf("oih: flow %s: the encoded graph does not match the flow", f.ID)
	}
	l, rs := layoutOf(f)
	nodes := make([]any, 0, len(jnodes))
	for i := range f.Graph.Nodes {
		n := &f.Graph.Nodes[i]
		switch l.nodes[i] {
		case implied:
			if l.cron {
				doc[fCron] = n.Config["cron"]
			}
		case mapped:
			j, _ := jnodes[i].(map[string]any)
			nodes = append(nodes, exportNode(j, n, len(rs) > 0 && rs[0] == i, isTrigger))
		default:
			nodes = append(nodes, jnodes[i])
		}
	}
	edges := make([]any, 0, len(jedges))
	for j := range f.Graph.Edges {
		switch l.edges[j] {
		case implied:
		case mapped:
			e := clone(jedges[j].(map[string]any))
			e[fConfig] = map[string]any{"condition": e["condition"]}
			delete(e, "condition")
			edges = append(edges, e)
		default:
			edges = append(edges, jedges[j])
		}
	}
	graph["nodes"], graph["edges"] = nodes, edges
	return doc, nil
}

// exportNode writes a node (j is its JSON) the OIH way.
func exportNode(j map[string]any, n *flowdoc.Node, firstRoot bool, isTrigger IsTrigger) map[string]any {
	out := map[string]any{}
	for _, k := range commonNode {
		if v, ok := j[k]; ok {
			out[k] = v
		}
	}
	settings := map[string]any{}
	for k, v := range j {
		switch k {
		case "connector":
			out[fComponent] = v
		case "action", "trigger":
			out[fFunction] = v
		case "config":
			out[fFields] = v
		case "connection":
			out[fCredentials] = v
		case "retry", "timeout", "interval", "pool":
			settings[k] = v
		}
	}
	switch {
	case n.Type == flowdoc.TypePoll:
		settings[fTrigger] = true
	case n.Type == flowdoc.TypeAction && firstRoot && isTrigger != nil && isTrigger(n.Connector, n.Action):
		settings[fTrigger] = false
	}
	if len(settings) > 0 {
		out[fSettings] = settings
	}
	return out
}

// LayoutOf is where f's nodes and edges are in its OIH document (Export's).
func LayoutOf(f *flowdoc.Flow) Layout {
	l, _ := layoutOf(f)
	return l
}

// layoutOf is LayoutOf with the roots of the graph without the implied trigger.
func layoutOf(f *flowdoc.Flow) (Layout, []int) {
	nodes, edges := f.Graph.Nodes, f.Graph.Edges
	l := Layout{nodes: make([]kind, len(nodes)), edges: make([]kind, len(edges))}
	for i := range nodes {
		if fromOIH(&nodes[i]) {
			l.nodes[i] = mapped
		}
	}
	for j := range edges {
		if edges[j].Condition != "" {
			l.edges[j] = mapped
		}
	}
	onError := ""
	if f.OnError != nil {
		onError = f.OnError.Node
	}
	rootsOf := func(nodes []flowdoc.Node, edges []flowdoc.Edge) []int {
		ids := make([]string, len(nodes))
		for i := range nodes {
			ids[i] = nodes[i].ID
		}
		targets := make([]string, len(edges))
		for j := range edges {
			targets[j] = edges[j].Target
		}
		return roots(ids, targets, onError)
	}
	if len(nodes) == 0 {
		return l, nil
	}
	last := &nodes[len(nodes)-1]
	cron, ok := impliedTrigger(last)
	if !ok {
		return l, rootsOf(nodes, edges)
	}
	// Its edges are the last ones, plain, and lead to the roots of the rest in node order:
	// exactly what Import adds.
	k := 0
	for k < len(edges) && edges[len(edges)-1-k].Source == last.ID {
		k++
	}
	rest, restEdges := nodes[:len(nodes)-1], edges[:len(edges)-k]
	rs := rootsOf(rest, restEdges)
	if len(rs) != k {
		return l, rootsOf(nodes, edges)
	}
	for x, e := range edges[len(edges)-k:] {
		if e.ID != "" || e.Name != "" || e.Port != "" || e.Condition != "" || e.Target != rest[rs[x]].ID {
			return l, rootsOf(nodes, edges)
		}
	}
	for i := range restEdges {
		if restEdges[i].Source == last.ID {
			return l, rootsOf(nodes, edges)
		}
	}
	for i := range rest {
		// Import adds a trigger only to a flow without one, and a cron becomes a poll
		// trigger's interval.
		if rest[i].IsTrigger() || rest[i].ID == last.ID {
			return l, rootsOf(nodes, edges)
		}
	}
	l.nodes[len(nodes)-1] = implied
	for j := len(edges) - k; j < len(edges); j++ {
		l.edges[j] = implied
	}
	l.cron = cron
	return l, rs
}

// impliedTrigger reports whether n is a trigger Import adds (a cron's schedule, or the webhook
// of a flow without a trigger) and which.
func impliedTrigger(n *flowdoc.Node) (cron, ok bool) {
	if n.Name != "" || n.Description != "" || n.Connector != "" || n.Action != "" || n.Trigger != "" ||
		n.Connection != "" || n.Retry != nil || n.Timeout != "" || n.Interval != "" || n.Pool != "" {
		return false, false
	}
	switch {
	case n.ID == CronID && n.Type == flowdoc.TypeSchedule && len(n.Config) == 1:
		_, ok := n.Config["cron"].(string)
		return true, ok
	case n.ID == WebhookID && n.Type == flowdoc.TypeWebhook && n.Config == nil:
		return false, true
	}
	return false, false
}

// StartProblems is flowdoc.StartProblems in the terms of f's OIH document: its paths point
// into Export's document, and a draft is told what it lacks as componentId and function.
func StartProblems(f *flowdoc.Flow) problem.List {
	l := LayoutOf(f)
	var ps problem.List
	for _, d := range flowdoc.Drafts(f) {
		p := "/graph/nodes/" + strconv.Itoa(d.Index)
		switch d.Missing {
		case flowdoc.MissingConnector:
			ps = append(ps, problem.New(flowdoc.CodeDraftNode, p+"/"+fComponent, "node %s has no component: set componentId (a connector) and function", d.Node.ID))
		case flowdoc.MissingAction:
			ps = append(ps, problem.New(flowdoc.CodeDraftNode, p+"/"+fFunction, "node %s has no function: set function (an action or trigger of connector %s)", d.Node.ID, d.Node.Connector))
		default:
			ps = append(ps, problem.New(flowdoc.CodeDraftNode, p, "node %s has no type: write it with componentId and function", d.Node.ID))
		}
	}
	for _, p := range flowdoc.StartProblems(f) {
		if p.Code != flowdoc.CodeDraftNode {
			p.Path = l.Path(p.Path)
			ps = append(ps, p)
		}
	}
	return ps
}
