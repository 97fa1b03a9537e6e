package connections_test

import (
	"slices"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
)

// crmToken is a connector-defined type as the catalog builds it from a manifest.
func crmToken(t *testing.T) *connections.ConnectorType {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(strings.NewReader(`{
		"type": "object", "additionalProperties": false, "required": ["url", "token"],
		"properties": {
			"url": {"type": "string", "format": "uri"},
			"token": {"type": "string", "minLength": 8},
			"retries": {"type": "integer", "minimum": 0}
		}}`))
	if err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("urn:test:crm.apiToken", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("urn:test:crm.apiToken")
	if err != nil {
		t.Fatal(err)
	}
	return &connections.ConnectorType{Name: "crm.apiToken", Connector: "crm", Schema: s, Secret: []string{"token"}}
}

func problemCodes(ps problem.List) []string {
	out := make([]string, len(ps))
	for i, p := range ps {
		out[i] = p.Code + "@" + p.Path
	}
	slices.Sort(out)
	return out
}

func TestConnectorTypeChecksDataAgainstItsSchema(t *testing.T) {
	t.Parallel()
	typ := crmToken(t)
	for _, c := range []struct {
		name  string
		data  map[string]any
		codes []string
	}{
		{"valid", map[string]any{"url": "https://crm.example/api", "token": "tok-12345678", "retries": 3}, nil},
		{"missing required", map[string]any{"url": "https://crm.example/api"}, []string{"required@/data/token"}},
		{"wrong types", map[string]any{"url": 42, "token": "tok-12345678", "retries": "three"}, []string{"type@/data/retries", "type@/data/url"}},
		{"unknown field", map[string]any{"url": "https://crm.example/api", "token": "tok-12345678", "extra": true}, []string{"additional_property@/data/extra"}},
		{"format asserted", map[string]any{"url": "not a uri", "token": "tok-12345678"}, []string{"format@/data/url"}},
		{"secret of the wrong type", map[string]any{"url": "https://crm.example/api", "token": 12345678}, []string{"type@/data/token"}},
		{"mask as a value", map[string]any{"url": "https://crm.example/api", "token": connections.Mask}, []string{"masked_value@/data/token"}},
	} {
		_, ps := typ.Merge(nil, c.data)
		if got := problemCodes(ps); !slices.Equal(got, c.codes) {
			t.Errorf("%s: problems %v, want %v", c.name, got, c.codes)
		}
	}
}

func TestConnectorTypeSealsSecretsAndKeepsMaskedOnes(t *testing.T) {
	t.Parallel()
	typ := crmToken(t)
	kr, err := secrets.ParseKeys("k1:" + secrets.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	conn := &store.Connection{ID: identity.NewID(), Type: typ.Name}
	d, ps := typ.Merge(nil, map[string]any{"url": "https://crm.example/api", "token": "tok-original"})
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	if err := connections.Seal(kr, conn, d); err != nil {
		t.Fatal(err)
	}
	if _, inClear := conn.Fields["token"]; inClear || conn.Fields["url"] != "https://crm.example/api" {
		t.Fatalf("fields %v: want url only", conn.Fields)
	}
	open := func() string {
		t.Helper()
		b, err := connections.Open(kr, conn, "token")
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := open(); got != "tok-original" {
		t.Fatalf("sealed token opens to %q", got)
	}

	// The mask keeps the stored secret; its placeholder is not judged by minLength.
	d, ps = typ.Merge(conn, map[string]any{"url": "https://crm.example/v2", "token": connections.Mask})
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	if err := connections.Seal(kr, conn, d); err != nil {
		t.Fatal(err)
	}
	if got := open(); got != "tok-original" || conn.Fields["url"] != "https://crm.example/v2" {
		t.Fatalf("after a masked PATCH: token %q, fields %v", got, conn.Fields)
	}

	// A new value replaces it; null removes it, which the schema requires.
	d, ps = typ.Merge(conn, map[string]any{"token": "tok-rotated"})
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	if err := connections.Seal(kr, conn, d); err != nil {
		t.Fatal(err)
	}
	if got := open(); got != "tok-rotated" {
		t.Fatalf("after rotating: %q", got)
	}
	if _, ps = typ.Merge(conn, map[string]any{"token": nil}); !slices.Equal(problemCodes(ps), []string{"required@/data/token"}) {
		t.Fatalf("removing a required secret: %v", ps)
	}

	// A stored field the connector's schema no longer has is dropped, not reported.
	conn.Fields["legacy"] = "x"
	d, ps = typ.Merge(conn, map[string]any{"retries": 2})
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	if err := connections.Seal(kr, conn, d); err != nil {
		t.Fatal(err)
	}
	if _, ok := conn.Fields["legacy"]; ok || open() != "tok-rotated" {
		t.Fatalf("after the schema changed: fields %v", conn.Fields)
	}
}
