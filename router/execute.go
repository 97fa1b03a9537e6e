package router

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/metrics"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/tracing"
	"github.com/flowd/flowd/router/graph"
)

// Message ids under which a consumed record's marker is stored (see store.AdvanceExecution).
const msgIngest = "ingest"

func msgResult(token string, attempt int) string {
	return "result:" + token + ":" + strconv.Itoa(attempt)
}

// errUnusable marks a record that can never be processed; it goes to the DLQ.
var errUnusable = errors.New("unusable record")

// execState is what the router keeps per execution besides the store's records.
type execState struct {
	Graph graph.State `json:"graph"`
	Sync  bool        `json:"sync,omitempty"`
	// Handling says the execution failed and its flow's onError handler runs (in Graph, a
	// fresh state); Failure is the error the execution ends with once the handler is done.
	Handling bool            `json:"handling,omitempty"`
	Failure  *envelope.Error `json:"failure,omitempty"`
}

// pending is an activation sent to a runner, kept until its result arrives.
type pending = envelope.Activation

// handleMain dispatches the records of flowd.ingest and flowd.results.
func (r *Router) handleMain(ctx context.Context, m kafka.Message) error {
	if err := r.cfg.Kafka.RecordKeys.Verify(m); err != nil {
		// Not written by a flowd role: whatever it claims, it starts or advances nothing.
		return r.deadLetter(ctx, m, "record authentication failed: "+err.Error())
	}
	switch m.Topic {
	case r.topicIngest:
		// A record without a trace context (a schedule's tick, a poll's item, a retry)
		// starts its execution's trace here.
		ctx, span := tracing.StartConsumer(ctx, "route ingest", m.Headers)
		defer span.End()
		return spanError(span, r.handleIngest(ctx, m))
	case r.topicResults:
		ctx, span := tracing.StartConsumer(ctx, "route result", m.Headers)
		defer span.End()
		return spanError(span, r.handleResult(ctx, m))
	}
	return r.deadLetter(ctx, m, "unexpected topic")
}

// spanError marks span failed when processing its record failed (it is tried again), and
// returns err.
func spanError(span trace.Span, err error) error {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// spanExecution notes the execution a record belongs to on ctx's span.
func spanExecution(ctx context.Context, execID, flowID, nodeID string) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(tracing.AttrExecutionID.String(execID), tracing.AttrFlowID.String(flowID))
		if nodeID != "" {
			span.SetAttributes(tracing.AttrNodeID.String(nodeID))
		}
	}
}

func (r *Router) handleIngest(ctx context.Context, m kafka.Message) error {
	var in envelope.Ingest
	if err := json.Unmarshal(m.Value, &in); err != nil {
		return r.deadLetter(ctx, m, "undecodable ingest record: "+err.Error())
	}
	if in.ExecutionID == "" || in.FlowID == "" {
		return r.deadLetter(ctx, m, "ingest record without executionId or flowId")
	}
	spanExecution(ctx, in.ExecutionID, in.FlowID, "")
	g, err := r.graphs.get(ctx, in.FlowID, in.Revision)
	if errors.Is(err, errGone) {
		return r.deadLetter(ctx, m, err.Error())
	}
	if err != nil {
		return err
	}
	if kind := g.Flow().Kind(); in.Trigger != kind {
		return r.deadLetter(ctx, m, fmt.Sprintf("ingest record with trigger %q for flow %s, whose trigger is %q", in.Trigger, in.FlowID, kind))
	}
	if in.ReceivedAt.IsZero() {
		in.ReceivedAt = m.Time
	}
	if err := r.start(ctx, g, &in); errors.Is(err, errUnusable) {
		return r.deadLetter(ctx, m, err.Error())
	} else if err != nil {
		return err
	}
	return nil
}

// PartnerExecutionID is the execution a partner record starts: deterministic, so a redelivered
// record is the same execution (and operators can find the execution of a record).
func PartnerExecutionID(flowID, topic string, partition int, offset int64) string {
	sum := sha256.Sum256([]byte(flowID + "\x00" + topic + "\x00" + strconv.Itoa(partition) + "\x00" + strconv.FormatInt(offset, 10)))
	return "k" + hex.EncodeToString(sum[:12])
}

// start creates the execution and runs its trigger, then produces the work it leads to.
func (r *Router) start(ctx context.Context, g *graph.Graph, in *envelope.Ingest) error {
	if len(in.Input) == 0 {
		in.Input = json.RawMessage("null")
	}
	pol := r.policy(g.Flow())
	rp, err := r.recorded(ctx, in.RetryOf, g.Flow().ID)
	if err != nil {
		return err
	}
	t := store.Transition{ExecutionID: in.ExecutionID, MessageID: msgIngest, Policy: pol}
	created := false              // by this call (decide may run again when the transaction is retried)
	var final *envelope.Execution // the record the last decision wrote
	adv, err := r.cfg.Store.AdvanceExecution(ctx, t, func(cur *store.ExecState) (*store.ExecChange, error) {
		created = false
		if cur.Execution != nil {
			return nil, nil // another record with this execution id started it already
		}
		created = true
		now := r.now()
		exec := &envelope.Execution{
			ID: in.ExecutionID, FlowID: g.Flow().ID, Revision: g.Flow().Revision, Trigger: in.Trigger,
			Status: envelope.StatusRunning, ReceivedAt: in.ReceivedAt.UTC(), StartedAt: now, RetryOf: rp.root,
			ScheduledAt: in.ScheduledAt, Source: in.Source,
		}
		st := &execState{Sync: in.Sync}
		gc := r.graphContext(exec, cur.Outputs)
		out, err := g.Start(&st.Graph, gc, in.Input)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errUnusable, err)
		}
		if out, err = rp.replay(g, &st.Graph, gc, out); err != nil {
			return nil, fmt.Errorf("%w: %w", errUnusable, err)
		}
		ch, err := r.change(g, exec, st, gc, cur.Outputs, out, now)
		if err != nil {
			return nil, err
		}
		final = ch.Execution
		return ch, r.ended(g, pol, cur, ch)
	})
	if err != nil {
		return err
	}
	if created && !adv.Replayed {
		metrics.ExecutionStarted(in.FlowID)
		r.log.Debug("execution started", "execution", in.ExecutionID, "flow", in.FlowID)
	}
	if adv.Ended {
		r.log.Debug("execution ended at its start", "execution", in.ExecutionID, "flow", in.FlowID)
		countEnded(final)
	}
	return r.produce(ctx, in.ExecutionID, msgIngest, adv.Records)
}

func (r *Router) handleResult(ctx context.Context, m kafka.Message) error {
	var res envelope.Result
	if err := json.Unmarshal(m.Value, &res); err != nil {
		return r.deadLetter(ctx, m, "undecodable result: "+err.Error())
	}
	if res.ExecutionID == "" || res.Token == "" || res.NodeID == "" || res.FlowID == "" {
		return r.deadLetter(ctx, m, "result without executionId, flowId, nodeId or token")
	}
	spanExecution(ctx, res.ExecutionID, res.FlowID, res.NodeID)
	g, err := r.graphs.get(ctx, res.FlowID, res.Revision)
	if errors.Is(err, errGone) {
		return r.deadLetter(ctx, m, err.Error())
	}
	if err != nil {
		return err
	}
	msgID := msgResult(res.Token, res.Attempt)
	pol := r.policy(g.Flow())
	t := store.Transition{ExecutionID: res.ExecutionID, MessageID: msgID, Token: res.Token, Policy: pol}
	var final *envelope.Execution // the record the last decision wrote
	adv, err := r.cfg.Store.AdvanceExecution(ctx, t, func(cur *store.ExecState) (*store.ExecChange, error) {
		ch, err := r.applyResult(g, &res, cur)
		if err != nil || ch == nil {
			return ch, err
		}
		final = ch.Execution
		return ch, r.ended(g, pol, cur, ch)
	})
	if errors.Is(err, errUnusable) {
		return r.deadLetter(ctx, m, err.Error())
	}
	if err != nil {
		return err
	}
	if adv.Ended {
		r.log.Debug("execution ended", "execution", res.ExecutionID, "flow", res.FlowID)
		countEnded(final)
	}
	return r.produce(ctx, res.ExecutionID, msgID, adv.Records)
}

// countEnded counts an execution that a transition ended, once: a replayed transition does not
// end it again (store.Advanced.Ended).
func countEnded(ex *envelope.Execution) {
	if ex != nil {
		metrics.ExecutionEnded(ex.FlowID, ex.Status)
	}
}

func (r *Router) applyResult(g *graph.Graph, res *envelope.Result, cur *store.ExecState) (*store.ExecChange, error) {
	exec := cur.Execution
	if exec == nil {
		return nil, fmt.Errorf("%w: result for unknown execution %s", errUnusable, res.ExecutionID)
	}
	if exec.FlowID != res.FlowID || exec.Revision != res.Revision {
		return nil, fmt.Errorf("%w: result names flow %s revision %d, execution %s runs %s revision %d",
			errUnusable, res.FlowID, res.Revision, exec.ID, exec.FlowID, exec.Revision)
	}
	if cur.Pending == nil {
		return nil, nil // already completed (a duplicate result): nothing changes
	}
	var p pending
	if err := json.Unmarshal(cur.Pending, &p); err != nil {
		return nil, fmt.Errorf("%w: pending activation %s: %w", errUnusable, res.Token, err)
	}
	if n := len(p.Attempts); n > 0 && res.Attempt <= p.Attempts[n-1].Attempt {
		// An attempt that failed and was retried or parked already: a late copy of its result
		// (or the expiry of a dead letter that was replayed since) changes nothing.
		return nil, nil
	}
	now := r.now()
	if res.Error != nil && exec.Status == envelope.StatusRunning {
		if ch, err := r.retryLater(g, exec, res, &p, cur, now); ch != nil || err != nil {
			return ch, err
		}
	}
	step := envelope.Step{
		ExecutionID: exec.ID, NodeID: res.NodeID, Token: res.Token,
		Status: envelope.StepSucceeded, Attempt: res.Attempt, Input: p.Input, Error: res.Error,
		Attempts: p.Attempts, StartedAt: res.StartedAt, FinishedAt: &res.FinishedAt,
	}
	if n := g.Node(res.NodeID); n != nil {
		step.Type = n.Type
	}
	if step.StartedAt.IsZero() {
		step.StartedAt = p.DispatchedAt
	}
	if res.FinishedAt.IsZero() {
		step.FinishedAt = &now
	}
	step.DurationMs = step.FinishedAt.Sub(step.StartedAt).Milliseconds()
	if res.Error != nil {
		step.Status = envelope.StepFailed
	} else {
		step.Output, step.Port = stepOutput(res.Outputs)
		if len(res.Outputs) > 1 {
			step.Items = len(res.Outputs)
		}
	}
	if exec.Status != envelope.StatusRunning {
		// The execution ended (another branch failed): record the step, change nothing else.
		return &store.ExecChange{Steps: []envelope.Step{step}, DonePending: []string{res.Token}}, nil
	}
	var st execState
	if err := json.Unmarshal(cur.State, &st); err != nil {
		return nil, fmt.Errorf("%w: state of %s: %w", errUnusable, exec.ID, err)
	}
	if st.Handling && !g.InHandler(res.NodeID) {
		// A branch of the failed graph finishing while the handler runs: recorded only.
		return &store.ExecChange{Steps: []envelope.Step{step}, DonePending: []string{res.Token}}, nil
	}
	gc := r.graphContext(exec, cur.Outputs)
	out, err := g.Complete(&st.Graph, gc, graph.Completion{
		NodeID: res.NodeID, Token: res.Token, Outputs: res.Outputs, Error: res.Error, Input: p.Input,
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnusable, err)
	}
	ex := *exec
	ch, err := r.change(g, &ex, &st, gc, cur.Outputs, out, now)
	if err != nil {
		return nil, err
	}
	ch.Steps = append([]envelope.Step{step}, ch.Steps...)
	ch.DonePending = append(ch.DonePending, res.Token)
	return ch, nil
}

// stepOutput is what a step record shows: the one item, or all of them as an array.
func stepOutput(outs []envelope.Output) (json.RawMessage, string) {
	switch len(outs) {
	case 0:
		return nil, ""
	case 1:
		return outs[0].Data, outs[0].Port
	}
	items := make([]json.RawMessage, len(outs))
	for i, o := range outs {
		items[i] = o.Data
		if len(items[i]) == 0 {
			items[i] = json.RawMessage("null")
		}
	}
	raw, _ := json.Marshal(items)
	return raw, outs[0].Port
}

func (r *Router) graphContext(exec *envelope.Execution, steps map[string]json.RawMessage) graph.Context {
	return graph.Context{ExecutionID: exec.ID, Trigger: exec.Trigger, ReceivedAt: exec.ReceivedAt,
		ScheduledAt: exec.ScheduledAt, Source: exec.Source, Steps: steps}
}

// change turns a graph outcome into the store change: records, bookkeeping, the work to
// produce and, for a synchronous caller, the reply.
func (r *Router) change(g *graph.Graph, exec *envelope.Execution, st *execState, gc graph.Context,
	prior map[string]json.RawMessage, out *graph.Outcome, now time.Time) (*store.ExecChange, error) {
	out, err := r.handleFailure(g, exec, st, gc, out)
	if err != nil {
		return nil, err
	}
	work, err := r.encodeWork(g, exec, gc, prior, out, now)
	if errors.Is(err, errTooLarge) {
		// Kafka would refuse it on every retry: end the execution instead of stalling the partition.
		work, out.Work = nil, nil
		out.Done, out.Status = true, envelope.StatusFailed
		out.Error = &envelope.Error{Code: CodeRecordTooLarge, Message: err.Error()}
		st.Graph.Status = envelope.StatusFailed
	} else if err != nil {
		return nil, err
	}
	ch := &store.ExecChange{Execution: exec, Outputs: out.Outputs, Records: work}
	if out.Done {
		exec.Status, exec.Error = out.Status, out.Error
		fin := now
		exec.FinishedAt = &fin
		exec.DurationMs = fin.Sub(exec.ReceivedAt).Milliseconds()
	}
	// Steps of one transition share its time; a nanosecond apart keeps them in the order they
	// ran when the API sorts by start time.
	seq := 0
	at := func() time.Time { seq++; return now.Add(time.Duration(seq)) }
	for _, s := range out.Steps {
		s.ExecutionID = exec.ID
		s.StartedAt = at()
		if s.Status != envelope.StepSkipped {
			fin := s.StartedAt
			s.FinishedAt = &fin
		}
		ch.Steps = append(ch.Steps, s)
	}
	if len(out.Work) > 0 {
		ch.AddPending = make(map[string]json.RawMessage, len(out.Work))
	}
	for _, a := range out.Work {
		ch.AddPending[a.Token] = mustJSON(pending{NodeID: a.Node.ID, Input: a.Input, DispatchedAt: now})
		ch.Steps = append(ch.Steps, envelope.Step{
			ExecutionID: exec.ID, NodeID: a.Node.ID, Token: a.Token, Type: a.Node.Type,
			Status: envelope.StepRunning, Attempt: 1, Input: a.Input, StartedAt: at(),
		})
	}
	if st.Sync {
		ch.Reply = out.Reply
		if ch.Reply == nil && out.Done && !st.Graph.Responded {
			ch.Reply = finalReply(exec, out)
			st.Graph.Responded = true
		}
	}
	ch.State = mustJSON(st)
	return ch, nil
}

// handleFailure starts the flow's onError handler when out fails the execution, in the same
// execution, and makes the execution end failed with its first error once the handler is done.
func (r *Router) handleFailure(g *graph.Graph, exec *envelope.Execution, st *execState, gc graph.Context, out *graph.Outcome) (*graph.Outcome, error) {
	if out.Done && out.Status == envelope.StatusFailed && g.HasHandler() && !st.Handling {
		st.Handling, st.Failure = true, out.Error
		st.Graph = graph.State{}
		input := mustJSON(map[string]any{"error": out.Error, "execution": map[string]any{
			"id": exec.ID, "flowId": exec.FlowID, "revision": exec.Revision}})
		h, err := g.StartHandler(&st.Graph, gc, input)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", errUnusable, err)
		}
		out = mergeOutcomes(&graph.Outcome{Steps: out.Steps, Outputs: out.Outputs, Reply: out.Reply}, h)
	}
	if st.Handling && out.Done {
		out.Status, out.Error = envelope.StatusFailed, st.Failure
	}
	return out, nil
}

// ended adds what a change that ends an execution produces besides its work: the history
// record and, for a failure of a flow that notifies, the failure.
func (r *Router) ended(g *graph.Graph, pol store.ExecPolicy, cur *store.ExecState, ch *store.ExecChange) error {
	if err := r.addHistory(pol, cur, ch); err != nil {
		return err
	}
	e := ch.Execution
	if e == nil || e.Status != envelope.StatusFailed || g.Flow().Notifications == nil ||
		(cur.Execution != nil && envelope.Terminal(cur.Execution.Status)) {
		return nil
	}
	at := time.Now().UTC()
	if e.FinishedAt != nil {
		at = *e.FinishedAt
	}
	ch.Records = append(ch.Records, store.Record{Topic: r.cfg.Kafka.Topic(envelope.TopicNotifications), Key: []byte(e.FlowID),
		Value: mustJSON(envelope.Failure{FlowID: e.FlowID, ExecutionID: e.ID, Revision: e.Revision, Error: e.Error, FailedAt: at})})
	return nil
}

// addHistory adds the flowd.history record to the change that ends an execution: the record
// and the steps the save policy keeps, so it is produced exactly when the change's other
// records are.
func (r *Router) addHistory(pol store.ExecPolicy, cur *store.ExecState, ch *store.ExecChange) error {
	e := ch.Execution
	if !r.cfg.HistoryStream || e == nil || !envelope.Terminal(e.Status) || (cur.Execution != nil && envelope.Terminal(cur.Execution.Status)) {
		return nil
	}
	h := envelope.History{Execution: *e, Save: store.SaveAll}
	if e.Status != envelope.StatusFailed {
		h.Save = pol.Succeeded
	}
	if h.Save != store.SaveNone {
		stored, err := cur.LoadSteps()
		if err != nil {
			return fmt.Errorf("load steps of %s: %w", e.ID, err)
		}
		h.Steps = store.MergeSteps(stored, ch.Steps)
		for i := range h.Steps {
			if h.Save == store.SaveSummary {
				h.Steps[i].Input, h.Steps[i].Output = nil, nil
			}
		}
	}
	raw := mustJSON(h)
	if r.cfg.MaxRecordBytes > 0 && len(raw) > r.cfg.MaxRecordBytes {
		// Too large for Kafka with its payloads: the stream gets the summary instead.
		for i := range h.Steps {
			h.Steps[i].Input, h.Steps[i].Output, h.Steps[i].Truncated = nil, nil, true
		}
		h.Save = store.SaveSummary
		raw = mustJSON(h)
	}
	ch.Records = append(ch.Records, store.Record{Topic: r.cfg.Kafka.Topic(envelope.TopicHistory), Key: []byte(e.ID), Value: raw})
	return nil
}

// CodeRecordTooLarge fails an execution whose next work item Kafka would not accept.
const CodeRecordTooLarge = "record_too_large"

var errTooLarge = errors.New("work item too large")

// encodeWork builds the records of an outcome's activations, one per activation in order.
func (r *Router) encodeWork(g *graph.Graph, exec *envelope.Execution, gc graph.Context,
	prior map[string]json.RawMessage, out *graph.Outcome, now time.Time) ([]store.Record, error) {
	if len(out.Work) == 0 {
		return nil, nil
	}
	wctx, err := r.workContext(g, gc, prior, out.Outputs)
	if err != nil {
		return nil, err
	}
	recs := make([]store.Record, 0, len(out.Work))
	for _, a := range out.Work {
		rec, err := r.workRecord(g, exec, wctx, a.Node, a.Token, a.Input, 1, now)
		if err != nil {
			return nil, err
		}
		recs = append(recs, rec)
	}
	return recs, nil
}

// workContext is what expressions of work items see besides their input: the steps' outputs
// so far (prior, then this transition's), the flow, the settings and the execution.
func (r *Router) workContext(g *graph.Graph, gc graph.Context, prior, outputs map[string]json.RawMessage) (map[string]json.RawMessage, error) {
	steps := make(map[string]json.RawMessage, len(prior)+len(outputs))
	for k, v := range prior {
		steps[k] = v
	}
	for k, v := range outputs {
		steps[k] = v
	}
	wctx, err := g.WorkContext(gc, steps)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errUnusable, err)
	}
	return wctx, nil
}

// workRecord is the work item of one attempt of an action node, starting at start (its
// deadline is the node's timeout later; a zero start leaves the deadline to the runner that
// takes it: a parked item).
func (r *Router) workRecord(g *graph.Graph, exec *envelope.Execution, wctx map[string]json.RawMessage,
	node *flowdoc.Node, token string, input json.RawMessage, attempt int, start time.Time) (store.Record, error) {
	w := envelope.Work{
		ExecutionID: exec.ID, FlowID: exec.FlowID, Revision: exec.Revision, Token: token,
		Attempt: attempt, Node: *node, Owners: g.Flow().Owners, Input: input, Context: wctx,
		IdempotencyKey: idempotencyBase(exec) + ":" + token,
	}
	if timeout := flowdoc.StepTimeout(r.cfg.StepTimeout, node); start.IsZero() {
		w.TimeoutMs = timeout.Milliseconds()
	} else {
		w.Deadline = start.Add(timeout)
	}
	val, err := json.Marshal(&w)
	if err != nil {
		return store.Record{}, fmt.Errorf("%w: encode work: %w", errUnusable, err)
	}
	if len(val) > r.cfg.MaxRecordBytes {
		return store.Record{}, fmt.Errorf("%w: the work item for node %s is %d bytes, the limit is %d",
			errTooLarge, node.ID, len(val), r.cfg.MaxRecordBytes)
	}
	return store.Record{Topic: r.cfg.Kafka.Topic(envelope.PoolTopic(node.Pool)), Key: []byte(exec.ID), Value: val}, nil
}

// retryLater holds the next attempt of a failed step back when the node's retry policy tries
// the failure again, or parks it on the dead-letter topic when its retries ran out and the
// policy says so: the activation stays pending with the failed attempt noted and nothing else
// of the execution changes. It returns nil when the failure is final.
func (r *Router) retryLater(g *graph.Graph, exec *envelope.Execution, res *envelope.Result, p *pending,
	cur *store.ExecState, now time.Time) (*store.ExecChange, error) {
	node := g.Node(res.NodeID)
	if node == nil || node.Type != flowdoc.TypeAction {
		return nil, nil
	}
	pol := flowdoc.RetryOf(r.cfg.Retry, g.Flow(), node)
	retry := pol.Retries(res.Error.Code, res.Error.Retryable, res.Attempt)
	if !retry && !pol.Parks(res.Error.Code, res.Error.Retryable, res.Attempt) {
		return nil, nil
	}
	started := res.StartedAt
	if started.IsZero() {
		started = p.DispatchedAt
	}
	finished := res.FinishedAt
	if finished.IsZero() {
		finished = now
	}
	next := *p
	next.Attempts = append(slices.Clone(p.Attempts), envelope.Attempt{
		Attempt: res.Attempt, Error: res.Error, StartedAt: started, FinishedAt: finished})
	gc := r.graphContext(exec, cur.Outputs)
	wctx, err := r.workContext(g, gc, cur.Outputs, nil)
	if err != nil {
		return nil, err
	}
	step := envelope.Step{
		ExecutionID: exec.ID, NodeID: res.NodeID, Token: res.Token, Type: node.Type,
		Status: envelope.StepRetrying, Attempt: res.Attempt + 1, Input: p.Input, Error: res.Error,
		Attempts: next.Attempts, StartedAt: p.DispatchedAt,
	}
	var due time.Time // zero for a parked item: its deadline starts when a runner takes it
	if retry {
		due = now.Add(pol.Delay(res.Attempt, time.Duration(res.Error.RetryAfterMs)*time.Millisecond))
	}
	rec, err := r.workRecord(g, exec, wctx, node, res.Token, p.Input, res.Attempt+1, due)
	if err != nil {
		return nil, err
	}
	recs := []store.Record{rec}
	if retry {
		recs[0].Due, step.RetryAt = due, &due
	} else {
		recs = r.parked(exec, res, rec, now)
		step.Status, step.Attempt = envelope.StepDeadLettered, res.Attempt
	}
	return &store.ExecChange{
		Steps:      []envelope.Step{step},
		AddPending: map[string]json.RawMessage{res.Token: mustJSON(next)},
		Records:    recs,
	}, nil
}

// parked are the records of a step parked because its retries ran out: the next attempt's
// work item w on the dead-letter topic (replaying it runs the step again), and that attempt's
// failure, held back in the delay queue until the dead letter's retention ends, so a step
// nobody replays or discards does not keep its execution running for ever (a replay or a
// discard before then makes it a late copy, which changes nothing).
func (r *Router) parked(exec *envelope.Execution, res *envelope.Result, w store.Record, now time.Time) []store.Record {
	pk := envelope.Parked{ExecutionID: exec.ID, FlowID: exec.FlowID, Revision: exec.Revision,
		NodeID: res.NodeID, Token: res.Token, Attempt: res.Attempt + 1}
	// The work item as the runners' topic would carry it, signed, so the dead letter is a
	// flowd role's record that the API may replay.
	orig := kafka.Message{Topic: w.Topic, Key: w.Key, Value: w.Value, Partition: -1, Offset: -1,
		Headers: []kafka.Header{{Key: envelope.HeaderParked, Value: mustJSON(pk)}}}
	r.cfg.Kafka.RecordKeys.Sign(&orig)
	reason := fmt.Sprintf("retries exhausted: step %s failed %d time(s), last with %s", res.NodeID, res.Attempt, res.Error.Error())
	dl := r.cfg.Kafka.DeadLetter(r.cfg.Kafka.Topic(envelope.TopicDLQ), orig, reason)
	rec := store.Record{Topic: dl.Topic, Key: dl.Key, Value: dl.Value, Headers: make(map[string]string, len(dl.Headers))}
	for _, h := range dl.Headers {
		rec.Headers[h.Key] = string(h.Value) // the dead letter's own signature is made again when produced
	}
	expiry := pk.Failed(&envelope.Error{Code: envelope.CodeDeadLetterExpired, Message: fmt.Sprintf(
		"the step's dead letter was neither replayed nor discarded within %s (%s)", r.cfg.ParkTimeout, reason)}, now.Add(r.cfg.ParkTimeout))
	return []store.Record{rec, {Topic: r.cfg.Kafka.Topic(envelope.TopicResults), Key: []byte(exec.ID),
		Value: mustJSON(expiry), Due: now.Add(r.cfg.ParkTimeout)}}
}

// finalReply answers a synchronous caller whose flow ended without a respond node: the last
// output with 200, or the error with 502: flowd stands between the caller and the flow, and
// the flow failed (a step's error, a missing connection); 500 is for flowd's own faults.
func finalReply(exec *envelope.Execution, out *graph.Outcome) *envelope.Reply {
	if exec.Status == envelope.StatusFailed {
		e := out.Error
		if e == nil {
			e = &envelope.Error{Code: "execution_failed", Message: "the execution failed"}
		}
		body := mustJSON(map[string]any{"errors": []map[string]string{{"code": e.Code, "message": e.Message}}})
		return &envelope.Reply{Status: http.StatusBadGateway, Body: body}
	}
	body := out.LastOutput
	if len(body) == 0 {
		body = json.RawMessage("null")
	}
	return &envelope.Reply{Status: 200, Body: body}
}

// produce writes a transition's records (acks=all) and then drops them from the marker, so a
// redelivery of the message produces nothing twice once they are durable.
func (r *Router) produce(ctx context.Context, execID, msgID string, recs []store.Record) error {
	if len(recs) == 0 {
		return nil
	}
	msgs := make([]kafka.Message, 0, len(recs))
	var later []store.Delayed
	for i := range recs {
		// Each record carries this hop's span on, delayed ones too (their headers are stored
		// with them), so the runners' steps and the next routing join the execution's trace.
		recs[i].Headers = tracing.InjectMap(ctx, recs[i].Headers)
		rec := recs[i]
		if !rec.Due.IsZero() {
			// Its id is the same on a redelivery, which schedules it again harmlessly.
			later = append(later, store.Delayed{ID: execID + "/" + msgID + "/" + strconv.Itoa(i), Record: rec})
			continue
		}
		msgs = append(msgs, r.message(rec))
	}
	if err := r.cfg.Store.Schedule(ctx, later...); err != nil {
		return fmt.Errorf("schedule %d record(s) of %s: %w", len(later), execID, err)
	}
	if len(later) > 0 {
		metrics.StepRetriesDelayed(len(later))
		r.delays.kick()
	}
	if err := r.write(ctx, msgs); err != nil {
		return fmt.Errorf("produce %d record(s) of %s: %w", len(msgs), execID, err)
	}
	if err := r.cfg.Store.MarkProduced(ctx, execID, msgID); err != nil {
		// Harmless: a redelivery would produce them again and runners dedupe.
		r.log.Warn("could not mark records produced", "execution", execID, "err", err)
	}
	return nil
}

// message is rec signed, ready to produce.
func (r *Router) message(rec store.Record) kafka.Message {
	m := kafka.Message{Topic: rec.Topic, Key: rec.Key, Value: rec.Value}
	for k, v := range rec.Headers {
		m.Headers = append(m.Headers, kafka.Header{Key: k, Value: []byte(v)})
	}
	r.cfg.Kafka.RecordKeys.Sign(&m)
	return m
}

func (r *Router) write(ctx context.Context, msgs []kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	return r.w.WriteMessages(ctx, msgs...)
}

// deadLetter copies a record that can never be processed to flowd.dlq with the reason; the
// caller then commits it.
func (r *Router) deadLetter(ctx context.Context, m kafka.Message, reason string) error {
	if err := r.dlq.Send(ctx, m, reason); err != nil {
		return err
	}
	metrics.DeadLettered("router")
	return nil
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("router: encode %T: %v", v, err)) // only our own record types
	}
	return b
}
