// Package oih maps Open Integration Hub flow documents (the Flow Repository's shape: nodes with
// componentId, function, fields, credentials_id and nodeSettings, edges with config, a flow
// cron) to flowd's flow documents and back, so that exporting a flow and importing the export
// gives the same flow. It does no I/O: what it needs to know of the installed connectors comes
// in as a function.
//
// A document may mix both shapes: a node written the flowd way (with a type) passes through, so
// that what OIH cannot say (control nodes, other triggers) survives an export.
package oih

import (
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/problem"
)

// IsTrigger says whether a connector lists function among its (poll) triggers; nil knows none.
type IsTrigger func(connector, function string) bool

// Field names of OIH documents.
const (
	fComponent   = "componentId"
	fFunction    = "function"
	fFields      = "fields"
	fCredentials = "credentials_id"
	fSettings    = "nodeSettings"
	fCron        = "cron"
	fConfig      = "config" // of an edge: {condition, mapper}
	fTrigger     = "trigger"
)

// oihNodeFields mark a node as written the OIH way.
var oihNodeFields = []string{fComponent, fFunction, fFields, fCredentials, fSettings}

// renames pairs a flowd node field with where an OIH node keeps it ("nodeSettings/x" inside
// nodeSettings). A poll node's trigger is its function too.
var renames = [][2]string{
	{"connector", fComponent},
	{"action", fFunction},
	{"trigger", fFunction},
	{"config", fFields},
	{"connection", fCredentials},
	{"retry", fSettings + "/retry"},
	{"timeout", fSettings + "/timeout"},
	{"interval", fSettings + "/interval"},
	{"pool", fSettings + "/pool"},
}

// flowdOnly are the flowd node fields that have an OIH place; an OIH node must use that.
var flowdOnly = []string{"type", "connector", "action", "trigger", "config", "connection", "retry", "timeout", "interval", "pool"}

// commonNode are the node fields both shapes share.
var commonNode = []string{"id", "name", "description"}

// settingsKept are the nodeSettings flowd keeps (the rest has no flowd meaning).
var settingsKept = []string{"retry", "timeout", "interval", "pool"}

// dropped are OIH flow fields flowd has no place for; an import drops them with a warning.
var dropped = []string{"tenant", "flowSettings", "oihid"}

// Ids of the trigger an import adds when the document has none of its own (they are the last
// node); with a suffix when the document uses the id already.
const (
	CronID    = "cron"
	WebhookID = "webhook"
)

// Problem codes of the mapping.
const (
	CodeMixed      = "mixed_shape"  // an OIH node (or edge config) with flowd fields too
	CodeType       = "type"         // a value of the wrong JSON type
	CodeInvalid    = "invalid"      // a value that cannot be mapped
	CodeNotKept    = "not_kept"     // warning: a field without flowd counterpart was dropped
	CodeCronToPoll = "cron_to_poll" // warning: cron became a poll trigger's interval
)

// Detect reports whether doc is an OIH document: it has a cron, a node carries an OIH field
// or lacks a type, or an edge has a config.
func Detect(doc map[string]any) bool {
	if _, ok := doc[fCron]; ok {
		return true
	}
	graph, _ := doc["graph"].(map[string]any)
	nodes, _ := graph["nodes"].([]any)
	for _, n := range nodes {
		if m, ok := n.(map[string]any); ok && (isOIHNode(m) || m["type"] == nil) {
			return true
		}
	}
	edges, _ := graph["edges"].([]any)
	for _, e := range edges {
		if m, ok := e.(map[string]any); ok && m[fConfig] != nil {
			return true
		}
	}
	return false
}

func isOIHNode(m map[string]any) bool {
	for _, k := range oihNodeFields {
		if _, ok := m[k]; ok {
			return true
		}
	}
	return false
}

// kind is what became of a node or an edge of the OIH document in the flowd one.
type kind int

const (
	native  kind = iota // passed through as flowd wrote it
	mapped              // an OIH node, or an edge whose condition was in its config
	implied             // the trigger an import added, or one of its edges
)

// Layout tells, per flowd node and edge, where it is in the OIH document: the mapping of
// problem paths. Implied nodes and edges come last, so the others keep their indices.
type Layout struct {
	nodes, edges []kind
	cron         bool // the implied trigger is the flow's cron (else a webhook)
}

// Path turns a pointer into the flowd document into one into the OIH document.
func (l Layout) Path(p string) string {
	toks := strings.Split(strings.TrimPrefix(p, "/"), "/")
	if len(toks) < 3 || toks[0] != "graph" {
		return p
	}
	i, err := strconv.Atoi(toks[2])
	if err != nil {
		return p
	}
	var ks []kind
	switch toks[1] {
	case "nodes":
		ks = l.nodes
	case "edges":
		ks = l.edges
	default:
		return p
	}
	if i < 0 || i >= len(ks) {
		return p
	}
	switch ks[i] {
	case implied:
		if l.cron {
			return "/" + fCron
		}
		return "/graph/nodes"
	case mapped:
		if len(toks) < 4 {
			return p
		}
		if toks[1] == "edges" {
			if toks[3] == "condition" {
				toks[3] = fConfig + "/condition"
			}
			return "/" + strings.Join(toks, "/")
		}
		if toks[3] == "type" {
			return "/" + strings.Join(toks[:3], "/") // the node itself: its shape says its type
		}
		for _, r := range renames {
			if toks[3] == r[0] {
				toks[3] = r[1]
				break
			}
		}
		return "/" + strings.Join(toks, "/")
	}
	return p
}

// Translate points each problem's path into the OIH document.
func (l Layout) Translate(ps problem.List) problem.List {
	out := make(problem.List, len(ps))
	for i, p := range ps {
		p.Path = l.Path(p.Path)
		out[i] = p
	}
	return out
}

// roots are the indices of the nodes no edge leads to, in node order, but the onError
// handler's root: the nodes a trigger feeds.
func roots(ids []string, edgeTargets []string, onError string) []int {
	inbound := map[string]bool{}
	for _, t := range edgeTargets {
		inbound[t] = true
	}
	seen := map[string]bool{}
	var out []int
	for i, id := range ids {
		if id == "" || seen[id] || inbound[id] || id == onError {
			seen[id] = true
			continue
		}
		seen[id] = true
		out = append(out, i)
	}
	return out
}

// freeID is base, or base-2, base-3... whichever no node uses.
func freeID(base string, ids []string) string {
	id := base
	for n := 2; slices.Contains(ids, id); n++ {
		id = base + "-" + strconv.Itoa(n)
	}
	return id
}

// settingsTrigger reads nodeSettings.trigger: true makes a node the poll trigger whatever the
// connector catalog says, false keeps it an action.
func settingsTrigger(settings map[string]any) *bool {
	b, ok := settings[fTrigger].(bool)
	if !ok {
		return nil
	}
	return &b
}

// onErrorNode is the node the document's onError names, if any.
func onErrorNode(doc map[string]any) string {
	h, _ := doc["onError"].(map[string]any)
	id, _ := h["node"].(string)
	return id
}

// clone copies a JSON object one level deep.
func clone(m map[string]any) map[string]any {
	if m == nil {
		return nil
	}
	return maps.Clone(m)
}

// fromOIH reports whether an export writes n the OIH way: drafts, actions and poll triggers.
func fromOIH(n *flowdoc.Node) bool {
	return n.IsDraft() || n.Type == flowdoc.TypeAction || n.Type == flowdoc.TypePoll
}
