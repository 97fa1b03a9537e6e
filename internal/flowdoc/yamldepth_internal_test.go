package flowdoc

import (
	"strings"
	"testing"
)

func TestYAMLNesting(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		doc  string
		want int
	}{
		{"flat", "name: x\ndescription: y\n", 1},
		{"mapping", "a:\n  b:\n    c: 1\n", 3},
		{"sequence entries", "a:\n  - b: 1\n  - - c\n", 4},
		{"flow", "a: [1, {b: [2]}]\n", 4},
		{"brackets in quotes and comments", "a: \"[[[{\" # [[[\nb: '{{'\n", 1},
		{"escaped quote", `a: "\"[" ` + "\n", 1},
	} {
		if got := yamlNesting([]byte(c.doc)); got != c.want {
			t.Errorf("%s: %d, want %d", c.name, got, c.want)
		}
	}
}

// A YAML flow nested thousands deep is refused before it is parsed (the parser's cost grows
// with the square of the depth: 8,000 levels took seconds of CPU to refuse), in each style.
func TestDeepYAMLIsRefusedBeforeParsing(t *testing.T) {
	t.Parallel()
	const n = 8000
	var block, seq strings.Builder
	for i := range 1400 { // as deep as indentation gets within the 1 MiB body limit

		block.WriteString(strings.Repeat(" ", i) + "a:\n")
		seq.WriteString(strings.Repeat("  ", i) + "- \n")
	}
	for name, doc := range map[string]string{
		"block mappings":  block.String(),
		"block sequences": seq.String(),
		"dashes":          strings.Repeat("- ", n) + "x\n",
		"flow":            "graph: " + strings.Repeat("[", n) + strings.Repeat("]", n) + "\n",
	} {
		_, ps := ToJSON([]byte("name: deep\n"+doc), "application/yaml")
		if len(ps) != 1 || ps[0].Code != CodeTooDeep || !strings.Contains(ps[0].Message, "YAML document nests about") {
			t.Errorf("%s: %v", name, ps)
		}
	}
	// A document within the limit is still read.
	ok := "name: fine\ngraph:\n  nodes:\n    - id: hook\n      type: trigger.webhook\n      config: {mode: sync, auth: {type: none}}\n"
	if _, ps := ToJSON([]byte(ok), "application/yaml"); len(ps) != 0 {
		t.Fatalf("a normal YAML flow: %v", ps)
	}
}
