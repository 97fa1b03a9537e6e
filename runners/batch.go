package runners

import (
	"context"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/tracing"
)

// Executor runs connector actions: the plugin host, or a fake in tests.
type Executor interface {
	Execute(ctx context.Context, name string, items []sdk.Invocation) ([]sdk.Result, error)
}

// batcher gathers the invocations of concurrent steps for one connector into one Execute call,
// so a burst of small steps costs one gRPC round trip instead of one each. A call goes out at
// once when none of the connector's is in flight; otherwise invocations gather while one is
// (up to max, or for at most wait), and go together: idle steps pay no wait, and the busier the
// connector, the fuller its calls.
type batcher struct {
	exec Executor
	name string
	max  int
	wait time.Duration
	ctx  context.Context // bounds every call: the runner's work context

	mu       sync.Mutex
	pending  []*call
	inFlight int
	timer    *time.Timer
	seq      uint64
}

type call struct {
	inv  sdk.Invocation
	done chan outcome      // buffered: the batch never blocks on a caller that gave up
	span trace.SpanContext // the step's, when traced: the parent of its connector call
}

type outcome struct {
	res sdk.Result
	err error // the whole call could not be made
}

// do runs inv in the next batch and waits for its result. ctx only bounds the wait: a call
// already sent is not withdrawn, its result is dropped.
func (b *batcher) do(ctx context.Context, inv sdk.Invocation) (sdk.Result, error) {
	c := &call{inv: inv, done: make(chan outcome, 1)}
	if tracing.On() {
		c.span = trace.SpanContextFromContext(ctx)
	}
	b.mu.Lock()
	b.seq++
	c.inv.ID = strconv.FormatUint(b.seq, 10) // unique within any batch
	b.pending = append(b.pending, c)
	var batch []*call
	switch {
	case b.inFlight == 0 || len(b.pending) >= b.max:
		batch = b.take()
	case b.timer == nil:
		b.timer = time.AfterFunc(b.wait, b.flush)
	}
	b.mu.Unlock()
	if batch != nil {
		go b.run(batch)
	}
	select {
	case o := <-c.done:
		return o.res, o.err
	case <-ctx.Done():
		return sdk.Result{}, ctx.Err()
	}
}

// take empties the pending batch (up to max) and counts it in flight; b.mu is held.
func (b *batcher) take() []*call {
	n := min(len(b.pending), b.max)
	batch := b.pending[:n:n]
	b.pending = b.pending[n:]
	if len(b.pending) == 0 {
		b.pending = nil
		if b.timer != nil {
			b.timer.Stop()
			b.timer = nil
		}
	}
	b.inFlight++
	return batch
}

// flush sends what waited its full wait, whatever is in flight.
func (b *batcher) flush() {
	b.mu.Lock()
	b.timer = nil
	var batch []*call
	if len(b.pending) > 0 {
		batch = b.take()
	}
	b.mu.Unlock()
	if batch != nil {
		b.run(batch)
	}
}

// run makes the call, hands out its results, and then sends what gathered meanwhile.
func (b *batcher) run(batch []*call) {
	for batch != nil {
		items := make([]sdk.Invocation, len(batch))
		for i, c := range batch {
			items[i] = c.inv
		}
		ctx := b.ctx
		if tracing.On() {
			// The call serves several steps, maybe of several executions: each item keeps its own.
			spans := make([]trace.SpanContext, len(batch))
			for i, c := range batch {
				spans[i] = c.span
			}
			ctx = tracing.WithItems(ctx, spans)
		}
		results, err := b.exec.Execute(ctx, b.name, items)
		for i, c := range batch {
			o := outcome{err: err}
			if err == nil {
				if i < len(results) {
					o.res = results[i]
				} else {
					o.res = sdk.Result{ID: c.inv.ID, Error: &sdk.Error{Code: "missing_result", Message: "connector host returned no result for this item"}}
				}
			}
			c.done <- o
		}
		b.mu.Lock()
		b.inFlight--
		batch = nil
		if len(b.pending) > 0 && b.inFlight == 0 {
			batch = b.take()
		}
		b.mu.Unlock()
	}
}

// batchers holds one batcher per connector.
type batchers struct {
	exec Executor
	max  int
	wait time.Duration
	ctx  context.Context

	mu sync.Mutex
	m  map[string]*batcher
}

func (bs *batchers) get(name string) *batcher {
	bs.mu.Lock()
	defer bs.mu.Unlock()
	b, ok := bs.m[name]
	if !ok {
		b = &batcher{exec: bs.exec, name: name, max: bs.max, wait: bs.wait, ctx: bs.ctx}
		bs.m[name] = b
	}
	return b
}
