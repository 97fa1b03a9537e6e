package flowdoc

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"

	yaml "go.yaml.in/yaml/v2"
)

// yamlToJSON converts YAML to JSON keeping what the author wrote. sigs.k8s.io/yaml.YAMLToJSON
// applies YAML 1.1 resolution, which silently rewrites data: `country: NO` becomes false,
// `on:` becomes the key "true", `zip: 01234` becomes 668. Here a plain scalar is a bool, number
// or null only if it is spelled the JSON way (true/false, JSON number, null/~/empty); everything
// else stays the string it reads as. Numbers keep their exact digits. Duplicate keys are errors.
func yamlToJSON(data []byte) ([]byte, error) {
	var v yamlValue
	if err := yaml.UnmarshalStrict(data, &v); err != nil {
		return nil, err
	}
	return json.Marshal(v.v)
}

var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?$`)

// yamlValue holds a plain JSON-able tree (maps, slices, scalars), never nested yamlValues, so
// encoding it is linear (a MarshalJSON per level would re-validate each subtree).
type yamlValue struct{ v any }

func (y *yamlValue) UnmarshalYAML(unmarshal func(any) error) error {
	// A mapping decodes into a non-nil map; null decodes into a nil one without error.
	var m map[yamlKey]yamlValue
	if err := unmarshal(&m); err == nil {
		if m == nil {
			y.v = nil
			return nil
		}
		obj := make(map[string]any, len(m))
		for k, val := range m {
			obj[string(k)] = val.v
		}
		y.v = obj
		return nil
	}
	var s []yamlValue
	if err := unmarshal(&s); err == nil && s != nil {
		arr := make([]any, len(s))
		for i, e := range s {
			arr[i] = e.v
		}
		y.v = arr
		return nil
	}
	var resolved any
	if err := unmarshal(&resolved); err != nil {
		return err
	}
	switch resolved.(type) {
	case nil:
		y.v = nil
		return nil
	case string:
		y.v = resolved
		return nil
	}
	// Decoding into a string yields the scalar as written (v2 keeps the source text).
	var text string
	if err := unmarshal(&text); err != nil {
		return err
	}
	switch resolved.(type) {
	case bool:
		switch strings.ToLower(text) {
		case "true":
			y.v = true
		case "false":
			y.v = false
		default:
			y.v = text
		}
	default: // int, uint64, float64
		if jsonNumber.MatchString(text) {
			y.v = json.Number(text)
		} else {
			y.v = text
		}
	}
	return nil
}

// yamlKey keeps mapping keys as written, so `on:` and `yes:` stay strings.
type yamlKey string

func (k *yamlKey) UnmarshalYAML(unmarshal func(any) error) error {
	var s string
	if err := unmarshal(&s); err != nil {
		return err
	}
	*k = yamlKey(s)
	return nil
}

// maxYAMLNesting bounds yamlNesting's estimate: loose enough for any document within MaxDepth
// (the estimate may count about twice the real depth), tight enough to keep parsing cheap.
const maxYAMLNesting = 4 * MaxDepth

// yamlNesting estimates how deeply a YAML text nests without parsing it: the indentation
// levels open at a line, the "- " entries that open sequences on it, and the flow brackets
// open outside quotes and comments. It may count more levels than the document has (the
// indented lines of a block scalar), never fewer for block or flow collections.
func yamlNesting(data []byte) int {
	var indents []int
	flow, deepest := 0, 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		rest := bytes.TrimLeft(line, " ")
		if len(rest) == 0 || rest[0] == '#' {
			continue
		}
		if flow == 0 {
			indent := len(line) - len(rest)
			for len(indents) > 0 && indents[len(indents)-1] >= indent {
				indents = indents[:len(indents)-1]
			}
			indents = append(indents, indent)
		}
		depth := len(indents)
		for len(rest) > 0 && rest[0] == '-' && (len(rest) == 1 || rest[1] == ' ' || rest[1] == '\t' || rest[1] == '\r') {
			depth++ // "- - a": each dash opens a sequence inside the one before
			rest = bytes.TrimLeft(rest[1:], " \t")
		}
		var quote byte
	scan:
		for i := 0; i < len(rest); i++ {
			c := rest[i]
			switch {
			case quote == '"' && c == '\\':
				i++ // an escaped character
			case quote != 0:
				if c == quote {
					quote = 0
				}
			case c == '"' || c == '\'':
				quote = c
			case c == '#' && (i == 0 || rest[i-1] == ' ' || rest[i-1] == '\t'):
				break scan
			case c == '[' || c == '{':
				flow++
				deepest = max(deepest, depth+flow)
			case c == ']' || c == '}':
				flow = max(flow-1, 0)
			}
		}
		deepest = max(deepest, depth+flow)
	}
	return deepest
}
