// Package flowtemplate defines flow templates: a flow document with placeholders and the JSON
// Schema of the parameter values that fill them. Placeholders are written so they can never be
// mistaken for flowd's own `{{ expression }}` templates, which a template passes through
// untouched for the flow to evaluate at run time:
//
//   - an object {"$param": "name"} is replaced by the parameter's value, whatever its type;
//   - "${params.name}" inside a string is replaced by the value's text (a string as it is,
//     anything else as JSON); "$${" writes a literal "${".
package flowtemplate

import (
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/schemaproblem"
	"github.com/flowd/flowd/internal/userschema"
)

// SchemaFile is the embedded schema of template documents.
const SchemaFile = "template.schema.json"

// Problem codes of templates besides the schemas'.
const (
	CodeUnknownParameter = "unknown_parameter"
	CodeBadPlaceholder   = "invalid_placeholder"
	CodeParametersSchema = "invalid_parameters"
)

// ParamKey is the key of a whole-value placeholder object.
const ParamKey = "$param"

// Template is a flow template. ID, Version, CreatedAt and UpdatedAt are managed by the server;
// Version counts the template's changes, from 1.
type Template struct {
	ID          string          `json:"id,omitempty"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Owners      []flowdoc.Owner `json:"owners,omitempty"`
	Public      bool            `json:"public,omitempty"`
	Parameters  map[string]any  `json:"parameters,omitempty"`
	Flow        map[string]any  `json:"flow"`
	Version     int             `json:"version,omitempty"`
	CreatedAt   *time.Time      `json:"createdAt,omitempty"`
	UpdatedAt   *time.Time      `json:"updatedAt,omitempty"`
}

// ReadOnly are the fields the server manages; a client may echo them back.
var ReadOnly = []string{"id", "version", "createdAt", "updatedAt"}

// Decode validates a template document (JSON): its shape, its parameters as a JSON Schema of
// an object, and its placeholders, each of which must name a declared parameter.
func Decode(doc []byte) (*Template, problem.List) {
	var t Template
	if ps := schemaproblem.Decode(doc, SchemaFile, "the template", &t); ps != nil {
		return nil, ps
	}
	if strings.TrimSpace(t.Name) == "" {
		return nil, problem.List{problem.New(schemaproblem.CodeLength, "/name", "the name must not be blank")}
	}
	if _, ps := t.compile(); len(ps) > 0 {
		return nil, ps
	}
	declared := t.declared()
	var ps problem.List
	walk(t.Flow, "/flow", func(path, name string, err error) {
		switch {
		case err != nil:
			ps = append(ps, problem.New(CodeBadPlaceholder, path, "%v", err))
		case !declared[name]:
			ps = append(ps, problem.New(CodeUnknownParameter, path, "parameter %q is not declared in parameters.properties", name))
		}
	})
	return &t, ps
}

// compile compiles the parameters schema, which must describe an object (nil: no parameters).
func (t *Template) compile() (*jsonschema.Schema, problem.List) {
	if t.Parameters == nil {
		return nil, nil
	}
	if typ, ok := t.Parameters["type"]; ok && typ != "object" {
		return nil, problem.List{problem.New(CodeParametersSchema, "/parameters/type", "the parameters schema describes an object of parameter values: its type must be \"object\"")}
	}
	return userschema.Compile(t.Parameters, "/parameters")
}

// declared names the parameters the schema declares (its properties).
func (t *Template) declared() map[string]bool {
	out := map[string]bool{}
	props, _ := t.Parameters["properties"].(map[string]any)
	for k := range props {
		out[k] = true
	}
	return out
}

// Instantiate fills the template's placeholders with values and returns the flow document.
// Values are checked against the parameters schema first (problems at /parameters/<name>);
// a parameter left out takes its declared default, if any.
func (t *Template) Instantiate(values map[string]any) (map[string]any, problem.List) {
	vals := make(map[string]any, len(values))
	for k, v := range values {
		vals[k] = v
	}
	props, _ := t.Parameters["properties"].(map[string]any)
	for name, p := range props {
		if d, ok := p.(map[string]any)["default"]; ok {
			if _, given := vals[name]; !given {
				vals[name] = d
			}
		}
	}
	sch, ps := t.compile()
	if len(ps) > 0 {
		return nil, ps
	}
	if sch != nil {
		if ps := userschema.Check(sch, vals, "/parameters"); len(ps) > 0 {
			return nil, ps
		}
	}
	var missing problem.List
	out := substitute(t.Flow, "/flow", vals, &missing)
	if len(missing) > 0 {
		sort.SliceStable(missing, func(i, j int) bool { return missing[i].Path < missing[j].Path })
		return nil, missing
	}
	doc, _ := out.(map[string]any)
	return doc, nil
}

var stringRef = regexp.MustCompile(`\$\$\{|\$\{\s*params\.([A-Za-z_][A-Za-z0-9_]*)\s*\}|\$\{`)

// walk calls visit for every placeholder under v (path: its JSON pointer), with the parameter
// it names, or with an error for a placeholder written wrong.
func walk(v any, path string, visit func(path, name string, err error)) {
	switch x := v.(type) {
	case map[string]any:
		if name, ok := x[ParamKey]; ok {
			s, isStr := name.(string)
			switch {
			case len(x) != 1:
				visit(path, "", fmt.Errorf("a placeholder object has the one key %q", ParamKey))
			case !isStr:
				visit(path+"/"+ParamKey, "", fmt.Errorf("%q names a parameter: a string", ParamKey))
			default:
				visit(path, s, nil)
			}
			return
		}
		for _, k := range sortedKeys(x) {
			walk(x[k], path+"/"+escape(k), visit)
		}
	case []any:
		for i, e := range x {
			walk(e, path+"/"+strconv.Itoa(i), visit)
		}
	case string:
		for _, m := range stringRef.FindAllStringSubmatch(x, -1) {
			switch {
			case m[0] == "$${":
			case m[1] != "":
				visit(path, m[1], nil)
			default:
				visit(path, "", errors.New(`"${" starts a placeholder ${params.name}; write "$${" for a literal "${"`))
			}
		}
	}
}

// substitute returns a copy of v with the placeholders filled from vals; a placeholder naming
// no value adds a problem.
func substitute(v any, path string, vals map[string]any, missing *problem.List) any {
	switch x := v.(type) {
	case map[string]any:
		if name, ok := x[ParamKey].(string); ok && len(x) == 1 {
			val, ok := vals[name]
			if !ok {
				*missing = append(*missing, problem.New(schemaproblem.CodeRequired, "/parameters/"+escape(name), "parameter %q is used at %s and has no value", name, path))
			}
			return val
		}
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = substitute(e, path+"/"+escape(k), vals, missing)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = substitute(e, path+"/"+strconv.Itoa(i), vals, missing)
		}
		return out
	case string:
		return stringRef.ReplaceAllStringFunc(x, func(m string) string {
			if m == "$${" {
				return "${"
			}
			sub := stringRef.FindStringSubmatch(m)
			if sub[1] == "" {
				return m
			}
			val, ok := vals[sub[1]]
			if !ok {
				*missing = append(*missing, problem.New(schemaproblem.CodeRequired, "/parameters/"+escape(sub[1]), "parameter %q is used at %s and has no value", sub[1], path))
				return ""
			}
			if s, ok := val.(string); ok {
				return s
			}
			b, _ := json.Marshal(val)
			return string(b)
		})
	}
	return v
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

var escaper = strings.NewReplacer("~", "~0", "/", "~1")

func escape(token string) string { return escaper.Replace(token) }
