package expression

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/flowd/flowd/internal/problem"
)

// Template is a string with `{{ expr }}` segments. `\{{` stands for a literal `{{`, for config
// values that must carry one (another system's template syntax, say).
type Template struct {
	parts []part
	// single is set when the whole string is one segment; Render then keeps the value's type.
	single bool
}

type part struct {
	lit  string
	prog *Program
}

// CompileTemplate parses and compiles every segment of s.
func CompileTemplate(s string) (*Template, error) {
	t := &Template{}
	var lit strings.Builder
	flush := func() {
		if lit.Len() > 0 {
			t.parts = append(t.parts, part{lit: lit.String()})
			lit.Reset()
		}
	}
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], `\{{`) {
			lit.WriteString("{{")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "{{") {
			lit.WriteByte(s[i])
			i++
			continue
		}
		end, err := segmentEnd(s, i+2)
		if err != nil {
			line, col := lineCol(s, utf8.RuneCountInString(s[:i]))
			return nil, &Error{Message: err.Error() + " after '{{'", Line: line, Column: col}
		}
		prog, err := Compile(s[i+2 : end])
		if err != nil {
			return nil, rebase(err, s, i)
		}
		flush()
		t.parts = append(t.parts, part{prog: prog})
		i = end + 2
	}
	flush()
	t.single = len(t.parts) == 1 && t.parts[0].prog != nil
	return t, nil
}

// rebase moves an expression error's position from the segment to the whole template string,
// which is what the author sees.
func rebase(err error, s string, open int) error {
	var e *Error
	if !errors.As(err, &e) || e.Line == 0 {
		return err
	}
	line, col := lineCol(s, utf8.RuneCountInString(s[:open+2])+e.offset)
	return &Error{Message: e.Message, Line: line, Column: col}
}

// lineCol converts a rune offset into a 1-based line and column.
func lineCol(s string, offset int) (line, col int) {
	line, col = 1, 1
	n := 0
	for _, r := range s {
		if n == offset {
			break
		}
		if r == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
		n++
	}
	return line, col
}

// segmentEnd finds the `}}` closing a segment whose body starts at from. It skips string
// literals and balanced braces so `{{ {"a": {"b": 1}} }}` and `{{ "}}" }}` work.
func segmentEnd(s string, from int) (int, error) {
	depth := 0
	for i := from; i < len(s); i++ {
		switch c := s[i]; c {
		case '"', '\'', '`':
			j := i + 1
			for ; j < len(s) && s[j] != c; j++ {
				if s[j] == '\\' && c != '`' {
					j++
				}
			}
			if j >= len(s) {
				return 0, errors.New("unterminated string literal")
			}
			i = j
		case '{':
			depth++
		case '}':
			if depth == 0 {
				if i+1 < len(s) && s[i+1] == '}' {
					return i, nil
				}
				return 0, errors.New("unbalanced '}'")
			}
			depth--
		}
	}
	return 0, errors.New("missing closing '}}'")
}

// IsStatic reports whether the template has no expressions.
func (t *Template) IsStatic() bool {
	for _, p := range t.parts {
		if p.prog != nil {
			return false
		}
	}
	return true
}

// Render evaluates the template. A string that is exactly one segment yields the raw value, so
// `"{{ input.count }}"` stays a number; anything else is concatenated into a string.
func (t *Template) Render(env Env) (any, error) {
	if t.single {
		return t.parts[0].prog.Eval(env)
	}
	if len(t.parts) == 1 {
		return t.parts[0].lit, nil
	}
	var b strings.Builder
	for _, p := range t.parts {
		if p.prog == nil {
			b.WriteString(p.lit)
			continue
		}
		v, err := p.prog.Eval(env)
		if err != nil {
			return nil, err
		}
		s, err := stringify(v)
		if err != nil {
			return nil, err
		}
		b.WriteString(s)
	}
	return b.String(), nil
}

// stringify is how a value reads inside a larger string: nil is empty, scalars print plainly,
// objects and arrays as compact JSON.
func stringify(v any) (string, error) {
	switch x := v.(type) {
	case nil:
		return "", nil
	case string:
		return x, nil
	case bool:
		return strconv.FormatBool(x), nil
	case float64:
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32), nil
	case json.Number:
		return x.String(), nil
	case time.Time:
		return x.Format(time.RFC3339Nano), nil
	case fmt.Stringer:
		return x.String(), nil
	}
	switch reflect.ValueOf(v).Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return fmt.Sprint(v), nil
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", fmt.Errorf("cannot render %T into a string: %w", v, err)
	}
	return strings.TrimSuffix(buf.String(), "\n"), nil
}

// PathError says where in a value a template failed to compile or render.
type PathError struct {
	Path string // JSON pointer relative to the value, "" for the value itself
	Err  error
}

func (e *PathError) Error() string {
	if e.Path == "" {
		return e.Err.Error()
	}
	return fmt.Sprintf("at %s: %v", e.Path, e.Err)
}

func (e *PathError) Unwrap() error { return e.Err }

// Value is a JSON value (maps, slices, scalars) with every string compiled as a template.
type Value struct {
	root vnode
}

type vnode struct {
	tmpl  *Template // string with at least one segment
	obj   map[string]vnode
	keys  []string // sorted, so render errors are deterministic
	arr   []vnode
	plain any // everything else, including static strings
	kind  byte
	// unescaped: plain is a static template's text (`\{{` became `{{`), not the input's string
	unescaped bool
}

const (
	kPlain byte = iota
	kTmpl
	kObj
	kArr
)

// CompileValue compiles every string in v. The error, if any, is a *PathError for the first
// failing string in document order (object keys sorted).
func CompileValue(v any) (*Value, error) {
	return CompileValueExcept(v, nil)
}

// CompileValueExcept is CompileValue leaving the values at the JSON pointers in raw, and all
// within them, as they are: never compiled, rendered as given (`{{` and `\{{` included).
func CompileValueExcept(v any, raw []string) (*Value, error) {
	n, err := compileNode(v, "", raw)
	if err != nil {
		return nil, err
	}
	return &Value{root: n}, nil
}

// Templated reports whether rendering changes the value: it has a `{{` outside the raw
// pointers, an expression or an escaped `\{{`.
func (v *Value) Templated() bool { return v.root.templated() }

func (n vnode) templated() bool {
	switch n.kind {
	case kPlain:
		return n.unescaped
	case kTmpl:
		return true
	case kObj:
		for _, c := range n.obj {
			if c.templated() {
				return true
			}
		}
	case kArr:
		for _, c := range n.arr {
			if c.templated() {
				return true
			}
		}
	}
	return false
}

func compileNode(v any, path string, raw []string) (vnode, error) {
	if len(raw) > 0 && problem.Within(path, raw...) {
		return rawNode(v), nil
	}
	switch x := v.(type) {
	case string:
		if !strings.Contains(x, "{{") {
			return vnode{plain: x}, nil
		}
		t, err := CompileTemplate(x)
		if err != nil {
			return vnode{}, &PathError{Path: path, Err: err}
		}
		if t.IsStatic() {
			s, _ := t.Render(nil)
			return vnode{plain: s, unescaped: true}, nil
		}
		return vnode{kind: kTmpl, tmpl: t}, nil
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		obj := make(map[string]vnode, len(x))
		for _, k := range keys {
			c, err := compileNode(x[k], path+"/"+problem.EscapeToken(k), raw)
			if err != nil {
				return vnode{}, err
			}
			obj[k] = c
		}
		return vnode{kind: kObj, obj: obj, keys: keys}, nil
	case []any:
		arr := make([]vnode, len(x))
		for i, e := range x {
			c, err := compileNode(e, path+"/"+strconv.Itoa(i), raw)
			if err != nil {
				return vnode{}, err
			}
			arr[i] = c
		}
		return vnode{kind: kArr, arr: arr}, nil
	default:
		return vnode{plain: v}, nil
	}
}

// rawNode keeps v as it is; objects and arrays are still nodes, so that every render returns
// a value of its own.
func rawNode(v any) vnode {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		obj := make(map[string]vnode, len(x))
		for k, c := range x {
			keys = append(keys, k)
			obj[k] = rawNode(c)
		}
		sort.Strings(keys)
		return vnode{kind: kObj, obj: obj, keys: keys}
	case []any:
		arr := make([]vnode, len(x))
		for i, c := range x {
			arr[i] = rawNode(c)
		}
		return vnode{kind: kArr, arr: arr}
	}
	return vnode{plain: v}
}

// Render returns a new value with every template evaluated; the compiled value is not changed.
// The error, if any, is a *PathError.
func (v *Value) Render(env Env) (any, error) {
	return renderNode(v.root, env, "")
}

func renderNode(n vnode, env Env, path string) (any, error) {
	switch n.kind {
	case kTmpl:
		out, err := n.tmpl.Render(env)
		if err != nil {
			return nil, &PathError{Path: path, Err: err}
		}
		return out, nil
	case kObj:
		m := make(map[string]any, len(n.obj))
		for _, k := range n.keys {
			out, err := renderNode(n.obj[k], env, path+"/"+problem.EscapeToken(k))
			if err != nil {
				return nil, err
			}
			m[k] = out
		}
		return m, nil
	case kArr:
		s := make([]any, len(n.arr))
		for i, c := range n.arr {
			out, err := renderNode(c, env, path+"/"+strconv.Itoa(i))
			if err != nil {
				return nil, err
			}
			s[i] = out
		}
		return s, nil
	default:
		return n.plain, nil
	}
}
