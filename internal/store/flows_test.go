package store_test

import (
	"errors"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// A deleted flow is gone at once, but its revisions stay readable for the grace period, so
// records acknowledged before the delete still run on the revision they name.
func TestDeleteFlowKeepsItsRevisionsForTheGracePeriod(t *testing.T) {
	onEachRedis(t, testDeleteFlowKeepsItsRevisionsForTheGracePeriod)
}

func testDeleteFlowKeepsItsRevisionsForTheGracePeriod(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, rdb, prefix := newExecStore(t, b)
	now := time.Now().UTC()
	f := &flowdoc.Flow{ID: "f1", Name: "doomed", Revision: 1, Status: flowdoc.StatusInactive, CreatedAt: &now,
		Owners: []flowdoc.Owner{{ID: "u1", Type: "user"}}}
	if err := st.CreateFlow(ctx, f); err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteFlow(ctx, "f1", func(*flowdoc.Flow) ([]events.Event, error) { return nil, nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Flow(ctx, "f1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("deleted flow: %v", err)
	}
	if rev, err := st.Revision(ctx, "f1", 1); err != nil || rev.Name != "doomed" {
		t.Fatalf("revision 1 after the delete: %+v %v", rev, err)
	}
	ttl, err := rdb.TTL(ctx, prefix+"{meta}:flow:f1:revs").Result()
	if err != nil || ttl <= 0 || ttl > store.RevisionGrace {
		t.Fatalf("revision history expires in %v (%v), want within %v", ttl, err, store.RevisionGrace)
	}
	// The id is not reused while its history is kept: a revision never changes once written.
	f2 := &flowdoc.Flow{ID: "f1", Name: "usurper", Revision: 1, Status: flowdoc.StatusInactive, CreatedAt: &now}
	if err := st.CreateFlow(ctx, f2); !errors.Is(err, store.ErrExists) {
		t.Fatalf("re-creating a deleted flow's id: %v", err)
	}
	if rev, _ := st.Revision(ctx, "f1", 1); rev == nil || rev.Name != "doomed" {
		t.Fatalf("revision 1 changed: %+v", rev)
	}
}
