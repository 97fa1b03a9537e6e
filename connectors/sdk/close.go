package sdk

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"
)

// CloseTimeout bounds a connector's Close: its ctx ends then, and the process exits whether
// Close returned or not. The host kills a plugin that is still running 2 s after it asked it to
// stop, so the SDK's wait for running handlers (at most 500 ms) and Close fit within that.
const CloseTimeout = time.Second

// drainTimeout bounds how long shutdown waits for running handlers before calling Close.
const drainTimeout = 500 * time.Millisecond

// shutdown runs once, whatever asked for it (the host, SIGTERM, the parent's death): it lets
// running handlers return, for at most drainTimeout, and keeps new ones from starting, then
// calls the connector's Close, bounded by CloseTimeout. Later calls wait for the first.
func (r *engine) shutdown() {
	r.closeOnce.Do(func() {
		defer r.flushTraces()
		ctx, cancel := context.WithTimeout(context.Background(), r.drainTimeout)
		if running := cap(r.slots) - r.drain(ctx); running > 0 {
			r.log.Warn("closing the connector while handlers still run", "running", running)
		}
		cancel()
		if r.close == nil {
			return
		}
		ctx, cancel = context.WithTimeout(context.Background(), r.closeTimeout)
		defer cancel()
		done := make(chan error, 1)
		go func() {
			defer func() {
				if p := recover(); p != nil {
					done <- fmt.Errorf("close panicked: %v", p)
				}
			}()
			done <- r.close(ctx)
		}()
		select {
		case err := <-done:
			if err != nil {
				r.log.Error("closing the connector failed", "err", err)
			}
		case <-ctx.Done():
			r.log.Error("the connector's Close did not return in time: exiting anyway", "timeout", r.closeTimeout)
		}
	})
}

// traceFlushTimeout bounds sending the spans still buffered at exit; it fits, with the drain
// and Close, within the 2 s the host waits for a plugin to stop.
const traceFlushTimeout = 400 * time.Millisecond

// flushTraces sends the spans still buffered, when this process exports any.
func (r *engine) flushTraces() {
	if r.stopTracing == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), traceFlushTimeout)
	defer cancel()
	if err := r.stopTracing(ctx); err != nil {
		r.log.Warn("spans not exported at exit", "err", err)
	}
}

// drain takes every handler slot, so none runs or starts, until ctx ends; it returns how many
// it took. Slots are never given back: the process is about to exit.
func (r *engine) drain(ctx context.Context) int {
	for n := 0; n < cap(r.slots); n++ {
		select {
		case r.slots <- struct{}{}:
		case <-ctx.Done():
			return n
		}
	}
	return cap(r.slots)
}

// exit shuts the connector down and ends the process.
func (r *engine) exit(code int) {
	r.shutdown()
	os.Exit(code)
}

// exitOnSIGTERM closes the connector before the process ends on SIGTERM (a service manager
// stopping everything), instead of dying in the middle.
func (r *engine) exitOnSIGTERM() {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGTERM)
	go func() {
		sig := <-ch
		r.log.Info("signal received: closing the connector", "signal", sig.String())
		r.exit(0)
	}()
}
