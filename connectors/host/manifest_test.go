package host

import (
	"errors"
	"slices"
	"testing"

	"github.com/flowd/flowd/internal/problem"
)

func TestValidateManifestCredentials(t *testing.T) {
	manifest := func(credentials string) []byte {
		return []byte(`{"name":"crm","version":"1.0.0","actions":{"a":{"title":"A"}},"credentials":` + credentials + `}`)
	}
	ok := `{"apiToken":{"title":"API token","schema":{"type":"object","required":["token"],
		"properties":{"token":{"type":"string"},"region":{"enum":["eu","us"]}}},"secret":["token"]}}`
	m, err := ValidateManifest("crm", manifest(ok))
	if err != nil {
		t.Fatalf("valid manifest: %v", err)
	}
	if c := m.Credentials["apiToken"]; c.Title != "API token" || !slices.Equal(c.Secret, []string{"token"}) {
		t.Fatalf("decoded credential: %+v", c)
	}
	cases := map[string]struct{ credentials, code, path string }{
		"name with a dot":     {`{"api.token":{"title":"T","schema":{"type":"object"}}}`, "additional_property", "/credentials/api.token"},
		"name not lowercase":  {`{"Token":{"title":"T","schema":{"type":"object"}}}`, "additional_property", "/credentials/Token"},
		"no schema":           {`{"token":{"title":"T"}}`, "required", "/credentials/token/schema"},
		"no title":            {`{"token":{"schema":{"type":"object"}}}`, "required", "/credentials/token/title"},
		"unknown member":      {`{"token":{"title":"T","schema":{"type":"object"},"secrets":["x"]}}`, "additional_property", "/credentials/token/secrets"},
		"schema not compiled": {`{"token":{"title":"T","schema":{"type":"object","properties":{"x":{"$ref":"#/$defs/none"}}}}}`, "invalid_schema", "/credentials/token/schema"},
		"not an object":       {`{"token":{"title":"T","schema":{"type":"string"}}}`, "invalid_credential", "/credentials/token/schema/type"},
		"untyped schema":      {`{"token":{"title":"T","schema":true}}`, "invalid_credential", "/credentials/token/schema"},
		"secret not declared": {`{"token":{"title":"T","schema":{"type":"object","properties":{"a":{"type":"string"}}},"secret":["a","b"]}}`, "invalid_credential", "/credentials/token/secret/1"},
		"secret not a string": {`{"token":{"title":"T","schema":{"type":"object","properties":{"pin":{"type":"integer"}}},"secret":["pin"]}}`, "invalid_credential", "/credentials/token/secret/0"},
		"secret listed twice": {`{"token":{"title":"T","schema":{"type":"object","properties":{"a":{"type":"string"}}},"secret":["a","a"]}}`, "schema", "/credentials/token/secret"},
		"empty credentials":   {`{}`, "size", "/credentials"},
	}
	for name, tc := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ValidateManifest("crm", manifest(tc.credentials))
			var problems problem.List
			if !errors.Is(err, ErrInvalidManifest) || !errors.As(err, &problems) {
				t.Fatalf("err %v, want %v with problems", err, ErrInvalidManifest)
			}
			for _, p := range problems {
				if p.Code == tc.code && p.Path == tc.path {
					return
				}
			}
			t.Fatalf("problems %v: none %s at %q", problems, tc.code, tc.path)
		})
	}
}
