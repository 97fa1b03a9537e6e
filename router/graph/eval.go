package graph

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/expression"
	"github.com/flowd/flowd/internal/flowdoc"
)

// Error codes of failures the graph itself decides.
const (
	CodeExpression      = "expression_failed"
	CodeSplitNotArray   = "split_not_array"
	CodeRespond         = "respond_failed"
	CodeMergeUnresolved = "merge_unresolved"
	CodeEncode          = "encode_failed"
)

// State is the bookkeeping of one execution. The router keeps it in Redis and hands it to
// Start and Complete, which change it in place.
type State struct {
	// Scopes maps a scope to the nodes reached in it. A scope whose nodes are all done is
	// dropped: nothing can reach it any more.
	Scopes map[string]map[string]*NodeState `json:"scopes,omitempty"`
	// InFlight counts activations sent to runners whose results have not come back.
	InFlight int `json:"inFlight"`
	// Ended counts paths that ended normally; Filtered those a filter (or an empty split) ended.
	Ended    int `json:"ended"`
	Filtered int `json:"filtered"`
	// Responded is set once a respond node produced the reply.
	Responded bool `json:"responded,omitempty"`
	// Last is the node that completed last (its output answers a sync call without respond).
	Last string `json:"last,omitempty"`
	// Status is "" while running, then the terminal status; it is decided exactly once.
	Status string `json:"status,omitempty"`
}

// NodeState is one node in one scope.
type NodeState struct {
	Resolved  int `json:"r,omitempty"` // inbound edges resolved (delivered or dead)
	Delivered int `json:"d,omitempty"` // activations created
	Running   int `json:"o,omitempty"` // activations not yet completed
	// Arrivals are a merge's inputs so far, by source node id.
	Arrivals map[string][]json.RawMessage `json:"a,omitempty"`
	Done     bool                         `json:"done,omitempty"`
}

// Context is what the router knows about the execution besides its state.
type Context struct {
	ExecutionID string
	Trigger     string
	ReceivedAt  time.Time
	// ScheduledAt is the tick of a schedule's execution; Source the partner record of a
	// partner topic's (its topic, partition, offset, key and headers).
	ScheduledAt *time.Time
	Source      *envelope.KafkaSource
	// Steps is the latest output of every node completed before this transition.
	Steps map[string]json.RawMessage
}

// Activation is an action node to run on a runner pool.
type Activation struct {
	Node  *flowdoc.Node
	Token string
	Input json.RawMessage
}

// Completion is an action activation's outcome, from a runner's Result.
type Completion struct {
	NodeID  string
	Token   string
	Outputs []envelope.Output
	// Error means the step failed for good (the runner already retried what was retryable).
	Error *envelope.Error
	// Input is the activation's input; an error port edge carries it on.
	Input json.RawMessage
}

// Outcome is what one transition produced.
type Outcome struct {
	Work []Activation
	// Steps are records of the nodes run inline (control nodes, the trigger) and of skipped
	// nodes; ExecutionID and timings are the caller's to fill.
	Steps []envelope.Step
	// Outputs are the latest outputs of nodes completed in this transition, by node id.
	Outputs map[string]json.RawMessage
	// Reply is set when a respond node ran first in the execution.
	Reply *envelope.Reply
	// Done is set by the transition that ended the execution, with its Status and Error.
	Done   bool
	Status string
	Error  *envelope.Error
	// LastOutput is the output of the node that completed last, set when Done.
	LastOutput json.RawMessage
}

// Start runs the trigger with the execution's input and everything that follows inline.
func (g *Graph) Start(st *State, c Context, input json.RawMessage) (*Outcome, error) {
	if st.Scopes != nil || st.Status != "" || st.Ended+st.Filtered+st.InFlight > 0 {
		return nil, errors.New("graph: execution already started")
	}
	r := g.newRun(st, c)
	t := g.trigger
	tok := derive(RootScope, "", t.ID, 0, 0)
	ns := r.node(RootScope, t)
	ns.Delivered, ns.Running = 1, 1
	in := fromRaw(input)
	r.step(t, tok, envelope.StepSucceeded, "", nil, in, nil)
	r.setOutput(t, in)
	r.pathEnd(r.complete(t, RootScope, tok, []item{{data: in}}), false)
	return r.finish()
}

// StartHandler runs the flow's onError handler in a fresh state: its root node is activated
// with input (the failure), and what follows runs as in any execution.
func (g *Graph) StartHandler(st *State, c Context, input json.RawMessage) (*Outcome, error) {
	if g.handler == nil {
		return nil, errors.New("graph: the flow has no onError handler")
	}
	if st.Scopes != nil || st.Status != "" || st.Ended+st.Filtered+st.InFlight > 0 {
		return nil, errors.New("graph: handler state already used")
	}
	r := g.newRun(st, c)
	h := g.handler
	ns := r.node(RootScope, h)
	ns.Delivered, ns.Running = 1, 1
	r.queue = append(r.queue, task{n: h, scope: RootScope, token: derive(RootScope, "onError", h.ID, 0, 0), input: fromRaw(input)})
	return r.finish()
}

// Complete applies an action activation's outcome. A completion for an execution that has
// already ended changes nothing.
func (g *Graph) Complete(st *State, c Context, done Completion) (*Outcome, error) {
	if st.Status != "" {
		return &Outcome{}, nil
	}
	n := g.nodes[done.NodeID]
	if n == nil || n.Type != flowdoc.TypeAction {
		return nil, fmt.Errorf("graph: node %q is not an action of this revision", done.NodeID)
	}
	scope := ScopeOf(done.Token)
	ns := st.Scopes[scope][n.ID]
	if ns == nil || ns.Running == 0 {
		return nil, fmt.Errorf("graph: no running activation of %s in scope %q", n.ID, scope)
	}
	r := g.newRun(st, c)
	st.InFlight--
	if done.Error != nil {
		r.failed(n, scope, done)
		return r.finish()
	}
	items := make([]item, len(done.Outputs))
	for i, o := range done.Outputs {
		items[i] = item{port: o.Port, data: fromRaw(o.Data)}
	}
	if len(items) > 0 {
		r.setOutput(n, items[len(items)-1].data)
	}
	r.pathEnd(r.complete(n, scope, done.Token, items), false)
	return r.finish()
}

// failed routes a failed action to its error port edges, or fails the execution.
func (r *run) failed(n *node, scope string, done Completion) {
	hasErrorEdge := slices.ContainsFunc(n.out, func(e *edge) bool { return e.port == flowdoc.PortError })
	if !hasErrorEdge {
		r.fail(done.Error)
		return
	}
	in := done.Input
	if len(in) == 0 {
		in = json.RawMessage("null")
	}
	data, err := json.Marshal(map[string]any{"error": done.Error, "input": in})
	if err != nil {
		r.fail(&envelope.Error{Code: CodeEncode, Message: err.Error()})
		return
	}
	d := fromRaw(data)
	r.setOutput(n, d)
	if r.complete(n, scope, done.Token, []item{{port: flowdoc.PortError, data: d}}) == 0 && !r.stopped {
		// Error edges exist but none held: the failure is not handled.
		r.fail(done.Error)
	}
}

type item struct {
	port  string
	data  *datum
	scope string // set for split elements: the element's own scope
}

type task struct {
	n     *node
	scope string
	token string
	input *datum
}

type run struct {
	g       *Graph
	st      *State
	c       Context
	out     *Outcome
	queue   []task
	touched map[string]bool
	outputs map[string]*datum
	steps   map[string]any // decoded view of c.Steps + outputs, built on first use
	execEnv map[string]any
	stopped bool // the execution failed in this transition: evaluate nothing more
}

func (g *Graph) newRun(st *State, c Context) *run {
	if st.Scopes == nil {
		st.Scopes = map[string]map[string]*NodeState{}
	}
	return &run{
		g: g, st: st, c: c,
		out:     &Outcome{},
		touched: map[string]bool{},
		outputs: map[string]*datum{},
		execEnv: execEnv(c),
	}
}

func (r *run) node(scope string, n *node) *NodeState {
	r.touched[scope] = true
	m := r.st.Scopes[scope]
	if m == nil {
		m = map[string]*NodeState{}
		r.st.Scopes[scope] = m
	}
	ns := m[n.ID]
	if ns == nil {
		ns = &NodeState{}
		m[n.ID] = ns
	}
	return ns
}

// complete finishes one activation of n: each item travels every outbound edge whose port
// matches and whose condition holds. It returns how many deliveries were made.
func (r *run) complete(n *node, scope, token string, items []item) int {
	ns := r.node(scope, n)
	ns.Running--
	r.st.Last = n.ID
	delivered := 0
	for i, it := range items {
		for _, e := range n.out {
			if r.stopped {
				return delivered
			}
			if !portMatches(e.port, it.port) {
				continue
			}
			ok, err := r.holds(e, it.data)
			if err != nil {
				r.fail(&envelope.Error{Code: CodeExpression, Message: fmt.Sprintf("edge %s -> %s: %v", e.source.ID, e.target.ID, err)})
				return delivered
			}
			if it.scope != "" {
				// A split element lives in its own scope: the edge is resolved there at once.
				if ok {
					r.deliver(e, it.scope, token, i, it.data)
					delivered++
				}
				r.resolve(e, it.scope)
				continue
			}
			if ok {
				r.deliver(e, scope, token, i, it.data)
				delivered++
			}
		}
	}
	r.maybeFinish(n, scope)
	return delivered
}

// pathEnd counts a path that ended at this activation (nothing delivered downstream).
func (r *run) pathEnd(delivered int, filtered bool) {
	if delivered > 0 || r.stopped {
		return
	}
	if filtered {
		r.st.Filtered++
	} else {
		r.st.Ended++
	}
}

func portMatches(edgePort, outPort string) bool {
	norm := func(p string) string {
		if p == flowdoc.PortSuccess {
			return ""
		}
		return p
	}
	return norm(edgePort) == norm(outPort)
}

func (r *run) holds(e *edge, d *datum) (bool, error) {
	if e.cond == nil {
		return true, nil
	}
	env, err := r.env(d)
	if err != nil {
		return false, err
	}
	return e.cond.EvalBool(env)
}

// deliver hands data to e's target in scope: a merge collects it; any other node gets an
// activation with a token derived from the parent's.
func (r *run) deliver(e *edge, scope, parent string, idx int, d *datum) {
	m := e.target
	ms := r.node(scope, m)
	if m.Type == flowdoc.TypeMerge {
		raw, err := d.json()
		if err != nil {
			r.fail(&envelope.Error{Code: CodeEncode, Message: err.Error()})
			return
		}
		if ms.Arrivals == nil {
			ms.Arrivals = map[string][]json.RawMessage{}
		}
		ms.Arrivals[e.source.ID] = append(ms.Arrivals[e.source.ID], raw)
		return
	}
	ms.Delivered++
	ms.Running++
	r.queue = append(r.queue, task{n: m, scope: scope, token: derive(scope, parent, m.ID, e.index, idx), input: d})
}

// resolve settles one inbound edge of e's target in scope. Once all are settled, a merge
// fires (or is skipped when nothing arrived) and any other node finishes or is skipped.
// Whether the edge delivered was recorded by deliver (a merge's arrivals, a node's Delivered).
func (r *run) resolve(e *edge, scope string) {
	m := e.target
	ms := r.node(scope, m)
	ms.Resolved++
	if ms.Resolved < len(m.in) {
		return
	}
	if m.Type == flowdoc.TypeMerge && len(ms.Arrivals) > 0 {
		r.fireMerge(m, scope, ms)
		return
	}
	r.maybeFinish(m, scope)
}

func (r *run) fireMerge(m *node, scope string, ms *NodeState) {
	joined := make(map[string]json.RawMessage, len(ms.Arrivals))
	for src, raws := range ms.Arrivals {
		if len(raws) == 1 {
			joined[src] = raws[0]
			continue
		}
		// Several items on one branch: the merge sees them as an array.
		arr, err := json.Marshal(raws)
		if err != nil {
			r.fail(&envelope.Error{Code: CodeEncode, Message: err.Error()})
			return
		}
		joined[src] = arr
	}
	data, err := json.Marshal(joined)
	if err != nil {
		r.fail(&envelope.Error{Code: CodeEncode, Message: err.Error()})
		return
	}
	ms.Arrivals = nil
	ms.Delivered++
	ms.Running++
	r.queue = append(r.queue, task{n: m, scope: scope, token: derive(scope, "merge", m.ID, 0, 0), input: fromRaw(data)})
}

// maybeFinish marks n done in scope once every inbound edge is resolved and nothing of it is
// running, and resolves its outbound edges (an edge no activation delivered on is dead). A node
// nothing was delivered to is skipped, so its outbound edges all die.
func (r *run) maybeFinish(n *node, scope string) {
	ns := r.node(scope, n)
	if ns.Done || ns.Resolved < len(n.in) || ns.Running > 0 || r.stopped {
		return
	}
	ns.Done = true
	if ns.Delivered == 0 {
		r.step(n, derive(scope, "skip", n.ID, 0, 0), envelope.StepSkipped, "", nil, nil, nil)
	}
	if n.Type == flowdoc.TypeSplit {
		return // its edges were resolved in the elements' scopes
	}
	for _, e := range n.out {
		r.resolve(e, scope)
	}
}

// finish runs the queued inline activations, then decides whether the execution ended.
func (r *run) finish() (*Outcome, error) {
	for len(r.queue) > 0 && !r.stopped {
		t := r.queue[0]
		r.queue = r.queue[1:]
		r.activate(t)
	}
	for scope := range r.touched {
		r.gc(scope)
	}
	if r.stopped {
		r.out.Work = nil // a failed execution sends nothing more
	} else if r.st.InFlight == 0 {
		r.settle()
	}
	if r.st.Status != "" {
		r.out.Done, r.out.Status = true, r.st.Status
		if d := r.output(r.st.Last); d != nil {
			raw, err := d.json()
			if err == nil {
				r.out.LastOutput = raw
			}
		}
	}
	r.out.Outputs = make(map[string]json.RawMessage, len(r.outputs))
	for id, d := range r.outputs {
		raw, err := d.json()
		if err != nil {
			return nil, fmt.Errorf("graph: encode output of %s: %w", id, err)
		}
		r.out.Outputs[id] = raw
	}
	return r.out, nil
}

// settle decides the status of an execution with nothing left in flight.
func (r *run) settle() {
	for _, nodes := range r.st.Scopes {
		for id, ns := range nodes {
			if len(ns.Arrivals) > 0 && !ns.Done {
				// Only a flow whose branches cross split scopes gets here.
				r.st.Status = envelope.StatusFailed
				r.out.Error = &envelope.Error{Code: CodeMergeUnresolved, Message: fmt.Sprintf("merge %s never saw all its inbound branches in one scope", id)}
				return
			}
		}
	}
	if r.st.Ended == 0 && r.st.Filtered > 0 {
		r.st.Status = envelope.StatusFiltered
	} else {
		r.st.Status = envelope.StatusSucceeded
	}
}

func (r *run) gc(scope string) {
	for _, ns := range r.st.Scopes[scope] {
		if !ns.Done {
			return
		}
	}
	delete(r.st.Scopes, scope)
}

func (r *run) fail(err *envelope.Error) {
	if r.stopped {
		return
	}
	r.stopped = true
	r.st.Status = envelope.StatusFailed
	r.out.Error = err
}

// activate runs one activation: an action becomes work for a runner, a control node is
// evaluated here.
func (r *run) activate(t task) {
	n := t.n
	if n.Type == flowdoc.TypeAction {
		raw, err := t.input.json()
		if err != nil {
			r.fail(&envelope.Error{Code: CodeEncode, Message: err.Error()})
			return
		}
		r.out.Work = append(r.out.Work, Activation{Node: n.Node, Token: t.token, Input: raw})
		r.st.InFlight++
		return
	}
	port, items, output, filtered, err := r.control(n, t)
	if err != nil {
		r.step(n, t.token, envelope.StepFailed, "", t.input, nil, err)
		r.fail(err)
		return
	}
	r.step(n, t.token, envelope.StepSucceeded, port, t.input, output, nil)
	if output != nil {
		r.setOutput(n, output)
	}
	r.pathEnd(r.complete(n, t.scope, t.token, items), filtered)
}

// control evaluates a control node: the items it emits, the port it took, its output (what
// steps.<id> shows) and whether an empty result means the item was filtered out.
func (r *run) control(n *node, t task) (port string, items []item, output *datum, filtered bool, err *envelope.Error) {
	in := t.input
	exprErr := func(what string, e error) *envelope.Error {
		return &envelope.Error{Code: CodeExpression, Message: fmt.Sprintf("%s %s: %s: %v", n.Type, n.ID, what, e)}
	}
	switch n.Type {
	case flowdoc.TypeIf:
		ok, e := r.evalBool(n.cond, in)
		if e != nil {
			return "", nil, nil, false, exprErr("condition", e)
		}
		port = flowdoc.PortFalse
		if ok {
			port = flowdoc.PortTrue
		}
		return port, []item{{port: port, data: in}}, in, false, nil
	case flowdoc.TypeSwitch:
		port = flowdoc.PortDefault
		for _, c := range n.cases {
			ok, e := r.evalBool(c.cond, in)
			if e != nil {
				return "", nil, nil, false, exprErr("case "+c.name, e)
			}
			if ok {
				port = c.name
				break
			}
		}
		return port, []item{{port: port, data: in}}, in, false, nil
	case flowdoc.TypeFilter:
		ok, e := r.evalBool(n.cond, in)
		if e != nil {
			return "", nil, nil, false, exprErr("condition", e)
		}
		if !ok {
			return "", nil, nil, true, nil
		}
		return "", []item{{data: in}}, in, false, nil
	case flowdoc.TypeSplit:
		return r.split(n, t)
	case flowdoc.TypeMerge:
		return "", []item{{data: in}}, in, false, nil
	case flowdoc.TypeRespond:
		reply, body, e := r.respond(n, in)
		if e != nil {
			return "", nil, nil, false, e
		}
		if !r.st.Responded {
			r.st.Responded = true
			r.out.Reply = reply
		}
		return "", nil, body, false, nil
	default:
		// Triggers never receive activations (validation forbids inbound edges to them).
		return "", []item{{data: in}}, in, false, nil
	}
}

func (r *run) split(n *node, t task) (string, []item, *datum, bool, *envelope.Error) {
	var elems []*datum
	var arr *datum
	if n.path == nil {
		var raws []json.RawMessage
		if err := json.Unmarshal(t.input.rawOrNull(), &raws); err != nil {
			return "", nil, nil, false, &envelope.Error{Code: CodeSplitNotArray, Message: fmt.Sprintf("split %s: the input is not an array", n.ID)}
		}
		for _, raw := range raws {
			elems = append(elems, fromRaw(raw))
		}
		arr = t.input
	} else {
		env, err := r.env(t.input)
		if err != nil {
			return "", nil, nil, false, &envelope.Error{Code: CodeExpression, Message: err.Error()}
		}
		v, err := n.path.eval(env)
		if err != nil {
			return "", nil, nil, false, &envelope.Error{Code: CodeExpression, Message: fmt.Sprintf("split %s: path: %v", n.ID, err)}
		}
		list, ok := v.([]any)
		if !ok {
			return "", nil, nil, false, &envelope.Error{Code: CodeSplitNotArray, Message: fmt.Sprintf("split %s: path yielded %T, not an array", n.ID, v)}
		}
		for _, e := range list {
			elems = append(elems, fromValue(e))
		}
		arr = fromValue(list)
	}
	items := make([]item, len(elems))
	for i, d := range elems {
		items[i] = item{data: d, scope: childScope(t.token, i)}
	}
	return "", items, arr, len(items) == 0, nil
}

func (r *run) respond(n *node, in *datum) (*envelope.Reply, *datum, *envelope.Error) {
	fail := func(what string, err error) (*envelope.Reply, *datum, *envelope.Error) {
		return nil, nil, &envelope.Error{Code: CodeRespond, Message: fmt.Sprintf("respond %s: %s: %v", n.ID, what, err)}
	}
	env, err := r.env(in)
	if err != nil {
		return fail("input", err)
	}
	reply := &envelope.Reply{Status: 200}
	if n.status != nil {
		v, err := n.status.Render(env)
		if err != nil {
			return fail("status", err)
		}
		if reply.Status, err = httpStatus(v); err != nil {
			return fail("status", err)
		}
	}
	body := in
	if n.body != nil {
		v, err := n.body.Render(env)
		if err != nil {
			return fail("body", err)
		}
		body = fromValue(v)
	}
	if reply.Body, err = body.json(); err != nil {
		return fail("body", err)
	}
	if n.headers != nil {
		v, err := n.headers.Render(env)
		if err != nil {
			return fail("headers", err)
		}
		m, ok := v.(map[string]any)
		if !ok {
			return fail("headers", fmt.Errorf("must be an object, got %T", v))
		}
		reply.Headers = make(map[string]string, len(m))
		for k, hv := range m {
			switch x := hv.(type) {
			case string:
				reply.Headers[k] = x
			case nil:
			default:
				b, _ := json.Marshal(x)
				reply.Headers[k] = string(b)
			}
		}
	}
	return reply, body, nil
}

func httpStatus(v any) (int, error) {
	var n int
	switch x := v.(type) {
	case float64:
		n = int(x)
	case int:
		n = x
	case int64:
		n = int(x)
	case string:
		var err error
		if n, err = strconv.Atoi(x); err != nil {
			return 0, fmt.Errorf("%q is not a number", x)
		}
	default:
		return 0, fmt.Errorf("%T is not a number", v)
	}
	if n < 100 || n > 599 {
		return 0, fmt.Errorf("%d is not an HTTP status", n)
	}
	return n, nil
}

func (r *run) evalBool(p *expression.Program, in *datum) (bool, error) {
	env, err := r.env(in)
	if err != nil {
		return false, err
	}
	return p.EvalBool(env)
}

func (r *run) env(in *datum) (expression.Env, error) {
	v, err := in.value()
	if err != nil {
		return nil, err
	}
	steps, err := r.stepsEnv()
	if err != nil {
		return nil, err
	}
	return expression.Env{
		expression.KeyInput:     v,
		expression.KeySteps:     steps,
		expression.KeyFlow:      r.g.flowEnv,
		expression.KeySettings:  r.g.settingsEnv,
		expression.KeyExecution: r.execEnv,
	}, nil
}

func (r *run) stepsEnv() (map[string]any, error) {
	if r.steps != nil {
		return r.steps, nil
	}
	r.steps = make(map[string]any, len(r.c.Steps)+len(r.outputs))
	for id, raw := range r.c.Steps {
		if _, ok := r.outputs[id]; ok {
			continue
		}
		v, err := fromRaw(raw).value()
		if err != nil {
			return nil, fmt.Errorf("output of %s: %w", id, err)
		}
		r.steps[id] = v
	}
	for id, d := range r.outputs {
		v, err := d.value()
		if err != nil {
			return nil, fmt.Errorf("output of %s: %w", id, err)
		}
		r.steps[id] = v
	}
	return r.steps, nil
}

func (r *run) setOutput(n *node, d *datum) {
	r.outputs[n.ID] = d
	if r.steps != nil {
		if v, err := d.value(); err == nil {
			r.steps[n.ID] = v
		}
	}
}

func (r *run) output(id string) *datum {
	if d, ok := r.outputs[id]; ok {
		return d
	}
	if raw, ok := r.c.Steps[id]; ok {
		return fromRaw(raw)
	}
	return nil
}

func (r *run) step(n *node, token, status, port string, in, out *datum, err *envelope.Error) {
	s := envelope.Step{NodeID: n.ID, Token: token, Type: n.Type, Status: status, Port: port, Error: err}
	if in != nil {
		s.Input, _ = in.json()
	}
	if out != nil {
		s.Output, _ = out.json()
	}
	r.out.Steps = append(r.out.Steps, s)
}

// datum is a JSON value kept as bytes or as decoded Go values, converted only when needed:
// data mostly flows through untouched, and expressions want decoded values.
type datum struct {
	raw     json.RawMessage
	val     any
	decoded bool
}

func fromRaw(raw json.RawMessage) *datum {
	if len(raw) == 0 {
		raw = json.RawMessage("null")
	}
	return &datum{raw: raw}
}

func fromValue(v any) *datum { return &datum{val: v, decoded: true} }

func (d *datum) value() (any, error) {
	if !d.decoded {
		if err := json.Unmarshal(d.raw, &d.val); err != nil {
			return nil, fmt.Errorf("decode: %w", err)
		}
		d.decoded = true
	}
	return d.val, nil
}

func (d *datum) json() (json.RawMessage, error) {
	if d.raw == nil {
		b, err := json.Marshal(d.val)
		if err != nil {
			return nil, err
		}
		d.raw = b
	}
	return d.raw, nil
}

func (d *datum) rawOrNull() json.RawMessage {
	raw, err := d.json()
	if err != nil {
		return json.RawMessage("null")
	}
	return raw
}

// WorkContext is what a runner's templates see besides the input (envelope.Work.Context): the
// same flow, settings and execution as the router's expressions, and steps as given (the
// latest output of every completed node).
func (g *Graph) WorkContext(c Context, steps map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	if steps == nil {
		steps = map[string]json.RawMessage{}
	}
	out := make(map[string]json.RawMessage, 4)
	for k, v := range map[string]any{
		expression.KeySteps:     steps,
		expression.KeyFlow:      g.flowEnv,
		expression.KeySettings:  g.settingsEnv,
		expression.KeyExecution: execEnv(c),
	} {
		raw, err := json.Marshal(v)
		if err != nil {
			return nil, fmt.Errorf("graph: encode context %s: %w", k, err)
		}
		out[k] = raw
	}
	return out, nil
}

func execEnv(c Context) map[string]any {
	env := map[string]any{
		"id": c.ExecutionID, "trigger": c.Trigger,
		"receivedAt": c.ReceivedAt.UTC().Format(time.RFC3339Nano),
	}
	if c.ScheduledAt != nil {
		env["scheduledAt"] = c.ScheduledAt.UTC().Format(time.RFC3339Nano)
	}
	if c.Source != nil {
		env["source"] = c.Source
	}
	return env
}
