package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// Every multi-record change of the control plane (identity, connections, flows with their
// outbox events, idempotency claims) works the same on a single node and on a cluster, where
// a transaction over keys of two hash slots would be refused.
func TestControlPlane(t *testing.T) { onEachRedis(t, testControlPlane) }

func testControlPlane(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)

	if err := st.CreateTenant(ctx, identity.Tenant{ID: "t1", Name: "acme", Status: "active", CreatedAt: now}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateTenant(ctx, identity.Tenant{ID: "t2", Name: "acme", CreatedAt: now}); !errors.Is(err, store.ErrExists) {
		t.Fatalf("second tenant named acme: %v, want ErrExists", err)
	}
	u := identity.User{ID: "u1", Username: "ada", Tenant: "t1", CreatedAt: now}
	if err := st.ClaimAdmin(ctx, u); err != nil {
		t.Fatal(err)
	}
	if id, err := st.AdminID(ctx); err != nil || id != "u1" {
		t.Fatalf("admin: %q %v", id, err)
	}
	if got, err := st.UserByUsername(ctx, "ada"); err != nil || got.ID != "u1" {
		t.Fatalf("user by name: %+v %v", got, err)
	}
	tok := identity.Token{ID: "k1", UserID: "u1", Hash: "abc", CreatedAt: now}
	if err := st.CreateToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if toks, err := st.Tokens(ctx, "u1"); err != nil || len(toks) != 1 || toks[0].Hash != "abc" {
		t.Fatalf("tokens: %+v %v", toks, err)
	}
	if err := st.DeleteToken(ctx, tok); err != nil {
		t.Fatal(err)
	}
	if _, err := st.TokenByHash(ctx, "abc"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted token: %v", err)
	}

	c := &store.Connection{ID: "c1", Name: "Partner", Type: "bearer", Owner: "u1", Tenant: "t1", Shared: true, CreatedAt: now}
	if err := st.CreateConnection(ctx, c); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateConnection(ctx, "c1", func(cur *store.Connection) (*store.Connection, error) {
		cur.Name = "Partner API"
		return cur, nil
	}); err != nil {
		t.Fatal(err)
	}
	if shared, err := st.ConnectionsSharedWith(ctx, "t1"); err != nil || len(shared) != 1 || shared[0].Name != "Partner API" {
		t.Fatalf("shared connections: %+v %v", shared, err)
	}
	if err := st.DeleteConnection(ctx, "c1", func(*store.Connection) error { return nil }); err != nil {
		t.Fatal(err)
	}
	if owned, err := st.ConnectionsOwnedBy(ctx, "u1"); err != nil || len(owned) != 0 {
		t.Fatalf("connections after delete: %+v %v", owned, err)
	}

	owner := flowdoc.Owner{ID: "u1", Type: "user"}
	f := &flowdoc.Flow{ID: "f1", Name: "orders", Revision: 1, Status: flowdoc.StatusInactive, CreatedAt: &now, Owners: []flowdoc.Owner{owner}}
	if err := st.CreateFlow(ctx, f, events.Event{ID: "e1", Type: "flow.created", FlowID: "f1", At: now}); err != nil {
		t.Fatal(err)
	}
	if _, err := st.UpdateFlow(ctx, "f1", func(cur *flowdoc.Flow) (store.Mutation, error) {
		cur.Revision++
		cur.Name = "orders v2"
		return store.Mutation{Flow: cur, NewRevision: true, Events: []events.Event{{ID: "e2", Type: "flow.updated", FlowID: "f1", At: now}}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	if owned, err := st.FlowsOwnedBy(ctx, owner); err != nil || len(owned) != 1 || owned[0].Name != "orders v2" {
		t.Fatalf("owned flows: %+v %v", owned, err)
	}
	if revs, err := st.Revisions(ctx, "f1"); err != nil || len(revs) != 2 {
		t.Fatalf("revisions: %d %v", len(revs), err)
	}
	batch, err := st.OutboxPeek(ctx, 10)
	if err != nil || len(batch.Events) != 2 || batch.Events[0].ID != "e1" || batch.Events[1].ID != "e2" {
		t.Fatalf("outbox: %+v %v", batch.Events, err)
	}
	if err := st.OutboxDrop(ctx, batch); err != nil {
		t.Fatal(err)
	}
	if n, err := st.OutboxLen(ctx); err != nil || n != 0 {
		t.Fatalf("outbox after drop: %d %v", n, err)
	}

	id, state, claimed, err := st.ClaimIdempotency(ctx, "f1", "key-1", "x1", time.Minute)
	if err != nil || !claimed || id != "x1" {
		t.Fatalf("claim: %q %q %v %v", id, state, claimed, err)
	}
	if id, _, claimed, err := st.ClaimIdempotency(ctx, "f1", "key-1", "x2", time.Minute); err != nil || claimed || id != "x1" {
		t.Fatalf("second claim: %q %v %v", id, claimed, err)
	}
}
