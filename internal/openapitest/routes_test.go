package openapitest_test

import (
	"strings"
	"testing"
	"testing/fstest"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/controlplane"
	"github.com/flowd/flowd/ingest"
	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/openapitest"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// TestRoutesMatchTheDocument builds every role's HTTP app (nothing is dialled: the store and
// the producer connect on first use) and compares what they serve with the document, both ways.
func TestRoutesMatchTheDocument(t *testing.T) {
	spec, err := openapitest.Load()
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	st := store.New(rdb, "routes:")
	// DevEcho and Console: `flowd dev` serves /dev/echo and the console too, and the document has them.
	api := controlplane.New(controlplane.Config{Store: st, DevEcho: true, Console: fstest.MapFS{
		"index.html": {Data: []byte("<!doctype html>")}, "favicon.svg": {Data: []byte("<svg/>")},
		"assets/index-1.js": {Data: []byte("")},
	}})
	in, err := ingest.New(ingest.Config{Store: st, Kafka: kafkax.Config{Brokers: []string{"127.0.0.1:1"}, RecordKeys: testrig.RecordKeys()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = in.Close() })
	served := append(openapitest.Routes(api), openapitest.Routes(in.App())...)
	// The probes answer from middleware (health.Mount), on every role.
	for _, p := range []string{health.PathLive, health.PathHealthz, health.PathReady, health.PathMetrics} {
		served = append(served, "GET "+p)
	}
	if len(served) < 50 {
		t.Fatalf("only %d routes found; is the route listing broken? %v", len(served), served)
	}
	undocumented, unserved := spec.Compare(served)
	if len(undocumented) > 0 {
		t.Errorf("served but missing from schemas/openapi.json:\n  %s", strings.Join(undocumented, "\n  "))
	}
	if len(unserved) > 0 {
		t.Errorf("in schemas/openapi.json but not served:\n  %s", strings.Join(unserved, "\n  "))
	}
}
