// Package graph is the router's knowledge of a flow: a flow revision compiled once (nodes
// indexed, every expression compiled) and the evaluation that turns a completed activation into
// the next ones. It is pure: no I/O, no clock beyond what the caller passes in, so the same
// state and completion always yield the same activations and tokens, which is what makes a
// redelivered message harmless.
//
// Control nodes (if, switch, filter, split, merge, respond) run inline here; action nodes become
// activations the router sends to runner pools. Dead-path elimination resolves every edge of
// every node that is reached in a scope, so a merge always learns whether to fire or be skipped.
package graph

import (
	"errors"
	"fmt"
	"strings"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/expression"
	"github.com/flowd/flowd/internal/flowdoc"
)

// Graph is a compiled flow revision, safe for concurrent use (evaluation state lives in State).
type Graph struct {
	flow      *flowdoc.Flow
	trigger   *node
	handler   *node           // the onError sub-graph's root; nil without one
	inHandler map[string]bool // the nodes of the onError sub-graph
	nodes     map[string]*node
	order     []*node // document order, for deterministic iteration
	// env parts that never change for a revision
	flowEnv     map[string]any
	settingsEnv map[string]any
}

type node struct {
	*flowdoc.Node
	in  []*edge
	out []*edge

	cond    *expression.Program // if, filter
	cases   []switchCase        // switch
	path    evaluator           // split; nil means the input itself
	status  *expression.Value   // respond; nil means 200
	body    *expression.Value   // respond; nil means the input
	headers *expression.Value   // respond
}

type edge struct {
	index  int // position among its source's outbound edges
	source *node
	target *node
	port   string
	cond   *expression.Program
}

type switchCase struct {
	name string
	cond *expression.Program
}

// evaluator is an expression or a template: config values may be written either way.
type evaluator interface {
	eval(env expression.Env) (any, error)
}

type progEval struct{ p *expression.Program }

func (e progEval) eval(env expression.Env) (any, error) { return e.p.Eval(env) }

type tmplEval struct{ t *expression.Template }

func (e tmplEval) eval(env expression.Env) (any, error) { return e.t.Render(env) }

// connectorConfigsUnread validates as the router needs: it never renders a connector node's
// config (the runner does, leaving the fields the connector marks raw as they are), so it
// takes all of it as raw. The flow's templates were checked against the connectors when it
// was saved.
var connectorConfigsUnread = flowdoc.Options{RawFields: func(string, string) []string { return []string{""} }}

// Compile checks and compiles a flow revision. The flow must pass flowdoc.Validate (the router
// relies on a DAG with one trigger); every expression is compiled here, once.
func Compile(f *flowdoc.Flow) (*Graph, error) {
	if f == nil {
		return nil, errors.New("graph: no flow")
	}
	if probs := flowdoc.Validate(f, connectorConfigsUnread); len(probs) > 0 {
		return nil, fmt.Errorf("graph: flow %s revision %d is not valid: %w", f.ID, f.Revision, probs)
	}
	// Validation stores drafts; only a flow without any can run (the API refuses to start one).
	if probs := flowdoc.StartProblems(f); len(probs) > 0 {
		return nil, fmt.Errorf("graph: flow %s revision %d cannot run: %w", f.ID, f.Revision, probs)
	}
	g := &Graph{
		flow:        f,
		nodes:       make(map[string]*node, len(f.Graph.Nodes)),
		flowEnv:     map[string]any{"id": f.ID, "name": f.Name, "revision": float64(f.Revision)},
		settingsEnv: f.EffectiveSettings(),
	}
	if g.settingsEnv == nil {
		g.settingsEnv = map[string]any{}
	}
	for i := range f.Graph.Nodes {
		n := &node{Node: &f.Graph.Nodes[i]}
		if err := n.compile(); err != nil {
			return nil, fmt.Errorf("graph: node %s: %w", n.ID, err)
		}
		g.nodes[n.ID] = n
		g.order = append(g.order, n)
		if n.IsTrigger() && g.trigger == nil {
			g.trigger = n
		}
	}
	for i, fe := range f.Graph.Edges {
		e := &edge{source: g.nodes[fe.Source], target: g.nodes[fe.Target], port: fe.Port}
		if fe.Condition != "" {
			p, err := expression.CompileCondition(fe.Condition)
			if err != nil {
				return nil, fmt.Errorf("graph: edge %d condition: %w", i, err)
			}
			e.cond = p
		}
		e.index = len(e.source.out)
		e.source.out = append(e.source.out, e)
		e.target.in = append(e.target.in, e)
	}
	if h := f.OnError; h != nil && g.nodes[h.Node] != nil {
		g.handler = g.nodes[h.Node]
		g.inHandler = map[string]bool{}
		queue := []*node{g.handler}
		for len(queue) > 0 {
			n := queue[0]
			queue = queue[1:]
			if g.inHandler[n.ID] {
				continue
			}
			g.inHandler[n.ID] = true
			for _, e := range n.out {
				queue = append(queue, e.target)
			}
		}
	}
	return g, nil
}

// HasHandler reports whether the flow has an onError handler.
func (g *Graph) HasHandler() bool { return g.handler != nil }

// InHandler reports whether node id belongs to the onError handler's sub-graph.
func (g *Graph) InHandler(id string) bool { return g.inHandler[id] }

func (n *node) compile() error {
	switch n.Type {
	case flowdoc.TypeIf, flowdoc.TypeFilter:
		src, _ := n.Config["condition"].(string)
		p, err := expression.CompileCondition(unbrace(src))
		if err != nil {
			return fmt.Errorf("config.condition: %w", err)
		}
		n.cond = p
	case flowdoc.TypeSwitch:
		cases, _ := n.Config["cases"].([]any)
		for j, c := range cases {
			obj, _ := c.(map[string]any)
			name, _ := obj["name"].(string)
			src, _ := obj["condition"].(string)
			p, err := expression.CompileCondition(unbrace(src))
			if err != nil {
				return fmt.Errorf("config.cases[%d].condition: %w", j, err)
			}
			n.cases = append(n.cases, switchCase{name: name, cond: p})
		}
	case flowdoc.TypeSplit:
		if src, ok := n.Config["path"].(string); ok && strings.TrimSpace(src) != "" {
			ev, err := compileEvaluator(src)
			if err != nil {
				return fmt.Errorf("config.path: %w", err)
			}
			n.path = ev
		}
	case flowdoc.TypeRespond:
		var err error
		if v, ok := n.Config["status"]; ok {
			if n.status, err = expression.CompileValue(v); err != nil {
				return fmt.Errorf("config.status: %w", err)
			}
		}
		if v, ok := n.Config["body"]; ok {
			if n.body, err = expression.CompileValue(v); err != nil {
				return fmt.Errorf("config.body: %w", err)
			}
		}
		if v, ok := n.Config["headers"]; ok {
			if n.headers, err = expression.CompileValue(v); err != nil {
				return fmt.Errorf("config.headers: %w", err)
			}
		}
	}
	return nil
}

// unbrace accepts a condition written as a template ("{{ input.ok }}") as well as a bare
// expression: authors mix the two up, and the meaning is not in doubt.
func unbrace(src string) string {
	s := strings.TrimSpace(src)
	if strings.HasPrefix(s, "{{") && strings.HasSuffix(s, "}}") && strings.Count(s, "{{") == 1 {
		return s[2 : len(s)-2]
	}
	return src
}

func compileEvaluator(src string) (evaluator, error) {
	if strings.Contains(src, "{{") {
		t, err := expression.CompileTemplate(src)
		if err != nil {
			return nil, err
		}
		return tmplEval{t}, nil
	}
	p, err := expression.Compile(src)
	if err != nil {
		return nil, err
	}
	return progEval{p}, nil
}

// Flow returns the compiled revision's document.
func (g *Graph) Flow() *flowdoc.Flow { return g.flow }

// Trigger returns the trigger node.
func (g *Graph) Trigger() *flowdoc.Node { return g.trigger.Node }

// Node returns the node with the given id, or nil.
func (g *Graph) Node(id string) *flowdoc.Node {
	if n := g.nodes[id]; n != nil {
		return n.Node
	}
	return nil
}

// Pools lists the runner pools the revision's action nodes use (each once, in document order).
func (g *Graph) Pools() []string {
	var pools []string
	seen := map[string]bool{}
	for _, n := range g.order {
		if n.Type != flowdoc.TypeAction {
			continue
		}
		p := envelope.PoolName(n.Pool)
		if !seen[p] {
			seen[p] = true
			pools = append(pools, p)
		}
	}
	return pools
}
