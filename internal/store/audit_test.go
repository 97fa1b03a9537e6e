package store_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// The audit log keeps each tenant's entries apart, newest first, reads them by filter and
// page, and drops those older than the retention, on a single node and on a cluster.
func TestAuditLog(t *testing.T) { onEachRedis(t, testAuditLog) }

func testAuditLog(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, rdb, prefix := newExecStore(t, b)
	const retention = time.Hour
	base := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	entry := func(id, tenant, action string, at time.Duration) audit.Entry {
		return audit.Entry{ID: id, Time: base.Add(at), Tenant: tenant, Actor: audit.Actor{ID: "u-" + tenant, Username: "user of " + tenant},
			Action: action, Target: audit.Target{Type: strings.Split(action, ".")[0], ID: "x" + id}}
	}
	appendAt := func(es ...audit.Entry) {
		t.Helper()
		if err := st.AppendAudit(ctx, retention, es...); err != nil {
			t.Fatal(err)
		}
	}
	ids := func(q store.AuditQuery) string {
		t.Helper()
		if q.Limit == 0 {
			q.Limit = 100
		}
		es, total, err := st.AuditLog(ctx, q)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range es {
			out = append(out, e.ID)
		}
		return fmt.Sprintf("%s/%d", strings.Join(out, ","), total)
	}

	appendAt(entry("a1", "ta", audit.FlowCreate, 0))
	appendAt(entry("b1", "tb", audit.FlowCreate, time.Second))
	appendAt(entry("n1", "", audit.TenantCreate, 2*time.Second))
	appendAt(entry("a2", "ta", audit.FlowUpdate, 3*time.Second), entry("a3", "ta", audit.FlowStart, 3*time.Second))
	// A clock that went back: the entry is still appended, after the newest.
	appendAt(entry("a4", "ta", audit.ConnectionCreate, 2*time.Second))

	for _, tc := range []struct {
		name string
		q    store.AuditQuery
		want string
	}{
		{"tenant a", store.AuditQuery{Tenants: []string{"ta"}}, "a4,a3,a2,a1/4"},
		{"tenant b", store.AuditQuery{Tenants: []string{"tb"}}, "b1/1"},
		{"no tenant", store.AuditQuery{Tenants: []string{""}}, "n1/1"},
		{"unknown tenant", store.AuditQuery{Tenants: []string{"tz"}}, "/0"},
		{"an id that is a key", store.AuditQuery{Tenants: []string{"ta:x"}}, "/0"},
		{"every tenant", store.AuditQuery{}, "a4,a3,a2,n1,b1,a1/6"},
		{"page", store.AuditQuery{Offset: 1, Limit: 2}, "a3,a2/6"},
		{"past the end", store.AuditQuery{Offset: 6, Limit: 2}, "/6"},
		{"action", store.AuditQuery{Filter: audit.Filter{Action: audit.FlowCreate}}, "b1,a1/2"},
		{"family", store.AuditQuery{Tenants: []string{"ta"}, Filter: audit.Filter{Action: "flow"}}, "a3,a2,a1/3"},
		{"actor", store.AuditQuery{Filter: audit.Filter{Actor: "u-tb"}}, "b1/1"},
		{"target", store.AuditQuery{Filter: audit.Filter{TargetType: "flow", TargetID: "xa2"}}, "a2/1"},
		{"from", store.AuditQuery{Filter: audit.Filter{From: base.Add(2 * time.Second)}}, "a4,a3,a2,n1/4"},
		{"to", store.AuditQuery{Filter: audit.Filter{To: base.Add(time.Second)}}, "b1,a1/2"},
		{"since", store.AuditQuery{Since: base.Add(time.Second)}, "a4,a3,a2,n1,b1/5"},
	} {
		if got := ids(tc.q); got != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, got, tc.want)
		}
	}

	// An hour and a bit later, an append trims tenant a's stream to the retention (a4 stays
	// stored, appended after a3, but is not returned: its time is older); the other streams keep
	// their entries until an append or their expiry.
	appendAt(entry("a5", "ta", audit.FlowDelete, retention+2500*time.Millisecond))
	if n, err := rdb.XLen(context.Background(), prefix+"{audit}:tenant:ta").Result(); err != nil || n != 4 {
		t.Fatalf("tenant a's stream holds %d entries (%v), want 4 (a2 to a5)", n, err)
	}
	if ttl, err := rdb.PTTL(context.Background(), prefix+"{audit}:tenant:ta").Result(); err != nil || ttl <= retention-time.Minute || ttl > retention {
		t.Fatalf("tenant a's stream expires in %s (%v), want about %s", ttl, err, retention)
	}
	if got := ids(store.AuditQuery{Tenants: []string{"ta"}}); got != "a5,a4,a3,a2/4" {
		t.Fatalf("tenant a after the trim: %s", got)
	}
	if got := ids(store.AuditQuery{Since: base.Add(2500 * time.Millisecond)}); got != "a5,a3,a2/3" {
		t.Fatalf("every tenant within the retention: %s", got)
	}
	// The index forgets tenant b and the tenantless stream, whose last entries are older.
	if got, err := rdb.ZRange(context.Background(), prefix+"{audit}:tenants", 0, -1).Result(); err != nil || strings.Join(got, ",") != "ta" {
		t.Fatalf("audit index: %v %v", got, err)
	}
	if err := st.AppendAudit(ctx, 0, entry("z", "ta", audit.FlowDelete, 0)); err == nil {
		t.Fatal("a zero retention was accepted")
	}
}
