package connections_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

type rig struct {
	t      *testing.T
	rdb    *redis.Client
	st     *store.Store
	kr     *secrets.Keyring
	prefix string
	logs   *testrig.LogBuffer
	res    *connections.Resolver
}

func newRig(t *testing.T) *rig {
	t.Helper()
	rdb := testrig.RedisClient(t)
	prefix := testrig.Unique("t") + ":"
	st := store.New(rdb, prefix)
	kr, err := secrets.ParseKeys("k1:" + secrets.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	logs := &testrig.LogBuffer{}
	log := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return &rig{t: t, rdb: rdb, st: st, kr: kr, prefix: prefix, logs: logs, res: connections.NewResolver(st, kr, nil, log)}
}

// create stores a connection the way the API does: secret fields sealed one by one.
func (r *rig) create(typ, owner, tenant string, shared bool, fields map[string]any, secretFields map[string]string, expires *time.Time) string {
	r.t.Helper()
	now := time.Now().UTC()
	c := &store.Connection{
		ID: identity.NewID(), Name: "conn-" + testrig.Unique(""), Type: typ, Owner: owner, Tenant: tenant, Shared: shared,
		Fields: fields, Secrets: map[string]secrets.Sealed{}, TokenExpiresAt: expires, CreatedAt: now, UpdatedAt: now,
	}
	for k, v := range secretFields {
		sl, err := r.kr.Encrypt([]byte(v), store.ConnectionAAD(c.ID, k))
		if err != nil {
			r.t.Fatal(err)
		}
		c.Secrets[k] = sl
	}
	if err := r.st.CreateConnection(context.Background(), c); err != nil {
		r.t.Fatal(err)
	}
	return c.ID
}

// assertNowhere fails if any value appears in any Redis key or value under the prefix, or in
// the captured logs.
func (r *rig) assertNowhere(values ...string) {
	r.t.Helper()
	ctx := context.Background()
	var dump strings.Builder
	iter := r.rdb.Scan(ctx, 0, r.prefix+"*", 100).Iterator()
	for iter.Next(ctx) {
		k := iter.Val()
		dump.WriteString(k + "\n")
		switch r.rdb.Type(ctx, k).Val() {
		case "string":
			dump.WriteString(r.rdb.Get(ctx, k).Val())
		case "hash":
			fmt.Fprint(&dump, r.rdb.HGetAll(ctx, k).Val())
		case "set":
			fmt.Fprint(&dump, r.rdb.SMembers(ctx, k).Val())
		case "zset":
			fmt.Fprint(&dump, r.rdb.ZRange(ctx, k, 0, -1).Val())
		case "list":
			fmt.Fprint(&dump, r.rdb.LRange(ctx, k, 0, -1).Val())
		}
		dump.WriteString("\n")
	}
	if err := iter.Err(); err != nil {
		r.t.Fatal(err)
	}
	logs := r.logs.String()
	for _, v := range values {
		if strings.Contains(dump.String(), v) {
			r.t.Errorf("secret %q found in Redis", v)
		}
		if strings.Contains(logs, v) {
			r.t.Errorf("secret %q found in the logs", v)
		}
	}
}

// tokenServer is an OAuth2 token endpoint that rotates refresh tokens and rejects reused ones.
type tokenServer struct {
	*httptest.Server
	refreshCalls atomic.Int32
	ccCalls      atomic.Int32
	gate         chan struct{} // when set, refresh answers wait for it to close
	entered      chan struct{}

	mu           sync.Mutex
	validRefresh string
	issued       []string
}

func newTokenServer(t *testing.T, clientID, clientSecret, firstRefresh string) *tokenServer {
	ts := &tokenServer{validRefresh: firstRefresh, entered: make(chan struct{}, 64)}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		id, secret, ok := req.BasicAuth()
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
		if req.Method != http.MethodPost || !ok || id != clientID || secret != clientSecret || req.ParseForm() != nil {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_client"}`))
			return
		}
		var body map[string]any
		switch req.PostForm.Get("grant_type") {
		case "refresh_token":
			n := ts.refreshCalls.Add(1)
			ts.entered <- struct{}{}
			if ts.gate != nil {
				<-ts.gate
			}
			ts.mu.Lock()
			if req.PostForm.Get("refresh_token") != ts.validRefresh {
				ts.mu.Unlock()
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(http.StatusBadRequest)
				_, _ = w.Write([]byte(`{"error":"invalid_grant"}`))
				return
			}
			ts.validRefresh = fmt.Sprintf("rt-rotated-%d-%s", n, testrig.Unique(""))
			body = map[string]any{"access_token": fmt.Sprintf("at-new-%d-%s", n, testrig.Unique("")), "token_type": "Bearer", "expires_in": 3600, "refresh_token": ts.validRefresh}
			ts.mu.Unlock()
		case "client_credentials":
			n := ts.ccCalls.Add(1)
			if req.PostForm.Get("scope") != "read write" {
				w.WriteHeader(http.StatusBadRequest)
				return
			}
			body = map[string]any{"access_token": fmt.Sprintf("cc-token-%d-%s", n, testrig.Unique("")), "token_type": "Bearer", "expires_in": 3600}
		default:
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		ts.mu.Lock()
		ts.issued = append(ts.issued, body["access_token"].(string))
		if rt, ok := body["refresh_token"].(string); ok {
			ts.issued = append(ts.issued, rt)
		}
		ts.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(body)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) tokens() []string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return append([]string(nil), ts.issued...)
}

func userOwner(id string) []flowdoc.Owner { return []flowdoc.Owner{{ID: id, Type: flowdoc.OwnerUser}} }

func TestConcurrentResolvesRefreshExactlyOnce(t *testing.T) {
	r := newRig(t)
	clientSecret, oldAccess, oldRefresh := "cs-"+testrig.Unique(""), "at-old-"+testrig.Unique(""), "rt-old-"+testrig.Unique("")
	ts := newTokenServer(t, "flowd-client", clientSecret, oldRefresh)
	ts.gate = make(chan struct{})
	owner := identity.NewID()
	soon := time.Now().Add(10 * time.Second) // inside the 60 s skew: due for refresh
	id := r.create("oauth2", owner, "", false,
		map[string]any{"grant": "authorization_code", "tokenUrl": ts.URL + "/token", "clientId": "flowd-client"},
		map[string]string{"clientSecret": clientSecret, "accessToken": oldAccess, "refreshToken": oldRefresh}, &soon)

	const n = 32
	var started atomic.Int32
	got := make([]string, n)
	errs := make([]error, n)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			started.Add(1)
			conn, err := r.res.Resolve(ctx, id, "http", userOwner(owner))
			if err != nil {
				errs[i] = err
				return
			}
			got[i], _ = conn.Data["accessToken"].(string)
		}()
	}
	// Hold the one refresh open until every caller is under way, so they really overlap.
	select {
	case <-ts.entered:
	case <-ctx.Done():
		t.Fatal("no refresh request reached the token endpoint")
	}
	for deadline := time.Now().Add(10 * time.Second); started.Load() < n; {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d callers started", started.Load(), n)
		}
		time.Sleep(time.Millisecond) // polling a counter with a deadline, not synchronising
	}
	close(ts.gate)
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
	}
	if c := ts.refreshCalls.Load(); c != 1 {
		t.Fatalf("%d refresh calls, want exactly 1", c)
	}
	issued := ts.tokens()
	for i, tok := range got {
		if tok != issued[0] {
			t.Fatalf("caller %d got %q, want the refreshed token %q", i, tok, issued[0])
		}
	}
	// The rotated refresh token is what is stored (sealed), and the next resolve reuses the token.
	c, err := r.st.Connection(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	rt, err := r.kr.Decrypt(c.Secrets["refreshToken"], store.ConnectionAAD(id, "refreshToken"))
	if err != nil || string(rt) != issued[1] {
		t.Fatalf("stored refresh token %q (%v), want the rotated one", rt, err)
	}
	if c.TokenExpiresAt == nil || time.Until(*c.TokenExpiresAt) < 50*time.Minute {
		t.Fatalf("stored expiry %v", c.TokenExpiresAt)
	}
	again, err := r.res.Resolve(ctx, id, "http", userOwner(owner))
	if err != nil || again.Data["accessToken"] != issued[0] || again.Data["tokenType"] != "Bearer" || ts.refreshCalls.Load() != 1 {
		t.Fatalf("resolve after refresh: %v %v, %d refresh calls", again, err, ts.refreshCalls.Load())
	}
	r.assertNowhere(append([]string{clientSecret, oldAccess, oldRefresh}, issued...)...)
}

func TestClientCredentials(t *testing.T) {
	r := newRig(t)
	clientSecret := "cs-" + testrig.Unique("")
	ts := newTokenServer(t, "svc", clientSecret, "")
	owner := identity.NewID()
	id := r.create("oauth2", owner, "", false,
		map[string]any{"grant": "client_credentials", "tokenUrl": ts.URL + "/token", "clientId": "svc", "scopes": []any{"read", "write"}},
		map[string]string{"clientSecret": clientSecret}, nil)
	ctx := context.Background()
	for range 3 {
		conn, err := r.res.Resolve(ctx, id, "http", userOwner(owner))
		if err != nil {
			t.Fatal(err)
		}
		if conn.Type != "oauth2" || conn.Data["accessToken"] != ts.tokens()[0] || conn.Data["tokenType"] != "Bearer" {
			t.Fatalf("resolved: %v", conn.Data)
		}
	}
	if c := ts.ccCalls.Load(); c != 1 {
		t.Fatalf("%d token requests for 3 resolves, want 1 (the token is cached until near expiry)", c)
	}
	// A wrong client secret is a permanent error, not one to retry.
	bad := r.create("oauth2", owner, "", false,
		map[string]any{"grant": "client_credentials", "tokenUrl": ts.URL + "/token", "clientId": "svc"},
		map[string]string{"clientSecret": "wrong-" + clientSecret}, nil)
	_, err := r.res.Resolve(ctx, bad, "http", userOwner(owner))
	var ce *connections.Error
	if !errors.As(err, &ce) || ce.Code != "oauth2_token" || ce.Retryable {
		t.Fatalf("refused client: %v", err)
	}
	r.assertNowhere(append([]string{clientSecret}, ts.tokens()...)...)
}

func TestStaticTypesAndOwnership(t *testing.T) {
	r := newRig(t)
	ctx := context.Background()
	alice, bob, tenant := identity.NewID(), identity.NewID(), identity.NewID()
	password, key, token := "pw-"+testrig.Unique(""), "key-"+testrig.Unique(""), "tok-"+testrig.Unique("")
	basic := r.create("basic", alice, tenant, false, map[string]any{"username": "alice"}, map[string]string{"password": password}, nil)
	apiKey := r.create("api_key", alice, tenant, true, map[string]any{"header": "X-Key"}, map[string]string{"key": key}, nil)
	bearer := r.create("bearer", alice, tenant, false, nil, map[string]string{"token": token}, nil)

	want := map[string]map[string]any{
		basic:  {"username": "alice", "password": password},
		apiKey: {"header": "X-Key", "key": key},
		bearer: {"token": token},
	}
	for id, data := range want {
		conn, err := r.res.Resolve(ctx, id, "http", userOwner(alice))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range data {
			if conn.Data[k] != v {
				t.Fatalf("%s: %s = %v, want %v", conn.Type, k, conn.Data[k], v)
			}
		}
	}
	tenantFlow := []flowdoc.Owner{{ID: bob, Type: flowdoc.OwnerUser}, {ID: tenant, Type: flowdoc.OwnerTenant}}
	otherTenant := []flowdoc.Owner{{ID: bob, Type: flowdoc.OwnerUser}, {ID: identity.NewID(), Type: flowdoc.OwnerTenant}}
	cases := []struct {
		name   string
		id     string
		owners []flowdoc.Owner
		ok     bool
	}{
		{"someone else's private connection", basic, userOwner(bob), false},
		{"private connection in a tenant flow", basic, tenantFlow, false},
		{"shared connection in a flow of its tenant", apiKey, tenantFlow, true},
		{"shared connection in another tenant's flow", apiKey, otherTenant, false},
		{"shared connection in a flow of another user only", apiKey, userOwner(bob), false},
		{"no owners at all", bearer, nil, false},
		{"missing connection", identity.NewID(), userOwner(alice), false},
	}
	for _, tc := range cases {
		_, err := r.res.Resolve(ctx, tc.id, "http", tc.owners)
		if tc.ok != (err == nil) {
			t.Fatalf("%s: err %v", tc.name, err)
		}
		var ce *connections.Error
		if !tc.ok && (!errors.Is(err, connections.ErrNotFound) || !errors.As(err, &ce) || ce.Retryable) {
			t.Fatalf("%s: want a permanent not-found error, got %v", tc.name, err)
		}
	}
	// A key that does not open the ciphertext is a permanent error, and leaks nothing.
	other, _ := secrets.ParseKeys("k1:" + secrets.GenerateKey())
	_, err := connections.NewResolver(r.st, other, nil, nil).Resolve(ctx, basic, "http", userOwner(alice))
	var ce *connections.Error
	if !errors.As(err, &ce) || ce.Code != "connection_invalid" || strings.Contains(err.Error(), password) {
		t.Fatalf("wrong key: %v", err)
	}
	r.assertNowhere(password, key, token)
}

func TestRefreshLock(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	id := identity.NewID()
	l, ok, err := r.st.TryLockConnection(ctx, id, time.Minute)
	if err != nil || !ok {
		t.Fatalf("first lock: %v %v", ok, err)
	}
	if _, ok, _ := r.st.TryLockConnection(ctx, id, time.Minute); ok {
		t.Fatal("a held lock was taken twice")
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
	short, ok, _ := r.st.TryLockConnection(ctx, id, 100*time.Millisecond)
	if !ok {
		t.Fatal("released lock not free")
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if locked, _ := r.st.ConnectionLocked(ctx, id); !locked {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("lock never expired")
		}
	}
	next, ok, _ := r.st.TryLockConnection(ctx, id, time.Minute)
	if !ok {
		t.Fatal("expired lock not free")
	}
	// The expired holder must not release the next holder's lock.
	if err := short.Release(ctx); !errors.Is(err, store.ErrLockLost) {
		t.Fatalf("stale release: %v", err)
	}
	if locked, _ := r.st.ConnectionLocked(ctx, id); !locked {
		t.Fatal("a stale holder released someone else's lock")
	}
	_ = next.Release(ctx)
}

// A connection of a type a connector defines reaches that connector with every field, its
// secrets decrypted; any other connector is refused it.
func TestConnectorDefinedTypeResolvesForItsConnectorOnly(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	ctx := context.Background()
	alice := identity.NewID()
	token, signing := "tok-"+testrig.Unique(""), "sig-"+testrig.Unique("")
	id := r.create("crm.apiToken", alice, "", false,
		map[string]any{"url": "https://crm.example/api", "region": map[string]any{"name": "eu", "retries": 3}},
		map[string]string{"token": token, "signingKey": signing}, nil)

	conn, err := r.res.Resolve(ctx, id, "crm", userOwner(alice))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"url": "https://crm.example/api", "region": map[string]any{"name": "eu", "retries": float64(3)},
		"token": token, "signingKey": signing,
	}
	if conn.Type != "crm.apiToken" || !reflect.DeepEqual(conn.Data, want) {
		t.Fatalf("resolved %s %v, want crm.apiToken %v", conn.Type, conn.Data, want)
	}

	for _, connector := range []string{"http", "crm2", ""} {
		_, err := r.res.Resolve(ctx, id, connector, userOwner(alice))
		var ce *connections.Error
		if !errors.As(err, &ce) || ce.Code != "connection_type" || ce.Retryable ||
			strings.Contains(err.Error(), token) || !strings.Contains(err.Error(), `only connector "crm"`) {
			t.Fatalf("connector %q: err %v, want a permanent connection_type error", connector, err)
		}
	}
	// Ownership is checked first, as for built-in types.
	if _, err := r.res.Resolve(ctx, id, "crm", userOwner(identity.NewID())); !errors.Is(err, connections.ErrNotFound) {
		t.Fatalf("another user's flow: %v", err)
	}
	r.assertNowhere(token, signing)
}
