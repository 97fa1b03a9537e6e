package router

import (
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
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
	if got := policyOf(base, &flowdoc.Flow{History: &flowdoc.History{MaxAge: "soon"}}); got.Retention != time.Hour {
		t.Fatalf("unparsable maxAge: retention %s, want the router's", got.Retention)
	}
}

// The history record of an ending execution: the stored steps with this transition's over
// them, in the order they started.
func TestMergeSteps(t *testing.T) {
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	stored := []envelope.Step{
		{Token: "a", NodeID: "A", Status: envelope.StepSucceeded, StartedAt: t0},
		{Token: "b", NodeID: "B", Status: envelope.StepRunning, StartedAt: t0.Add(time.Second)},
	}
	changed := []envelope.Step{
		{Token: "b", NodeID: "B", Status: envelope.StepSucceeded, StartedAt: t0.Add(time.Second)},
		{Token: "c", NodeID: "C", Status: envelope.StepSkipped, StartedAt: t0.Add(2 * time.Second)},
	}
	got := mergeSteps(stored, changed)
	if len(got) != 3 || got[0].Token != "a" || got[1].Token != "b" || got[1].Status != envelope.StepSucceeded || got[2].Token != "c" {
		t.Fatalf("merged %+v", got)
	}
}
