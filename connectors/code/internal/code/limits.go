package code

import (
	"errors"
	"runtime"
	"runtime/metrics"
	"sync/atomic"
	"time"
)

// Limits. What is bounded, and how:
//   - source size: MaxSourceBytes, checked before compiling;
//   - time: timeoutMs (and the call's deadline) interrupt the VM between instructions, so loops
//     and recursion stop; a single builtin call (a huge sort, a JSON.stringify) finishes first;
//   - call depth: MaxCallStackSize frames, then a stack_overflow error;
//   - output: maxOutputBytes of serialised JSON, checked after serialising;
//   - memory: MemoryBudget of heap growth while the script runs. goja cannot count a runtime's
//     own allocations, so a watchdog samples the process heap (runtime/metrics, no
//     stop-the-world), and when growth passes the budget it forces a GC, measures again, and
//     interrupts the VM if the heap is still over. The measure is process-wide: with scripts
//     running concurrently one may be blamed for another's memory, so that case is retryable.
//     A single builtin call that allocates a huge block at once ('x'.repeat(1e9)) can outrun
//     the watchdog; the backstop is the plugin process boundary: the host reports the crash as a
//     retryable error and restarts the connector.
const (
	MaxSourceBytes        = 64 << 10
	DefaultTimeout        = time.Second
	MaxTimeout            = 30 * time.Second
	DefaultMaxOutputBytes = 1 << 20
	MaxOutputBytesLimit   = 16 << 20 // well under the 32 MiB gRPC message bound
	MaxCallStackSize      = 1024
	MemoryBudget          = 64 << 20
)

// memCheckEvery is how often the watchdog samples the heap; a script can allocate roughly
// (allocation rate × this) past the budget before it is interrupted.
const memCheckEvery = 5 * time.Millisecond

// Reasons the watchdog interrupts a VM with; run maps each to an error code.
var (
	errTimeout = errors.New("timeout")
	errMemory  = errors.New("memory budget exceeded")
)

// running counts scripts in flight in this process, to tell whether the heap measure can be
// attributed to one script.
var running atomic.Int32

const heapMetric = "/memory/classes/heap/objects:bytes"

// heapBytes is the heap occupied by objects, live or not yet swept (HeapAlloc), without the
// stop-the-world pause of runtime.ReadMemStats.
func heapBytes() uint64 {
	s := []metrics.Sample{{Name: heapMetric}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// overBudget reports whether the heap grew by more than budget since base, after collecting
// garbage: a script that churns through short-lived objects must not be mistaken for one that
// holds them.
func overBudget(base, budget uint64) bool {
	if heapBytes() <= base+budget {
		return false
	}
	runtime.GC()
	return heapBytes() > base+budget
}
