package controlplane_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/controlplane"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// crmCatalog installs a connector crm defining the connection type crm.apiToken: a URL, a
// secret token, an optional region. The connector is a script answering `describe`, which is
// all the API role asks of a connector.
func crmCatalog(t *testing.T) *catalog.Catalog {
	t.Helper()
	dir := t.TempDir()
	manifest := `{"name":"crm","version":"1.0.0","actions":{"sync":{"title":"Sync"}},
		"credentials":{"apiToken":{"title":"API token","schema":{
			"type":"object","additionalProperties":false,"required":["url","token"],
			"properties":{"url":{"type":"string","format":"uri"},"token":{"type":"string","minLength":1},"region":{"enum":["eu","us"]}}},
			"secret":["token"]}}}`
	script := "#!/bin/sh\n[ \"$1\" = describe ] || exit 2\ncat <<'EOF'\n" + manifest + "\nEOF\n"
	if err := os.WriteFile(filepath.Join(dir, "crm"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	cat, err := catalog.Load(context.Background(), dir, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if len(cat.Skipped()) > 0 || len(cat.ConnectionTypes()) != 1 {
		t.Fatalf("catalog: skipped %v, types %v", cat.Skipped(), cat.ConnectionTypes())
	}
	return cat
}

func TestConnectorDefinedConnectionTypes(t *testing.T) {
	e := newEnv(t, withCatalog(crmCatalog(t)))
	rec := &recorder{env: e}
	aliceID, alice := e.user(e.tenant("acme"), "alice")
	token, rotated := "tok-"+testrig.Unique("s3cr3t"), "tok2-"+testrig.Unique("s3cr3t")

	masked := func(what string, v map[string]any) {
		t.Helper()
		d, _ := v["data"].(map[string]any)
		if v["type"] != "crm.apiToken" || d["token"] != connections.Mask || d["url"] != "https://crm.example/api" ||
			fmt.Sprint(v["secretFields"]) != "[token]" {
			t.Fatalf("%s: %v", what, v)
		}
	}
	created := e.must(201, rec.do("POST", "/api/v1/connections", alice, map[string]any{
		"name": "crm prod", "type": "crm.apiToken", "data": map[string]any{"url": "https://crm.example/api", "token": token}})).data()
	masked("create", created)
	id := created["id"].(string)
	masked("get", e.must(200, rec.do("GET", "/api/v1/connections/"+id, alice, nil)).data())
	l := e.must(200, rec.do("GET", "/api/v1/connections?filter[type]=crm.apiToken", alice, nil)).list()
	if len(l) != 1 {
		t.Fatalf("filter[type]=crm.apiToken: %d connections", len(l))
	}
	masked("list", l[0].(map[string]any))
	if l := e.must(200, rec.do("GET", "/api/v1/connections?filter[type]=bearer", alice, nil)).list(); len(l) != 0 {
		t.Fatalf("filter[type]=bearer: %d connections", len(l))
	}

	storedToken := func() string {
		t.Helper()
		c, err := e.st.Connection(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if _, inClear := c.Fields["token"]; inClear {
			t.Fatalf("the token is stored among the plain fields: %v", c.Fields)
		}
		pt, err := e.keys.Decrypt(c.Secrets["token"], store.ConnectionAAD(id, "token"))
		if err != nil {
			t.Fatal(err)
		}
		return string(pt)
	}
	if storedToken() != token {
		t.Fatal("the stored token is not the one sent")
	}

	// PATCH: the GET response sent back (mask and all) keeps the token; a new one replaces it.
	got := e.must(200, rec.do("GET", "/api/v1/connections/"+id, alice, nil)).data()
	got["data"].(map[string]any)["region"] = "eu"
	p := e.must(200, rec.do("PATCH", "/api/v1/connections/"+id, alice, got)).data()
	masked("patch", p)
	if p["data"].(map[string]any)["region"] != "eu" || storedToken() != token {
		t.Fatalf("a masked PATCH changed the token or lost the region: %v", p)
	}
	masked("patch", e.must(200, rec.do("PATCH", "/api/v1/connections/"+id, alice, map[string]any{"data": map[string]any{"token": rotated}})).data())
	if storedToken() != rotated {
		t.Fatal("the new token was not stored")
	}
	if r := e.must(400, rec.do("PATCH", "/api/v1/connections/"+id, alice, map[string]any{"data": map[string]any{"token": nil, "region": "mars"}})); codes(r) != "enum@/data/region required@/data/token" {
		t.Fatalf("bad PATCH: %s", r.raw)
	}

	// A runner resolving it for a crm step gets the token decrypted.
	res := connections.NewResolver(e.st, e.keys, nil, nil)
	conn, err := res.Resolve(context.Background(), id, "crm", []flowdoc.Owner{{ID: aliceID, Type: flowdoc.OwnerUser}})
	if err != nil || conn.Type != "crm.apiToken" || conn.Data["token"] != rotated || conn.Data["region"] != "eu" {
		t.Fatalf("resolved %+v, %v", conn, err)
	}

	// An API role without the connector keeps serving the connection but cannot check new data.
	bare := *e
	bare.app = controlplane.New(controlplane.Config{Store: e.st, Relay: nopRelay{}, Secrets: e.keys, Now: time.Now})
	brec := &recorder{env: &bare}
	if r := bare.must(400, brec.do("PATCH", "/api/v1/connections/"+id, alice, map[string]any{"data": map[string]any{"region": "us"}})); codes(r) != "type_unavailable@/data" {
		t.Fatalf("data PATCH without the connector: %s", r.raw)
	}
	masked("rename without the connector", bare.must(200, brec.do("PATCH", "/api/v1/connections/"+id, alice, map[string]any{"name": "crm old"})).data())
	if storedToken() != rotated {
		t.Fatal("a rename changed the token")
	}
	rec.bodies = append(rec.bodies, brec.bodies...)

	for i, b := range rec.bodies {
		for _, s := range []string{token, rotated} {
			if bytes.Contains(b, []byte(s)) {
				t.Fatalf("response %d reveals the token: %s", i, b)
			}
		}
	}
	dump := e.redisDump()
	if !strings.Contains(dump, "https://crm.example/api") {
		t.Fatal("the Redis dump misses the connection record")
	}
	if strings.Contains(dump, token) || strings.Contains(dump, rotated) {
		t.Fatal("Redis holds the token in clear")
	}
}

func TestConnectorDefinedTypeValidation(t *testing.T) {
	e := newEnv(t, withCatalog(crmCatalog(t)))
	_, alice := e.user(e.tenant("acme"), "alice")
	before := e.snapshot()
	create := func(typ string, data map[string]any) resp {
		body := map[string]any{"name": "crm", "type": typ}
		if data != nil {
			body["data"] = data
		}
		return e.call("POST", "/api/v1/connections", alice, body)
	}
	for _, tc := range []struct {
		name string
		data map[string]any
		want []string
	}{
		{"missing required field", map[string]any{"url": "https://crm.example/api"}, []string{"required@/data/token"}},
		{"wrong type", map[string]any{"url": 42, "token": "t"}, []string{"type@/data/url"}},
		{"unknown field", map[string]any{"url": "https://crm.example/api", "token": "t", "extra": 1}, []string{"additional_property@/data/extra"}},
		{"bad format", map[string]any{"url": "no url", "token": "t"}, []string{"format@/data/url"}},
		{"mask as a value", map[string]any{"url": "https://crm.example/api", "token": connections.Mask}, []string{"masked_value@/data/token"}},
		{"no data", nil, []string{"required@/data/token", "required@/data/url"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.on(t).must(400, create("crm.apiToken", tc.data))
			got := r.errCodes()
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	// An unknown type names what is known, connector-defined types included.
	for _, typ := range []string{"crm.apiKey", "ftp.login", "kerberos"} {
		r := e.must(400, create(typ, map[string]any{"token": "t"}))
		errs, _ := r.body["errors"].([]any)
		if codes(r) != "invalid@/type" || len(errs) != 1 {
			t.Fatalf("%s: %s", typ, r.raw)
		}
		msg, _ := errs[0].(map[string]any)["message"].(string)
		for _, want := range []string{"api_key, basic, bearer, oauth2", "<connector>.<name>", "crm.apiToken"} {
			if !strings.Contains(msg, want) {
				t.Fatalf("%s: message %q does not mention %q", typ, msg, want)
			}
		}
	}
	if after := e.snapshot(); after != before {
		t.Fatal("rejected requests changed stored state")
	}
}

// Without the defining connector installed on the API role, its type cannot be created, and
// the message says no installed connector defines one.
func TestConnectorDefinedTypeNeedsItsConnector(t *testing.T) {
	e := newEnv(t)
	r := e.must(400, e.call("POST", "/api/v1/connections", e.admin, map[string]any{"name": "crm", "type": "crm.apiToken", "data": map[string]any{}}))
	if codes(r) != "invalid@/type" || !strings.Contains(string(r.raw), "no installed connector defines one") {
		t.Fatalf("%s", r.raw)
	}
}
