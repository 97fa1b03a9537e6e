package host

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/schemaproblem"
	"github.com/flowd/flowd/schemas"
)

// ManifestSchema is the embedded schema every connector manifest must satisfy.
const ManifestSchema = "connector.schema.json"

// ValidateManifest checks a manifest document against schemas/connector.schema.json, checks
// that every config, input, output and credential schema in it compiles (a credential's being
// an object schema whose secret fields are string properties), and that its name is the
// connector's (binary) name. The error wraps ErrInvalidManifest and a problem.List naming every
// problem with its JSON pointer.
func ValidateManifest(name string, data []byte) (*sdk.Manifest, error) {
	return validateManifest(name, data)
}

func validateManifest(name string, data []byte) (*sdk.Manifest, error) {
	fail := func(problems problem.List) error {
		return fmt.Errorf("connector %q: %w: %w", name, ErrInvalidManifest, problems)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return nil, fail(problem.List{problem.New("malformed", "", "manifest is not JSON: %v", err)})
	}
	schema, err := schemas.Compiled(ManifestSchema)
	if err != nil {
		return nil, err
	}
	var problems problem.List
	if err := schema.Validate(doc); err != nil {
		ve, ok := err.(*jsonschema.ValidationError)
		if !ok {
			return nil, fail(problem.List{problem.New("schema", "", "%v", err)})
		}
		problems = append(problems, schemaProblems(ve)...)
	}
	var m sdk.Manifest
	if err := json.Unmarshal(data, &m); err != nil {
		problems = append(problems, problem.New("schema", "", "%v", err))
	}
	if m.Name != "" && m.Name != name {
		problems = append(problems, problem.New("name_mismatch", "/name",
			"manifest name %q differs from the connector's binary name %q", m.Name, name))
	}
	if len(problems) == 0 {
		problems = append(problems, compileEmbedded(&m)...)
	}
	if len(problems) > 0 {
		return nil, fail(problems)
	}
	return &m, nil
}

// compileEmbedded compiles each config/input/output/credential schema, so a broken one is refused here
// rather than when a flow is validated against it.
func compileEmbedded(m *sdk.Manifest) problem.List {
	var out problem.List
	check := func(path string, raw json.RawMessage) {
		if len(raw) == 0 {
			return
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err == nil {
			c := jsonschema.NewCompiler()
			c.DefaultDraft(jsonschema.Draft2020)
			url := "urn:flowd:manifest" + path
			if err = c.AddResource(url, doc); err == nil {
				_, err = c.Compile(url)
			}
		}
		if err != nil {
			out = append(out, problem.New("invalid_schema", path, "schema does not compile: %v", err))
		}
	}
	// A raw marker where it has no effect would leave the author believing a field is safe
	// from rendering: refused, with where it is.
	checkRaw := func(path string, raw json.RawMessage) {
		var rfe *sdk.RawFieldError
		switch _, err := sdk.RawFields(raw); {
		case errors.As(err, &rfe):
			out = append(out, problem.New("invalid_schema", path+rfe.Pointer, "%s", rfe.Message))
		case err != nil:
			out = append(out, problem.New("invalid_schema", path, "%v", err))
		}
	}
	for _, n := range sortedKeys(m.Actions) {
		a := m.Actions[n]
		p := problem.Pointer("actions", n)
		check(p+"/configSchema", a.ConfigSchema)
		checkRaw(p+"/configSchema", a.ConfigSchema)
		check(p+"/inputSchema", a.InputSchema)
		check(p+"/outputSchema", a.OutputSchema)
	}
	for _, n := range sortedKeys(m.Triggers) {
		t := m.Triggers[n]
		p := problem.Pointer("triggers", n)
		check(p+"/configSchema", t.ConfigSchema)
		checkRaw(p+"/configSchema", t.ConfigSchema)
		check(p+"/outputSchema", t.OutputSchema)
	}
	for _, n := range sortedKeys(m.Credentials) {
		p := problem.Pointer("credentials", n)
		check(p+"/schema", m.Credentials[n].Schema)
		out = append(out, credentialProblems(p, m.Credentials[n])...)
	}
	return out
}

// credentialProblems checks what the connections API relies on in a credential's schema: it
// describes an object, and each secret field is one of its string properties, so a secret is
// always a string to encrypt, never a structure that would be stored in clear.
func credentialProblems(path string, c sdk.CredentialSpec) problem.List {
	var doc struct {
		Type       any                        `json:"type"`
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(c.Schema, &doc); err != nil {
		return problem.List{problem.New("invalid_credential", path+"/schema", "a credential schema is an object schema: {\"type\": \"object\", \"properties\": ...}")}
	}
	var out problem.List
	if doc.Type != "object" {
		out = append(out, problem.New("invalid_credential", path+"/schema/type", "a credential schema describes an object: \"type\": \"object\""))
	}
	for i, name := range c.Secret {
		var prop struct {
			Type any `json:"type"`
		}
		raw, ok := doc.Properties[name]
		if ok && (json.Unmarshal(raw, &prop) != nil || prop.Type != "string") {
			ok = false
		}
		if !ok {
			out = append(out, problem.New("invalid_credential", fmt.Sprintf("%s/secret/%d", path, i),
				"secret field %q must be a property of the schema of type string", name))
		}
	}
	return out
}

// rawFields lists, per action, the config fields it marks raw; the manifest is valid.
func rawFields(m *sdk.Manifest) map[string][]string {
	out := map[string][]string{}
	for n, a := range m.Actions {
		if raw, err := sdk.RawFields(a.ConfigSchema); err == nil && len(raw) > 0 {
			out[n] = raw
		}
	}
	return out
}

// schemaProblems converts a validation error against the manifest schema. A property not
// allowed directly under actions or triggers is a name the schema's pattern refused: said so.
func schemaProblems(e *jsonschema.ValidationError) problem.List {
	leaves := schemaproblem.Leaves(e, "")
	out := make(problem.List, len(leaves))
	for i, l := range leaves {
		if l.Code == schemaproblem.CodeAdditionalProperty && len(l.Location) == 2 {
			switch l.Location[0] {
			case "actions", "triggers":
				l.Message = fmt.Sprintf("%q is not a valid name: a letter, then letters, digits, '_', '.' or '-'", l.Location[1])
			case "credentials":
				l.Message = fmt.Sprintf("%q is not a valid credential name: a lowercase letter, then letters, digits or '_'", l.Location[1])
			}
		}
		out[i] = l.Problem
	}
	return out
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
