package host

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/connectors/sdk"
)

// BenchmarkExecute measures the cost of one echo item through the host and the plugin, sent
// alone or in batches of 64; ns/op is per item in both, so the two compare directly.
func BenchmarkExecute(b *testing.B) {
	dir := b.TempDir()
	hosttest.Build(b, dir, map[string]string{"crasher": "./testdata/crasher"})
	h, err := New(Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer h.Close()
	ctx := context.Background()
	input := map[string]any{"id": 42, "name": "Ada Lovelace", "tags": []string{"a", "b", "c"}}
	if _, err := h.Execute(ctx, "crasher", []sdk.Invocation{{ID: "warm", Action: "echo"}}); err != nil {
		b.Fatal(err)
	}
	for _, size := range []int{1, 64} {
		name := "single"
		if size > 1 {
			name = fmt.Sprintf("batch%d", size)
		}
		batch := make([]sdk.Invocation, size)
		for i := range batch {
			batch[i] = sdk.Invocation{ID: fmt.Sprint(i), Action: "echo", Input: input}
		}
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			for done := 0; done < b.N; done += size {
				items := batch[:min(size, b.N-done)]
				res, err := h.Execute(ctx, "crasher", items)
				if err != nil {
					b.Fatal(err)
				}
				if res[0].Error != nil {
					b.Fatal(res[0].Error)
				}
			}
		})
	}
}
