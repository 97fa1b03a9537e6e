package connections_test

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/schemas"
)

// The connector manifest's schema names the connection types a connector may accept; it must
// list exactly the types flowd stores.
func TestManifestSchemaListsTheConnectionTypes(t *testing.T) {
	t.Parallel()
	raw, err := schemas.FS.ReadFile("connector.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Properties map[string]struct {
			Items struct {
				Enum []string `json:"enum"`
			} `json:"items"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	got := slices.Sorted(slices.Values(doc.Properties["credentialTypes"].Items.Enum))
	if !slices.Equal(got, connections.Types) {
		t.Fatalf("connector.schema.json credentialTypes %v, connections.Types %v", got, connections.Types)
	}
}

func TestMergeChecksDataAgainstTheType(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		typ   string
		data  map[string]any
		codes []string
	}{
		{connections.TypeBasic, map[string]any{"username": "u", "password": "p"}, nil},
		{connections.TypeBasic, map[string]any{"username": "u"}, []string{"required@/data/password"}},
		{connections.TypeAPIKey, map[string]any{"key": "k", "header": "not a header"}, []string{"invalid@/data/header"}},
		{connections.TypeBearer, map[string]any{"token": connections.Mask}, []string{"masked_value@/data/token"}},
		{connections.TypeBearer, map[string]any{"token": "t", "extra": 1}, []string{"unknown_field@/data/extra"}},
		{connections.TypeOAuth2, map[string]any{"grant": "password", "tokenUrl": "https://idp.example/token", "clientId": "c"}, []string{"invalid@/data/grant"}},
	} {
		_, ps := connections.Merge(c.typ, nil, c.data)
		var got []string
		for _, p := range ps {
			got = append(got, p.Code+"@"+p.Path)
		}
		if !slices.Equal(got, c.codes) {
			t.Errorf("%s %v: problems %v, want %v", c.typ, c.data, got, c.codes)
		}
	}
}
