package sdk

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/connectors/sdk/schemacheck"
)

// Problem is one thing wrong with what a call was given: a code a program can switch on (the
// failing JSON Schema keyword: required, additional_property, type...), a message a person can
// read, and the JSON pointer of the value in the invocation or poll request ("/config/url",
// "/input/name").
type Problem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	Path    string `json:"path"`
}

// Schemas are a connector's config and input schemas, compiled once. The flowd host checks
// every invocation and poll against them before the connector sees it, and Invoke does the
// same, so a handler is never called with a config or input its schemas refuse.
type Schemas struct {
	actions  map[string]actionSchemas
	triggers map[string]*jsonschema.Schema
}

// actionSchemas: nil for a schema that accepts everything, so such input is not even decoded.
type actionSchemas struct{ config, input *jsonschema.Schema }

// CompileSchemas compiles the config and input schemas of every action and the config schema of
// every trigger of m.
func CompileSchemas(m Manifest) (*Schemas, error) {
	s := &Schemas{actions: map[string]actionSchemas{}, triggers: map[string]*jsonschema.Schema{}}
	var err error
	for name, a := range m.Actions {
		var as actionSchemas
		if as.config, err = compileSchema(m.Name, "actions", name, "configSchema", a.ConfigSchema); err != nil {
			return nil, err
		}
		if as.input, err = compileSchema(m.Name, "actions", name, "inputSchema", a.InputSchema); err != nil {
			return nil, err
		}
		s.actions[name] = as
	}
	for name, t := range m.Triggers {
		if s.triggers[name], err = compileSchema(m.Name, "triggers", name, "configSchema", t.ConfigSchema); err != nil {
			return nil, err
		}
	}
	return s, nil
}

func compileSchema(connector, kind, name, field string, raw json.RawMessage) (*jsonschema.Schema, error) {
	if acceptsAll(raw) {
		return nil, nil
	}
	ptr := schemacheck.Pointer(kind, name, field)
	sch, err := schemacheck.Compile("urn:flowd:connector:"+connector+":"+ptr, raw)
	if err != nil {
		return nil, fmt.Errorf("%s: schema does not compile: %w", ptr, err)
	}
	return sch, nil
}

// annotations are the keywords that never make a value invalid.
var annotations = map[string]bool{
	"$schema": true, "$id": true, "$comment": true, "title": true, "description": true,
	"default": true, "examples": true, "deprecated": true, "readOnly": true, "writeOnly": true,
}

// acceptsAll: an absent schema, true, or one of annotations only ("any JSON value") needs no
// check. Skipping it keeps large inputs from being decoded for nothing.
func acceptsAll(raw json.RawMessage) bool {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("true")) {
		return true
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return false // not an object: let the compiler say what is wrong
	}
	for k := range m {
		if !annotations[k] {
			return false
		}
	}
	return true
}

// Error codes of calls refused by their schemas.
const (
	CodeInvalidConfig = "invalid_config"
	CodeInvalidInput  = "invalid_input"
)

// CheckInvocation checks an invocation's config and input, as JSON, against its action's
// schemas: nil when they conform or the connector has no such action (the connector answers
// that itself), else a permanent invalid_config (or, the config being fine, invalid_input)
// naming every problem. An absent or null config is checked as {}, the way handlers decode it.
func (s *Schemas) CheckInvocation(action string, config, input []byte) *Error {
	if s == nil {
		return nil
	}
	as, ok := s.actions[action]
	if !ok {
		return nil
	}
	if e := check(as.config, config, "config", CodeInvalidConfig, fmt.Sprintf("the configSchema of action %q", action)); e != nil {
		return e
	}
	if len(bytes.TrimSpace(input)) == 0 {
		input = []byte("null")
	}
	return check(as.input, input, "input", CodeInvalidInput, fmt.Sprintf("the inputSchema of action %q", action))
}

// CheckPoll checks a poll request's config, as JSON, against its trigger's config schema, like
// CheckInvocation.
func (s *Schemas) CheckPoll(trigger string, config []byte) *Error {
	if s == nil {
		return nil
	}
	sch, ok := s.triggers[trigger]
	if !ok {
		return nil
	}
	return check(sch, config, "config", CodeInvalidConfig, fmt.Sprintf("the configSchema of trigger %q", trigger))
}

// maxListed bounds the problems a message lists; Error.Problems has them all.
const maxListed = 10

func check(sch *jsonschema.Schema, doc []byte, field, code, against string) *Error {
	if sch == nil {
		return nil
	}
	if field == "config" {
		if d := bytes.TrimSpace(doc); len(d) == 0 || bytes.Equal(d, []byte("null")) {
			doc = []byte("{}")
		}
	}
	found, err := schemacheck.Validate(sch, doc, "/"+field)
	if err != nil {
		return &Error{Code: code, Message: fmt.Sprintf("%s: %v", field, err)}
	}
	if len(found) == 0 {
		return nil
	}
	e := &Error{Code: code, Problems: make([]Problem, len(found))}
	parts := make([]string, 0, min(len(found), maxListed))
	for i, p := range found {
		e.Problems[i] = Problem{Code: p.Code, Message: p.Message, Path: p.Path}
		if i < maxListed {
			parts = append(parts, p.Path+": "+p.Message)
		}
	}
	more := ""
	if n := len(found) - maxListed; n > 0 {
		more = fmt.Sprintf(" (and %d more)", n)
	}
	e.Message = fmt.Sprintf("%s does not match %s: %s%s", field, against, strings.Join(parts, "; "), more)
	return e
}
