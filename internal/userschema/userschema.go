// Package userschema compiles the JSON Schemas users write into flowd's documents (an
// integration's settingsSchema, a template's parameters) and checks values against them. A
// schema is checked against its metaschema and compiled without ever loading anything from
// outside itself; every failure comes back as problems with JSON pointers, so a client learns
// where its schema, or its value, is wrong.
package userschema

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/schemaproblem"
)

// CodeInvalidSchema is the code of a schema that is not a valid JSON Schema.
const CodeInvalidSchema = "invalid_schema"

// Compile compiles schema (draft 2020-12 unless it names another in $schema, formats
// asserted). Problems point into the schema, each path prefixed by at (e.g. "/settingsSchema").
func Compile(schema map[string]any, at string) (*jsonschema.Schema, problem.List) {
	inst, err := roundTrip(schema)
	if err != nil {
		return nil, problem.List{problem.New(CodeInvalidSchema, at, "the schema cannot be read: %v", err)}
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	c.AssertFormat()
	c.UseLoader(noRemote{})
	const url = "urn:flowd:userschema"
	if err := c.AddResource(url, inst); err != nil {
		return nil, problem.List{problem.New(CodeInvalidSchema, at, "%v", err)}
	}
	s, err := c.Compile(url)
	if err == nil {
		return s, nil
	}
	var sve *jsonschema.SchemaValidationError
	var ve *jsonschema.ValidationError
	if errors.As(err, &sve) && errors.As(sve.Err, &ve) {
		ps := schemaproblem.Problems(ve, at)
		for i := range ps {
			ps[i].Code = CodeInvalidSchema
			ps[i].Message = "not a valid JSON Schema: " + ps[i].Message
		}
		return nil, ps
	}
	return nil, problem.List{problem.New(CodeInvalidSchema, at, "not a usable JSON Schema: %v", err)}
}

// Check validates value against s; each problem's path points into the value, prefixed by at.
func Check(s *jsonschema.Schema, value any, at string) problem.List {
	inst, err := roundTrip(value)
	if err != nil {
		return problem.List{problem.New(schemaproblem.CodeSchema, at, "the value cannot be read: %v", err)}
	}
	err = s.Validate(inst)
	if err == nil {
		return nil
	}
	var ve *jsonschema.ValidationError
	if !errors.As(err, &ve) {
		return problem.List{problem.New(schemaproblem.CodeSchema, at, "%v", err)}
	}
	ps := schemaproblem.Problems(ve, at)
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Path < ps[j].Path })
	return ps
}

// roundTrip re-decodes v as the schema library expects (numbers as json.Number).
func roundTrip(v any) (any, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	return jsonschema.UnmarshalJSON(bytes.NewReader(raw))
}

// noRemote refuses every $ref outside the schema: the API never fetches a user's URL.
type noRemote struct{}

func (noRemote) Load(url string) (any, error) {
	return nil, fmt.Errorf("%s cannot be loaded: a schema may only refer to itself", url)
}
