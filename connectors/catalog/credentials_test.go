package catalog_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/flowd/flowd/connectors/catalog"
)

// describeOnly writes an executable that prints manifest for `describe`: all a catalog asks
// of a connector.
func describeOnly(t *testing.T, dir, name, manifest string) {
	t.Helper()
	script := "#!/bin/sh\n[ \"$1\" = describe ] || exit 2\ncat <<'EOF'\n" + manifest + "\nEOF\n"
	if err := os.WriteFile(filepath.Join(dir, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

func TestCatalogKnowsConnectorDefinedConnectionTypes(t *testing.T) {
	dir := t.TempDir()
	describeOnly(t, dir, "crm", `{"name":"crm","version":"1.0.0","actions":{"sync":{"title":"Sync"}},
		"credentials":{"apiToken":{"title":"API token","schema":{"type":"object","additionalProperties":false,"required":["url","token"],
			"properties":{"url":{"type":"string","format":"uri"},"token":{"type":"string"}}},"secret":["token"]}}}`)
	describeOnly(t, dir, "plain", `{"name":"plain","version":"1.0.0","actions":{"a":{"title":"A"}}}`)
	// A secret the schema does not type as a string is refused with the whole connector.
	describeOnly(t, dir, "leaky", `{"name":"leaky","version":"1.0.0","actions":{"a":{"title":"A"}},
		"credentials":{"key":{"title":"Key","schema":{"type":"object","properties":{"key":{"type":"object"}}},"secret":["key"]}}}`)
	cat, err := catalog.Load(context.Background(), dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if err := cat.Skipped()["leaky"]; err == nil || !strings.Contains(err.Error(), "/credentials/key/secret/0") {
		t.Fatalf("leaky: %v", err)
	}
	if got := cat.ConnectionTypes(); !slices.Equal(got, []string{"crm.apiToken"}) {
		t.Fatalf("connection types %v", got)
	}
	typ, ok := cat.ConnectionType("crm.apiToken")
	if !ok || typ.Connector != "crm" || !slices.Equal(typ.Secret, []string{"token"}) {
		t.Fatalf("crm.apiToken: %+v %v", typ, ok)
	}
	// The compiled schema is the manifest's, formats asserted.
	if _, ps := typ.Merge(nil, map[string]any{"url": "not a uri", "token": "t", "x": 1}); len(ps) != 2 {
		t.Fatalf("problems %v: want the url's format and the unknown field", ps)
	}
	for _, name := range []string{"crm.apiKey", "plain.apiToken", "leaky.key", "apiToken", "bearer"} {
		if _, ok := cat.ConnectionType(name); ok {
			t.Fatalf("%s is not a connection type any installed connector defines", name)
		}
	}
}
