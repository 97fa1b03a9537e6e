package flowdoc

import (
	"sort"
	"strconv"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/flowd/flowd/internal/expression"
	"github.com/flowd/flowd/internal/problem"
)

var printer = message.NewPrinter(language.English)

func pointer(tokens []string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(expression.EscapePointer(t))
	}
	return b.String()
}

func isAlternatives(e *jsonschema.ValidationError) bool {
	switch e.ErrorKind.(type) {
	case *kind.AnyOf, *kind.OneOf:
		return true
	}
	return false
}

// alternativesMessage names the first failure of each branch, which is usually enough to see
// which form the author meant.
func alternativesMessage(e *jsonschema.ValidationError) string {
	var parts []string
	for _, c := range e.Causes {
		l := schemaLeaves(c, "")
		if len(l) == 0 {
			continue
		}
		msg := l[0].Message
		if p := l[0].Path; p != pointer(e.InstanceLocation) {
			msg = p + ": " + msg
		}
		parts = append(parts, msg)
	}
	if len(parts) == 0 {
		return "matches none of the allowed forms"
	}
	return "matches none of the allowed forms (" + strings.Join(parts, "; ") + ")"
}

func leafProblems(e *jsonschema.ValidationError, prefix string) []leaf {
	loc := e.InstanceLocation
	path := prefix + pointer(loc)
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		out := make([]leaf, 0, len(k.Missing))
		for _, m := range k.Missing {
			out = append(out, leaf{
				Problem:  problem.New(CodeRequired, path+"/"+expression.EscapePointer(m), "missing required property %q", m),
				location: append(append([]string(nil), loc...), m),
			})
		}
		return out
	case *kind.AdditionalProperties:
		out := make([]leaf, 0, len(k.Properties))
		for _, p := range k.Properties {
			out = append(out, leaf{
				Problem:  problem.New(CodeAdditionalProperty, path+"/"+expression.EscapePointer(p), "property %q is not allowed here", p),
				location: append(append([]string(nil), loc...), p),
			})
		}
		return out
	}
	code, drop := CodeSchema, false
	switch e.ErrorKind.(type) {
	case *kind.Type:
		code, drop = CodeType, true
	case *kind.Format:
		code, drop = CodeFormat, true // e.g. a bad date-time would abort time.Time decoding
	case *kind.Enum, *kind.Const:
		code = CodeEnum
	case *kind.Pattern:
		code = CodePattern
	case *kind.MinLength, *kind.MaxLength:
		code = CodeLength
	case *kind.MinItems, *kind.MaxItems, *kind.MinProperties, *kind.MaxProperties:
		code = CodeSize
	case *kind.Minimum, *kind.Maximum, *kind.ExclusiveMinimum, *kind.ExclusiveMaximum, *kind.MultipleOf:
		code = CodeRange
	}
	return []leaf{{
		Problem:   problem.Problem{Code: code, Path: path, Message: e.ErrorKind.LocalizedString(printer)},
		location:  loc,
		dropValue: drop,
	}}
}

// dropAt removes the value at loc: object members are deleted, array elements become null so
// later indices (and the paths that name them) stay put.
func dropAt(doc any, loc []string) any {
	if len(loc) == 0 {
		return nil
	}
	switch x := doc.(type) {
	case map[string]any:
		if len(loc) == 1 {
			delete(x, loc[0])
		} else if c, ok := x[loc[0]]; ok {
			x[loc[0]] = dropAt(c, loc[1:])
		}
	case []any:
		i, err := strconv.Atoi(loc[0])
		if err != nil || i < 0 || i >= len(x) {
			return doc
		}
		if len(loc) == 1 {
			x[i] = nil
		} else {
			x[i] = dropAt(x[i], loc[1:])
		}
	}
	return doc
}

// valueAt returns the value at loc, if present.
func valueAt(doc any, loc []string) (any, bool) {
	for _, t := range loc {
		switch x := doc.(type) {
		case map[string]any:
			v, ok := x[t]
			if !ok {
				return nil, false
			}
			doc = v
		case []any:
			i, err := strconv.Atoi(t)
			if err != nil || i < 0 || i >= len(x) {
				return nil, false
			}
			doc = x[i]
		default:
			return nil, false
		}
	}
	return doc, true
}

// finish removes repeats (the schema and the semantic checks may both notice the same thing)
// and sorts by path, numeric segments numerically, then by code.
func finish(l problem.List) problem.List {
	if len(l) == 0 {
		return nil
	}
	sort.SliceStable(l, func(i, j int) bool {
		if c := comparePaths(l[i].Path, l[j].Path); c != 0 {
			return c < 0
		}
		if l[i].Code != l[j].Code {
			return l[i].Code < l[j].Code
		}
		return l[i].Message < l[j].Message
	})
	out := l[:0]
	for i, p := range l {
		if i > 0 && p.Path == out[len(out)-1].Path && p.Code == out[len(out)-1].Code {
			continue
		}
		out = append(out, p)
	}
	return out
}

func comparePaths(a, b string) int {
	as, bs := strings.Split(a, "/"), strings.Split(b, "/")
	for i := 0; i < len(as) && i < len(bs); i++ {
		if as[i] == bs[i] {
			continue
		}
		ai, aerr := strconv.Atoi(as[i])
		bi, berr := strconv.Atoi(bs[i])
		if aerr == nil && berr == nil {
			if ai < bi {
				return -1
			}
			return 1
		}
		if as[i] < bs[i] {
			return -1
		}
		return 1
	}
	return len(as) - len(bs)
}
