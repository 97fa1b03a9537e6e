package graph

import (
	"encoding/json"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
)

// n and e build flows tersely: n("A") is an action, n("c", "if", "condition", "...") a control node.
func n(id string, typeAndConfig ...any) flowdoc.Node {
	nd := flowdoc.Node{ID: id, Type: flowdoc.TypeAction, Connector: "test", Action: "echo"}
	if len(typeAndConfig) > 0 {
		nd = flowdoc.Node{ID: id, Type: typeAndConfig[0].(string)}
		if len(typeAndConfig) > 1 {
			nd.Config = map[string]any{}
		}
		for i := 1; i+1 < len(typeAndConfig); i += 2 {
			nd.Config[typeAndConfig[i].(string)] = typeAndConfig[i+1]
		}
	}
	return nd
}

func e(src, dst string, portAndCond ...string) flowdoc.Edge {
	ed := flowdoc.Edge{Source: src, Target: dst}
	if len(portAndCond) > 0 {
		ed.Port = portAndCond[0]
	}
	if len(portAndCond) > 1 {
		ed.Condition = portAndCond[1]
	}
	return ed
}

func flow(nodes []flowdoc.Node, edges ...flowdoc.Edge) *flowdoc.Flow {
	all := append([]flowdoc.Node{{ID: "t", Type: flowdoc.TypeWebhook}}, nodes...)
	return &flowdoc.Flow{ID: "f1", Name: "test flow", Revision: 3, Graph: flowdoc.Graph{Nodes: all, Edges: edges},
		Settings: map[string]any{"region": "eu"}}
}

// runner plays the runner pools: it answers each activation with the behaviour of its node
// (default: echo the input), round-tripping the state through JSON as the router does.
type runner map[string]func(in any) ([]envelope.Output, *envelope.Error)

type trace struct {
	work    []Activation // every activation sent to a runner, in order
	steps   []envelope.Step
	reply   *envelope.Reply
	status  string
	err     *envelope.Error
	last    json.RawMessage
	done    int // transitions that reported Done
	outputs map[string]json.RawMessage
}

func (tr *trace) workFor(node string) []string {
	var out []string
	for _, w := range tr.work {
		if w.Node.ID == node {
			out = append(out, string(w.Input))
		}
	}
	return out
}

func (tr *trace) stepStatus(node string) []string {
	var out []string
	for _, s := range tr.steps {
		if s.NodeID == node {
			out = append(out, s.Status)
		}
	}
	return out
}

func execute(t *testing.T, f *flowdoc.Flow, input string, rn runner, lifo bool) *trace {
	t.Helper()
	g, err := Compile(f)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	tr := &trace{outputs: map[string]json.RawMessage{}}
	var st State
	ctx := func() Context {
		return Context{ExecutionID: "x1", Trigger: "webhook", ReceivedAt: time.Unix(0, 0), Steps: tr.outputs}
	}
	apply := func(o *Outcome) []Activation {
		tr.steps = append(tr.steps, o.Steps...)
		for k, v := range o.Outputs {
			tr.outputs[k] = v
		}
		if o.Reply != nil {
			if tr.reply != nil {
				t.Fatalf("second reply %+v", o.Reply)
			}
			tr.reply = o.Reply
		}
		if o.Done {
			tr.done++
			tr.status, tr.err, tr.last = o.Status, o.Error, o.LastOutput
		}
		tr.work = append(tr.work, o.Work...)
		// The router stores the state as JSON between transitions.
		raw, err := json.Marshal(&st)
		if err != nil {
			t.Fatal(err)
		}
		st = State{}
		if err := json.Unmarshal(raw, &st); err != nil {
			t.Fatal(err)
		}
		return o.Work
	}
	o, err := g.Start(&st, ctx(), json.RawMessage(input))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	queue := apply(o)
	for len(queue) > 0 {
		var a Activation
		if lifo {
			a, queue = queue[len(queue)-1], queue[:len(queue)-1]
		} else {
			a, queue = queue[0], queue[1:]
		}
		var in any
		_ = json.Unmarshal(a.Input, &in)
		outs, fail := []envelope.Output{{Data: a.Input}}, (*envelope.Error)(nil)
		if fn := rn[a.Node.ID]; fn != nil {
			outs, fail = fn(in)
		}
		o, err := g.Complete(&st, ctx(), Completion{NodeID: a.Node.ID, Token: a.Token, Outputs: outs, Error: fail, Input: a.Input})
		if err != nil {
			t.Fatalf("Complete %s: %v", a.Node.ID, err)
		}
		queue = append(queue, apply(o)...)
	}
	if tr.done != 1 {
		t.Fatalf("execution reported done %d times, want exactly once (status %q)", tr.done, st.Status)
	}
	if st.InFlight != 0 {
		t.Fatalf("in flight = %d after the end", st.InFlight)
	}
	return tr
}

func out(v any) []envelope.Output {
	b, _ := json.Marshal(v)
	return []envelope.Output{{Data: b}}
}

func TestControlNodes(t *testing.T) {
	t.Parallel()
	ifFlow := flow([]flowdoc.Node{n("c", flowdoc.TypeIf, "condition", "input.n > 1"), n("A"), n("B")},
		e("t", "c"), e("c", "A", "true"), e("c", "B", "false"))
	switchFlow := flow([]flowdoc.Node{
		n("s", flowdoc.TypeSwitch, "cases", []any{
			map[string]any{"name": "big", "condition": "input.n > 10"},
			map[string]any{"name": "mid", "condition": "input.n > 5"},
		}), n("Big"), n("Mid"), n("Other")},
		e("t", "s"), e("s", "Big", "big"), e("s", "Mid", "mid"), e("s", "Other", "default"))
	filterFlow := flow([]flowdoc.Node{n("f", flowdoc.TypeFilter, "condition", "input.keep"), n("A")},
		e("t", "f"), e("f", "A"))
	filterBeside := flow([]flowdoc.Node{n("f", flowdoc.TypeFilter, "condition", "input.keep"), n("A"), n("B")},
		e("t", "f"), e("f", "A"), e("t", "B"))
	conditional := flow([]flowdoc.Node{n("A"), n("B")},
		e("t", "A", "", "input.to == 'A'"), e("t", "B", "", "input.to == 'B'"))
	envFlow := flow([]flowdoc.Node{n("c", flowdoc.TypeIf, "condition",
		"flow.name == 'test flow' && flow.revision == 3 && settings.region == 'eu' && execution.trigger == 'webhook' && execution.id == 'x1'"), n("A")},
		e("t", "c"), e("c", "A", "true"))
	stepsFlow := flow([]flowdoc.Node{n("A"), n("c", flowdoc.TypeIf, "condition", "steps.A.ok && steps.t.n == 1"), n("Y"), n("N")},
		e("t", "A"), e("A", "c"), e("c", "Y", "true"), e("c", "N", "false"))

	tests := []struct {
		name     string
		flow     *flowdoc.Flow
		input    string
		runner   runner
		status   string
		work     map[string][]string // node -> inputs of its work items (nil: none expected)
		skipped  []string
		errCode  string
		filtered bool
	}{
		{name: "if true", flow: ifFlow, input: `{"n":5}`, status: "succeeded",
			work: map[string][]string{"A": {`{"n":5}`}, "B": nil}, skipped: []string{"B"}},
		{name: "if false", flow: ifFlow, input: `{"n":0}`, status: "succeeded",
			work: map[string][]string{"A": nil, "B": {`{"n":0}`}}, skipped: []string{"A"}},
		{name: "if condition error fails", flow: ifFlow, input: `{"n":"x"}`, status: "failed", errCode: CodeExpression,
			work: map[string][]string{"A": nil, "B": nil}},
		{name: "switch first match", flow: switchFlow, input: `{"n":20}`, status: "succeeded",
			work: map[string][]string{"Big": {`{"n":20}`}, "Mid": nil, "Other": nil}, skipped: []string{"Mid", "Other"}},
		{name: "switch second case", flow: switchFlow, input: `{"n":7}`, status: "succeeded",
			work: map[string][]string{"Big": nil, "Mid": {`{"n":7}`}, "Other": nil}},
		{name: "switch default", flow: switchFlow, input: `{"n":1}`, status: "succeeded",
			work: map[string][]string{"Big": nil, "Mid": nil, "Other": {`{"n":1}`}}},
		{name: "filter passes", flow: filterFlow, input: `{"keep":true}`, status: "succeeded",
			work: map[string][]string{"A": {`{"keep":true}`}}},
		{name: "filter drops: filtered", flow: filterFlow, input: `{"keep":false}`, status: "filtered",
			work: map[string][]string{"A": nil}, skipped: []string{"A"}},
		{name: "filter drops one path of two: succeeded", flow: filterBeside, input: `{"keep":false}`, status: "succeeded",
			work: map[string][]string{"A": nil, "B": {`{"keep":false}`}}},
		{name: "false edge condition is a dead path", flow: conditional, input: `{"to":"B"}`, status: "succeeded",
			work: map[string][]string{"A": nil, "B": {`{"to":"B"}`}}, skipped: []string{"A"}},
		{name: "env: flow, settings, execution", flow: envFlow, input: `{}`, status: "succeeded",
			work: map[string][]string{"A": {`{}`}}},
		{name: "env: steps of completed nodes", flow: stepsFlow, input: `{"n":1}`, status: "succeeded",
			runner: runner{"A": func(any) ([]envelope.Output, *envelope.Error) { return out(map[string]any{"ok": true}), nil }},
			work:   map[string][]string{"Y": {`{"ok":true}`}, "N": nil}},
		{name: "action failure without error edge fails", flow: flow([]flowdoc.Node{n("A"), n("B")}, e("t", "A"), e("A", "B")),
			input: `{}`, status: "failed", errCode: "boom",
			runner: runner{"A": func(any) ([]envelope.Output, *envelope.Error) {
				return nil, &envelope.Error{Code: "boom", Message: "no"}
			}},
			work: map[string][]string{"B": nil}},
		{name: "action failure follows the error port", flow: flow([]flowdoc.Node{n("A"), n("B"), n("E")},
			e("t", "A"), e("A", "B"), e("A", "E", "error")),
			input: `{"v":1}`, status: "succeeded",
			runner: runner{"A": func(any) ([]envelope.Output, *envelope.Error) {
				return nil, &envelope.Error{Code: "boom", Message: "no"}
			}},
			work: map[string][]string{"B": nil,
				"E": {`{"error":{"code":"boom","message":"no","retryable":false},"input":{"v":1}}`}},
			skipped: []string{"B"}},
		{name: "several outputs: one activation each", flow: flow([]flowdoc.Node{n("A"), n("B")}, e("t", "A"), e("A", "B")),
			input: `{}`, status: "succeeded",
			runner: runner{"A": func(any) ([]envelope.Output, *envelope.Error) {
				return []envelope.Output{{Data: json.RawMessage(`1`)}, {Data: json.RawMessage(`2`)}}, nil
			}},
			work: map[string][]string{"B": {`1`, `2`}}},
		{name: "custom port", flow: flow([]flowdoc.Node{n("A"), n("B"), n("C")}, e("t", "A"), e("A", "B"), e("A", "C", "success")),
			input: `{}`, status: "succeeded",
			runner: runner{"A": func(any) ([]envelope.Output, *envelope.Error) {
				return []envelope.Output{{Port: "success", Data: json.RawMessage(`1`)}}, nil
			}},
			work: map[string][]string{"B": {`1`}, "C": {`1`}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr := execute(t, tt.flow, tt.input, tt.runner, false)
			if tr.status != tt.status {
				t.Fatalf("status = %q (%v), want %q", tr.status, tr.err, tt.status)
			}
			if tt.errCode != "" && (tr.err == nil || tr.err.Code != tt.errCode) {
				t.Fatalf("error = %v, want code %s", tr.err, tt.errCode)
			}
			for node, want := range tt.work {
				if got := tr.workFor(node); !reflect.DeepEqual(got, want) {
					t.Errorf("work for %s = %v, want %v", node, got, want)
				}
			}
			for _, node := range tt.skipped {
				if got := tr.stepStatus(node); !reflect.DeepEqual(got, []string{envelope.StepSkipped}) {
					t.Errorf("steps of %s = %v, want one skipped", node, got)
				}
			}
		})
	}
}

func TestMergeAfterFanOut(t *testing.T) {
	t.Parallel()
	f := flow([]flowdoc.Node{n("A"), n("B"), n("m", flowdoc.TypeMerge), n("C")},
		e("t", "A"), e("t", "B"), e("A", "m"), e("B", "m"), e("m", "C"))
	rn := runner{
		"A": func(any) ([]envelope.Output, *envelope.Error) { return out("a"), nil },
		"B": func(any) ([]envelope.Output, *envelope.Error) { return out("b"), nil },
	}
	for _, lifo := range []bool{false, true} {
		t.Run(fmt.Sprintf("lifo=%v", lifo), func(t *testing.T) {
			tr := execute(t, f, `{}`, rn, lifo)
			if got := tr.workFor("C"); !reflect.DeepEqual(got, []string{`{"A":"a","B":"b"}`}) {
				t.Fatalf("C ran with %v, want once with both inputs", got)
			}
			if tr.status != envelope.StatusSucceeded {
				t.Fatalf("status %s", tr.status)
			}
		})
	}
}

func TestMergeWithDeadBranch(t *testing.T) {
	t.Parallel()
	f := flow([]flowdoc.Node{n("c", flowdoc.TypeIf, "condition", "input.n > 1"), n("A"), n("B"), n("X"),
		n("m", flowdoc.TypeMerge), n("C")},
		e("t", "c"), e("c", "A", "true"), e("c", "B", "false"), e("B", "X"), e("A", "m"), e("X", "m"), e("m", "C"))
	tr := execute(t, f, `{"n":5}`, nil, false)
	if got := tr.workFor("C"); !reflect.DeepEqual(got, []string{`{"A":{"n":5}}`}) {
		t.Fatalf("C ran with %v, want once with A's output only", got)
	}
	for _, id := range []string{"B", "X"} {
		if got := tr.stepStatus(id); !reflect.DeepEqual(got, []string{envelope.StepSkipped}) {
			t.Fatalf("%s steps %v, want skipped (dead path)", id, got)
		}
	}

	// Every inbound branch dead: the merge is skipped and so is what follows it.
	g := flow([]flowdoc.Node{n("c", flowdoc.TypeIf, "condition", "input.n > 1"), n("A"), n("B"),
		n("m", flowdoc.TypeMerge), n("C"), n("D")},
		e("t", "c"), e("c", "A", "true"), e("c", "B", "true"), e("c", "D", "false"), e("A", "m"), e("B", "m"), e("m", "C"))
	tr = execute(t, g, `{"n":0}`, nil, false)
	if tr.workFor("C") != nil || !reflect.DeepEqual(tr.stepStatus("m"), []string{envelope.StepSkipped}) ||
		!reflect.DeepEqual(tr.stepStatus("C"), []string{envelope.StepSkipped}) {
		t.Fatalf("merge with all branches dead: C work %v, m steps %v, C steps %v", tr.workFor("C"), tr.stepStatus("m"), tr.stepStatus("C"))
	}
	if tr.status != envelope.StatusSucceeded {
		t.Fatalf("status %s", tr.status)
	}
}

func TestSplit(t *testing.T) {
	t.Parallel()
	f := flow([]flowdoc.Node{n("s", flowdoc.TypeSplit, "path", "input.items"), n("A")}, e("t", "s"), e("s", "A"))
	tr := execute(t, f, `{"items":[{"i":1},{"i":2},{"i":3}]}`, nil, false)
	if got := tr.workFor("A"); !reflect.DeepEqual(got, []string{`{"i":1}`, `{"i":2}`, `{"i":3}`}) {
		t.Fatalf("A ran with %v, want one activation per element", got)
	}
	scopes := map[string]bool{}
	for _, w := range tr.work {
		scopes[ScopeOf(w.Token)] = true
	}
	if len(scopes) != 3 || scopes[RootScope] {
		t.Fatalf("element scopes %v, want 3 distinct non-root scopes", scopes)
	}

	// Without a path the input itself is split; an empty array ends the execution filtered.
	g := flow([]flowdoc.Node{n("s", flowdoc.TypeSplit), n("A")}, e("t", "s"), e("s", "A"))
	if tr := execute(t, g, `[1,2]`, nil, false); !reflect.DeepEqual(tr.workFor("A"), []string{`1`, `2`}) {
		t.Fatalf("split of the input: %v", tr.workFor("A"))
	}
	if tr := execute(t, g, `[]`, nil, false); tr.status != envelope.StatusFiltered || tr.work != nil {
		t.Fatalf("empty split: status %s, work %v", tr.status, tr.work)
	}
	if tr := execute(t, g, `{"not":"array"}`, nil, false); tr.status != envelope.StatusFailed || tr.err.Code != CodeSplitNotArray {
		t.Fatalf("split of an object: status %s, err %v", tr.status, tr.err)
	}
}

func TestSplitThenMergeJoinsWithinEachElement(t *testing.T) {
	t.Parallel()
	f := flow([]flowdoc.Node{n("s", flowdoc.TypeSplit, "path", "input.items"), n("A"), n("B"),
		n("m", flowdoc.TypeMerge), n("C")},
		e("t", "s"), e("s", "A"), e("s", "B"), e("A", "m"), e("B", "m"), e("m", "C"))
	tag := func(p string) func(any) ([]envelope.Output, *envelope.Error) {
		return func(in any) ([]envelope.Output, *envelope.Error) { return out(fmt.Sprintf("%s%v", p, in)), nil }
	}
	for _, lifo := range []bool{false, true} {
		tr := execute(t, f, `{"items":[1,2,3]}`, runner{"A": tag("a"), "B": tag("b")}, lifo)
		got := tr.workFor("C")
		sort.Strings(got)
		want := []string{`{"A":"a1","B":"b1"}`, `{"A":"a2","B":"b2"}`, `{"A":"a3","B":"b3"}`}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("lifo=%v: C ran with %v, want one join per element %v", lifo, got, want)
		}
		if tr.status != envelope.StatusSucceeded {
			t.Fatalf("status %s (%v)", tr.status, tr.err)
		}
	}
}

func TestRespond(t *testing.T) {
	t.Parallel()
	f := flow([]flowdoc.Node{n("A"), n("r", flowdoc.TypeRespond,
		"status", 201,
		"body", map[string]any{"hello": "{{ input.name }}", "from": "{{ steps.t.name }}!"},
		"headers", map[string]any{"X-Flow": "{{ flow.id }}"})},
		e("t", "A"), e("A", "r"))
	tr := execute(t, f, `{"name":"Ada"}`, nil, false)
	want := &envelope.Reply{Status: 201, Headers: map[string]string{"X-Flow": "f1"}, Body: json.RawMessage(`{"from":"Ada!","hello":"Ada"}`)}
	if !reflect.DeepEqual(tr.reply, want) {
		t.Fatalf("reply = %+v (%s), want %+v", tr.reply, tr.reply.Body, want)
	}
	if tr.status != envelope.StatusSucceeded {
		t.Fatalf("status %s", tr.status)
	}

	// Defaults: 200 and the input as the body.
	g := flow([]flowdoc.Node{n("r", flowdoc.TypeRespond)}, e("t", "r"))
	tr = execute(t, g, `{"x":1}`, nil, false)
	if tr.reply == nil || tr.reply.Status != 200 || string(tr.reply.Body) != `{"x":1}` {
		t.Fatalf("default reply %+v", tr.reply)
	}
}

func TestLastOutput(t *testing.T) {
	t.Parallel()
	f := flow([]flowdoc.Node{n("A")}, e("t", "A"))
	tr := execute(t, f, `{}`, runner{"A": func(any) ([]envelope.Output, *envelope.Error) { return out(map[string]int{"done": 1}), nil }}, false)
	if string(tr.last) != `{"done":1}` {
		t.Fatalf("last output %s", tr.last)
	}
}

// The same completion yields the same tokens: a redelivered message produces nothing new.
func TestTokensAreDeterministic(t *testing.T) {
	t.Parallel()
	f := flow([]flowdoc.Node{n("s", flowdoc.TypeSplit), n("A"), n("B")}, e("t", "s"), e("s", "A"), e("s", "B"))
	a := execute(t, f, `[1,2]`, nil, false)
	b := execute(t, f, `[1,2]`, nil, false)
	seen := map[string]bool{}
	for i := range a.work {
		if a.work[i].Token != b.work[i].Token {
			t.Fatalf("token %d differs: %s vs %s", i, a.work[i].Token, b.work[i].Token)
		}
		if seen[a.work[i].Token] {
			t.Fatalf("token %s used twice", a.work[i].Token)
		}
		seen[a.work[i].Token] = true
		if !strings.Contains(a.work[i].Token, "/") {
			t.Fatalf("token %s has no scope", a.work[i].Token)
		}
	}
}

func TestCompleteRejectsUnknownActivations(t *testing.T) {
	t.Parallel()
	g, err := Compile(flow([]flowdoc.Node{n("A")}, e("t", "A")))
	if err != nil {
		t.Fatal(err)
	}
	var st State
	o, err := g.Start(&st, Context{}, json.RawMessage(`{}`))
	if err != nil || len(o.Work) != 1 {
		t.Fatalf("start: %v %+v", err, o)
	}
	if _, err := g.Complete(&st, Context{}, Completion{NodeID: "A", Token: "r/0000"}); err != nil {
		t.Fatalf("a running activation of A exists in the root scope, got %v", err)
	}
	if _, err := g.Start(&st, Context{}, nil); err == nil {
		t.Fatal("a second start was accepted")
	}
	if _, err := g.Complete(&State{}, Context{}, Completion{NodeID: "A", Token: o.Work[0].Token}); err == nil {
		t.Fatal("a completion without a running activation was accepted")
	}
	if _, err := g.Complete(&State{}, Context{}, Completion{NodeID: "nope", Token: "r/x"}); err == nil {
		t.Fatal("a completion of an unknown node was accepted")
	}
}

func TestCompileRejectsInvalidFlows(t *testing.T) {
	t.Parallel()
	cyclic := flow([]flowdoc.Node{n("A"), n("B")}, e("t", "A"), e("A", "B"), e("B", "A"))
	if _, err := Compile(cyclic); err == nil {
		t.Fatal("a cyclic flow compiled")
	}
	g, err := Compile(flow([]flowdoc.Node{n("A"), {ID: "B", Type: flowdoc.TypeAction, Connector: "x", Action: "y", Pool: "big"}},
		e("t", "A"), e("t", "B")))
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Pools(); !reflect.DeepEqual(got, []string{"default", "big"}) {
		t.Fatalf("pools %v", got)
	}
}

// The integration's settings of the revision lie under the flow's own: the router's
// expressions and the runners' templates both see the deep merge, the flow's values winning.
func TestSettingsMergeTheIntegrationsUnderTheFlows(t *testing.T) {
	t.Parallel()
	f := flow([]flowdoc.Node{n("c", flowdoc.TypeIf, "condition",
		"settings.region == 'eu' && settings.tier == 'gold' && settings.crm.url == 'https://crm' && settings.crm.timeout == 5"), n("A")},
		e("t", "c"), e("c", "A", "true"))
	f.Settings = map[string]any{"region": "eu", "crm": map[string]any{"timeout": 5}}
	f.IntegrationSettings = map[string]any{"region": "us", "tier": "gold", "crm": map[string]any{"url": "https://crm", "timeout": 1}}
	if tr := execute(t, f, `{}`, nil, false); tr.status != "succeeded" || len(tr.workFor("A")) != 1 {
		t.Fatalf("status %s (%v), work for A %v: the merged settings were not what the condition expects", tr.status, tr.err, tr.workFor("A"))
	}
	g, err := Compile(f)
	if err != nil {
		t.Fatal(err)
	}
	ctx, err := g.WorkContext(Context{ExecutionID: "x1", Trigger: "webhook", ReceivedAt: time.Now()}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := string(ctx["settings"]), `{"crm":{"timeout":5,"url":"https://crm"},"region":"eu","tier":"gold"}`; got != want {
		t.Fatalf("runner context settings %s, want %s", got, want)
	}
	if f.IntegrationSettings["region"] != "us" || f.IntegrationSettings["crm"].(map[string]any)["timeout"] != 1 {
		t.Fatalf("the merge changed the revision's integration settings: %v", f.IntegrationSettings)
	}
}
