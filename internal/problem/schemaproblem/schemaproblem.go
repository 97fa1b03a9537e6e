// Package schemaproblem turns JSON Schema validation errors (santhosh-tekuri/jsonschema) into
// flowd's problems, for every document flowd validates against a schema: flows, webhook
// inputs, connector manifests, connection data. Package problem is the error shape itself and
// links no schema library. How a failure reads (codes, messages, paths) is defined once, in
// the SDK's connectors/sdk/schemacheck, so that a connector's config is judged alike by the
// API, the plugin host and a connector's own tests.
package schemaproblem

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/connectors/sdk/schemacheck"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/schemas"
)

// Codes of JSON Schema failures (see schemacheck).
const (
	CodeSchema             = schemacheck.CodeSchema
	CodeRequired           = schemacheck.CodeRequired
	CodeAdditionalProperty = schemacheck.CodeAdditionalProperty
	CodeType               = schemacheck.CodeType
	CodeFormat             = schemacheck.CodeFormat
	CodeEnum               = schemacheck.CodeEnum
	CodePattern            = schemacheck.CodePattern
	CodeLength             = schemacheck.CodeLength
	CodeSize               = schemacheck.CodeSize
	CodeRange              = schemacheck.CodeRange
)

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

// Leaves flattens a validation error tree into one leaf per failing keyword, each with the
// JSON pointer of the offending value prefixed by prefix (schemacheck.Problems).
func Leaves(e *jsonschema.ValidationError, prefix string) []Leaf {
	ps := schemacheck.Problems(e, prefix)
	out := make([]Leaf, len(ps))
	for i, p := range ps {
		out[i] = Leaf{Problem: problem.Problem{Code: p.Code, Message: p.Message, Path: p.Path}, Location: p.Location}
	}
	return out
}

// Decode checks doc against one of flowd's published schema files (schemas.Compiled) and, if
// it passes, unmarshals it into v. what names the document in messages ("the template").
// Every schema problem is returned, each at its own pointer.
func Decode(doc []byte, file, what string, v any) problem.List {
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return problem.List{problem.New(httpproblem.CodeMalformed, "", "invalid JSON: %s", err.Error())}
	}
	sch, err := schemas.Compiled(file)
	if err != nil {
		return problem.List{problem.New(httpproblem.CodeInternal, "", "%s schema unavailable: %s", what, err.Error())}
	}
	if err := sch.Validate(inst); err != nil {
		var ve *jsonschema.ValidationError
		if !errors.As(err, &ve) {
			return problem.List{problem.New(httpproblem.CodeInternal, "", "%s schema validation failed: %s", what, err.Error())}
		}
		return Problems(ve, "")
	}
	if err := json.Unmarshal(doc, v); err != nil {
		return problem.List{problem.New(httpproblem.CodeMalformed, "", "cannot decode %s: %s", what, err.Error())}
	}
	return nil
}
