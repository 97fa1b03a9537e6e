package connections_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/testrig"
)

// The way a runner calls a connector: resolve the step's connection, then execute through the
// plugin host. An expiring OAuth2 token is refreshed exactly once under concurrent steps, and
// every request reaches the API with the refreshed token.
func TestHTTPConnectorWithAnExpiringOAuth2Token(t *testing.T) {
	r := newRig(t)
	clientSecret, oldAccess, oldRefresh := "cs-"+testrig.Unique(""), "at-old-"+testrig.Unique(""), "rt-old-"+testrig.Unique("")
	ts := newTokenServer(t, "flowd-client", clientSecret, oldRefresh)
	owner := identity.NewID()
	soon := time.Now().Add(5 * time.Second)
	id := r.create("oauth2", owner, "", false,
		map[string]any{"grant": "authorization_code", "tokenUrl": ts.URL + "/token", "clientId": "flowd-client"},
		map[string]string{"clientSecret": clientSecret, "accessToken": oldAccess, "refreshToken": oldRefresh}, &soon)

	var seen sync.Map // Authorization header -> count
	var calls atomic.Int32
	api := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		calls.Add(1)
		n, _ := seen.LoadOrStore(req.Header.Get("Authorization"), new(atomic.Int32))
		n.(*atomic.Int32).Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer api.Close()

	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"http": "github.com/flowd/flowd/connectors/http"})
	// The API server listens on loopback: allowed as an operator allows it.
	h, err := host.New(host.Options{Dir: dir, Env: []string{egress.EnvAllow + "=loopback"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Close() }()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	const n = 16
	errs := make([]error, n)
	results := make([]sdk.Result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			conn, err := r.res.Resolve(ctx, id, "http", userOwner(owner))
			if err != nil {
				errs[i] = err
				return
			}
			res, err := h.Execute(ctx, "http", []sdk.Invocation{{
				ID: "1", Action: "request", Config: map[string]any{"url": api.URL}, Connection: conn,
				ExecutionID: "e", NodeID: "n", Attempt: 1, IdempotencyKey: testrig.Unique("k"), Deadline: time.Now().Add(20 * time.Second),
			}})
			if err != nil {
				errs[i] = err
				return
			}
			results[i] = res[0]
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("step %d: %v", i, errs[i])
		}
		if results[i].Error != nil || len(results[i].Outputs) != 1 || results[i].Outputs[0].Port != "success" {
			t.Fatalf("step %d: %+v", i, results[i])
		}
	}
	if c := ts.refreshCalls.Load(); c != 1 {
		t.Fatalf("%d refresh calls, want exactly 1", c)
	}
	newToken := "Bearer " + ts.tokens()[0]
	if calls.Load() != n {
		t.Fatalf("API saw %d calls, want %d", calls.Load(), n)
	}
	seen.Range(func(k, v any) bool {
		if k.(string) != newToken {
			t.Errorf("API saw Authorization %q %d times, want only the refreshed token", k, v.(*atomic.Int32).Load())
		}
		return true
	})
	r.assertNowhere(clientSecret, oldAccess, oldRefresh, ts.tokens()[0])
}
