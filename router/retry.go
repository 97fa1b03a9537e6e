package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"strings"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/router/graph"
)

// An operator retries a failed execution as a new one (controlplane: POST
// /api/v1/executions/{id}/retry, through an execution.retry event). The retry runs the flow
// from the trigger with the same input; every activation that succeeded in the failed
// execution is completed at once with its recorded output instead of being run again, so only
// the steps that failed (and what follows them) run. Tokens are derived from the graph and
// the path, so the same activation has the same token in both executions, and the steps that
// run again keep the failed execution's idempotency keys.

// replaySource is what a retry takes from the execution it retries.
type replaySource struct {
	root  string                   // the first execution of the chain of retries; "" for none
	steps map[string]envelope.Step // succeeded action steps with their whole output, by token
}

// recorded loads the steps of the execution a retry of flowID retries (none when id is "").
func (r *Router) recorded(ctx context.Context, id, flowID string) (replaySource, error) {
	if id == "" {
		return replaySource{}, nil
	}
	x, err := r.cfg.Store.Execution(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return replaySource{}, fmt.Errorf("%w: retried execution %s is gone", errUnusable, id)
	}
	if err != nil {
		return replaySource{}, fmt.Errorf("load retried execution %s: %w", id, err)
	}
	if x.FlowID != flowID {
		// The record says so, the store does not: no outputs of another flow are replayed.
		return replaySource{}, fmt.Errorf("%w: a retry of flow %s names execution %s, of flow %s", errUnusable, flowID, id, x.FlowID)
	}
	steps, err := r.cfg.Store.ExecutionSteps(ctx, id)
	if err != nil {
		return replaySource{}, fmt.Errorf("load the steps of retried execution %s: %w", id, err)
	}
	rp := replaySource{root: x.ID, steps: map[string]envelope.Step{}}
	if x.RetryOf != "" {
		rp.root = x.RetryOf
	}
	for _, s := range steps {
		// A truncated output cannot stand in for the step: it runs again.
		if s.Type == "action" && s.Status == envelope.StepSucceeded && !s.Truncated {
			rp.steps[s.Token] = s
		}
	}
	return rp, nil
}

// replay completes every activation of out that succeeded in the retried execution with its
// recorded output, and those they lead to, until only activations that must run are left.
func (rp replaySource) replay(g *graph.Graph, st *graph.State, gc graph.Context, out *graph.Outcome) (*graph.Outcome, error) {
	for len(rp.steps) > 0 {
		var run []graph.Activation
		var done []graph.Activation
		for _, a := range out.Work {
			if s, ok := rp.steps[a.Token]; ok && s.NodeID == a.Node.ID {
				done = append(done, a)
			} else {
				run = append(run, a)
			}
		}
		if len(done) == 0 {
			return out, nil
		}
		out.Work = run
		for _, a := range done {
			s := rp.steps[a.Token]
			delete(rp.steps, a.Token) // each recorded step stands in once
			outputs, err := recordedOutputs(s)
			if err != nil {
				return nil, err
			}
			c := gc
			c.Steps = maps.Clone(gc.Steps)
			if c.Steps == nil {
				c.Steps = map[string]json.RawMessage{}
			}
			maps.Copy(c.Steps, out.Outputs)
			next, err := g.Complete(st, c, graph.Completion{NodeID: a.Node.ID, Token: a.Token, Outputs: outputs, Input: a.Input})
			if err != nil {
				return nil, err
			}
			out.Steps = append(out.Steps, envelope.Step{
				NodeID: a.Node.ID, Token: a.Token, Type: a.Node.Type, Status: envelope.StepSucceeded, Attempt: s.Attempt,
				Port: s.Port, Input: a.Input, Output: s.Output, Items: s.Items, Replayed: true,
			})
			out = mergeOutcomes(out, next)
		}
	}
	return out, nil
}

// recordedOutputs turns a step record's output back into the items the step emitted.
func recordedOutputs(s envelope.Step) ([]envelope.Output, error) {
	if len(s.Output) == 0 {
		return nil, nil
	}
	if s.Items <= 1 {
		return []envelope.Output{{Port: s.Port, Data: s.Output}}, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(s.Output, &items); err != nil {
		return nil, fmt.Errorf("recorded output of %s: %w", s.NodeID, err)
	}
	outs := make([]envelope.Output, len(items))
	for i, it := range items {
		outs[i] = envelope.Output{Port: s.Port, Data: it}
	}
	return outs, nil
}

// mergeOutcomes appends what b, a later transition of the same run, adds to a.
func mergeOutcomes(a, b *graph.Outcome) *graph.Outcome {
	a.Work = append(a.Work, b.Work...)
	a.Steps = append(a.Steps, b.Steps...)
	if len(b.Outputs) > 0 {
		if a.Outputs == nil {
			a.Outputs = map[string]json.RawMessage{}
		}
		maps.Copy(a.Outputs, b.Outputs)
	}
	if a.Reply == nil {
		a.Reply = b.Reply
	}
	if b.Done {
		a.Done, a.Status, a.Error, a.LastOutput = true, b.Status, b.Error, b.LastOutput
	}
	return a
}

// idempotencyBase is what a work item's idempotency key starts with: the execution's id, or
// for a retry the id of the execution it retries, so a retried call is the same call.
func idempotencyBase(exec *envelope.Execution) string {
	if exec.RetryOf != "" {
		return exec.RetryOf
	}
	return exec.ID
}

// retryExecution starts the retry an execution.retry event asks for. It is committed once
// applied, or when it can never be (the execution or its flow revision is gone).
func (r *Router) retryExecution(ctx context.Context, ev events.Event) error {
	x, err := r.cfg.Store.Execution(ctx, ev.ExecutionID)
	if errors.Is(err, store.ErrNotFound) {
		r.log.Warn("retry of an execution that is gone", "execution", ev.ExecutionID)
		return nil
	}
	if err != nil {
		return err
	}
	steps, err := r.cfg.Store.ExecutionSteps(ctx, x.ID)
	if err != nil {
		return err
	}
	in := envelope.Ingest{ExecutionID: ev.RetryID, FlowID: x.FlowID, Revision: ev.Revision, Trigger: x.Trigger,
		ReceivedAt: r.now(), RetryOf: x.ID, Input: json.RawMessage("null")}
	if in.Revision <= 0 {
		in.Revision = x.Revision
	}
	for _, s := range steps {
		if strings.HasPrefix(s.Type, "trigger.") && len(s.Output) > 0 {
			in.Input = s.Output // the trigger's output is the execution's input
			break
		}
	}
	g, err := r.graphs.get(ctx, in.FlowID, in.Revision)
	if errors.Is(err, errGone) {
		r.log.Warn("retry of an execution whose flow revision is gone", "execution", x.ID, "flow", x.FlowID, "revision", in.Revision)
		return nil
	}
	if err != nil {
		return err
	}
	in.Trigger = g.Flow().Kind()
	if err := r.start(ctx, g, &in); errors.Is(err, errUnusable) {
		r.log.Warn("retry cannot start", "execution", x.ID, "retry", in.ExecutionID, "err", err)
		return nil
	} else if err != nil {
		return err
	}
	r.log.Info("execution retried", "execution", x.ID, "retry", in.ExecutionID, "revision", in.Revision)
	return nil
}
