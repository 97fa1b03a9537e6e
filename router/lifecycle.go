package router

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

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
// It returns the revision it saw (0 when the flow is gone), so a failure can be pinned to it.
func (r *Router) reconcile(ctx context.Context, flowID string) (int, error) {
	f, err := r.cfg.Store.Flow(ctx, flowID)
	if errors.Is(err, store.ErrNotFound) {
		r.partners.drop(flowID)
		r.graphs.dropFlow(flowID)
		return 0, errors.Join(r.cfg.Store.DropSchedule(ctx, flowID), r.cfg.Store.DropPoll(ctx, flowID, true),
			r.cfg.Store.ForgetAwaitedTopic(ctx, flowID))
	}
	if err != nil {
		return 0, fmt.Errorf("load flow %s: %w", flowID, err)
	}
	return f.Revision, r.reconcileFlow(ctx, f)
}

func (r *Router) reconcileFlow(ctx context.Context, f *flowdoc.Flow) error {
	if err := r.ensureSchedule(ctx, f); err != nil {
		return err
	}
	if err := r.ensurePoll(ctx, f); err != nil {
		return err
	}
	if !flowdoc.Runs(f.Status) {
		r.partners.drop(f.ID)
		return nil
	}
	if err := r.ensurePools(ctx, f); err != nil {
		return err
	}
	return r.partners.ensure(ctx, f)
}

// reconcileAll reconciles every flow (at start-up and periodically, which also heals a
// broadcast event this instance missed). A flow that cannot run for good is marked failed,
// which takes it out of the next rounds; a transient failure is retried next round. Either
// way the other flows proceed.
func (r *Router) reconcileAll(ctx context.Context) error {
	flows, err := r.cfg.Store.AllFlows(ctx)
	if err != nil {
		return fmt.Errorf("list flows: %w", err)
	}
	var errs []error
	known := make(map[string]bool, len(flows))
	for i := range flows {
		f := &flows[i]
		known[f.ID] = true
		err := r.reconcileFlow(ctx, f)
		if err == nil || ctx.Err() != nil {
			continue
		}
		var ff *flowFault
		if errors.As(err, &ff) {
			err = r.markFailed(ctx, f.ID, f.Revision, ownerTenant(f), ff.reason, err)
		}
		if err != nil {
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
		err = fmt.Errorf("create work topics of flow %s: %w", f.ID, err)
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			return err // not yet visible after creation: transient
		}
		return topicFault(err, "work topic", strings.Join(missing, ", "))
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
	_, err := r.reconcile(ctx, ev.FlowID)
	var ff *flowFault
	switch {
	case err == nil || ctx.Err() != nil:
	case errors.As(err, &ff):
		// The lifecycle group (or the periodic reconcile) marks the flow failed.
		r.log.Info("flow cannot run", "event", ev.Type, "flow", ev.FlowID, "reason", ff.reason.Code)
	default:
		r.log.Warn("could not apply flow event; will retry", "event", ev.Type, "flow", ev.FlowID, "err", err)
	}
	return nil
}

var errNothingToConfirm = errors.New("nothing to confirm")

// lifecycleRetry are the pauses between the attempts to apply a flow.starting event that
// fails for a reason that may pass (a Redis or broker hiccup): enough to ride one out, few
// enough that the events queued behind it on its flowd.events partition wait seconds, not
// for ever.
var lifecycleRetry = []time.Duration{250 * time.Millisecond, time.Second, 4 * time.Second}

// confirm handles flowd.events in the lifecycle group, so one instance acts on each event:
// once its own subscription is in place (or gone) it moves starting→active (flow.started) or
// stopping→inactive (flow.stopped). The event is committed with the change in the outbox.
//
// A start that cannot be applied marks that flow failed (flow.failed) and is committed like a
// confirmation: one tenant's flow must never hold up the events of the flows behind it.
func (r *Router) confirm(ctx context.Context, ev events.Event) error {
	var action flowdoc.Action
	var confirmed string
	switch ev.Type {
	case events.FlowStarting:
		action, confirmed = flowdoc.ActionStarted, events.FlowStarted
	case events.FlowStopping:
		// Stopping only drops a subscription, which cannot fail: an error here is Redis
		// being unreachable, which holds up every flow alike, so the event is retried.
		action, confirmed = flowdoc.ActionStopped, events.FlowStopped
	case events.ExecutionRetry:
		return r.retryExecution(ctx, ev)
	default:
		return nil
	}
	rev := 0
	if err := r.reconcileRetrying(ctx, ev.FlowID, &rev); err != nil {
		if ctx.Err() != nil || action != flowdoc.ActionStarted {
			return err
		}
		reason := startFailure
		var ff *flowFault
		if errors.As(err, &ff) {
			reason = ff.reason
		}
		return r.markFailed(ctx, ev.FlowID, rev, ev.Tenant, reason, err)
	}
	if action == flowdoc.ActionStopped {
		// Started again, a flow whose partner topic appeared meanwhile starts at its end.
		if err := r.cfg.Store.ForgetAwaitedTopic(ctx, ev.FlowID); err != nil {
			return err
		}
	}
	f, err := r.cfg.Store.UpdateFlow(ctx, ev.FlowID, func(cur *flowdoc.Flow) (store.Mutation, error) {
		to, ok := flowdoc.Next(action, cur.Status)
		if !ok {
			return store.Mutation{}, errNothingToConfirm
		}
		next := *cur
		next.Status, next.StatusReason = to, nil
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

// reconcileRetrying reconciles one flow, retrying transient failures a bounded number of
// times. It stores the revision it last saw in *rev, so a failure is pinned to it.
func (r *Router) reconcileRetrying(ctx context.Context, flowID string, rev *int) error {
	for attempt := 0; ; attempt++ {
		seen, err := r.reconcile(ctx, flowID)
		if seen != 0 {
			*rev = seen
		}
		var ff *flowFault
		if err == nil || ctx.Err() != nil || errors.As(err, &ff) || attempt == len(lifecycleRetry) {
			return err
		}
		r.log.Warn("could not apply flow lifecycle; retrying", "flow", flowID, "attempt", attempt+1, "err", err)
		t := time.NewTimer(lifecycleRetry[attempt])
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// startFailure is the reason given when a start kept failing for a reason that may pass. The
// detail (broker addresses and the like) goes to the log, not to the tenant.
var startFailure = flowdoc.StatusReason{Code: flowdoc.ReasonStartFailed,
	Message: "flowd could not set the flow's trigger up after several attempts (a temporary infrastructure failure); start it again"}

// markFailed moves a starting or active flow at revision rev to failed with reason, and
// announces it (flow.failed). A flow that has moved on meanwhile (stopped, changed, failed
// already) is left alone, so a failure is recorded once and never overrides the owner.
func (r *Router) markFailed(ctx context.Context, flowID string, rev int, tenant string, reason flowdoc.StatusReason, cause error) error {
	f, err := r.cfg.Store.UpdateFlow(ctx, flowID, func(cur *flowdoc.Flow) (store.Mutation, error) {
		to, ok := flowdoc.Next(flowdoc.ActionFail, cur.Status)
		if !ok || (rev != 0 && cur.Revision != rev) {
			return store.Mutation{}, errNothingToConfirm
		}
		next := *cur
		next.Status, next.StatusReason = to, &reason
		return store.Mutation{Flow: &next, Events: []events.Event{{
			ID: identity.NewID(), Type: events.FlowFailed, FlowID: cur.ID, Revision: cur.Revision, Status: to,
			Tenant: tenant, Reason: reason.Code, At: r.now(),
		}}}, nil
	})
	if errors.Is(err, errNothingToConfirm) || errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("mark flow %s failed (%s): %w", flowID, reason.Code, err)
	}
	r.partners.drop(flowID)
	r.log.Warn("flow cannot run; marked failed", "flow", f.ID, "revision", f.Revision, "reason", reason.Code, "err", cause)
	if r.cfg.Relay != nil {
		r.cfg.Relay.Kick()
	}
	return nil
}

// ownerTenant is the tenant among a flow's owners, for the events the router writes itself.
func ownerTenant(f *flowdoc.Flow) string {
	for _, o := range f.Owners {
		if o.Type == flowdoc.OwnerTenant {
			return o.ID
		}
	}
	return ""
}

// flowFault is why a flow cannot run that retrying will not change (a partner topic that is
// not flowd's to read, a revision that does not compile): the flow is
// marked failed with reason at once.
type flowFault struct {
	reason flowdoc.StatusReason
	err    error
}

func (e *flowFault) Error() string { return e.reason.Code + ": " + e.err.Error() }
func (e *flowFault) Unwrap() error { return e.err }

// faultf makes a flowFault whose message (shown to the flow's owner) is format and args.
func faultf(code string, err error, format string, args ...any) *flowFault {
	return &flowFault{reason: flowdoc.StatusReason{Code: code, Message: fmt.Sprintf(format, args...)}, err: err}
}

// topicFault classifies a broker error about topic: a *flowFault when it is permanent, err
// itself otherwise. what names the topic's role for the message ("partner topic").
func topicFault(err error, what, topic string) error {
	switch {
	case errors.Is(err, kafka.TopicAuthorizationFailed), errors.Is(err, kafka.GroupAuthorizationFailed),
		errors.Is(err, kafka.ClusterAuthorizationFailed):
		return faultf(flowdoc.ReasonTopicDenied, err, "flowd is not authorised to use %s %q", what, topic)
	case errors.Is(err, kafka.InvalidTopic), errors.Is(err, kafka.PolicyViolation),
		errors.Is(err, kafka.InvalidPartitionNumber), errors.Is(err, kafka.InvalidReplicationFactor):
		return faultf(flowdoc.ReasonTopicInvalid, err, "%s %q is refused by the broker", what, topic)
	}
	return err
}
