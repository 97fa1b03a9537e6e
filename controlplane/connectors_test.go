package controlplane_test

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/connectors/host/hosttest"
)

func TestConnectorDiscoveryAndValidation(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{
		"http":      "github.com/flowd/flowd/connectors/http",
		"transform": "github.com/flowd/flowd/connectors/transform",
	})
	cat, err := catalog.Load(context.Background(), dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, withCatalog(cat))
	l := e.must(200, e.call("GET", "/api/v1/connectors", e.admin, nil))
	if len(l.list()) != 2 || l.list()[0].(map[string]any)["name"] != "http" {
		t.Fatalf("connectors: %s", l.raw)
	}
	m := e.must(200, e.call("GET", "/api/v1/connectors/http", e.admin, nil)).data()
	if _, ok := m["actions"].(map[string]any)["request"]; !ok {
		t.Fatalf("manifest: %v", m)
	}
	e.must(404, e.call("GET", "/api/v1/connectors/ftp", e.admin, nil))
	_, noComponents := e.user(e.tenant("acme"), "builder", "flows.read")
	e.must(403, e.call("GET", "/api/v1/connectors", noComponents, nil))

	// The example flow uses http request with a valid config: accepted. A config the
	// connector's schema refuses is a 400 with the path into the node's config.
	e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t)))
	bad := strings.Replace(string(readmeFlow(t)), `"method": "POST"`, `"method": 42`, 1)
	r := e.must(400, e.call("POST", "/api/v1/flows", e.admin, bad))
	if !strings.Contains(strings.Join(r.errCodes(), " "), "invalid_config@/graph/nodes/2/config/method") {
		t.Fatalf("bad config: %s", r.raw)
	}
	// A missing required field and a field the schema does not allow: each refused, at its
	// own path, as the plugin host refuses such a call.
	for _, tc := range []struct{ from, to, want string }{
		{`"url": "http://127.0.0.1:8080/dev/echo",`, ``, "invalid_config@/graph/nodes/2/config/url"},
		{`"method": "POST"`, `"method": "POST", "colour": "red"`, "invalid_config@/graph/nodes/2/config/colour"},
		{`"fields": {`, `"colour": "red", "fields": {`, "invalid_config@/graph/nodes/3/config/colour"},
	} {
		bad := strings.Replace(string(readmeFlow(t)), tc.from, tc.to, 1)
		r := e.must(400, e.call("POST", "/api/v1/flows", e.admin, bad))
		if got := r.errCodes(); len(got) != 1 || got[0] != tc.want {
			t.Fatalf("config with %q: problems %v, want [%s]: %s", tc.to, got, tc.want, r.raw)
		}
	}
}
