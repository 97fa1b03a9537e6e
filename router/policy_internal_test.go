package router

import (
	"testing"
	"time"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
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

func TestPartnerWarning(t *testing.T) {
	prod := kafkax.Durability{ReplicationFactor: 3, MinInsyncReplicas: 2}
	ok := kafkax.TopicReplication{Topic: "partner.orders", Partitions: 6, ReplicationFactor: 3, MinInsyncReplicas: 2}
	if w := partnerWarning(ok, prod); w != "" {
		t.Fatalf("a topic as durable as flowd's own: %q", w)
	}
	thin := ok
	thin.ReplicationFactor, thin.Offline, thin.UnderReplicated = 1, 2, 1
	want := "partner topic partner.orders has replication factor 1, below the configured 3: a broker lost may lose records before flowd reads them; " +
		"2 partition(s) have no leader: their records cannot be read; 1 partition(s) have replicas out of sync"
	if w := partnerWarning(thin, prod); w != want {
		t.Fatalf("warning %q\nwant    %q", w, want)
	}
	// An unresolved durability (zero) holds nothing against the topic's replication.
	if w := partnerWarning(kafkax.TopicReplication{Topic: "t", ReplicationFactor: 1}, kafkax.Durability{}); w != "" {
		t.Fatalf("against no configured durability: %q", w)
	}
}
