package router

import (
	"context"
	"errors"
	"fmt"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/store"
)

// reconcile brings this instance in line with one flow as stored: while it is starting or
// active, its pools' topics exist and its partner topic is consumed; otherwise it is not.
// Acting on the stored state rather than on the event makes replays and reorderings harmless.
func (r *Router) reconcile(ctx context.Context, flowID string) error {
	f, err := r.cfg.Store.Flow(ctx, flowID)
	if errors.Is(err, store.ErrNotFound) {
		r.partners.drop(flowID)
		r.graphs.dropFlow(flowID)
		return nil
	}
	if err != nil {
		return fmt.Errorf("load flow %s: %w", flowID, err)
	}
	return r.reconcileFlow(ctx, f)
}

func (r *Router) reconcileFlow(ctx context.Context, f *flowdoc.Flow) error {
	switch f.Status {
	case flowdoc.StatusStarting, flowdoc.StatusActive:
		if err := r.ensurePools(ctx, f); err != nil {
			return err
		}
		return r.partners.ensure(ctx, f)
	default:
		r.partners.drop(f.ID)
		return nil
	}
}

// reconcileAll reconciles every flow (at start-up and periodically, which also heals a
// broadcast event this instance missed).
func (r *Router) reconcileAll(ctx context.Context) error {
	flows, err := r.cfg.Store.AllFlows(ctx)
	if err != nil {
		return fmt.Errorf("list flows: %w", err)
	}
	var errs []error
	known := make(map[string]bool, len(flows))
	for i := range flows {
		known[flows[i].ID] = true
		if err := r.reconcileFlow(ctx, &flows[i]); err != nil {
			errs = append(errs, err)
		}
	}
	for _, id := range r.partners.subscribed() {
		if !known[id] {
			r.partners.drop(id)
		}
	}
	return errors.Join(errs...)
}

// ensurePools creates the work topics of a flow's pools (once per process).
func (r *Router) ensurePools(ctx context.Context, f *flowdoc.Flow) error {
	var missing []string
	r.poolsMu.Lock()
	for _, n := range f.Graph.Nodes {
		if n.Type != flowdoc.TypeAction {
			continue
		}
		t := envelope.PoolTopic(n.Pool)
		if !r.pools[t] && !contains(missing, t) {
			missing = append(missing, t)
		}
	}
	r.poolsMu.Unlock()
	if len(missing) == 0 {
		return nil
	}
	if err := kafkax.EnsureTopics(ctx, r.cfg.Kafka, missing...); err != nil {
		return fmt.Errorf("create work topics of flow %s: %w", f.ID, err)
	}
	r.poolsMu.Lock()
	for _, t := range missing {
		r.pools[t] = true
	}
	r.poolsMu.Unlock()
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// onEvent handles flowd.events in broadcast mode: every instance sees every event and
// reconciles the flow it names. Failures are logged; the periodic reconcile retries them.
func (r *Router) onEvent(ctx context.Context, ev events.Event) error {
	if ev.Type == events.FlowDeleted {
		r.graphs.dropFlow(ev.FlowID)
	}
	if err := r.reconcile(ctx, ev.FlowID); err != nil && ctx.Err() == nil {
		r.log.Warn("could not apply flow event; will retry", "event", ev.Type, "flow", ev.FlowID, "err", err)
	}
	return nil
}

var errNothingToConfirm = errors.New("nothing to confirm")

// confirm handles flowd.events in the lifecycle group, so one instance acts on each event:
// once its own subscription is in place (or gone) it moves starting→active (flow.started) or
// stopping→inactive (flow.stopped). The event is committed with the change in the outbox.
func (r *Router) confirm(ctx context.Context, ev events.Event) error {
	var from, to, confirmed string
	switch ev.Type {
	case events.FlowStarting:
		from, to, confirmed = flowdoc.StatusStarting, flowdoc.StatusActive, events.FlowStarted
	case events.FlowStopping:
		from, to, confirmed = flowdoc.StatusStopping, flowdoc.StatusInactive, events.FlowStopped
	default:
		return nil
	}
	if err := r.reconcile(ctx, ev.FlowID); err != nil {
		return err
	}
	f, err := r.cfg.Store.UpdateFlow(ctx, ev.FlowID, func(cur *flowdoc.Flow) (store.Mutation, error) {
		if cur.Status != from {
			return store.Mutation{}, errNothingToConfirm
		}
		next := *cur
		next.Status = to
		return store.Mutation{Flow: &next, Events: []events.Event{{
			ID: identity.NewID(), Type: confirmed, FlowID: cur.ID, Revision: cur.Revision, Status: to,
			Tenant: ev.Tenant, At: r.now(),
		}}}, nil
	})
	if errors.Is(err, errNothingToConfirm) || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("confirm %s of flow %s: %w", ev.Type, ev.FlowID, err)
	}
	r.log.Info("flow lifecycle confirmed", "flow", f.ID, "status", f.Status, "event", confirmed)
	if r.cfg.Relay != nil {
		r.cfg.Relay.Kick()
	}
	return nil
}
