package transform_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/sdk"
)

// TestThroughHost builds the transform binary and runs it as the runners do: launched by the
// host as a plugin, called over gRPC.
func TestThroughHost(t *testing.T) {
	dir := t.TempDir()
	hosttest.Build(t, dir, map[string]string{"transform": "github.com/flowd/flowd/connectors/transform"})
	h, err := host.New(host.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	m, err := h.Manifest(ctx, "transform")
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "transform" || m.Version != "1.0.0" || m.Actions["map"].ConfigSchema == nil {
		t.Fatalf("manifest = %+v", m)
	}

	results, err := h.Execute(ctx, "transform", []sdk.Invocation{
		{
			ID: "ok", Action: "map", NodeID: "shape", ExecutionID: "e1",
			Config: map[string]any{"merge": true, "fields": map[string]any{
				"total":    "input.qty * input.price",
				"customer": "steps.lookup.name",
				"region":   "settings.region",
			}},
			Input: map[string]any{"id": 9007199254740993, "qty": 2, "price": 4.25},
			Context: map[string]any{
				"steps":    map[string]any{"lookup": map[string]any{"name": "Ada"}},
				"settings": map[string]any{"region": "eu"},
			},
		},
		{
			ID: "bad", Action: "map",
			Config: map[string]any{"fields": map[string]any{"broken": "input.qty *"}},
			Input:  map[string]any{"qty": 1},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 2 {
		t.Fatalf("results = %+v", results)
	}
	ok := results[0]
	if ok.ID != "ok" || ok.Error != nil || len(ok.Outputs) != 1 || ok.Outputs[0].Port != "" {
		t.Fatalf("result ok = %+v", ok)
	}
	got, _ := json.Marshal(ok.Outputs[0].Data)
	// The id (2^53+1) passes through exactly: the host hands numbers back as json.Number.
	if want := `{"customer":"Ada","id":9007199254740993,"price":4.25,"qty":2,"region":"eu","total":8.5}`; string(got) != want {
		t.Fatalf("output\n got %s\nwant %s", got, want)
	}
	bad := results[1]
	if bad.ID != "bad" || bad.Error == nil || bad.Error.Code != "invalid_expression" || bad.Error.Retryable {
		t.Fatalf("result bad = %+v, want a permanent invalid_expression error", bad)
	}
}
