package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/testrig"
)

func run(args ...string) (string, string, error) {
	var out, errb bytes.Buffer
	root := newRoot(&out, &errb)
	root.SetArgs(args)
	err := root.Execute()
	return out.String(), errb.String(), err
}

func TestValidateReportsEachDocument(t *testing.T) {
	out, errOut, err := run("validate", "../../deployments/examples/hello-flow.json", "../../schemas/testdata/flows/invalid/cycle.json")
	if err == nil || !strings.Contains(err.Error(), "1 of 2 documents are invalid") {
		t.Fatalf("want a failure naming the count, got %v", err)
	}
	if !strings.Contains(out, "hello-flow.json: ok") {
		t.Fatalf("stdout: %q", out)
	}
	if !strings.Contains(errOut, "cycle.json: /graph/edges/") || !strings.Contains(errOut, "(cycle)") {
		t.Fatalf("stderr: %q", errOut)
	}
}

func TestFlowsWithoutTokenSaysWhatToDo(t *testing.T) {
	t.Setenv("FLOWD_TOKEN", "")
	t.Setenv("FLOWD_ADMIN_TOKEN", "")
	_, _, err := run("flows", "list", "--token", "")
	if err == nil || !strings.Contains(err.Error(), "FLOWD_TOKEN") {
		t.Fatalf("got %v", err)
	}
}

func TestConnectorsInvokeRunsAnActionThroughTheHost(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"http": "github.com/flowd/flowd/connectors/http"})
	// The test server listens on loopback: allowed in the connectors' environment, as an
	// operator running `flowd connectors invoke` against a local service would.
	t.Setenv(egress.EnvAllow, "loopback")
	var gotKey string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotKey = r.Header.Get("Idempotency-Key")
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"hello":"world"}`))
	}))
	defer srv.Close()

	out, _, err := run("connectors", "invoke", "http", "request", "--connectors-dir", dir, "--config", `{"url":"`+srv.URL+`"}`)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Outputs []struct {
			Port string `json:"port"`
			Data struct {
				Status int            `json:"status"`
				Body   map[string]any `json:"body"`
			} `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output is not JSON: %q", out)
	}
	if len(res.Outputs) != 1 || res.Outputs[0].Port != "success" || res.Outputs[0].Data.Status != 200 || res.Outputs[0].Data.Body["hello"] != "world" {
		t.Fatalf("result: %s", out)
	}
	if !strings.HasPrefix(gotKey, "cli-") {
		t.Fatalf("Idempotency-Key %q", gotKey)
	}

	_, _, err = run("connectors", "invoke", "http", "request", "--connectors-dir", dir, "--config", `{"url":"ftp://nope"}`)
	if err == nil || !strings.Contains(err.Error(), "request failed (permanent)") {
		t.Fatalf("bad config: %v", err)
	}
	_, _, err = run("connectors", "invoke", "http", "request", "--connectors-dir", dir, "--config", `{not json`)
	if err == nil || !strings.Contains(err.Error(), "--config is not valid JSON") {
		t.Fatalf("malformed flag: %v", err)
	}
}

func TestReplicationSettingsAreCheckedAtStart(t *testing.T) {
	t.Setenv("FLOWD_KAFKA_REPLICATION_FACTOR", "three")
	_, _, err := run("router")
	if err == nil || err.Error() != `FLOWD_KAFKA_REPLICATION_FACTOR="three" is not a whole number` {
		t.Fatalf("got %v", err)
	}
}

// A replication factor given explicitly is never lowered to fit the cluster: on the rig's
// single broker, 3 stops the role with the reason.
func TestReplicationAboveTheClusterRefusesToStart(t *testing.T) {
	brokers := testrig.Kafka(t)
	redisURL := testrig.Redis(t)
	t.Setenv(busauth.EnvKey, testrig.BusKey())
	done := make(chan error, 1)
	go func() {
		_, _, err := run("router", "--kafka-brokers", strings.Join(brokers, ","), "--redis-url", redisURL,
			"--redis-prefix", testrig.Unique("t")+":", "--topic-prefix", testrig.Unique("t")+".", "--kafka-replication-factor", "3")
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || err.Error() != "kafka replication: replication factor 3 needs at least 3 brokers, and the cluster lists 1" {
			t.Fatalf("got %v", err)
		}
	case <-time.After(2 * time.Minute): // a bound for a role that wrongly started, not a timing check
		t.Fatal("the router started with a replication factor its cluster cannot give")
	}
}

// `flowd flows delete` succeeds on the API's 204 (it used to fail decoding the empty body).
func TestFlowsDeleteSucceedsOnNoContent(t *testing.T) {
	var got string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got = r.Method + " " + r.URL.Path + " " + r.Header.Get("Authorization")
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	out, _, err := run("flows", "delete", "f1", "--server", srv.URL, "--token", "tok")
	if err != nil || out != "flow f1 deleted\n" || got != "DELETE /api/v1/flows/f1 Bearer tok" {
		t.Fatalf("out %q, err %v, request %q", out, err, got)
	}
}

// --help never prints the token from the environment.
func TestHelpDoesNotShowTheToken(t *testing.T) {
	t.Setenv("FLOWD_TOKEN", "fld_secret-token-value")
	out, _, err := run("flows", "list", "--help")
	if err != nil || !strings.Contains(out, "--token") || strings.Contains(out, "fld_secret-token-value") {
		t.Fatalf("help %q, err %v", out, err)
	}
	// The environment's token is still what the commands use.
	var auth string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth = r.Header.Get("Authorization")
		_, _ = w.Write([]byte(`{"data":[],"meta":{"total":0}}`))
	}))
	defer srv.Close()
	if _, _, err := run("flows", "list", "--server", srv.URL); err != nil || auth != "Bearer fld_secret-token-value" {
		t.Fatalf("list: %v, Authorization %q", err, auth)
	}
}

// The banner's curls work when pasted into a shell: the token variable is expanded (it sat in
// single quotes, which sent the literal "$FLOWD_ADMIN_TOKEN" and got 401).
func TestBannerCurlExpandsTheTokenVariable(t *testing.T) {
	script := "FLOWD_ADMIN_TOKEN=fld_x\nset -- " + curlAuth("$FLOWD_ADMIN_TOKEN") + "\nprintf '%s|%s' \"$1\" \"$2\""
	out, err := exec.Command("sh", "-c", script).Output()
	if err != nil || string(out) != "-H|Authorization: Bearer fld_x" {
		t.Fatalf("the shell sees %q (%v)", out, err)
	}
}

// flowd validate checks connector nodes against the installed connectors, as the API does (it
// passed an unknown connector the API rejects).
func TestValidateChecksConnectors(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"http": "github.com/flowd/flowd/connectors/http"})
	flow := func(connector string) string {
		path := filepath.Join(t.TempDir(), connector+".json")
		doc := `{"name":"v","graph":{"nodes":[{"id":"hook","type":"trigger.webhook"},
			{"id":"call","type":"action","connector":"` + connector + `","action":"request","config":{"url":"https://example.com"}}],
			"edges":[{"source":"hook","target":"call"}]}}`
		if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good, unknown := flow("http"), flow("nope")
	if out, _, err := run("validate", "--connectors-dir", dir, good); err != nil || !strings.HasSuffix(out, ": ok\n") {
		t.Fatalf("a flow using an installed connector: %q %v", out, err)
	}
	_, errOut, err := run("validate", "--connectors-dir", dir, unknown)
	if err == nil || !strings.Contains(errOut, "/graph/nodes/1/connector") || !strings.Contains(errOut, "nope") {
		t.Fatalf("an unknown connector: %q %v", errOut, err)
	}
}
