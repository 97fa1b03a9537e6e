package schemaproblem

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

func validationError(t *testing.T, schema, doc string) *jsonschema.ValidationError {
	t.Helper()
	s, err := jsonschema.UnmarshalJSON(strings.NewReader(schema))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	if err := c.AddResource("urn:test", s); err != nil {
		t.Fatal(err)
	}
	sch, err := c.Compile("urn:test")
	if err != nil {
		t.Fatal(err)
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
	if err != nil {
		t.Fatal(err)
	}
	var ve *jsonschema.ValidationError
	if err := sch.Validate(inst); !errors.As(err, &ve) {
		t.Fatalf("validate %s: %v, want a validation error", doc, err)
	}
	return ve
}

func codesAt(l []Leaf) []string {
	out := make([]string, len(l))
	for i, p := range l {
		out[i] = p.Code + "@" + p.Path
	}
	slices.Sort(out)
	return out
}

func TestSchemaLeavesCodesAndPaths(t *testing.T) {
	object := `{"type":"object","additionalProperties":false,"required":["a/b","n"],"properties":{
		"a/b":{"type":"string"},
		"n":{"type":"integer","minimum":1,"multipleOf":2},
		"s":{"type":"string","minLength":2,"pattern":"^x"},
		"e":{"enum":["x","y"]},
		"c":{"const":1},
		"d":{"type":"string","format":"date-time"},
		"l":{"type":"array","maxItems":1,"items":{"type":"object","required":["id"]}}}}`
	for _, tc := range []struct {
		name, schema, doc, prefix string
		want                      []string
	}{
		{"required, escaped", object, `{}`, "", []string{"required@/a~1b", "required@/n"}},
		{"additional property", object, `{"a/b":"","n":2,"x~y":1}`, "", []string{"additional_property@/x~0y"}},
		{"type", object, `{"a/b":1,"n":2}`, "", []string{"type@/a~1b"}},
		{"root type", object, `[]`, "", []string{"type@"}},
		{"range", object, `{"a/b":"","n":3}`, "", []string{"range@/n"}},
		{"range twice", object, `{"a/b":"","n":-1}`, "", []string{"range@/n", "range@/n"}},
		{"length and pattern", object, `{"a/b":"","n":2,"s":"y"}`, "", []string{"length@/s", "pattern@/s"}},
		{"enum and const", object, `{"a/b":"","n":2,"e":"z","c":2}`, "", []string{"enum@/c", "enum@/e"}},
		{"format", object, `{"a/b":"","n":2,"d":"yesterday"}`, "", []string{"format@/d"}},
		{"size and nested required", object, `{"a/b":"","n":2,"l":[{},{"id":1}]}`, "", []string{"required@/l/0/id", "size@/l"}},
		{"prefix", object, `{"a/b":1,"n":2}`, "/data", []string{"type@/data/a~1b"}},
		{"other keywords", `{"uniqueItems":true}`, `[1,1]`, "", []string{"schema@"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := codesAt(Leaves(validationError(t, tc.schema, tc.doc), tc.prefix))
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSchemaLeavesLocation(t *testing.T) {
	schema := `{"type":"object","additionalProperties":false,"required":["id"],
		"properties":{"id":{},"tags":{"type":"array","items":{"type":"string"}}}}`
	leaves := Leaves(validationError(t, schema, `{"tags":["a",2],"x/y":1}`), "/p")
	want := map[string][]string{
		"/p/id":     {"id"},
		"/p/tags/1": {"tags", "1"},
		"/p/x~1y":   {"x/y"},
	}
	if len(leaves) != len(want) {
		t.Fatalf("got %d leaves, want %d: %v", len(leaves), len(want), leaves)
	}
	for _, l := range leaves {
		if w, ok := want[l.Path]; !ok || !slices.Equal(l.Location, w) {
			t.Errorf("%s at %s: location %q, want %q", l.Code, l.Path, l.Location, w)
		}
		if l.Message == "" {
			t.Errorf("%s at %s has no message", l.Code, l.Path)
		}
	}
}

func TestSchemaLeavesSummariseAlternatives(t *testing.T) {
	schema := `{"type":"object","properties":{"v":{"oneOf":[
		{"type":"string","minLength":3},
		{"type":"object","required":["kind"]}]}},
		"anyOf":[{"required":["a"]},{"required":["b"]}]}`
	leaves := Leaves(validationError(t, schema, `{"v":{}}`), "")
	if got := codesAt(leaves); !slices.Equal(got, []string{"schema@", "schema@/v"}) {
		t.Fatalf("got %v, want one schema problem per alternatives", got)
	}
	for _, l := range leaves {
		if !strings.HasPrefix(l.Message, "matches none of the allowed forms (") {
			t.Errorf("message at %q: %q", l.Path, l.Message)
		}
	}
	msg := map[string]string{}
	for _, l := range leaves {
		msg[l.Path] = l.Message
	}
	// The first failure of each branch, with its path where it is not the value's own.
	for path, parts := range map[string][]string{
		"":   {`/a: missing required property "a"`, `/b: missing required property "b"`},
		"/v": {"got object, want string", `/v/kind: missing required property "kind"`},
	} {
		for _, p := range parts {
			if !strings.Contains(msg[path], p) {
				t.Errorf("message at %q is %q, lacks %q", path, msg[path], p)
			}
		}
	}
}

func TestProblems(t *testing.T) {
	ve := validationError(t, `{"required":["a"],"properties":{"b":{"type":"string"}}}`, `{"b":1}`)
	l := Problems(ve, "/data")
	var got []string
	for _, p := range l {
		got = append(got, p.Code+"@"+p.Path)
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"required@/data/a", "type@/data/b"}) {
		t.Fatalf("got %v", got)
	}
}
