package connections

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/schemaproblem"
	"github.com/flowd/flowd/internal/store"
)

// ConnectorType is a connection type a connector defines in its manifest
// (sdk.Manifest.Credentials): named sdk.CredentialType(connector, name), its data checked
// against the manifest's JSON Schema, the fields the manifest lists as secret sealed like the
// built-in types' secrets. The connector catalog builds them; the host has already checked
// that Secret names string properties of Schema.
type ConnectorType struct {
	Name      string // "<connector>.<name>"
	Connector string
	Schema    *jsonschema.Schema
	Secret    []string
}

// IsConnectorType reports whether typ names a connector-defined type rather than a built-in.
func IsConnectorType(typ string) bool {
	_, _, ok := sdk.ParseCredentialType(typ)
	return ok
}

// Merge overlays a request's data on the stored connection (cur nil on create) and checks the
// result against the type's schema, reporting every problem with its path under /data. As for
// built-in types, null removes a field and the mask keeps a stored secret. A kept secret is
// checked as it was when stored: this side never decrypts it.
func (t *ConnectorType) Merge(cur *store.Connection, patch map[string]any) (Change, problem.List) {
	merged := map[string]any{}
	kept := map[string]bool{}
	var ps problem.List
	if cur != nil {
		for k, v := range cur.Fields {
			merged[k] = v
		}
		for k := range cur.Secrets {
			merged[k] = Mask // stands in for the stored value during validation
			kept[k] = true
		}
	}
	for k, v := range patch {
		switch v {
		case nil:
			delete(merged, k)
			delete(kept, k)
		case Mask:
			if !kept[k] {
				ps = append(ps, problem.New("masked_value", "/data/"+problem.EscapeToken(k), "%q is the mask of a stored secret, not a value: send the secret itself", Mask))
				merged[k], kept[k] = Mask, true // reported once, not again by the schema
			}
		default:
			merged[k] = v
			delete(kept, k)
		}
	}
	leaves, err := t.validate(merged)
	if err != nil {
		return Change{}, append(ps, problem.New("schema", "/data", "%v", err))
	}
	// A stored field the schema no longer allows (the connector changed it) is dropped, as
	// built-in types drop fields they stopped using; one the request sends is reported.
	unused := map[string]bool{}
	for _, l := range leaves {
		field := ""
		if len(l.Location) > 0 {
			field = l.Location[0]
		}
		_, sent := patch[field]
		switch {
		case l.Code == schemaproblem.CodeAdditionalProperty && len(l.Location) == 1 && !sent:
			unused[field] = true
		case field != "" && kept[field]:
			// The placeholder of a kept secret: the stored value passed when it was stored.
		default:
			ps = append(ps, l.Problem)
		}
	}
	out := Change{fields: map[string]any{}, set: map[string]string{}}
	for k, v := range merged {
		if unused[k] || kept[k] {
			continue
		}
		if !slices.Contains(t.Secret, k) {
			out.fields[k] = v
			continue
		}
		path := "/data/" + problem.EscapeToken(k)
		switch s, ok := v.(string); {
		case !ok:
			// The schema types secrets as strings; never store one in clear whatever it said.
			if !slices.ContainsFunc(ps, func(p problem.Problem) bool { return p.Path == path }) {
				ps = append(ps, problem.New("invalid_type", path, "%s must be a string", k))
			}
		case len(s) > maxSecretLen:
			ps = append(ps, problem.New("invalid", path, "%s is limited to %d bytes", k, maxSecretLen))
		default:
			out.set[k] = s
		}
	}
	if cur != nil {
		for k := range cur.Secrets {
			if _, replaced := out.set[k]; (!kept[k] || unused[k]) && !replaced {
				out.drop = append(out.drop, k)
			}
		}
		sort.Strings(out.drop)
	}
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Path < ps[j].Path })
	return out, ps
}

// validate checks data against the schema; the leaves' paths are under /data.
func (t *ConnectorType) validate(data map[string]any) ([]schemaproblem.Leaf, error) {
	// Round-trip so numbers are json.Number, as the validator expects.
	raw, err := json.Marshal(data)
	if err != nil {
		return nil, fmt.Errorf("encode data: %w", err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decode data: %w", err)
	}
	err = t.Schema.Validate(doc)
	var ve *jsonschema.ValidationError
	switch {
	case err == nil:
		return nil, nil
	case errors.As(err, &ve):
		return schemaproblem.Leaves(ve, "/data"), nil
	}
	return nil, fmt.Errorf("validate data against %s: %w", t.Name, err)
}
