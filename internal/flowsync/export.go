package flowsync

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"unicode"

	yaml "go.yaml.in/yaml/v2"

	"github.com/flowd/flowd/internal/flowdoc"
)

// Export formats.
const (
	FormatYAML = "yaml"
	FormatJSON = "json"
)

// Export writes f as a file apply reads back unchanged: its writable fields only, in a stable
// key order (the document's own order for its fields, sorted keys inside maps such as node
// config), without the caller's own owner entries (self), which the server adds anyway.
func Export(f *flowdoc.Flow, format string, self []flowdoc.Owner) ([]byte, error) {
	w := writable(f)
	w.Owners = slices.DeleteFunc(slices.Clone(w.Owners), func(o flowdoc.Owner) bool { return slices.Contains(self, o) })
	if len(w.Owners) == 0 {
		w.Owners = nil
	}
	raw, err := flowdoc.Canonical(&w)
	if err != nil {
		return nil, err
	}
	switch format {
	case FormatJSON:
		var buf bytes.Buffer
		if err := json.Indent(&buf, raw, "", "  "); err != nil {
			return nil, err
		}
		buf.WriteByte('\n')
		return buf.Bytes(), nil
	case FormatYAML:
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber() // numbers keep their digits
		v, err := ordered(dec)
		if err != nil {
			return nil, err
		}
		return yaml.Marshal(v)
	default:
		return nil, fmt.Errorf("unknown format %q: use %s or %s", format, FormatYAML, FormatJSON)
	}
}

// ordered reads the next JSON value keeping the order of object members (a yaml.MapSlice),
// which encoding/json's maps would lose.
func ordered(dec *json.Decoder) (any, error) {
	tok, err := dec.Token()
	if err != nil {
		return nil, err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			m := yaml.MapSlice{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return nil, err
				}
				v, err := ordered(dec)
				if err != nil {
					return nil, err
				}
				m = append(m, yaml.MapItem{Key: k, Value: v})
			}
			_, err := dec.Token() // }
			return m, err
		case '[':
			a := []any{}
			for dec.More() {
				v, err := ordered(dec)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := dec.Token() // ]
			return a, err
		}
		return nil, fmt.Errorf("unexpected %v", t)
	default:
		return t, nil
	}
}

// Slug is a file name for a flow name: lower-case letters and digits, other runs as one "-".
func Slug(name string) string {
	var b strings.Builder
	dash := false
	for _, r := range strings.ToLower(name) {
		if unicode.IsLetter(r) || unicode.IsDigit(r) {
			if dash && b.Len() > 0 {
				b.WriteByte('-')
			}
			b.WriteRune(r)
			dash = false
			continue
		}
		dash = true
	}
	if b.Len() == 0 {
		return "flow"
	}
	return b.String()
}

// FileNames gives each name a distinct file name in its format ("orders.yaml", and
// "orders-2.yaml" for a second name of the same slug), in the order given.
func FileNames(names []string, format string) []string {
	out := make([]string, len(names))
	used := map[string]bool{}
	for i, n := range names {
		base := Slug(n)
		name := base + "." + format
		for k := 2; used[name]; k++ {
			name = fmt.Sprintf("%s-%d.%s", base, k, format)
		}
		used[name] = true
		out[i] = name
	}
	return out
}
