// Package transform is the built-in `transform` connector: its `map` action builds one output
// object from expr-lang expressions over the step's input and the execution context.
package transform

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/expression"
)

// Name and Version identify the connector in its manifest.
const (
	Name    = "transform"
	Version = "1.0.0"
)

// CacheSize bounds the compiled programs kept per process.
const CacheSize = 4096

// MapConfig is the config of the `map` action.
type MapConfig struct {
	// Fields maps each output key to an expression (not a template: no `{{ }}`).
	Fields map[string]string `json:"fields"`
	// Merge starts from the input object, so Fields add or overwrite keys.
	Merge bool `json:"merge"`
}

// contextKeys are the Invocation.Context entries an expression may see besides input.
var contextKeys = []string{expression.KeySteps, expression.KeyFlow, expression.KeySettings, expression.KeyExecution}

// Connector returns the transform connector with a fresh program cache.
func Connector() sdk.Connector {
	cache := newProgramCache(CacheSize)
	return sdk.Connector{
		Manifest: sdk.Manifest{
			Name:        Name,
			Version:     Version,
			Description: "Builds objects from expr-lang expressions over the input and earlier steps.",
		},
		Actions: map[string]sdk.Handler{
			"map": sdk.Action(mapSpec, func(_ context.Context, call sdk.Call[MapConfig, json.RawMessage]) ([]sdk.Output, error) {
				obj, err := mapFields(cache, call.Config, call.Input, call.Context)
				if err != nil {
					return nil, err
				}
				return []sdk.Output{{Data: obj}}, nil
			}),
		},
		// Expressions are CPU-bound and short; the default bound is fine.
	}
}

// mapFields evaluates every field. Fields are visited in key order so the error reported for a
// config with several bad fields is always the same one.
func mapFields(cache *programCache, cfg MapConfig, input json.RawMessage, callCtx map[string]any) (map[string]any, error) {
	env, err := buildEnv(input, callCtx)
	if err != nil {
		return nil, err
	}
	out := make(map[string]any, len(cfg.Fields))
	if cfg.Merge {
		base, err := inputObject(input)
		if err != nil {
			return nil, err
		}
		// Raw values pass through byte for byte: a 64-bit id in the input must not come out
		// rounded through float64.
		for k, v := range base {
			out[k] = v
		}
	}
	for _, key := range slices.Sorted(maps.Keys(cfg.Fields)) {
		prog, err := cache.get(cfg.Fields[key])
		if err != nil {
			return nil, sdk.Permanent("invalid_expression", fmt.Errorf("field %q: %w", key, err))
		}
		v, err := prog.Eval(env)
		if err != nil {
			return nil, sdk.Permanent("expression_failed", fmt.Errorf("field %q: %w", key, err))
		}
		out[key] = v
	}
	return out, nil
}

// buildEnv decodes the input (numbers as float64, which is what expr-lang computes with) and
// takes steps, flow, settings and execution from the invocation context.
func buildEnv(input json.RawMessage, callCtx map[string]any) (expression.Env, error) {
	env := expression.Env{}
	if in := bytes.TrimSpace(input); len(in) > 0 {
		var v any
		if err := json.Unmarshal(in, &v); err != nil {
			return nil, sdk.Permanent("invalid_input", fmt.Errorf("input: %w", err))
		}
		env[expression.KeyInput] = v
	} else {
		env[expression.KeyInput] = nil
	}
	for _, k := range contextKeys {
		v, ok := callCtx[k]
		if !ok || v == nil {
			continue // expression.Env fills in an empty object
		}
		m, ok := v.(map[string]any)
		if !ok {
			return nil, sdk.Errorf("invalid_context", "context.%s is %T, not an object", k, v)
		}
		env[k] = m
	}
	return env, nil
}

func inputObject(input json.RawMessage) (map[string]json.RawMessage, error) {
	in := bytes.TrimSpace(input)
	if len(in) == 0 || bytes.Equal(in, []byte("null")) {
		return nil, nil // nothing to merge: the fields alone
	}
	var m map[string]json.RawMessage
	if in[0] != '{' || json.Unmarshal(in, &m) != nil {
		return nil, sdk.Errorf("invalid_input", "merge needs an object input, got %s", kind(in))
	}
	return m, nil
}

func kind(v []byte) string {
	switch v[0] {
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	default:
		return "a number"
	}
}

var mapSpec = sdk.ActionSpec{
	Title: "Map fields",
	Description: "Builds one object whose keys are the config's fields and whose values are their " +
		"expr-lang expressions, evaluated against input, steps, flow, settings and execution. " +
		"With merge, the object starts as a copy of the input.",
	ConfigSchema: json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "properties": {
    "fields": {
      "type": "object",
      "description": "Output key to expr-lang expression, e.g. {\"fullName\": \"input.first + ' ' + input.last\"}.",
      "additionalProperties": {"type": "string", "minLength": 1, "maxLength": 4096}
    },
    "merge": {"type": "boolean", "default": false, "description": "Start from the input object; fields add or overwrite keys."}
  },
  "required": ["fields"],
  "additionalProperties": false
}`),
	InputSchema: json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "description": "Any JSON value; an object when merge is set."
}`),
	OutputSchema: json.RawMessage(`{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object"
}`),
}
