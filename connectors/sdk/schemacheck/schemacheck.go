// Package schemacheck compiles the JSON Schemas of connector manifests and says what a document
// violates, one problem per failing keyword with the JSON pointer of the offending value. The
// plugin host, the connector catalog and sdk.Invoke all use it, so a config is judged the same
// way wherever it is checked.
//
// flowd's server reports schema failures of its own documents (flows, connection data) through
// internal/problem/schemaproblem, which wraps this package: one definition of how a failure
// reads. It depends on nothing but the schema library, so flowd's core may use it.
package schemacheck

import (
	"bytes"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"golang.org/x/text/language"
	"golang.org/x/text/message"
)

// Codes of failures: the finer codes where the failing keyword says what is wrong, CodeSchema
// otherwise (and for a value that matches none of anyOf/oneOf).
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

// Problem is one failing keyword.
type Problem struct {
	Code    string
	Message string
	Path    string // JSON pointer of the value (of the property, for required and additionalProperties), prefixed
	// Location holds the reference tokens of the value, without the prefix.
	Location []string
}

// Compile compiles one schema document under url: JSON Schema 2020-12 unless the document's
// $schema names another draft.
func Compile(url string, doc []byte) (*jsonschema.Schema, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return nil, fmt.Errorf("schema is not JSON: %w", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	if err := c.AddResource(url, v); err != nil {
		return nil, err
	}
	return c.Compile(url)
}

// Validate checks the JSON document data against s: no problems when it conforms, else one per
// failing keyword (see Problems), sorted by path. The error is for data that is not JSON.
func Validate(s *jsonschema.Schema, data []byte, prefix string) ([]Problem, error) {
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	err = s.Validate(v)
	if err == nil {
		return nil, nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return nil, err
	}
	out := Problems(ve, prefix)
	sort.SliceStable(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

var printer = message.NewPrinter(language.English)

// Problems flattens a validation error tree into one problem per failing keyword, each with
// the JSON pointer of the offending value prefixed by prefix: one per missing required
// property and per property not allowed (pointing at the property), and one per value that
// matches none of anyOf/oneOf, naming the first failure of each alternative (listing every
// failure of every branch would bury the point).
func Problems(e *jsonschema.ValidationError, prefix string) []Problem {
	var out []Problem
	var walk func(e *jsonschema.ValidationError)
	walk = func(e *jsonschema.ValidationError) {
		if isAlternatives(e) && len(e.Causes) > 0 {
			out = append(out, Problem{Code: CodeSchema, Path: prefix + Pointer(e.InstanceLocation...),
				Message: alternativesMessage(e), Location: e.InstanceLocation})
			return
		}
		if len(e.Causes) > 0 {
			for _, c := range e.Causes {
				walk(c)
			}
			return
		}
		out = append(out, keywordProblems(e, prefix)...)
	}
	walk(e)
	return out
}

var tokenEscaper = strings.NewReplacer("~", "~0", "/", "~1")

// Pointer is the JSON pointer (RFC 6901) to the value the tokens lead to ("" for the document).
func Pointer(tokens ...string) string {
	var b strings.Builder
	for _, t := range tokens {
		b.WriteByte('/')
		b.WriteString(tokenEscaper.Replace(t))
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
		l := Problems(c, "")
		if len(l) == 0 {
			continue
		}
		msg := l[0].Message
		if p := l[0].Path; p != Pointer(e.InstanceLocation...) {
			msg = p + ": " + msg
		}
		parts = append(parts, msg)
	}
	if len(parts) == 0 {
		return "matches none of the allowed forms"
	}
	return "matches none of the allowed forms (" + strings.Join(parts, "; ") + ")"
}

// keywordProblems converts an error without causes: one failing keyword.
func keywordProblems(e *jsonschema.ValidationError, prefix string) []Problem {
	loc := e.InstanceLocation
	path := prefix + Pointer(loc...)
	switch k := e.ErrorKind.(type) {
	case *kind.Required:
		out := make([]Problem, 0, len(k.Missing))
		for _, m := range k.Missing {
			out = append(out, Problem{Code: CodeRequired, Path: path + Pointer(m),
				Message:  fmt.Sprintf("missing required property %q", m),
				Location: append(append([]string(nil), loc...), m)})
		}
		return out
	case *kind.AdditionalProperties:
		out := make([]Problem, 0, len(k.Properties))
		for _, p := range k.Properties {
			out = append(out, Problem{Code: CodeAdditionalProperty, Path: path + Pointer(p),
				Message:  fmt.Sprintf("property %q is not allowed here", p),
				Location: append(append([]string(nil), loc...), p)})
		}
		return out
	}
	return []Problem{{Code: keywordCode(e.ErrorKind), Path: path, Message: e.ErrorKind.LocalizedString(printer), Location: loc}}
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
