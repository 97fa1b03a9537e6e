package store_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// Data an earlier flowd wrote in layout 1 (no hash tags) is found after the upgrade: flows,
// their revisions and executions, the indexes and the redelivery markers, ids with braces
// included; an upgrade never overwrites a key the new layout already holds.
func TestUpgradeLayout(t *testing.T) {
	ctx := execTestCtx(t)
	rdb := testrig.RedisClient(t)
	prefix := testrig.Unique("t") + ":"
	now := time.Now().UTC().Truncate(time.Millisecond)
	f := flowdoc.Flow{ID: "f1", Name: "old", Revision: 1, Status: flowdoc.StatusInactive, CreatedAt: &now}
	e := runningExec("x{1}", "f1", now)
	old := map[string]any{
		"flow:f1":                  mustJSONT(t, f),
		"exec:x{1}":                mustJSONT(t, e),
		"run:x{1}:n%3A0:1":         `{"token":"n:0"}`,
		"idem:f1:abc":              "done:x{1}",
		"tenantname:acme":          "t1",
		"flow:{meta}:not-a-flow":   "kept", // looks tagged: not touched
		"flow:f1:execs":            nil,
		"flow:f1:execs:running":    nil,
		"exec:x{1}:msgs":           nil,
		"connection:c1:lock":       "holder",
		"flow:f1:stats:" + "2026x": nil,
	}
	for k, v := range old {
		var err error
		switch {
		case k == "flow:f1:execs" || k == "flow:f1:execs:running":
			err = rdb.ZAdd(ctx, prefix+k, redis.Z{Score: float64(now.UnixMilli()), Member: "x{1}"}).Err()
		case k == "exec:x{1}:msgs":
			err = rdb.HSet(ctx, prefix+k, "ingest", "").Err()
		case v == nil:
			err = rdb.HSet(ctx, prefix+k, "1:success", 1).Err()
		default:
			err = rdb.Set(ctx, prefix+k, v, 0).Err()
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	// The new layout already holds this one: the upgrade must not overwrite it.
	if err := rdb.Set(ctx, prefix+"{meta}:tenantname:acme", "t-new", 0).Err(); err != nil {
		t.Fatal(err)
	}

	st := store.New(rdb, prefix)
	n, err := st.UpgradeLayout(ctx)
	if err != nil || n < 9 {
		t.Fatalf("upgrade renamed %d keys, %v", n, err)
	}
	if n, err := st.UpgradeLayout(ctx); err != nil || n != 0 {
		t.Fatalf("second upgrade renamed %d keys, %v", n, err)
	}

	if got, err := st.Flow(ctx, "f1"); err != nil || got.Name != "old" {
		t.Fatalf("flow after upgrade: %+v %v", got, err)
	}
	if got, err := st.Execution(ctx, "x{1}"); err != nil || got.FlowID != "f1" {
		t.Fatalf("execution after upgrade: %+v %v", got, err)
	}
	if _, total, err := st.FlowExecutions(ctx, "f1", envelope.StatusRunning, 0, 10); err != nil || total != 1 {
		t.Fatalf("running index after upgrade: %d %v", total, err)
	}
	// The ingest's marker came along: a redelivery is a replay.
	res, err := st.AdvanceExecution(ctx, store.Transition{ExecutionID: "x{1}", MessageID: "ingest"}, func(*store.ExecState) (*store.ExecChange, error) {
		return &store.ExecChange{State: json.RawMessage(`{}`)}, nil
	})
	if err != nil || !res.Replayed {
		t.Fatalf("redelivered ingest after upgrade: %+v %v", res, err)
	}
	for key, want := range map[string]string{
		"{meta}:tenantname:acme":    "t-new",
		"tenantname:acme":           "t1",
		"idem:{f1}:abc":             "done:x{1}",
		"flow:{meta}:not-a-flow":    "kept",
		"{meta}:connection:c1:lock": "holder",
	} {
		if got, err := rdb.Get(context.Background(), prefix+key).Result(); err != nil || got != want {
			t.Errorf("%s after upgrade: %q %v, want %q", key, got, err, want)
		}
	}
}

func mustJSONT(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
