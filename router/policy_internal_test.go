package router

import (
	"testing"
	"time"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
)

// A flow's history settings override the router's; what a flow leaves unset stays the
// router's.
func TestPolicyOf(t *testing.T) {
	base := store.ExecPolicy{Retention: time.Hour, MaxCount: 50, Succeeded: store.SaveAll, SnapshotLimit: 1024, Budget: 1 << 20}
	if got := policyOf(base, &flowdoc.Flow{}); got != base {
		t.Fatalf("no history settings: %+v, want the router's %+v", got, base)
	}
	got := policyOf(base, &flowdoc.Flow{History: &flowdoc.History{Succeeded: store.SaveNone, MaxAge: "30m", MaxCount: 5}})
	want := base
	want.Succeeded, want.Retention, want.MaxCount = store.SaveNone, 30*time.Minute, 5
	if got != want {
		t.Fatalf("flow settings: %+v, want %+v", got, want)
	}
	if got := policyOf(base, &flowdoc.Flow{History: &flowdoc.History{MaxAge: "soon", Succeeded: "some"}}); got != base {
		t.Fatalf("invalid settings: %+v, want the router's %+v", got, base)
	}
}
