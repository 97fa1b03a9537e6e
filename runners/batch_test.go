package runners

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/sdk"
)

// fakeExec records each Execute call's items and holds calls until released.
type fakeExec struct {
	mu      sync.Mutex
	calls   [][]sdk.Invocation
	started chan int // the size of each call as it starts
	release chan struct{}
}

func (f *fakeExec) Execute(_ context.Context, _ string, items []sdk.Invocation) ([]sdk.Result, error) {
	f.mu.Lock()
	f.calls = append(f.calls, items)
	f.mu.Unlock()
	f.started <- len(items)
	<-f.release
	out := make([]sdk.Result, len(items))
	for i, it := range items {
		out[i] = sdk.Result{ID: it.ID, Outputs: []sdk.Output{{Data: it.ExecutionID}}}
	}
	return out, nil
}

// An idle connector's call goes out at once, alone; what arrives while it is in flight shares
// the next call, which goes out as soon as the first returns; every caller gets its own result.
func TestBatcherGathersWhileACallIsInFlight(t *testing.T) {
	f := &fakeExec{started: make(chan int, 10), release: make(chan struct{})}
	b := &batcher{exec: f, name: "c", max: 16, wait: time.Hour, ctx: context.Background()}
	results := make(chan string, 10)
	ask := func(id string) {
		res, err := b.do(context.Background(), sdk.Invocation{ExecutionID: id})
		if err != nil {
			t.Error(err)
		}
		results <- res.Outputs[0].Data.(string) + "<-" + id
	}
	go ask("a")
	if n := <-f.started; n != 1 {
		t.Fatalf("first call carried %d items, want 1 (no wait when idle)", n)
	}
	for _, id := range []string{"b", "c", "d"} {
		go ask(id)
	}
	waitFor(t, func() bool { b.mu.Lock(); defer b.mu.Unlock(); return len(b.pending) == 3 })
	f.release <- struct{}{} // the first call returns: the three waiting go out together
	if n := <-f.started; n != 3 {
		t.Fatalf("second call carried %d items, want the 3 that gathered", n)
	}
	f.release <- struct{}{}
	seen := map[string]bool{}
	for range 4 {
		r := <-results
		seen[r] = true
	}
	for _, id := range []string{"a", "b", "c", "d"} {
		if !seen[id+"<-"+id] {
			t.Errorf("caller %s did not get its own result: %v", id, seen)
		}
	}
}

// A full batch goes out even while a call is in flight, and a partial one after the wait.
func TestBatcherFullBatchAndWaitBound(t *testing.T) {
	f := &fakeExec{started: make(chan int, 10), release: make(chan struct{}, 10)}
	b := &batcher{exec: f, name: "c", max: 2, wait: 20 * time.Millisecond, ctx: context.Background()}
	do := func() { _, _ = b.do(context.Background(), sdk.Invocation{ExecutionID: "x"}) }
	go do()
	<-f.started // in flight, held
	go do()
	go do()
	if n := <-f.started; n != 2 {
		t.Fatalf("full batch carried %d items, want 2", n)
	}
	go do()
	if n := <-f.started; n != 1 {
		t.Fatalf("after the wait, a call with %d items, want the 1 waiting", n)
	}
	for range 3 {
		f.release <- struct{}{}
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached in 10 s")
		}
		time.Sleep(time.Millisecond)
	}
}
