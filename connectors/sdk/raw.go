package sdk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// RawKeyword marks a config field the runner must never render: on a property of an action's
// (or trigger's) config schema, `"x-flowd-raw": true` makes the runner pass that field to the
// connector exactly as the flow has it, `{{` and all (a script's source, a template the
// connector renders itself). Flow validation does not compile templates there either. It is
// honoured on the config schema itself (the whole config is raw) and on properties reached
// from it through `properties`, at any depth; a raw object is raw throughout.
const RawKeyword = "x-flowd-raw"

// RawFieldError is a misplaced or malformed RawKeyword; Pointer locates it in the schema.
type RawFieldError struct {
	Pointer string
	Message string
}

func (e *RawFieldError) Error() string {
	return fmt.Sprintf("%s at %q: %s", RawKeyword, e.Pointer, e.Message)
}

// RawFields lists the fields a config schema marks raw, as JSON pointers into the config
// ("/source"; "" when the whole config is raw), sorted. A schema without the keyword gives
// none. The error is a *RawFieldError when the keyword is not a boolean or sits where it
// would have no effect (under items, anyOf, $defs and the like).
func RawFields(configSchema json.RawMessage) ([]string, error) {
	if len(bytes.TrimSpace(configSchema)) == 0 {
		return nil, nil
	}
	if !bytes.Contains(configSchema, []byte(RawKeyword)) {
		return nil, nil // the common case, without decoding the schema
	}
	var doc any
	if err := json.Unmarshal(configSchema, &doc); err != nil {
		return nil, fmt.Errorf("config schema is not JSON: %w", err)
	}
	w := rawWalker{}
	if err := w.walk(doc, "", "", true); err != nil {
		return nil, err
	}
	slices.Sort(w.fields)
	return w.fields, nil
}

type rawWalker struct{ fields []string }

var pointerEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// walk visits a schema value at schemaPtr. field is the config pointer a schema on the
// properties path describes; onPath says v is such a schema.
func (w *rawWalker) walk(v any, schemaPtr, field string, onPath bool) error {
	switch x := v.(type) {
	case []any:
		for i, e := range x {
			if err := w.walk(e, fmt.Sprintf("%s/%d", schemaPtr, i), "", false); err != nil {
				return err
			}
		}
	case map[string]any:
		if mark, ok := x[RawKeyword]; ok {
			at := schemaPtr + "/" + pointerEscaper.Replace(RawKeyword)
			raw, isBool := mark.(bool)
			switch {
			case !isBool:
				return &RawFieldError{Pointer: at, Message: "must be true or false"}
			case !onPath:
				return &RawFieldError{Pointer: at, Message: "has effect only on the config schema and on properties reached through \"properties\" (put it beside a $ref, not in the referenced schema)"}
			case raw:
				w.fields = append(w.fields, field)
			}
		}
		for _, k := range sortedKeys(x) {
			c, p := x[k], schemaPtr+"/"+pointerEscaper.Replace(k)
			switch {
			case k == RawKeyword, k == "const", k == "default", k == "enum", k == "examples":
				continue // values, not schemas
			case k == "properties" && onPath:
				props, ok := c.(map[string]any)
				if !ok {
					continue
				}
				for _, name := range sortedKeys(props) {
					if err := w.walk(props[name], p+"/"+pointerEscaper.Replace(name), field+"/"+pointerEscaper.Replace(name), true); err != nil {
						return err
					}
				}
			default:
				if err := w.walk(c, p, "", false); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
