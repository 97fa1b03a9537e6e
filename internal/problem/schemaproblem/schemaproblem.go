// Package schemaproblem turns JSON Schema validation errors (santhosh-tekuri/jsonschema) into
// flowd's problems, for every document flowd validates against a schema: flows, webhook
// inputs, connector manifests. Package problem is the error shape itself and links no schema
// library.
package schemaproblem

import (
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"

	"github.com/flowd/flowd/internal/problem"
)

// Codes of JSON Schema failures: the finer codes where the failing keyword says what is wrong,
// CodeSchema otherwise (and for a value that matches none of anyOf/oneOf).
const (
	CodeSchema             = "schema"
	CodeRequired           = "required"
	CodeAdditionalProperty = "additional_property"
	CodeType               = "type"
	CodeFormat             = "format"
	CodeEnum               = "enum"    // enum, const
	CodePattern            = "pattern" // string pattern
	CodeLength             = "length"  // string minLength/maxLength
	CodeSize               = "size"    // array items / object properties count
	CodeRange              = "range"   // minimum/maximum/multipleOf
)

var printer = message.NewPrinter(language.English)

// Leaf is one failing keyword of a JSON Schema validation, with the location of the value it
// is about.
type Leaf struct {
	problem.Problem
	// Location holds the reference tokens of the value (for required and
	// additionalProperties: of the property), without the prefix.
	Location []string
}

// Problems turns a validation error into one problem per failing keyword (see Leaves).
func Problems(e *jsonschema.ValidationError, prefix string) problem.List {
	leaves := Leaves(e, prefix)
	out := make(problem.List, len(leaves))
	for i, l := range leaves {
		out[i] = l.Problem
	}
	return out
}

// Leaves flattens a validation error tree into one leaf per failing keyword, each with
// the JSON pointer of the offending value prefixed by prefix: one per missing required
// property and per property not allowed (pointing at the property), and one per value that
// matches none of anyOf/oneOf, naming the first failure of each alternative (listing every
// failure of every branch would bury the point).
func Leaves(e *jsonschema.ValidationError, prefix string) []Leaf {
	var out []Leaf
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if isAlternatives(e) && len(e.Causes) > 0 {
			out = append(out, Leaf{
				Problem:  problem.New(CodeSchema, prefix+problem.Pointer(e.InstanceLocation...), "%s", alternativesMessage(e)),
				Location: e.InstanceLocation,
			})
			return
		}
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		out = append(out, keywordLeaves(e, prefix)...)
	}
	walk(e)
	return out
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
		l := Leaves(c, "")
		if len(l) == 0 {
			continue
		}
		msg := l[0].Message
		if p := l[0].Path; p != problem.Pointer(e.InstanceLocation...) {
			msg = p + ": " + msg
		}
		parts = append(parts, msg)
	}
	if len(parts) == 0 {
		return "matches none of the allowed forms"
	}
	return "matches none of the allowed forms (" + strings.Join(parts, "; ") + ")"
}

// keywordLeaves converts an error without causes: one failing keyword.
func keywordLeaves(e *jsonschema.ValidationError, prefix string) []Leaf {
	loc := e.InstanceLocation
	path := prefix + problem.Pointer(loc...)
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		out := make([]Leaf, 0, len(k.Missing))
		for _, m := range k.Missing {
			out = append(out, Leaf{
				Problem:  problem.New(CodeRequired, path+"/"+problem.EscapeToken(m), "missing required property %q", m),
				Location: append(append([]string(nil), loc...), m),
			})
		}
		return out
	case *kind.AdditionalProperties:
		out := make([]Leaf, 0, len(k.Properties))
		for _, p := range k.Properties {
			out = append(out, Leaf{
				Problem:  problem.New(CodeAdditionalProperty, path+"/"+problem.EscapeToken(p), "property %q is not allowed here", p),
				Location: append(append([]string(nil), loc...), p),
			})
		}
		return out
	}
	return []Leaf{{
		Problem:  problem.Problem{Code: keywordCode(e.ErrorKind), Path: path, Message: e.ErrorKind.LocalizedString(printer)},
		Location: loc,
	}}
}

func keywordCode(k jsonschema.ErrorKind) string {
	switch k.(type) {
	case *kind.Type:
		return CodeType
	case *kind.Format:
		return CodeFormat
	case *kind.Enum, *kind.Const:
		return CodeEnum
	case *kind.Pattern:
		return CodePattern
	case *kind.MinLength, *kind.MaxLength:
		return CodeLength
	case *kind.MinItems, *kind.MaxItems, *kind.MinProperties, *kind.MaxProperties:
		return CodeSize
	case *kind.Minimum, *kind.Maximum, *kind.ExclusiveMinimum, *kind.ExclusiveMaximum, *kind.MultipleOf:
		return CodeRange
	}
	return CodeSchema
}
