package controlplane_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/controlplane"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// lockedBuffer collects log lines written from many request goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// recorder remembers every response body, to search them all for secrets afterwards.
type recorder struct {
	*env
	bodies [][]byte
}

func (r *recorder) do(method, path, token string, body any) resp {
	r.t.Helper()
	res := r.call(method, path, token, body)
	r.bodies = append(r.bodies, res.raw)
	return res
}

// redisDump is every key and value under the env's prefix, whatever the type.
func (e *env) redisDump() string {
	e.t.Helper()
	ctx := context.Background()
	var b strings.Builder
	iter := e.rdb.Scan(ctx, 0, e.prefix+"*", 200).Iterator()
	n := 0
	for iter.Next(ctx) {
		k := iter.Val()
		n++
		fmt.Fprintf(&b, "%s=", k)
		switch typ := e.rdb.Type(ctx, k).Val(); typ {
		case "string":
			b.WriteString(e.rdb.Get(ctx, k).Val())
		case "hash":
			fmt.Fprint(&b, e.rdb.HGetAll(ctx, k).Val())
		case "set":
			fmt.Fprint(&b, e.rdb.SMembers(ctx, k).Val())
		case "zset":
			fmt.Fprint(&b, e.rdb.ZRange(ctx, k, 0, -1).Val())
		case "list":
			fmt.Fprint(&b, e.rdb.LRange(ctx, k, 0, -1).Val())
		case "stream":
			fmt.Fprint(&b, e.rdb.XRange(ctx, k, "-", "+").Val())
		default:
			e.t.Fatalf("key %s has type %s the scan does not read", k, typ)
		}
		b.WriteString("\n")
	}
	if err := iter.Err(); err != nil {
		e.t.Fatal(err)
	}
	if n == 0 {
		e.t.Fatal("no keys under the prefix: the scan looks in the wrong place")
	}
	return b.String()
}

func codes(r resp) string { return strings.Join(r.errCodes(), " ") }

func TestConnectionsNeverRevealTheirSecrets(t *testing.T) {
	logs := &lockedBuffer{}
	e := newEnv(t, withLog(slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))))
	rec := &recorder{env: e}
	ta, tb := e.tenant("acme"), e.tenant("globex")
	aliceID, alice := e.user(ta, "alice")
	_, bob := e.user(ta, "bob")
	_, mallory := e.user(tb, "mallory")
	_, reader := e.user(ta, "reader", "flows.read")

	sec := func(name string) string { return name + "-" + testrig.Unique("s3cr3t") }
	password, apiKey, bearer := sec("pw"), sec("key"), sec("bearer")
	ccSecret, acSecret, access, refresh := sec("cs"), sec("cs"), sec("at"), sec("rt")
	newPassword := sec("pw2")
	all := []string{password, apiKey, bearer, ccSecret, acSecret, access, refresh, newPassword}

	// Create one of each type.
	type created struct {
		id      string
		secrets []string
	}
	mk := func(name, typ string, shared bool, data map[string]any, wantSecrets ...string) created {
		t.Helper()
		r := rec.do("POST", "/api/v1/connections", alice, map[string]any{"name": name, "type": typ, "shared": shared, "data": data})
		e.must(201, r)
		d := r.data()
		got := fmt.Sprint(d["secretFields"])
		if got != fmt.Sprint(wantSecrets) || d["owner"] != aliceID || d["type"] != typ || d["shared"] != shared {
			t.Fatalf("%s: %s", name, r.raw)
		}
		for _, f := range wantSecrets {
			if d["data"].(map[string]any)[f] != connections.Mask {
				t.Fatalf("%s: %s not masked: %s", name, f, r.raw)
			}
		}
		if r.header.Get("Location") != "/api/v1/connections/"+d["id"].(string) {
			t.Fatalf("Location %q", r.header.Get("Location"))
		}
		return created{id: d["id"].(string), secrets: wantSecrets}
	}
	basic := mk("Billing API", "basic", false, map[string]any{"username": "billing-svc", "password": password}, "password")
	key := mk("key", "api_key", false, map[string]any{"key": apiKey}, "key")
	shared := mk("shared bearer", "bearer", true, map[string]any{"token": bearer}, "token")
	cc := mk("cc", "oauth2", false, map[string]any{"grant": "client_credentials", "tokenUrl": "https://auth.example.com/token", "clientId": "svc", "clientSecret": ccSecret, "scopes": []string{"read", "write"}}, "clientSecret")
	ac := mk("ac", "oauth2", false, map[string]any{
		"grant": "authorization_code", "tokenUrl": "https://auth.example.com/token", "clientId": "app",
		"clientSecret": acSecret, "accessToken": access, "refreshToken": refresh, "expiresAt": "2030-01-02T15:04:05Z",
	}, "accessToken", "clientSecret", "refreshToken")

	k := e.must(200, rec.do("GET", "/api/v1/connections/"+key.id, alice, nil)).data()["data"].(map[string]any)
	if k["header"] != "X-API-Key" {
		t.Fatalf("api_key default header: %v", k)
	}
	a := e.must(200, rec.do("GET", "/api/v1/connections/"+ac.id, alice, nil)).data()["data"].(map[string]any)
	if a["expiresAt"] != "2030-01-02T15:04:05Z" || a["clientId"] != "app" || a["grant"] != "authorization_code" {
		t.Fatalf("oauth2 fields: %v", a)
	}

	// The secrets really are stored, sealed for their record.
	stored, err := e.st.Connection(context.Background(), basic.id)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := e.keys.Decrypt(stored.Secrets["password"], store.ConnectionAAD(basic.id, "password")); err != nil || string(pt) != password {
		t.Fatalf("stored password does not open: %v", err)
	}
	if _, err := e.keys.Decrypt(stored.Secrets["password"], store.ConnectionAAD(key.id, "password")); err == nil {
		t.Fatal("a ciphertext opens for another connection")
	}

	// Lists: own plus shared with the tenant, filters, paging.
	l := e.must(200, rec.do("GET", "/api/v1/connections?page[size]=2&sort=name", alice, nil))
	if meta := l.body["meta"].(map[string]any); meta["total"] != float64(5) || meta["totalPages"] != float64(3) || len(l.list()) != 2 ||
		l.list()[0].(map[string]any)["name"] != "Billing API" {
		t.Fatalf("alice's list: %s", l.raw)
	}
	if l := e.must(200, rec.do("GET", "/api/v1/connections?filter[type]=oauth2", alice, nil)).list(); len(l) != 2 {
		t.Fatalf("filter[type]=oauth2: %d", len(l))
	}
	if r := e.must(400, rec.do("GET", "/api/v1/connections?filter[type]=ftp", alice, nil)); codes(r) != "invalid_parameter@filter[type]" {
		t.Fatalf("bad filter: %s", r.raw)
	}
	l = e.must(200, rec.do("GET", "/api/v1/connections", bob, nil))
	if len(l.list()) != 1 || l.list()[0].(map[string]any)["id"] != shared.id {
		t.Fatalf("bob sees: %s", l.raw)
	}

	// Shared: visible to the tenant, changed only by the owner. Private: invisible.
	e.must(200, rec.do("GET", "/api/v1/connections/"+shared.id, bob, nil))
	if r := e.must(403, rec.do("PATCH", "/api/v1/connections/"+shared.id, bob, map[string]any{"name": "mine"})); codes(r) != "not_owner@" {
		t.Fatalf("bob patches: %s", r.raw)
	}
	e.must(403, rec.do("DELETE", "/api/v1/connections/"+shared.id, bob, nil))
	e.must(404, rec.do("GET", "/api/v1/connections/"+basic.id, bob, nil))
	for _, c := range []created{basic, key, shared, cc, ac} {
		e.must(404, rec.do("GET", "/api/v1/connections/"+c.id, mallory, nil))
		e.must(404, rec.do("PATCH", "/api/v1/connections/"+c.id, mallory, map[string]any{"name": "mine"}))
		e.must(404, rec.do("DELETE", "/api/v1/connections/"+c.id, mallory, nil))
		// Not even the administrator sees another user's private credentials.
		if c.id != shared.id {
			e.must(404, rec.do("GET", "/api/v1/connections/"+c.id, e.admin, nil))
		}
	}
	if l := e.must(200, rec.do("GET", "/api/v1/connections", mallory, nil)).list(); len(l) != 0 {
		t.Fatalf("mallory sees %d connections", len(l))
	}
	e.must(403, rec.do("GET", "/api/v1/connections", reader, nil))
	e.must(403, rec.do("POST", "/api/v1/connections", reader, map[string]any{"name": "x", "type": "bearer", "data": map[string]any{"token": "t"}}))

	// Names are unique per owner (ignoring case); another owner may reuse one.
	if r := e.must(409, rec.do("POST", "/api/v1/connections", alice, map[string]any{"name": "billing api", "type": "bearer", "data": map[string]any{"token": bearer}})); codes(r) != "exists@/name" {
		t.Fatalf("duplicate name: %s", r.raw)
	}
	e.must(201, rec.do("POST", "/api/v1/connections", bob, map[string]any{"name": "Billing API", "type": "bearer", "data": map[string]any{"token": bearer}}))
	e.must(409, rec.do("PATCH", "/api/v1/connections/"+key.id, alice, map[string]any{"name": "BILLING API"}))

	// PATCH: a new secret replaces the old; the mask sent back keeps it.
	p := e.must(200, rec.do("PATCH", "/api/v1/connections/"+basic.id, alice, map[string]any{"name": "Billing", "data": map[string]any{"password": newPassword}})).data()
	if p["name"] != "Billing" || p["data"].(map[string]any)["password"] != connections.Mask {
		t.Fatalf("after PATCH: %v", p)
	}
	got := e.must(200, rec.do("GET", "/api/v1/connections/"+basic.id, alice, nil)).data()
	got["data"].(map[string]any)["username"] = "billing-svc-2"
	e.must(200, rec.do("PATCH", "/api/v1/connections/"+basic.id, alice, got)) // the whole GET response, masks and all
	stored, _ = e.st.Connection(context.Background(), basic.id)
	if pt, _ := e.keys.Decrypt(stored.Secrets["password"], store.ConnectionAAD(basic.id, "password")); string(pt) != newPassword || stored.Fields["username"] != "billing-svc-2" {
		t.Fatalf("round-trip PATCH changed the secret or lost the username: %v", stored.Fields)
	}
	e.must(201, rec.do("POST", "/api/v1/connections", alice, map[string]any{"name": "billing api", "type": "bearer", "data": map[string]any{"token": bearer}})) // the old name is free again
	r := e.must(400, rec.do("PATCH", "/api/v1/connections/"+basic.id, alice, map[string]any{"type": "bearer", "data": map[string]any{"password": nil}}))
	if c := codes(r); !strings.Contains(c, "immutable@/type") || !strings.Contains(c, "required@/data/password") {
		t.Fatalf("bad PATCH: %s", r.raw)
	}
	// Switching grant drops the tokens that belonged to the old one.
	sw := e.must(200, rec.do("PATCH", "/api/v1/connections/"+ac.id, alice, map[string]any{"data": map[string]any{"grant": "client_credentials"}})).data()
	if fmt.Sprint(sw["secretFields"]) != "[clientSecret]" || sw["data"].(map[string]any)["expiresAt"] != nil {
		t.Fatalf("after switching grant: %v", sw)
	}

	// Delete: owner only, then gone everywhere.
	e.must(204, rec.do("DELETE", "/api/v1/connections/"+key.id, alice, nil))
	e.must(404, rec.do("GET", "/api/v1/connections/"+key.id, alice, nil))
	e.must(404, rec.do("DELETE", "/api/v1/connections/"+key.id, alice, nil))

	for i, b := range rec.bodies {
		for _, s := range all {
			if bytes.Contains(b, []byte(s)) {
				t.Fatalf("response %d reveals a secret: %s", i, b)
			}
		}
	}
	dump := e.redisDump()
	if !strings.Contains(dump, "billing-svc-2") {
		t.Fatal("the Redis dump misses the connection records")
	}
	for _, s := range all {
		if strings.Contains(dump, s) {
			t.Fatalf("Redis holds a secret in clear")
		}
	}
	if !strings.Contains(logs.String(), basic.id) {
		t.Fatal("the captured log misses the connection events: the search would prove nothing")
	}
	for _, s := range all {
		if strings.Contains(logs.String(), s) {
			t.Fatalf("the log holds a secret in clear")
		}
	}
}

func TestConnectionValidationReportsEveryProblem(t *testing.T) {
	e := newEnv(t)
	ta := e.tenant("acme")
	_, alice := e.user(ta, "alice")
	_, loner := e.user("", "loner")
	before := e.snapshot()
	cases := []struct {
		name string
		tok  string
		body any
		want []string
	}{
		{"many at once", alice, map[string]any{"name": "", "type": "oauth2", "colour": "red", "data": map[string]any{
			"grant": "client_credentials", "tokenUrl": "ftp://x", "clientId": 5, "extra": 1, "accessToken": "x"}},
			[]string{"required@/name", "unknown_field@/colour", "invalid@/data/tokenUrl", "invalid_type@/data/clientId", "required@/data/clientSecret", "unknown_field@/data/extra", "not_allowed@/data/accessToken"}},
		{"unknown type", alice, map[string]any{"name": "x", "type": "kerberos"}, []string{"invalid@/type"}},
		{"missing fields", alice, map[string]any{"name": "x", "type": "basic", "data": map[string]any{"password": ""}}, []string{"required@/data/username", "required@/data/password"}},
		{"mask as a value", alice, map[string]any{"name": "x", "type": "bearer", "data": map[string]any{"token": connections.Mask}}, []string{"masked_value@/data/token"}},
		{"bad header and types", alice, map[string]any{"name": "x\n", "type": "api_key", "shared": "yes", "data": map[string]any{"header": "X Key", "key": "k"}}, []string{"invalid@/name", "invalid_type@/shared", "invalid@/data/header"}},
		{"bad grant", alice, map[string]any{"name": "x", "type": "oauth2", "data": map[string]any{"grant": "password", "clientSecret": "s"}}, []string{"invalid@/data/grant", "required@/data/tokenUrl", "required@/data/clientId"}},
		{"bad expiry", alice, map[string]any{"name": "x", "type": "oauth2", "data": map[string]any{"grant": "authorization_code", "tokenUrl": "https://a/t", "clientId": "c", "refreshToken": "r", "expiresAt": "tomorrow"}}, []string{"invalid@/data/expiresAt"}},
		{"sharing without a tenant", loner, map[string]any{"name": "x", "type": "bearer", "shared": true, "data": map[string]any{"token": "t"}}, []string{"no_tenant@/shared"}},
		{"not JSON", alice, `{"name":`, []string{"malformed@"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := e.on(t)
			r := e.must(400, e.call("POST", "/api/v1/connections", tc.tok, tc.body))
			got := r.errCodes()
			slices.Sort(got)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("got %v, want %v", got, want)
			}
		})
	}
	if after := e.snapshot(); after != before {
		t.Fatal("rejected requests changed stored state")
	}
}

func TestConnectionsNeedAKey(t *testing.T) {
	e := newEnv(t)
	app := controlplane.New(controlplane.Config{Store: e.st, Relay: nopRelay{}, Now: time.Now})
	e2 := *e
	e2.app = app
	for _, m := range []string{"GET", "POST"} {
		r := e2.must(503, e2.call(m, "/api/v1/connections", e.admin, map[string]any{}))
		if codes(r) != "secrets_unconfigured@" {
			t.Fatalf("%s without a key: %s", m, r.raw)
		}
	}
	e2.must(401, e2.call("GET", "/api/v1/connections", "", nil))
}

// The README's connection example works as written with the administrator's token (it asked
// to share with a tenant, which the administrator has none of: 400 no_tenant).
func TestREADMEConnectionExample(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), `curl -s -X POST "$API/connections" -H "Authorization: Bearer $TOKEN" -d '`)
	body, _, ok2 := strings.Cut(rest, "'\n")
	if !ok || !ok2 {
		t.Fatal("the README has no connection example")
	}
	e := newEnv(t)
	got := e.must(201, e.call("POST", "/api/v1/connections", e.admin, body)).data()
	if got["name"] != "crm" || got["type"] != "oauth2" {
		t.Fatalf("created %v", got)
	}
}
