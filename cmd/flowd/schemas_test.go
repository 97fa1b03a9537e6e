package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/host/hosttest"
)

// `flowd connectors invoke` refuses a config the action's schema refuses before the
// connector runs: non-zero exit, the problem's path in the error and in the printed result.
// The http connector would call the test server if its handler ran; the server counts calls.
func TestConnectorsInvokeRefusesConfigTheSchemaRefuses(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"http": "github.com/flowd/flowd/connectors/http"})
	t.Setenv(egress.EnvAllow, "loopback")
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()

	for _, tc := range []struct{ name, config, path, code string }{
		{"missing required", `{"method":"GET"}`, "/config/url", "required"},
		{"unknown field", `{"url":"` + srv.URL + `","colour":"red"}`, "/config/colour", "additional_property"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, _, err := run("connectors", "invoke", "http", "request", "--connectors-dir", dir, "--config", tc.config)
			if err == nil || !strings.Contains(err.Error(), "request failed (permanent): invalid_config") || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("want a permanent invalid_config naming %s, got %v", tc.path, err)
			}
			var res struct {
				Error struct {
					Code     string `json:"code"`
					Problems []struct {
						Code string `json:"code"`
						Path string `json:"path"`
					} `json:"problems"`
				} `json:"error"`
			}
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatalf("output is not JSON: %q", out)
			}
			if p := res.Error.Problems; res.Error.Code != "invalid_config" || len(p) != 1 || p[0].Path != tc.path || p[0].Code != tc.code {
				t.Fatalf("printed result %s, want one %s problem at %s", out, tc.code, tc.path)
			}
		})
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("the connector ran a refused config: the server got %d requests", n)
	}
	// The same call with a valid config does reach the server: the count above means something.
	if _, _, err := run("connectors", "invoke", "http", "request", "--connectors-dir", dir, "--config", `{"url":"`+srv.URL+`"}`); err != nil || hits.Load() != 1 {
		t.Fatalf("valid config: %v, %d requests", err, hits.Load())
	}
}

// `flowd validate --connectors-dir` checks action and poll trigger configs against the
// connectors' schemas, as the API does: one line per problem with its path, non-zero exit.
func TestValidateChecksConnectorConfig(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"http": "github.com/flowd/flowd/connectors/http"})
	file := filepath.Join(t.TempDir(), "flow.json")
	doc := `{"name":"v","graph":{"nodes":[
		{"id":"orders","type":"trigger.poll","connector":"http","trigger":"poll","config":{"url":"https://example.com","page":2}},
		{"id":"call","type":"action","connector":"http","action":"request","config":{"method":"POST","colour":"red"}}],
		"edges":[{"source":"orders","target":"call"}]}}`
	if err := os.WriteFile(file, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errOut, err := run("validate", "--connectors-dir", dir, file)
	if err == nil || !strings.Contains(err.Error(), "1 of 1 documents are invalid") || out != "" {
		t.Fatalf("want a failure, got %v (stdout %q)", err, out)
	}
	lines := strings.Split(strings.TrimSpace(errOut), "\n")
	want := []string{
		file + `: /graph/nodes/0/config/page: property "page" is not allowed here (invalid_config)`,
		file + `: /graph/nodes/1/config/colour: property "colour" is not allowed here (invalid_config)`,
		file + `: /graph/nodes/1/config/url: missing required property "url" (invalid_config)`,
	}
	if strings.Join(lines, "\n") != strings.Join(want, "\n") {
		t.Fatalf("stderr:\n%s\nwant:\n%s", errOut, strings.Join(want, "\n"))
	}

	// A directory named on purpose that is not there is an error, not a silent pass.
	if _, _, err := run("validate", "--connectors-dir", filepath.Join(dir, "missing"), file); err == nil || !strings.Contains(err.Error(), "--connectors-dir") {
		t.Fatalf("missing --connectors-dir: %v", err)
	}
}
