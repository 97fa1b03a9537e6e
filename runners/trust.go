package runners

// A work item is a request to act with a tenant's credentials, so a runner believes nothing it
// says beyond which activation it asks for. The record must carry a valid signature of a flowd
// role (busauth); the node to run, its connection and the owners allowed to use that
// connection come from the stored flow revision, never from the record; and the router must be
// waiting for exactly that activation (its token is pending in the store for that node of that
// execution of that flow revision). Anything else is dead-lettered with the reason.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
)

// revisionCacheSize bounds the flow revisions a runner keeps; revisions never change once
// stored, so a cached one is never stale.
const revisionCacheSize = 1024

type revisions struct {
	st Revisions
	mu sync.Mutex
	m  map[string]*flowdoc.Flow
}

func newRevisions(st Revisions) *revisions {
	return &revisions{st: st, m: map[string]*flowdoc.Flow{}}
}

func (c *revisions) get(ctx context.Context, flowID string, rev int) (*flowdoc.Flow, error) {
	key := flowID + "\x00" + strconv.Itoa(rev)
	c.mu.Lock()
	f, ok := c.m[key]
	c.mu.Unlock()
	if ok {
		return f, nil
	}
	f, err := c.st.Revision(ctx, flowID, rev)
	if err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.m) >= revisionCacheSize {
		clear(c.m) // crude, but reloading a revision is one GET
	}
	c.m[key] = f
	c.mu.Unlock()
	return f, nil
}

// begin checks w against the store and replaces its node and owners with the stored ones, and
// in the same round trip finds an earlier run's result or claims the item (store.BeginRun). A
// non-empty reason means the item must never run; store errors are retried until stop ends
// (then it returns errAbandoned). The reads themselves run under work: an item that started
// before the stop finishes its check rather than being abandoned half-way.
func (r *Runner) begin(stop, work context.Context, w *envelope.Work, log *slog.Logger) (*store.RunStart, string, error) {
	b := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		st, reason, err := r.check(work, w)
		if err == nil {
			return st, reason, nil
		}
		log.Warn("cannot check the work item against the store; retrying", "err", err, "in", b.Peek())
		if !b.Wait(stop) {
			return nil, "", errAbandoned
		}
	}
}

func (r *Runner) check(ctx context.Context, w *envelope.Work) (*store.RunStart, string, error) {
	f, err := r.revs.get(ctx, w.FlowID, w.Revision)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Sprintf("flow %s has no revision %d", w.FlowID, w.Revision), nil
	}
	if err != nil {
		return nil, "", err
	}
	var node *flowdoc.Node
	for i := range f.Graph.Nodes {
		if f.Graph.Nodes[i].ID == w.Node.ID {
			node = &f.Graph.Nodes[i]
			break
		}
	}
	switch {
	case node == nil:
		return nil, fmt.Sprintf("flow %s revision %d has no node %q", w.FlowID, w.Revision, w.Node.ID), nil
	case node.Type != flowdoc.TypeAction:
		return nil, fmt.Sprintf("node %q of flow %s is a %s, not an action", node.ID, w.FlowID, node.Type), nil
	case r.cfg.Kafka.Topic(envelope.PoolTopic(node.Pool)) != r.topic:
		return nil, fmt.Sprintf("node %q of flow %s runs in pool %q, not on %s", node.ID, w.FlowID, envelope.PoolName(node.Pool), r.topic), nil
	}

	st, err := r.cfg.Store.BeginRun(ctx, store.RunKey{ExecutionID: w.ExecutionID, Token: w.Token, Attempt: w.Attempt}, r.cfg.ClaimTTL)
	if err != nil {
		return nil, "", err
	}
	reason := ""
	exec, act := st.Execution, st.Activation
	switch {
	case act == nil && st.Done:
		// A redelivery of an item whose result the router already applied is not pending any
		// more: its run record answers it.
	case act == nil:
		reason = fmt.Sprintf("activation %s of execution %s is not pending", w.Token, w.ExecutionID)
	case exec.FlowID != w.FlowID || exec.Revision != w.Revision:
		reason = fmt.Sprintf("execution %s runs flow %s revision %d, not flow %s revision %d",
			w.ExecutionID, exec.FlowID, exec.Revision, w.FlowID, w.Revision)
	case act.NodeID != node.ID:
		reason = fmt.Sprintf("activation %s of execution %s is of node %q, not %q", w.Token, w.ExecutionID, act.NodeID, node.ID)
	}
	if reason != "" {
		if st.Claim != nil {
			_ = st.Claim.Release(ctx)
		}
		return nil, reason, nil
	}
	adopt(w, f, node)
	return st, "", nil
}

// adopt makes the stored node and owners the ones the step runs with.
func adopt(w *envelope.Work, f *flowdoc.Flow, node *flowdoc.Node) string {
	w.Node = *node
	w.Owners = f.Owners
	return ""
}
