package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/sdk"
)

// connectorCall is the host → plugin Execute round trip of the transform connector.
type connectorCall struct {
	Batch       int     `json:"batch"`
	NsPerItem   int64   `json:"nsPerItem"`
	ItemsPerSec int     `json:"itemsPerSec"`
	AllocsPerOp int64   `json:"allocsPerItem"`
	SpeedupVs1  float64 `json:"speedupVsSingle"`
}

// runConnector builds the transform connector with hosttest (as connectors/host's
// BenchmarkExecute does), starts it through the plugin host and measures Execute with 1, 16
// (the runners' default batch) and 64 items per call; ns/item compares directly.
func runConnector(ctx context.Context) ([]connectorCall, error) {
	dir, err := os.MkdirTemp("", "flowd-bench-connectors")
	if err != nil {
		return nil, err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if err := buildConnectors(dir, map[string]string{"transform": "github.com/flowd/flowd/connectors/transform"}); err != nil {
		return nil, err
	}
	h, err := host.New(host.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	defer func() { _ = h.Close() }()

	cfg := map[string]any{"fields": map[string]any{"id": "input.id", "name": "input.firstName + ' ' + input.lastName", "amount": "input.amount"}}
	input := map[string]any{"id": "c-000042", "firstName": "Ada", "lastName": "Lovelace", "amount": 1234.5}
	if _, err := h.Execute(ctx, "transform", []sdk.Invocation{{ID: "warm", Action: "map", Config: cfg, Input: input}}); err != nil {
		return nil, err
	}
	var out []connectorCall
	for _, size := range []int{1, 16, 64} {
		batch := make([]sdk.Invocation, size)
		for i := range batch {
			batch[i] = sdk.Invocation{ID: fmt.Sprint(i), Action: "map", Config: cfg, Input: input,
				ExecutionID: "bench", NodeID: "prepare", Attempt: 1, IdempotencyKey: "bench:" + fmt.Sprint(i)}
		}
		var runErr error
		start := time.Now()
		r := testing.Benchmark(func(b *testing.B) {
			b.ReportAllocs()
			for done := 0; done < b.N; done += size {
				items := batch[:min(size, b.N-done)]
				res, err := h.Execute(ctx, "transform", items)
				if err == nil && res[0].Error != nil {
					err = fmt.Errorf("%s: %s", res[0].Error.Code, res[0].Error.Message)
				}
				if err != nil {
					runErr = err
					b.FailNow()
				}
			}
		})
		if runErr != nil {
			return nil, runErr
		}
		if r.N == 0 {
			return nil, fmt.Errorf("connector benchmark did not run")
		}
		c := connectorCall{Batch: size, NsPerItem: r.NsPerOp(), AllocsPerOp: r.AllocsPerOp()}
		c.ItemsPerSec = int(1e9 / float64(max(c.NsPerItem, 1)))
		out = append(out, c)
		logf("connector: batch %d: %d ns/item (%s)", size, c.NsPerItem, time.Since(start).Round(time.Millisecond))
	}
	for i := range out {
		out[i].SpeedupVs1 = ratio(float64(out[0].NsPerItem), float64(out[i].NsPerItem))
	}
	return out, nil
}

// buildTB is the part of testing.TB that hosttest.Build uses, for calling it outside a test.
type buildTB struct {
	testing.TB // nil: only the methods below are called
	errs       []string
}

type failNow struct{}

func (t *buildTB) Helper() {}
func (t *buildTB) Errorf(format string, args ...any) {
	t.errs = append(t.errs, fmt.Sprintf(format, args...))
}
func (t *buildTB) Fatal(args ...any) { t.errs = append(t.errs, fmt.Sprint(args...)); panic(failNow{}) }
func (t *buildTB) FailNow()          { panic(failNow{}) }

// buildConnectors runs hosttest.Build and returns its failures as an error.
func buildConnectors(dir string, pkgs map[string]string) (err error) {
	t := &buildTB{}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(failNow); !ok {
				panic(r)
			}
		}
		if len(t.errs) > 0 {
			err = fmt.Errorf("build connectors: %s", strings.Join(t.errs, "; "))
		}
	}()
	hosttest.Build(t, dir, pkgs)
	return nil
}
