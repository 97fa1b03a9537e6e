package catalog_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/internal/flowdoc"
)

func TestCatalogDrivesFlowValidation(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{
		"code":      "github.com/flowd/flowd/connectors/code",
		"http":      "github.com/flowd/flowd/connectors/http",
		"transform": "github.com/flowd/flowd/connectors/transform",
	})
	// A binary that is not a connector is skipped and reported, not fatal.
	if err := os.WriteFile(filepath.Join(dir, "broken"), []byte("#!/bin/sh\necho nope; exit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Load(context.Background(), dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range cat.Manifests() {
		names = append(names, m.Name)
	}
	if strings.Join(names, ",") != "code,http,transform" {
		t.Fatalf("manifests: %v", names)
	}
	if _, ok := cat.Skipped()["broken"]; !ok || len(cat.Skipped()) != 1 {
		t.Fatalf("skipped: %v", cat.Skipped())
	}

	doc := func(connector, action, config string) []byte {
		return []byte(`{"name":"x","graph":{"nodes":[{"id":"hook","type":"trigger.webhook"},
			{"id":"a","type":"action","connector":"` + connector + `","action":"` + action + `","config":` + config + `}],
			"edges":[{"source":"hook","target":"a","port":""}]}}`)
	}
	cases := []struct {
		name, doc, want string
	}{
		{"valid", string(doc("http", "request", `{"url":"https://example.com","method":"POST"}`)), ""},
		{"template values are checked at run time", string(doc("http", "request", `{"url":"{{ input.url }}"}`)), ""},
		{"unknown connector", string(doc("ftp", "get", `{}`)), "unknown_connector@/graph/nodes/1/connector"},
		{"unknown action", string(doc("http", "teleport", `{}`)), "unknown_action@/graph/nodes/1/action"},
		{"config against the connector's schema", string(doc("http", "request", `{"url":42}`)), "invalid_config@/graph/nodes/1/config"},
		{"missing required config", string(doc("transform", "map", `{}`)), "invalid_config@/graph/nodes/1/config"},
		// code marks source raw: its `{{` is JavaScript, never compiled as a template.
		{"a raw field holds no template", string(doc("code", "run", `{"source":"return '{{ not an expression';","timeoutMs":"{{ input.ms }}"}`)), ""},
		{"the other fields are templates", string(doc("code", "run", `{"source":"return 1;","emit":"{{ input.emit"}`)), "invalid_expression@/graph/nodes/1/config/emit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, ps := flowdoc.Decode([]byte(tc.doc), cat.ValidationOptions())
			var got []string
			for _, p := range ps {
				got = append(got, p.Code+"@"+p.Path)
			}
			joined := strings.Join(got, " ")
			if tc.want == "" && len(ps) > 0 {
				t.Fatalf("want no problems, got %v", got)
			}
			if tc.want != "" && !strings.Contains(joined, tc.want) {
				t.Fatalf("want %s among %v", tc.want, got)
			}
		})
	}
}

func TestMissingDirIsAnEmptyCatalog(t *testing.T) {
	cat, err := catalog.Load(context.Background(), filepath.Join(t.TempDir(), "none"), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil || cat.Len() != 0 {
		t.Fatalf("got %d connectors, %v", cat.Len(), err)
	}
	if _, ps := flowdoc.Decode([]byte(`{"name":"x","graph":{"nodes":[{"id":"h","type":"trigger.webhook"},{"id":"a","type":"action","connector":"any","action":"thing"}],"edges":[{"source":"h","target":"a"}]}}`), cat.ValidationOptions()); len(ps) > 0 {
		t.Fatalf("an empty catalog must not reject connectors: %v", ps)
	}
}

// TestReload: a catalog reloaded sees connectors installed and removed since it was loaded,
// through the validation options taken before.
func TestReload(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dir := t.TempDir()
	cat, err := catalog.Load(context.Background(), dir, log)
	if err != nil || cat.Len() != 0 {
		t.Fatalf("empty dir: %d connectors, %v", cat.Len(), err)
	}
	opts := cat.ValidationOptions()
	flow := []byte(`{"name":"x","graph":{"nodes":[{"id":"h","type":"trigger.webhook"},{"id":"a","type":"action","connector":"ftp","action":"get"}],"edges":[{"source":"h","target":"a"}]}}`)
	if _, ps := flowdoc.Decode(flow, opts); len(ps) > 0 {
		t.Fatalf("nothing installed: %v", ps)
	}

	// Installed the safe way: built beside, renamed in.
	staging := t.TempDir()
	hosttest.Build(t, staging, map[string]string{"transform": "github.com/flowd/flowd/connectors/transform"})
	if err := os.Rename(filepath.Join(staging, "transform"), filepath.Join(dir, "transform")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ".transform.tmp"), []byte("#!/bin/sh\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := cat.Reload(context.Background(), log); err != nil {
		t.Fatal(err)
	}
	if _, ok := cat.Get("transform"); !ok || cat.Len() != 1 || len(cat.Skipped()) != 0 {
		t.Fatalf("after install and reload: %v, skipped %v", cat.Manifests(), cat.Skipped())
	}
	if _, ps := flowdoc.Decode(flow, opts); len(ps) != 1 || ps[0].Code != "unknown_connector" {
		t.Fatalf("with transform installed, ftp: %v, want unknown_connector", ps)
	}

	if err := os.Remove(filepath.Join(dir, "transform")); err != nil {
		t.Fatal(err)
	}
	if err := cat.Reload(context.Background(), log); err != nil || cat.Len() != 0 {
		t.Fatalf("after removal: %d connectors, %v", cat.Len(), err)
	}
}
