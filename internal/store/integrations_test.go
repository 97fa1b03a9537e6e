package store_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/integration"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// Flows joining an integration while its settings change keep up with it: whichever commits
// last, every member ends with the integration's latest settings, and the member index holds
// exactly the flows that name it, on a single node and on a cluster alike.
func TestIntegrationMembersFollowConcurrentSettingsChanges(t *testing.T) {
	onEachRedis(t, testIntegrationMembersFollowConcurrentSettingsChanges)
}

func testIntegrationMembersFollowConcurrentSettingsChanges(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC()
	owner := []flowdoc.Owner{{ID: "u1", Type: flowdoc.OwnerUser}}
	in := &integration.Integration{ID: "i1", Name: "crm", Owners: owner, Settings: map[string]any{"v": 0.0}, Revision: 1, CreatedAt: &now}
	if err := st.CreateIntegration(ctx, in); err != nil {
		t.Fatal(err)
	}
	const flows, changes = 8, 8
	var wg sync.WaitGroup
	errs := make(chan error, flows+changes)
	for i := range flows {
		wg.Add(1)
		go func() {
			defer wg.Done()
			f := &flowdoc.Flow{ID: fmt.Sprint("f", i), Name: "member", Revision: 1, Status: flowdoc.StatusInactive, CreatedAt: &now,
				Owners: owner, Integration: "i1", IntegrationSettings: map[string]any{"forged": true}}
			errs <- st.CreateFlow(ctx, f)
		}()
	}
	for c := 1; c <= changes; c++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := st.UpdateIntegration(ctx, "i1", func(cur *integration.Integration) (store.IntegrationChange, error) {
				next := *cur
				next.Revision, next.Settings = cur.Revision+1, map[string]any{"v": float64(cur.Revision)}
				return store.IntegrationChange{Integration: &next, Member: func(f *flowdoc.Flow) (store.Mutation, error) {
					nf := *f
					nf.Revision++
					return store.Mutation{Flow: &nf, NewRevision: true}, nil
				}}, nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	final, err := st.Integration(ctx, "i1")
	if err != nil || final.Revision != 1+changes {
		t.Fatalf("integration: %+v %v", final, err)
	}
	members, err := st.IntegrationFlows(ctx, "i1")
	if err != nil || len(members) != flows {
		t.Fatalf("%d members (%v), want %d", len(members), err, flows)
	}
	for _, f := range members {
		if f.IntegrationSettings["v"] != final.Settings["v"] {
			t.Fatalf("flow %s has settings %v, the integration %v", f.ID, f.IntegrationSettings, final.Settings)
		}
		rev, err := st.Revision(ctx, f.ID, f.Revision)
		if err != nil || rev.IntegrationSettings["v"] != final.Settings["v"] {
			t.Fatalf("flow %s revision %d: %+v %v", f.ID, f.Revision, rev, err)
		}
	}
	// Leaving takes a flow out of the index; an integration with members is not deleted.
	allow := func(*integration.Integration) error { return nil }
	if err := st.DeleteIntegration(ctx, "i1", allow); !errors.Is(err, store.ErrIntegrationNotEmpty) {
		t.Fatalf("delete with members: %v", err)
	}
	for _, f := range members {
		if _, err := st.UpdateFlow(ctx, f.ID, func(cur *flowdoc.Flow) (store.Mutation, error) {
			next := *cur
			next.Integration, next.Revision = "", cur.Revision+1
			return store.Mutation{Flow: &next, NewRevision: true}, nil
		}); err != nil {
			t.Fatal(err)
		}
	}
	if left, _ := st.Flow(ctx, "f0"); left.IntegrationSettings != nil {
		t.Fatalf("a flow that left keeps the settings: %v", left.IntegrationSettings)
	}
	if err := st.DeleteIntegration(ctx, "i1", allow); err != nil {
		t.Fatalf("delete without members: %v", err)
	}
	// A flow cannot join an integration that does not exist.
	err = st.CreateFlow(context.Background(), &flowdoc.Flow{ID: "late", Name: "late", Revision: 1, CreatedAt: &now, Integration: "i1"})
	if !errors.Is(err, store.ErrNoIntegration) {
		t.Fatalf("joining a deleted integration: %v", err)
	}
}
