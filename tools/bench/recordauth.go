package main

import (
	"encoding/json"
	"runtime"
	"syscall"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/busauth"
)

// recordAuth is what authenticating the records on flowd's topics costs beside everything
// else an execution costs, both measured in CPU time in this run.
type recordAuth struct {
	// NsPerExecution is the CPU time to sign and verify every record one execution of the bench
	// flow puts on the bus, with records of the sizes that flow produces.
	NsPerExecution      float64 `json:"cpuNsPerExecution"`
	RecordsPerExecution int     `json:"recordsPerExecution"`
	// ExecutionCPUms is the CPU time of flowd's roles, the broker and redis-server per
	// completed execution in the "max, 1 runner" run (the load generator excluded).
	ExecutionCPUms float64 `json:"executionCpuMs"`
	SharePct       float64 `json:"sharePct"`
}

// rusageThread is RUSAGE_THREAD: the calling thread's own CPU time, which nothing else in the
// process adds to.
const rusageThread = 1

func threadCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(rusageThread, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// measureRecordAuth signs and verifies the records of one execution of the bench flow
// (transform → http → transform: one ingest record, three work items, three results) many
// times on one locked thread, and relates the CPU it took to the CPU an execution cost.
func measureRecordAuth(run e2eRun, payload []byte) *recordAuth {
	keys, err := busauth.Load(busauth.Generate(), "")
	if err != nil {
		panic(err)
	}
	ingest := mustMarshal(map[string]any{"executionId": "x0123456789", "flowId": "f0123456789", "revision": 1,
		"trigger": "webhook", "input": json.RawMessage(payload)})
	// A work item carries its input and the outputs of earlier steps; a result its outputs.
	work := mustMarshal(map[string]any{"executionId": "x0123456789", "input": json.RawMessage(payload),
		"context": map[string]any{"steps": map[string]any{"a": json.RawMessage(payload)}}})
	result := mustMarshal(map[string]any{"executionId": "x0123456789", "outputs": []any{json.RawMessage(payload)}})
	recs := []kafka.Message{{Topic: "flowd.ingest", Key: []byte("f0123456789"), Value: ingest}}
	for range 3 {
		recs = append(recs,
			kafka.Message{Topic: "flowd.steps.default", Key: []byte("x0123456789"), Value: work},
			kafka.Message{Topic: "flowd.results", Key: []byte("x0123456789"), Value: result})
	}

	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	const rounds = 5000
	start := threadCPU()
	for range rounds {
		for i := range recs {
			keys.Sign(&recs[i])
			if err := keys.Verify(recs[i]); err != nil {
				panic(err)
			}
		}
	}
	ra := &recordAuth{
		NsPerExecution:      round1(float64(threadCPU()-start) / rounds),
		RecordsPerExecution: len(recs),
	}
	var pct float64
	for name, v := range run.ProcessCPU {
		if name != "bench" {
			pct += v
		}
	}
	if run.CompletedPS > 0 && pct > 0 {
		ra.ExecutionCPUms = round1(pct / 100 / run.CompletedPS * 1e3)
		ra.SharePct = round1(ra.NsPerExecution / (ra.ExecutionCPUms * 1e6) * 100)
	}
	return ra
}

func mustMarshal(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
