package host

import (
	"bytes"
	"context"
	"slices"
	"time"
)

// Changes is what a Reload found, by connector name, sorted.
type Changes struct {
	Added, Changed, Removed []string
}

// Empty reports whether the reload changed nothing.
func (c Changes) Empty() bool {
	return len(c.Added) == 0 && len(c.Changed) == 0 && len(c.Removed) == 0
}

// Reload discovers Dir again and rereads the pin file. A connector added becomes callable; one
// removed becomes unknown to new calls; one whose executable (for a script, its package) or
// pin changed gets a fresh supervisor, which starts the new code on the next call. Calls in
// flight on a replaced or removed connector finish on its old process, stopped once they have
// returned (or after StartTimeout+CallTimeout, the longest a call can take). Unchanged
// connectors are left alone, their processes running. When discovery or the pin file fails,
// nothing changes.
func (h *Host) Reload(ctx context.Context) (Changes, error) {
	h.reloading.Lock()
	defer h.reloading.Unlock()
	if h.closed.Load() {
		return Changes{}, ErrClosed
	}
	found, err := h.scan(ctx)
	if err != nil {
		return Changes{}, err
	}

	var ch Changes
	h.mu.Lock()
	if h.closed.Load() {
		h.mu.Unlock()
		return Changes{}, ErrClosed
	}
	for name, s := range h.sups {
		if _, ok := found[name]; !ok {
			delete(h.sups, name)
			h.retireLocked(s)
			ch.Removed = append(ch.Removed, name)
		}
	}
	for name, f := range found {
		old, ok := h.sups[name]
		switch {
		case !ok:
			ch.Added = append(ch.Added, name)
		case old.path != f.path || old.id != f.id || !bytes.Equal(old.pin, f.pin):
			h.retireLocked(old)
			ch.Changed = append(ch.Changed, name)
		default:
			continue
		}
		h.sups[name] = h.newSupervisor(name, f)
	}
	h.mu.Unlock()

	for _, l := range []*[]string{&ch.Added, &ch.Changed, &ch.Removed} {
		slices.Sort(*l)
	}
	for _, name := range ch.Added {
		h.log.Info("connector added", "connector", name, "path", found[name].path)
	}
	for _, name := range ch.Changed {
		h.log.Info("connector changed: new calls start the new one, calls in flight finish on the old process", "connector", name, "path", found[name].path)
	}
	for _, name := range ch.Removed {
		h.log.Info("connector removed: unknown to new calls, calls in flight finish", "connector", name)
	}
	return ch, nil
}

// retireLocked drains s, which new calls can no longer reach, in the background.
func (h *Host) retireLocked(s *supervisor) {
	h.loops.Go(func() { s.drain(h.stop) })
}

// drain stops the process of a supervisor replaced or removed by a reload once the calls on it
// have returned, or once they have had all the time a call gets, or at once when the host closes.
func (s *supervisor) drain(stop <-chan struct{}) {
	idle := make(chan struct{})
	go func() { s.calls.Wait(); close(idle) }()
	limit := s.h.opts.StartTimeout + s.h.opts.CallTimeout
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case <-idle:
	case <-t.C:
		s.log.Warn("calls on the replaced connector still running: stopping its process anyway", "after", limit)
	case <-stop:
	}
	s.shutdown()
}
