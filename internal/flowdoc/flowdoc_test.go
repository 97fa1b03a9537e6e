package flowdoc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/flowd/flowd/internal/problem/schemaproblem"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/internal/problem"
)

const corpus = "../../schemas/testdata/flows"

// corpusOptions stands in for the connector registry: http/request has a config schema and an
// extra "notFound" port.
func corpusOptions(t testing.TB) Options {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(`{
		"type": "object",
		"required": ["method", "url"],
		"properties": {
			"method": {"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"]},
			"url": {"type": "string", "pattern": "^https?://"},
			"timeout": {"type": "integer"},
			"headers": {"type": "object", "additionalProperties": {"type": "string"}}
		}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("mem://http/request.json", doc); err != nil {
		t.Fatal(err)
	}
	httpSchema, err := c.Compile("mem://http/request.json")
	if err != nil {
		t.Fatal(err)
	}
	return Options{
		ConfigSchema: func(connector, action string) (*jsonschema.Schema, bool) {
			if connector == "http" && action == "request" {
				return httpSchema, true
			}
			return nil, false
		},
		ActionPorts: func(connector, action string) ([]string, bool) {
			if connector == "http" && action == "request" {
				return []string{"notFound"}, true
			}
			return nil, false
		},
	}
}

func contentType(name string) string {
	if strings.HasSuffix(name, ".yaml") || strings.HasSuffix(name, ".yml") {
		return "application/yaml"
	}
	return "application/json"
}

// load runs a corpus file through the same steps the API does.
func load(t *testing.T, path string, opts Options) (*Flow, problem.List) {
	t.Helper()
	body, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc, probs := ToJSON(body, contentType(path))
	if len(probs) > 0 {
		return nil, probs
	}
	return Decode(doc, opts)
}

func corpusFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(corpus, dir))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasSuffix(n, ".expect.json") {
			continue
		}
		if strings.HasSuffix(n, ".json") || strings.HasSuffix(n, ".yaml") {
			out = append(out, filepath.Join(corpus, dir, n))
		}
	}
	return out
}

func TestCorpusValid(t *testing.T) {
	t.Parallel()
	opts := corpusOptions(t)
	files := corpusFiles(t, "valid")
	if len(files) < 6 {
		t.Fatalf("only %d valid corpus files", len(files))
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			f, probs := load(t, path, opts)
			if len(probs) > 0 {
				t.Fatalf("unexpected problems:\n%s", dump(probs))
			}
			if f == nil || f.Trigger() == nil || DerivedType(f) == "" {
				t.Fatalf("decoded flow has no trigger: %+v", f)
			}
			// The stored form must validate again and be stable.
			c1, err := Canonical(f)
			if err != nil {
				t.Fatal(err)
			}
			f2, probs := Decode(c1, opts)
			if len(probs) > 0 {
				t.Fatalf("canonical form rejected:\n%s\n%s", dump(probs), c1)
			}
			c2, _ := Canonical(f2)
			if !bytes.Equal(c1, c2) {
				t.Fatalf("canonical form not stable:\n%s\n%s", c1, c2)
			}
		})
	}
}

type expectation struct {
	Code string `json:"code"`
	Path string `json:"path"`
}

func TestCorpusInvalid(t *testing.T) {
	t.Parallel()
	opts := corpusOptions(t)
	files := corpusFiles(t, "invalid")
	if len(files) < 15 {
		t.Fatalf("only %d invalid corpus files", len(files))
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			base := strings.TrimSuffix(strings.TrimSuffix(path, ".json"), ".yaml")
			raw, err := os.ReadFile(base + ".expect.json")
			if err != nil {
				t.Fatalf("missing expectation: %v", err)
			}
			var want []expectation
			if err := json.Unmarshal(raw, &want); err != nil || len(want) == 0 {
				t.Fatalf("bad expectation file: %v", err)
			}
			_, probs := load(t, path, opts)
			if len(probs) == 0 {
				t.Fatal("no problems reported")
			}
			for _, w := range want {
				if !has(probs, w.Code, w.Path) {
					t.Errorf("missing %s at %q", w.Code, w.Path)
				}
			}
			for _, p := range probs {
				if p.Message == "" || p.Code == "" {
					t.Errorf("problem without code or message: %+v", p)
				}
			}
			if t.Failed() {
				t.Logf("got:\n%s", dump(probs))
			}
		})
	}
}

func TestManyProblemsAtOnce(t *testing.T) {
	t.Parallel()
	doc := `{
		"name": "",
		"colour": "blue",
		"owners": [{"id": "u1", "type": "group"}],
		"graph": {
			"nodes": [
				{"id": "in", "type": "trigger.webhook"},
				{"id": "check", "type": "if", "config": {"condition": "inptu.x"}},
				{"id": "a", "type": "action", "connector": "http", "action": "request", "config": {"url": "{{ input.id"}},
				{"id": "a", "type": "action", "connector": "http", "action": "request"},
				{"id": "b", "type": "action"},
				{"id": "join", "type": "merge"},
				{"id": "island", "type": "action", "connector": "x", "action": "y"},
				{"id": "k", "type": "trigger.kafka"},
				{"id": "weird", "type": "teleport"}
			],
			"edges": [
				{"source": "in", "target": "check"},
				{"source": "check", "target": "a", "port": "maybe"},
				{"source": "a", "target": "b", "condition": "1 +"},
				{"source": "b", "target": "ghost"},
				{"source": "b", "target": "a"},
				{"source": "a", "target": "join"},
				{"source": "b", "target": "in"}
			]
		}
	}`
	f, probs := Decode([]byte(doc), Options{})
	if f == nil {
		t.Fatal("flow not decoded despite recoverable errors")
	}
	want := []expectation{
		{schemaproblem.CodeLength, "/name"},
		{schemaproblem.CodeAdditionalProperty, "/colour"},
		{schemaproblem.CodeEnum, "/owners/0/type"},
		{CodeInvalidExpression, "/graph/nodes/1/config/condition"},
		{CodeInvalidExpression, "/graph/nodes/2/config/url"},
		{CodeDuplicateNodeID, "/graph/nodes/3/id"},
		{schemaproblem.CodeRequired, "/graph/nodes/4/connector"},
		{schemaproblem.CodeRequired, "/graph/nodes/4/action"},
		{CodeMergeInbound, "/graph/nodes/5"},
		{CodeUnreachable, "/graph/nodes/6/id"},
		{CodeMultipleTriggers, "/graph/nodes/7"},
		{schemaproblem.CodeEnum, "/graph/nodes/8/type"},
		{CodeInvalidPort, "/graph/edges/1/port"},
		{CodeInvalidExpression, "/graph/edges/2/condition"},
		{CodeUnknownNode, "/graph/edges/3/target"},
		{CodeCycle, "/graph/edges/4"},
		{CodeTriggerInbound, "/graph/edges/6/target"},
	}
	for _, w := range want {
		if !has(probs, w.Code, w.Path) {
			t.Errorf("missing %s at %s", w.Code, w.Path)
		}
	}
	if t.Failed() {
		t.Logf("got:\n%s", dump(probs))
	}
	if !sorted(probs) {
		t.Errorf("problems not sorted:\n%s", dump(probs))
	}
	// Same input, same output.
	_, again := Decode([]byte(doc), Options{})
	if !reflect.DeepEqual(probs, again) {
		t.Error("problems differ between runs")
	}
}

func TestDecodeWrongTypesAreNotRepeated(t *testing.T) {
	t.Parallel()
	doc := `{"name": "x", "graph": {
		"nodes": ["not a node", {"id": "in", "type": "trigger.webhook"}, {"id": 7, "type": "respond"}],
		"edges": [5, {"source": "in", "target": "gone"}]}}`
	f, probs := Decode([]byte(doc), Options{})
	if f == nil || len(f.Graph.Nodes) != 3 {
		t.Fatalf("flow not decoded: %v", f)
	}
	want := []string{
		"type@/graph/edges/0",
		"unknown_node@/graph/edges/1/target",
		"type@/graph/nodes/0",
		"type@/graph/nodes/2/id",
	}
	var got []string
	for _, p := range probs {
		got = append(got, p.Code+"@"+p.Path)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got:\n%s", dump(probs))
	}
}

func TestValidateStruct(t *testing.T) {
	t.Parallel()
	f := &Flow{
		Name:   "built in code",
		Owners: []Owner{{ID: "u", Type: "robot"}},
		Graph: Graph{
			Nodes: []Node{
				{ID: "in", Type: TypeWebhook},
				{ID: "sw", Type: TypeSwitch, Config: map[string]any{"cases": []any{
					map[string]any{"name": "big", "condition": "input.n > 10"},
				}}},
				{ID: "x", Type: TypeAction, Connector: "c", Action: "a"},
				{ID: "y", Type: TypeRespond},
			},
			Edges: []Edge{
				{Source: "in", Target: "sw"},
				{Source: "sw", Target: "x", Port: "big"},
				{Source: "sw", Target: "y", Port: "default"},
				{Source: "x", Target: "y", Port: "custom"},
			},
		},
	}
	probs := Validate(f, Options{ActionPorts: func(c, _ string) ([]string, bool) { return []string{"custom"}, c == "c" }})
	if len(probs) != 1 || !has(probs, schemaproblem.CodeEnum, "/owners/0/type") {
		t.Fatalf("got:\n%s", dump(probs))
	}
	f.Owners[0].Type = OwnerTenant
	if probs := Validate(f, Options{}); len(probs) != 1 || !has(probs, CodeInvalidPort, "/graph/edges/3/port") {
		t.Fatalf("without the ActionPorts hook the custom port is unknown; got:\n%s", dump(probs))
	}
	if probs := Validate(&Flow{Name: "empty"}, Options{}); !has(probs, CodeNoTrigger, "/graph/nodes") {
		t.Fatalf("got:\n%s", dump(probs))
	}
}

func TestCycleMessageNamesNodes(t *testing.T) {
	t.Parallel()
	f := &Flow{Name: "c", Graph: Graph{
		Nodes: []Node{{ID: "t", Type: TypeWebhook}, {ID: "a", Type: TypeAction, Connector: "c", Action: "x"}, {ID: "b", Type: TypeAction, Connector: "c", Action: "x"}},
		Edges: []Edge{{Source: "t", Target: "a"}, {Source: "a", Target: "b"}, {Source: "b", Target: "a"}, {Source: "b", Target: "b"}},
	}}
	probs := Validate(f, Options{})
	if !has(probs, CodeCycle, "/graph/edges/2") || !has(probs, CodeCycle, "/graph/edges/3") {
		t.Fatalf("got:\n%s", dump(probs))
	}
	for _, p := range probs {
		if p.Path == "/graph/edges/2" && !strings.Contains(p.Message, "a -> b -> a") {
			t.Errorf("cycle message %q does not name the nodes", p.Message)
		}
	}
}

func TestToJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, body, ct string
		want           string // JSON (compared semantically) or "" when problems are expected
		code, msg      string
	}{
		{name: "json", body: `{"a":1}`, ct: "application/json", want: `{"a":1}`},
		{name: "json with charset and bom", body: "\xef\xbb\xbf {\"a\":1}\n", ct: "application/json; charset=utf-8", want: `{"a":1}`},
		{name: "yaml by content type", body: "a: 1\nb: [x, y]\n", ct: "application/yaml", want: `{"a":1,"b":["x","y"]}`},
		{name: "yaml x- content type", body: "a: 1", ct: "application/x-yaml", want: `{"a":1}`},
		{name: "yaml sniffed", body: "a: 1", ct: "", want: `{"a":1}`},
		{name: "json sniffed from text/plain", body: `{"a":true}`, ct: "text/plain", want: `{"a":true}`},
		{name: "yaml flow mapping with yaml type", body: `{a: 1}`, ct: "text/yaml", want: `{"a":1}`},
		{name: "yaml keeps what was written", body: "c: NO\nzip: 01234\non: yes\nf: 1.5\nbig: 12345678901234567890\nq: \"true\"\nt: true\nn: ~\ninf: .inf\nx: 0x1F\n", ct: "application/yaml",
			want: `{"c":"NO","zip":"01234","on":"yes","f":1.5,"big":12345678901234567890,"q":"true","t":true,"n":null,"inf":".inf","x":"0x1F"}`},
		{name: "yaml anchors and merge", body: "base: &b {a: 1}\nother:\n  <<: *b\n  c: [*b]\n", ct: "application/yaml", want: `{"base":{"a":1},"other":{"a":1,"c":[{"a":1}]}}`},
		{name: "yaml duplicate key", body: "a: 1\na: 2\n", ct: "application/yaml", code: CodeMalformed, msg: `key "a" already set`},
		{name: "empty", body: "  \n", ct: "application/json", code: CodeMalformed, msg: "empty"},
		{name: "empty yaml", body: "# only a comment\n", ct: "application/yaml", code: CodeMalformed, msg: "empty"},
		{name: "json syntax", body: "{\n  \"a\": 1,\n  \"b\" 2\n}", ct: "application/json", code: CodeMalformed, msg: "line 3, column 7"},
		{name: "json truncated", body: `{"a": [1, 2`, ct: "application/json", code: CodeMalformed, msg: "unexpected end"},
		{name: "json trailing", body: `{"a": 1} {"b": 2}`, ct: "application/json", code: CodeMalformed, msg: "after top-level value"},
		{name: "yaml syntax", body: "a: 1\n b: 2\n", ct: "application/yaml", code: CodeMalformed, msg: "line 2"},
		{name: "json deep", body: strings.Repeat("[", 65) + strings.Repeat("]", 65), ct: "application/json", code: CodeTooDeep},
		{name: "json deep braces in strings ok", body: `{"a":"` + strings.Repeat("[{", 100) + `"}`, ct: "application/json", want: `{"a":"` + strings.Repeat("[{", 100) + `"}`},
		{name: "json 64 levels ok", body: strings.Repeat("[", 64) + strings.Repeat("]", 64), ct: "application/json", want: strings.Repeat("[", 64) + strings.Repeat("]", 64)},
		{name: "yaml deep", body: strings.Repeat("- ", 70) + "x\n", ct: "application/yaml", code: CodeTooDeep},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, probs := ToJSON([]byte(tt.body), tt.ct)
			if tt.code != "" {
				if len(probs) != 1 || probs[0].Code != tt.code || probs[0].Path != "" || !strings.Contains(probs[0].Message, tt.msg) {
					t.Fatalf("got %v, want one %s mentioning %q", probs, tt.code, tt.msg)
				}
				return
			}
			if len(probs) > 0 {
				t.Fatalf("unexpected problems: %v", probs)
			}
			var a, b any
			if err := json.Unmarshal(got, &a); err != nil {
				t.Fatalf("output is not JSON: %s", got)
			}
			_ = json.Unmarshal([]byte(tt.want), &b)
			if !reflect.DeepEqual(a, b) {
				t.Fatalf("got %s, want %s", got, tt.want)
			}
		})
	}
}

func TestDecodeRejectsNonObjects(t *testing.T) {
	t.Parallel()
	for _, doc := range []string{`[]`, `"flow"`, `null`, `42`} {
		f, probs := Decode([]byte(doc), Options{})
		if f != nil || !has(probs, schemaproblem.CodeType, "") {
			t.Errorf("%s: got flow %v, problems %v", doc, f, probs)
		}
	}
}

func TestTriggerAndKind(t *testing.T) {
	t.Parallel()
	f := &Flow{Graph: Graph{Nodes: []Node{{ID: "a", Type: TypeAction}, {ID: "k", Type: TypeKafka}}}}
	if n := f.Trigger(); n == nil || n.ID != "k" {
		t.Fatalf("Trigger = %v", n)
	}
	if f.Kind() != "kafka" || DerivedType(f) != "kafka" {
		t.Fatalf("Kind = %q", f.Kind())
	}
	if (&Flow{}).Trigger() != nil || DerivedType(&Flow{}) != "" {
		t.Fatal("empty flow has a trigger")
	}
}

func TestIsJSONSchemaParams(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want bool
	}{
		{`{"firstName": "string"}`, false},
		{`{"type": "string", "name": "string"}`, false}, // a parameter called "type"
		{`{"type": "object"}`, true},
		{`{"properties": {"a": {"type": "string"}}}`, true},
		{`{"$schema": "https://json-schema.org/draft/2020-12/schema"}`, true},
	}
	for _, tt := range tests {
		var m map[string]any
		_ = json.Unmarshal([]byte(tt.in), &m)
		if got := IsJSONSchemaParams(m); got != tt.want {
			t.Errorf("%s: got %v", tt.in, got)
		}
	}
}

func TestSortOrder(t *testing.T) {
	t.Parallel()
	l := finish(problem.List{
		{Code: "b", Path: "/graph/edges/10"},
		{Code: "a", Path: "/graph/edges/2"},
		{Code: "z", Path: ""},
		{Code: "a", Path: "/graph/edges/2/port"},
		{Code: "b", Path: "/graph/edges/2"},
		{Code: "b", Path: "/graph/edges/2", Message: "repeat"},
	})
	var got []string
	for _, p := range l {
		got = append(got, p.Code+"@"+p.Path)
	}
	want := []string{"z@", "a@/graph/edges/2", "b@/graph/edges/2", "a@/graph/edges/2/port", "b@/graph/edges/10"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestCanonical(t *testing.T) {
	t.Parallel()
	out, err := Canonical(&Flow{Name: "a<b>", Graph: Graph{Nodes: []Node{{ID: "n", Type: TypeWebhook}}}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name":"a<b>","graph":{"nodes":[{"id":"n","type":"trigger.webhook"}],"edges":[]}}`
	if string(out) != want {
		t.Fatalf("got  %s\nwant %s", out, want)
	}
}

func has(l problem.List, code, path string) bool {
	for _, p := range l {
		if p.Code == code && p.Path == path {
			return true
		}
	}
	return false
}

func sorted(l problem.List) bool {
	return sort.SliceIsSorted(l, func(i, j int) bool {
		if c := comparePaths(l[i].Path, l[j].Path); c != 0 {
			return c < 0
		}
		return l[i].Code < l[j].Code
	})
}

func dump(l problem.List) string {
	var b strings.Builder
	for _, p := range l {
		fmt.Fprintf(&b, "  %-20s %-45s %s\n", p.Code, p.Path, p.Message)
	}
	return b.String()
}

// FuzzDecode: no input may panic or yield a flow together with a malformed/too_deep problem.
// `go test` runs the seeds (the whole corpus); `go test -fuzz FuzzDecode` explores further.
func FuzzDecode(f *testing.F) {
	for _, dir := range []string{"valid", "invalid"} {
		entries, _ := os.ReadDir(filepath.Join(corpus, dir))
		for _, e := range entries {
			if b, err := os.ReadFile(filepath.Join(corpus, dir, e.Name())); err == nil {
				f.Add(b, contentType(e.Name()))
			}
		}
	}
	opts := corpusOptions(f)
	f.Fuzz(func(t *testing.T, body []byte, ct string) {
		doc, probs := ToJSON(body, ct)
		if len(probs) > 0 {
			if doc != nil {
				t.Fatal("ToJSON returned a document and problems")
			}
			return
		}
		fl, probs := Decode(doc, opts)
		if fl == nil && len(probs) == 0 {
			t.Fatal("no flow and no problems")
		}
		if !sorted(probs) {
			t.Fatalf("unsorted: %v", probs)
		}
	})
}

func TestLookupReportsUnknownConnectorsAndActions(t *testing.T) {
	t.Parallel()
	f := &Flow{Name: "x", Graph: Graph{
		Nodes: []Node{
			{ID: "hook", Type: TypeWebhook},
			{ID: "a", Type: TypeAction, Connector: "nope", Action: "request"},
			{ID: "b", Type: TypeAction, Connector: "http", Action: "teleport"},
			{ID: "c", Type: TypeAction, Connector: "http", Action: "request"},
		},
		Edges: []Edge{{Source: "hook", Target: "a"}, {Source: "a", Target: "b"}, {Source: "b", Target: "c"}},
	}}
	lookup := func(conn, act string) (bool, bool) { return conn == "http", conn == "http" && act == "request" }
	var got []string
	for _, p := range Validate(f, Options{Lookup: lookup}) {
		got = append(got, p.Code+"@"+p.Path)
	}
	want := []string{"unknown_connector@/graph/nodes/1/connector", "unknown_action@/graph/nodes/2/action"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

func TestReservedTopics(t *testing.T) {
	t.Parallel()
	reserved := func(topic string) bool { return strings.HasPrefix(topic, "flowd.") || strings.HasPrefix(topic, "__") }
	flow := func(nodes ...Node) *Flow {
		f := &Flow{Name: "t", Graph: Graph{Nodes: nodes}}
		for _, n := range nodes[1:] {
			f.Graph.Edges = append(f.Graph.Edges, Edge{Source: nodes[0].ID, Target: n.ID})
		}
		return f
	}
	kafkaTrigger := func(topic any) Node {
		return Node{ID: "k", Type: TypeKafka, Config: map[string]any{"topic": topic}}
	}
	produce := func(topic string) Node {
		return Node{ID: "p", Type: TypeAction, Connector: KafkaConnector, Action: "produce", Config: map[string]any{"topic": topic}}
	}
	for _, tc := range []struct {
		name string
		f    *Flow
		want []string // paths of topic_reserved problems
	}{
		{"partner topic", flow(kafkaTrigger("orders")), nil},
		{"flowd's ingest", flow(kafkaTrigger("flowd.ingest")), []string{"/graph/nodes/0/config/topic"}},
		{"kafka internal", flow(kafkaTrigger("__consumer_offsets")), []string{"/graph/nodes/0/config/topic"}},
		{"connector to work topic", flow(kafkaTrigger("orders"), produce("flowd.steps.default")), []string{"/graph/nodes/1/config/topic"}},
		{"connector to partner topic", flow(kafkaTrigger("orders"), produce("invoices")), nil},
		{"templated topic is checked at run time", flow(kafkaTrigger("orders"), produce("{{ input.topic }}")), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			for _, p := range Validate(tc.f, Options{ReservedTopic: reserved}) {
				if p.Code == CodeTopicReserved {
					got = append(got, p.Path)
				}
			}
			if strings.Join(got, ",") != strings.Join(tc.want, ",") {
				t.Fatalf("topic_reserved at %v, want %v", got, tc.want)
			}
		})
	}
	// Without the hook (a caller that knows no prefix) nothing is refused for it.
	if ps := Validate(flow(kafkaTrigger("flowd.ingest")), Options{}); len(ps) != 0 {
		t.Fatalf("problems without a ReservedTopic hook: %v", ps)
	}
}
