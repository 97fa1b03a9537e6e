package flowdoc

import (
	"bytes"
	"encoding/json"
	"errors"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/internal/expression"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/schemaproblem"
	"github.com/flowd/flowd/internal/schedule"
)

// Options plugs connector knowledge into validation; nil hooks skip those checks.
type Options struct {
	// ConfigSchema returns the config schema of a connector action (or trigger, for
	// trigger.poll nodes); false when the connector or action is unknown to it.
	ConfigSchema func(connector, action string) (*jsonschema.Schema, bool)
	// ActionPorts returns the extra output ports an action declares beyond success/error.
	ActionPorts func(connector, action string) ([]string, bool)
	// Lookup says whether a connector, and its action or trigger, exist. When set, nodes
	// naming anything else are errors (unknown_connector, unknown_action).
	Lookup func(connector, action string) (connectorKnown, actionKnown bool)
	// ReservedTopic says whether a Kafka topic is flowd's own or Kafka's internal one
	// (kafkax.Config.Reserved): partner triggers and the kafka connector may use neither.
	ReservedTopic func(topic string) bool
	// RawFields returns the config fields a connector action (or trigger) marks raw, as JSON
	// pointers into its config ("" for all of it): the runner passes them on unrendered, so
	// their `{{` is not compiled here, and config schema errors there are reported even when
	// the value holds `{{`. Without it every field may hold templates.
	RawFields func(connector, action string) []string
}

// KafkaConnector is the built-in connector that produces to Kafka topics; its config.topic is
// checked against Options.ReservedTopic like a partner trigger's.
const KafkaConnector = "kafka"

// Validate runs the semantic checks on a decoded flow: graph structure, ports, expressions and
// connector config. It does not apply flow.schema.json (Decode does), but repeats the few
// shape checks the graph checks rely on, so flows built in code are safe to check too.
func Validate(f *Flow, opts Options) problem.List {
	v := validator{f: f, opts: opts}
	v.run()
	return finish(v.probs)
}

var portName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

type validator struct {
	f           *Flow
	opts        Options
	graphBroken bool            // the schema already rejected the node list as a whole
	dropped     map[string]bool // paths whose values the schema rejected and Decode removed
	probs       problem.List

	index     map[string]int    // node id -> index of its first occurrence
	caseNames []map[string]bool // per node: switch case names
}

func (v *validator) add(code, path, format string, args ...any) {
	if v.dropped[path] {
		return // the schema's type error there says it better
	}
	v.probs = append(v.probs, problem.New(code, path, format, args...))
}

func nodePath(i int) string { return "/graph/nodes/" + strconv.Itoa(i) }
func edgePath(i int) string { return "/graph/edges/" + strconv.Itoa(i) }

func (v *validator) run() {
	v.owners()
	v.history()
	v.retry("/retry", v.f.Retry)
	if n := v.f.Notifications; n != nil {
		v.duration("/notifications/digest", "digest", n.Digest, MinDigest, MaxDigest)
	}
	v.nodes()
	triggers := v.triggers()
	inbound := v.edges()
	for i, n := range v.f.Graph.Nodes {
		if n.Type == TypeMerge && v.index[n.ID] == i && inbound[i] < 2 {
			v.add(CodeMergeInbound, nodePath(i), "merge node %q has %d inbound edge(s); it needs at least 2", n.ID, inbound[i])
		}
	}
	v.cycles()
	handler := v.onError()
	v.unreachable(triggers, handler)
}

// onError checks the error handler's root and returns its index (-1 for none).
func (v *validator) onError() int {
	h := v.f.OnError
	if h == nil {
		return -1
	}
	i, ok := v.index[h.Node]
	if !ok {
		v.add(CodeUnknownNode, "/onError/node", "onError names node %q, which the graph does not have", h.Node)
		return -1
	}
	n := v.f.Graph.Nodes[i]
	if n.IsTrigger() || n.Type == TypeMerge || n.Type == TypeRespond {
		v.add(CodeInvalidOnError, "/onError/node", "onError must name an action or a control node, not a %s node", n.Type)
		return -1
	}
	for j, e := range v.f.Graph.Edges {
		if e.Target == h.Node {
			v.add(CodeInvalidOnError, edgePath(j)+"/target", "no edge may lead to the onError node %q", h.Node)
		}
	}
	return i
}

func (v *validator) owners() {
	for i, o := range v.f.Owners {
		p := "/owners/" + strconv.Itoa(i)
		if o.ID == "" {
			v.add(schemaproblem.CodeRequired, p+"/id", "owner id is required")
		}
		if o.Type != OwnerUser && o.Type != OwnerTenant {
			v.add(schemaproblem.CodeEnum, p+"/type", "owner type %q must be %q or %q", o.Type, OwnerUser, OwnerTenant)
		}
	}
}

func (v *validator) history() {
	h := v.f.History
	if h == nil || h.MaxAge == "" {
		return
	}
	d, err := time.ParseDuration(h.MaxAge)
	switch {
	case err != nil:
		v.add(schemaproblem.CodePattern, "/history/maxAge", "maxAge %q is not a duration such as 168h", h.MaxAge)
	case d < MinHistoryAge || d > MaxHistoryAge:
		v.add(schemaproblem.CodeRange, "/history/maxAge", "maxAge %s must be between %s and %s", h.MaxAge, MinHistoryAge, MaxHistoryAge)
	}
}

// retry checks what the schema cannot: that durations are within bounds.
func (v *validator) retry(path string, r *Retry) {
	if r == nil {
		return
	}
	for _, d := range []struct{ name, val string }{
		{"initialInterval", r.InitialInterval}, {"maxInterval", r.MaxInterval},
		{"backoff", r.Backoff}, {"maxBackoff", r.MaxBackoff},
	} {
		v.duration(path+"/"+d.name, d.name, d.val, MinRetryInterval, MaxRetryInterval)
	}
}

// schedule checks what the schema cannot: that the cron expression parses and the time zone
// exists, with the parser the scheduler uses.
func (v *validator) schedule(n *Node, p string) {
	if n.Config == nil {
		return // the schema says config is required
	}
	_, err := schedule.Parse(n.Config)
	var se *schedule.Error
	if errors.As(err, &se) {
		v.add(CodeInvalidSchedule, p+"/config/"+se.Field, "%s", se.Msg)
	}
}

func (v *validator) timeout(path, val string) {
	v.duration(path, "timeout", val, MinStepTimeout, MaxStepTimeout)
}

func (v *validator) duration(path, name, val string, lo, hi time.Duration) {
	if val == "" {
		return
	}
	d, err := time.ParseDuration(val)
	switch {
	case err != nil:
		v.add(schemaproblem.CodePattern, path, "%s %q is not a duration such as 1s or 500ms", name, val)
	case d < lo || d > hi:
		v.add(schemaproblem.CodeRange, path, "%s %s must be between %s and %s", name, val, lo, hi)
	}
}

func (v *validator) nodes() {
	nodes := v.f.Graph.Nodes
	v.index = make(map[string]int, len(nodes))
	v.caseNames = make([]map[string]bool, len(nodes))
	for i := range nodes {
		n := &nodes[i]
		p := nodePath(i)
		if v.dropped[p] {
			continue
		}
		switch first, seen := v.index[n.ID]; {
		case n.ID == "":
			v.add(schemaproblem.CodeRequired, p+"/id", "node id is required")
		case seen:
			v.add(CodeDuplicateNodeID, p+"/id", "node id %q is already used by %s", n.ID, nodePath(first))
		default:
			v.index[n.ID] = i
		}
		if n.IsDraft() {
			// Stored as it is and refused by start (StartProblems); what it holds is checked
			// once it has a type, which decides what its config means.
			continue
		}
		if !slices.Contains(NodeTypes, n.Type) {
			v.add(schemaproblem.CodeEnum, p+"/type", "unknown node type %q; known types: %s", n.Type, strings.Join(NodeTypes, ", "))
		}
		switch n.Type {
		case TypeAction:
			v.requireField(p, "connector", n.Connector)
			v.requireField(p, "action", n.Action)
			v.retry(p+"/retry", n.Retry)
			v.timeout(p+"/timeout", n.Timeout)
		default:
			if n.Timeout != "" {
				v.add(schemaproblem.CodeAdditionalProperty, p+"/timeout", "timeout applies to action nodes, not to a %s node", n.Type)
			}
		}
		switch n.Type {
		case TypePoll:
			v.requireField(p, "connector", n.Connector)
			v.requireField(p, "trigger", n.Trigger)
		case TypeSchedule:
			v.schedule(n, p)
		}
		if n.Type == TypePoll {
			v.duration(p+"/interval", "interval", n.Interval, MinPollInterval, MaxPollInterval)
		} else if n.Interval != "" {
			v.add(schemaproblem.CodeAdditionalProperty, p+"/interval", "interval applies to trigger.poll nodes, not to a %s node", n.Type)
		}
		skip := ""
		switch n.Type {
		case TypeIf, TypeFilter:
			v.condition(n, p)
			skip = "condition"
		case TypeSwitch:
			v.caseNames[i] = v.switchCases(n, p)
			skip = "cases"
		}
		raw := v.rawFields(n)
		for k, val := range n.Config {
			if k != skip {
				v.templates(val, p+"/config", "/"+problem.EscapeToken(k), raw)
			}
		}
		v.connectorConfig(n, p)
	}
	v.probs = append(v.probs, ReservedTopicProblems(v.f, v.opts.ReservedTopic)...)
}

// ReservedTopicProblems refuses partner trigger and kafka connector nodes naming a reserved
// topic: reading one would hand a tenant every other tenant's records, writing one would forge
// flowd's own. A templated topic is known only at run time, where the connector checks it.
func ReservedTopicProblems(f *Flow, reserved func(topic string) bool) problem.List {
	if reserved == nil {
		return nil
	}
	var ps problem.List
	for _, t := range Topics(f) {
		if !t.Templated && reserved(t.Topic) {
			ps = append(ps, problem.New(CodeTopicReserved, t.Path, "topic %q is reserved for flowd and Kafka themselves; use a topic of your own", t.Topic))
		}
	}
	return ps
}

// TopicUse is a Kafka topic a node reads (trigger.kafka) or writes (the kafka connector).
type TopicUse struct {
	Path      string // JSON pointer of the node's config.topic
	Topic     string
	Templated bool // holds a `{{ }}` template: known only at run time
}

// NodeTopic returns the topic a node uses, if it is a partner trigger or a kafka connector
// node with a string config.topic.
func NodeTopic(n *Node) (TopicUse, bool) {
	if n.Type != TypeKafka && (n.Type != TypeAction || n.Connector != KafkaConnector) {
		return TopicUse{}, false
	}
	t, ok := n.Config["topic"].(string)
	if !ok {
		return TopicUse{}, false
	}
	return TopicUse{Topic: t, Templated: strings.Contains(t, "{{")}, true
}

// Topics lists the Kafka topics a flow's nodes use, with their paths.
func Topics(f *Flow) []TopicUse {
	var out []TopicUse
	for i := range f.Graph.Nodes {
		if t, ok := NodeTopic(&f.Graph.Nodes[i]); ok {
			t.Path = nodePath(i) + "/config/topic"
			out = append(out, t)
		}
	}
	return out
}

func (v *validator) requireField(nodeP, field, val string) {
	if val == "" {
		v.add(schemaproblem.CodeRequired, nodeP+"/"+field, "%s is required for this node type", field)
	}
}

func (v *validator) condition(n *Node, p string) {
	raw, ok := n.Config["condition"]
	if !ok {
		v.add(schemaproblem.CodeRequired, p+"/config/condition", "%s node %q needs config.condition (a boolean expression)", n.Type, n.ID)
		return
	}
	src, ok := raw.(string)
	if !ok {
		v.add(CodeInvalidConfig, p+"/config/condition", "config.condition must be an expression string")
		return
	}
	if _, err := expression.CompileCondition(src); err != nil {
		v.add(CodeInvalidExpression, p+"/config/condition", "%s", err)
	}
}

// switchCases checks config.cases ([{name, condition}]) and returns the valid case names,
// which are the node's output ports besides "default".
func (v *validator) switchCases(n *Node, p string) map[string]bool {
	names := map[string]bool{}
	cp := p + "/config/cases"
	raw, ok := n.Config["cases"]
	if !ok {
		v.add(schemaproblem.CodeRequired, cp, "a switch node needs config.cases: [{\"name\": ..., \"condition\": ...}]")
		return names
	}
	cases, ok := raw.([]any)
	if !ok || len(cases) == 0 {
		v.add(CodeInvalidConfig, cp, "config.cases must be a non-empty array of {\"name\", \"condition\"}")
		return names
	}
	for j, c := range cases {
		jp := cp + "/" + strconv.Itoa(j)
		obj, ok := c.(map[string]any)
		if !ok {
			v.add(CodeInvalidConfig, jp, "a case must be an object {\"name\", \"condition\"}")
			continue
		}
		switch name, ok := obj["name"].(string); {
		case obj["name"] == nil:
			v.add(schemaproblem.CodeRequired, jp+"/name", "a case needs a name (it is the edge port)")
		case !ok || !portName.MatchString(name):
			v.add(CodeInvalidConfig, jp+"/name", "case name must match %s", portName)
		case name == PortDefault:
			v.add(CodeInvalidConfig, jp+"/name", "case name %q is reserved for the fallback port", PortDefault)
		case names[name]:
			v.add(CodeInvalidConfig, jp+"/name", "case name %q is used twice", name)
		default:
			names[name] = true
		}
		switch src, ok := obj["condition"].(string); {
		case obj["condition"] == nil:
			v.add(schemaproblem.CodeRequired, jp+"/condition", "a case needs a condition")
		case !ok:
			v.add(CodeInvalidConfig, jp+"/condition", "a case condition must be an expression string")
		default:
			if _, err := expression.CompileCondition(src); err != nil {
				v.add(CodeInvalidExpression, jp+"/condition", "%s", err)
			}
		}
	}
	return names
}

// templates compiles every {{ }} template in a config value (at rel within the config at
// base), reporting each failure at its own pointer; raw fields are left alone.
func (v *validator) templates(val any, base, rel string, raw []string) {
	if len(raw) > 0 && problem.Within(rel, raw...) {
		return
	}
	switch x := val.(type) {
	case string:
		if strings.Contains(x, "{{") {
			if _, err := expression.CompileTemplate(x); err != nil {
				v.add(CodeInvalidExpression, base+rel, "%s", err)
			}
		}
	case map[string]any:
		for k, c := range x {
			v.templates(c, base, rel+"/"+problem.EscapeToken(k), raw)
		}
	case []any:
		for i, c := range x {
			v.templates(c, base, rel+"/"+strconv.Itoa(i), raw)
		}
	}
}

// rawFields are the config fields the node's connector passes on unrendered.
func (v *validator) rawFields(n *Node) []string {
	if v.opts.RawFields == nil || n.Connector == "" {
		return nil
	}
	name := n.Action
	if n.Type == TypePoll || name == "" {
		name = n.Trigger
	}
	return v.opts.RawFields(n.Connector, name)
}

// connectorConfig validates config against the connector's schema. Values that are templates
// are only known at run time, so failures located at a template are not reported (a raw
// field's `{{` is no template).
func (v *validator) connectorConfig(n *Node, p string) {
	if (v.opts.ConfigSchema == nil && v.opts.Lookup == nil) || n.Connector == "" {
		return
	}
	name, field := n.Action, "/action"
	if n.Type == TypePoll || name == "" {
		name, field = n.Trigger, "/trigger"
	}
	if v.opts.Lookup != nil {
		switch conn, act := v.opts.Lookup(n.Connector, name); {
		case !conn:
			v.add(CodeUnknownConnector, p+"/connector", "no connector named %q is installed", n.Connector)
			return
		case !act:
			v.add(CodeUnknownAction, p+field, "connector %q has no %s named %q", n.Connector, field[1:], name)
			return
		}
	}
	if v.opts.ConfigSchema == nil {
		return
	}
	sch, ok := v.opts.ConfigSchema(n.Connector, name)
	if !ok || sch == nil {
		return
	}
	cfg := n.Config
	if cfg == nil {
		cfg = map[string]any{}
	}
	// Round-trip so values built in Go ([]string, structs) look like decoded JSON.
	data, err := json.Marshal(cfg)
	if err != nil {
		v.add(CodeInvalidConfig, p+"/config", "config cannot be encoded as JSON: %s", err)
		return
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		v.add(CodeInvalidConfig, p+"/config", "config cannot be decoded: %s", err)
		return
	}
	err = sch.Validate(inst)
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return
	}
	raw := v.rawFields(n)
	for _, l := range schemaproblem.Leaves(ve, p+"/config") {
		if val, ok := valueAt(inst, l.Location); ok {
			if s, ok := val.(string); ok && strings.Contains(s, "{{") && !problem.Within(problem.Pointer(l.Location...), raw...) {
				continue
			}
		}
		l.Code = CodeInvalidConfig
		v.probs = append(v.probs, l.Problem)
	}
}

func (v *validator) triggers() []int {
	var idx []int
	for i := range v.f.Graph.Nodes {
		n := &v.f.Graph.Nodes[i]
		if !n.IsTrigger() {
			continue
		}
		if len(idx) > 0 {
			v.add(CodeMultipleTriggers, nodePath(i), "node %q is a second trigger; a flow has exactly one (the first is %q)", n.ID, v.f.Graph.Nodes[idx[0]].ID)
		}
		idx = append(idx, i)
	}
	if len(idx) == 0 && !v.graphBroken && !v.unknownTypes() {
		v.add(CodeNoTrigger, "/graph/nodes", "the flow has no trigger node (one of %s, %s, %s, %s)", TypeWebhook, TypeKafka, TypeSchedule, TypePoll)
	}
	return idx
}

// unknownTypes reports whether some node's type is unknown or not yet given (a draft); it
// might have been meant as the trigger, so "no trigger" would be noise on top of the type
// error, and a draft flow is stored without one (start says what it lacks).
func (v *validator) unknownTypes() bool {
	for _, n := range v.f.Graph.Nodes {
		if !slices.Contains(NodeTypes, n.Type) {
			return true
		}
	}
	return false
}

// edges checks endpoints, ports and conditions, and counts inbound edges per node.
func (v *validator) edges() []int {
	nodes := v.f.Graph.Nodes
	inbound := make([]int, len(nodes))
	for i, e := range v.f.Graph.Edges {
		p := edgePath(i)
		if v.dropped[p] {
			continue
		}
		src, srcOK := v.endpoint(e.Source, p+"/source")
		dst, dstOK := v.endpoint(e.Target, p+"/target")
		if dstOK {
			inbound[dst]++
			if nodes[dst].IsTrigger() {
				v.add(CodeTriggerInbound, p+"/target", "edge %s -> %s points at a trigger; triggers have no inputs", e.Source, e.Target)
			}
		}
		if srcOK {
			v.port(&nodes[src], src, e, p)
		}
		if e.Condition != "" {
			if _, err := expression.CompileCondition(e.Condition); err != nil {
				v.add(CodeInvalidExpression, p+"/condition", "%s", err)
			}
		}
	}
	return inbound
}

func (v *validator) endpoint(id, p string) (int, bool) {
	if id == "" {
		v.add(schemaproblem.CodeRequired, p, "edge endpoint is required")
		return 0, false
	}
	i, ok := v.index[id]
	if !ok {
		v.add(CodeUnknownNode, p, "no node has id %q", id)
	}
	return i, ok
}

func (v *validator) port(src *Node, srcIdx int, e Edge, p string) {
	pp := p + "/port"
	switch src.Type {
	case TypeRespond:
		v.add(CodeRespondOutbound, p+"/source", "respond node %q ends the flow; it cannot have outgoing edges", src.ID)
	case TypeIf:
		if e.Port != PortTrue && e.Port != PortFalse {
			v.add(CodeInvalidPort, pp, "edges from if node %q need port %q or %q, got %q", src.ID, PortTrue, PortFalse, e.Port)
		}
	case TypeSwitch:
		if e.Port != PortDefault && !v.caseNames[srcIdx][e.Port] {
			names := make([]string, 0, len(v.caseNames[srcIdx])+1)
			for n := range v.caseNames[srcIdx] {
				names = append(names, strconv.Quote(n))
			}
			sort.Strings(names)
			names = append(names, strconv.Quote(PortDefault))
			v.add(CodeInvalidPort, pp, "switch node %q has no port %q; its ports are %s", src.ID, e.Port, strings.Join(names, ", "))
		}
	case TypeAction:
		if e.Port == "" || e.Port == PortSuccess || e.Port == PortError {
			return
		}
		if v.opts.ActionPorts != nil {
			if ports, ok := v.opts.ActionPorts(src.Connector, src.Action); ok && slices.Contains(ports, e.Port) {
				return
			}
		}
		v.add(CodeInvalidPort, pp, "action node %q has no port %q; use %q, %q or none", src.ID, e.Port, PortSuccess, PortError)
	case TypeWebhook, TypeKafka, TypeSchedule, TypePoll, TypeFilter, TypeMerge, TypeSplit:
		if e.Port != "" {
			v.add(CodeInvalidPort, pp, "%s node %q has a single output; remove port %q", src.Type, src.ID, e.Port)
		}
	}
}

// adjacency lists, per node index, the (edge index, target index) pairs of resolvable edges.
func (v *validator) adjacency() [][][2]int {
	adj := make([][][2]int, len(v.f.Graph.Nodes))
	for i, e := range v.f.Graph.Edges {
		s, ok1 := v.index[e.Source]
		t, ok2 := v.index[e.Target]
		if ok1 && ok2 {
			adj[s] = append(adj[s], [2]int{i, t})
		}
	}
	return adj
}

// cycles reports every edge that closes a cycle (a back edge of a depth-first search in node
// order, so the result is deterministic).
func (v *validator) cycles() {
	nodes := v.f.Graph.Nodes
	adj := v.adjacency()
	const (
		white = iota
		grey
		black
	)
	color := make([]int, len(nodes))
	var stack []int
	var visit func(n int)
	visit = func(n int) {
		color[n] = grey
		stack = append(stack, n)
		for _, et := range adj[n] {
			e, t := et[0], et[1]
			switch color[t] {
			case white:
				visit(t)
			case grey:
				start := slices.Index(stack, t)
				ids := make([]string, 0, len(stack)-start+1)
				for _, s := range stack[start:] {
					ids = append(ids, nodes[s].ID)
				}
				ids = append(ids, nodes[t].ID)
				v.add(CodeCycle, edgePath(e), "edge %s -> %s closes a cycle: %s", nodes[n].ID, nodes[t].ID, strings.Join(ids, " -> "))
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
	}
	for i := range nodes {
		if color[i] == white && v.index[nodes[i].ID] == i {
			visit(i)
		}
	}
}

// unreachable reports nodes no path from a trigger (or from the onError handler, when
// handler >= 0) leads to: they would never run. The handler's nodes must be apart from the
// trigger's: one node in both would run in either graph's turn.
func (v *validator) unreachable(triggers []int, handler int) {
	if len(triggers) == 0 {
		return
	}
	nodes := v.f.Graph.Nodes
	adj := v.adjacency()
	reach := func(from []int) []bool {
		seen := make([]bool, len(nodes))
		queue := append([]int(nil), from...)
		for _, t := range from {
			seen[t] = true
		}
		for len(queue) > 0 {
			n := queue[0]
			queue = queue[1:]
			for _, et := range adj[n] {
				if t := et[1]; !seen[t] {
					seen[t] = true
					queue = append(queue, t)
				}
			}
		}
		return seen
	}
	seen := reach(triggers)
	var handled []bool
	if handler >= 0 {
		handled = reach([]int{handler})
	}
	for i, n := range nodes {
		// Nodes without an id or with a duplicate id were reported already and no edge can reach them.
		if n.ID == "" || v.index[n.ID] != i {
			continue
		}
		switch {
		case handled != nil && handled[i] && seen[i]:
			v.add(CodeUnreachable, nodePath(i)+"/id", "node %q is reached both from the trigger and from the onError node; the handler's nodes must be its own", n.ID)
		case !seen[i] && (handled == nil || !handled[i]):
			v.add(CodeUnreachable, nodePath(i)+"/id", "node %q is not reachable from the trigger", n.ID)
		}
	}
}
