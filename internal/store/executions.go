package store

// Executions: the router's bookkeeping and what the API shows of it (the exec:{<id>} and
// flow:{<fid>} keys of the layout in store.go).
//
// While an execution runs, its keys expire after the retention (refreshed on each write). The
// change that ends it drops the router's working state (state, outputs) and keeps what the
// flow's save policy says (history.go); its markers then live for the redelivery window only.
// The per-flow zsets are trimmed on write and expire a retention after the flow's last
// execution; stats keys expire a day after the retention.
//
// A consumed message changes an execution atomically (AdvanceExecution), together with a
// marker keyed by the message's identity that stores the records the change produces. A
// redelivered message finds its marker and gets the stored records back instead of being
// applied again, so the change that ends an execution commits exactly once. The flow's
// indexes and counters live in the flow's hash slot: a status change reaches them in a second
// script that is idempotent (an id counts when it first enters a terminal index) and runs
// again whenever the message is redelivered, so a crash between the two steps is repaired by
// the redelivery that follows it.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/envelope"
)

// Defaults of ExecPolicy.
const (
	DefaultExecutionRetention = 7 * 24 * time.Hour
	DefaultSnapshotLimit      = 64 << 10
	DefaultReplyTTL           = 5 * time.Minute
	DefaultMaxCount           = 10000
	DefaultRedeliveryWindow   = 10 * time.Minute
)

// What is kept of a succeeded (or filtered) execution once it ends. A failed one keeps
// everything (SaveAll) until its age runs out.
const (
	SaveAll     = "all"     // the record and every step with its input and output
	SaveSummary = "summary" // the record and every step's status and timings, no payloads
	SaveNone    = "none"    // nothing: it is counted in the flow's statistics and streamed
)

// ErrNoReply is returned by WaitReply when no reply arrived in time (it is also ErrNotFound).
var ErrNoReply = fmt.Errorf("no reply: %w", ErrNotFound)

// ExecPolicy says what is kept of executions, for how long, and how much of a payload.
type ExecPolicy struct {
	Retention time.Duration // how long an ended execution is kept, default 7 days
	// MaxCount bounds the succeeded and filtered executions kept per flow (the oldest go
	// first; failures are kept until their age runs out), default 10,000; < 0: no bound.
	MaxCount      int
	Succeeded     string        // SaveAll, SaveSummary or SaveNone, default SaveAll
	SnapshotLimit int           // bytes per step input/output snapshot, default 64 KiB
	ReplyTTL      time.Duration // how long an unread reply waits, default 5 minutes
	// RedeliveryWindow is how long an ended execution's bookkeeping (message markers, run
	// records) stays: a message redelivered within it is recognised as a repeat, default 10
	// minutes. It must outlast the time from a record's end to its offset's commit, including a
	// crashed consumer's restart; see docs/history.md.
	RedeliveryWindow time.Duration
	// Budget bounds the memory of every flow's kept executions together, in bytes (0: none).
	// Beyond it the oldest succeeded executions are deleted first, failed ones last.
	Budget int64
}

// WithDefaults fills the zero fields with the defaults.
func (p ExecPolicy) WithDefaults() ExecPolicy {
	if p.Retention <= 0 {
		p.Retention = DefaultExecutionRetention
	}
	if p.MaxCount == 0 {
		p.MaxCount = DefaultMaxCount
	}
	if p.Succeeded == "" {
		p.Succeeded = SaveAll
	}
	if p.SnapshotLimit <= 0 {
		p.SnapshotLimit = DefaultSnapshotLimit
	}
	if p.ReplyTTL <= 0 {
		p.ReplyTTL = DefaultReplyTTL
	}
	if p.RedeliveryWindow <= 0 {
		p.RedeliveryWindow = DefaultRedeliveryWindow
	}
	return p
}

// keep is what is kept of an execution that ended with status.
func (p ExecPolicy) keep(status string) string {
	if status == envelope.StatusFailed {
		return SaveAll
	}
	return p.Succeeded
}

// CheckSavePolicy tells whether v names a save policy.
func CheckSavePolicy(v string) error {
	switch v {
	case SaveAll, SaveSummary, SaveNone:
		return nil
	}
	return fmt.Errorf("save policy %q: want %s, %s or %s", v, SaveAll, SaveSummary, SaveNone)
}

// Record is a Kafka record a transition produces once it has committed.
type Record struct {
	Topic   string            `json:"topic"`
	Key     []byte            `json:"key,omitempty"`
	Value   []byte            `json:"value"`
	Headers map[string]string `json:"headers,omitempty"`
	// Due, when set, holds the record back until then: the caller schedules it (Schedule)
	// instead of producing it, and the delay queue produces it when it is due.
	Due time.Time `json:"due,omitzero"`
}

// Transition names the execution a consumed message changes.
type Transition struct {
	ExecutionID string
	// MessageID identifies the consumed message (e.g. "ingest" or "result:{token}"); the
	// marker stored under it makes a redelivery a replay.
	MessageID string
	// Token names the pending activation the message completes ("" for none); it is loaded
	// into ExecState.Pending.
	Token  string
	Policy ExecPolicy
}

// ExecState is an execution as a transition sees it.
type ExecState struct {
	Execution *envelope.Execution // nil before the execution exists
	State     json.RawMessage     // the router's bookkeeping, nil before the first transition
	Outputs   map[string]json.RawMessage
	Pending   json.RawMessage // the activation named by Transition.Token, nil if not pending
	// LoadSteps reads the execution's steps as stored so far (with their payloads), for a
	// change that needs them (the history record of an ending execution); the transition's
	// check that nothing changed meanwhile covers this read too.
	LoadSteps func() ([]envelope.Step, error)
}

// ExecChange is what a transition commits, atomically with the message's marker.
type ExecChange struct {
	// Execution is the new record; nil leaves the execution alone (only the marker and the
	// records are stored). The store notices the creation and the end of an execution itself
	// and maintains the indexes and counters accordingly.
	Execution   *envelope.Execution
	State       json.RawMessage
	Outputs     map[string]json.RawMessage // latest output by node id
	AddPending  map[string]json.RawMessage // token -> activation
	DonePending []string
	Steps       []envelope.Step // stored by token (a later record for a token replaces it)
	Reply       *envelope.Reply // pushed for the synchronous caller
	Records     []Record
}

// Advanced is the result of AdvanceExecution.
type Advanced struct {
	// Records are what the caller must produce now: the new ones, or the stored ones when the
	// message was applied before and its records may not have been produced yet.
	Records []Record
	// Replayed says the message had been applied before; nothing was changed.
	Replayed bool
	// Ended says this transition ended the execution.
	Ended bool
}

func (s *Store) execKey(id string) string { return s.tagged("exec", keyID(id)) }

type execKeys struct {
	exec, state, steps, payloads, outputs, pending, msgs, reply, runs string
}

// all lists the keys a transition writes, the markers' hash first.
func (k execKeys) all() []string {
	return []string{k.msgs, k.exec, k.state, k.steps, k.payloads, k.outputs, k.pending, k.reply}
}

func (s *Store) execKeysOf(id string) execKeys {
	base := s.execKey(id)
	return execKeys{
		exec: base, state: base + ":state", steps: base + ":steps", payloads: base + ":payloads",
		outputs: base + ":outputs", pending: base + ":pending", msgs: base + ":msgs",
		reply: base + ":reply", runs: base + ":runs",
	}
}

func (s *Store) flowExecsKey(flowID, status string) string {
	return s.tagged("flow", keyID(flowID), "execs", keyID(status))
}

// AdvanceExecution applies one consumed message to an execution, exactly once: decide sees
// the current state and returns the change; the change, the message's marker and the records
// to produce commit in one transaction. If another writer changed the execution meanwhile,
// decide runs again on the newer state. If the message was applied before, decide is not
// called and the stored records are returned with Replayed set.
func (s *Store) AdvanceExecution(ctx context.Context, t Transition, decide func(*ExecState) (*ExecChange, error)) (Advanced, error) {
	if t.ExecutionID == "" || t.MessageID == "" {
		return Advanced{}, errors.New("store: a transition needs an execution id and a message id")
	}
	pol := t.Policy.WithDefaults()
	k := s.execKeysOf(t.ExecutionID)
	res, indexed, err := s.advance(ctx, t, k, pol, decide)
	if err == nil && indexed != nil {
		err = s.syncHistory(ctx, pol, indexed)
	}
	if err != nil {
		return Advanced{}, fmt.Errorf("advance execution %s (%s): %w", t.ExecutionID, t.MessageID, err)
	}
	return res, nil
}

// advance applies the transition; indexed is the execution whose flow indexes must be brought
// in line with its status once it has: the new record when its status changed, the stored one
// when the message is a redelivery (the first delivery may have stopped in between).
func (s *Store) advance(ctx context.Context, t Transition, k execKeys, pol ExecPolicy, decide func(*ExecState) (*ExecChange, error)) (res Advanced, indexed *envelope.Execution, err error) {
	if shareable(s.rdb) {
		res, indexed, done, err := s.advanceShared(ctx, t, k, pol, decide)
		if err != nil || done {
			return res, indexed, err
		}
		// Another writer changed the execution in between: take the transactional path.
	}
	keys := []string{k.exec, k.state, k.msgs}
	err = s.watchFast(ctx, func(tx *redis.Tx, watchInPipeline bool) error {
		var rd transitionReads
		var watchCmd *redis.Cmd
		if _, err := tx.Pipelined(ctx, func(p redis.Pipeliner) error {
			if watchInPipeline {
				args := []any{"WATCH"}
				for _, key := range keys {
					args = append(args, key)
				}
				watchCmd = p.Do(ctx, args...)
			}
			rd.queue(ctx, p, k, t)
			return nil
		}); err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("load execution: %w", err)
		}
		if watchCmd != nil && watchCmd.Err() != nil {
			return fmt.Errorf("watch execution: %w", watchCmd.Err())
		}
		rd.load = s.stepLoader(ctx, k)
		var d decision
		var err error
		d, err = rd.decide(k, decide)
		if err == nil {
			err = d.summarize(pol, rd.load)
		}
		res, indexed = d.res, d.indexed
		if err != nil || d.ch == nil {
			if watchInPipeline {
				_ = tx.Unwatch(ctx).Err() // no EXEC follows to end the WATCH
			}
			return err
		}
		c := s.writeChange(k, t, pol, d)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			for _, args := range c {
				p.Do(ctx, args...)
			}
			return nil
		})
		return err
	}, keys...)
	return res, indexed, err
}

// shareable tells whether a client carries advanceShared's scripts in shared pipelines: a
// single node or a cluster (which splits a pipeline by node), not a ring or a failover client.
func shareable(rdb redis.UniversalClient) bool {
	switch rdb.(type) {
	case *redis.Client, *redis.ClusterClient:
		return true
	}
	return false
}

// transitionReads are the reads of one transition: the message's marker, the count of the
// execution's markers, and the execution as decide sees it.
type transitionReads struct {
	marker, exec, state, pending *redis.StringCmd
	count                        *redis.IntCmd
	outputs                      *redis.MapStringStringCmd
	load                         func() ([]envelope.Step, error) // ExecState.LoadSteps
}

func (r *transitionReads) queue(ctx context.Context, p redis.Pipeliner, k execKeys, t Transition) {
	r.marker = p.HGet(ctx, k.msgs, t.MessageID)
	r.count = p.HLen(ctx, k.msgs)
	r.exec = p.Get(ctx, k.exec)
	r.state = p.Get(ctx, k.state)
	r.outputs = p.HGetAll(ctx, k.outputs)
	if t.Token != "" {
		r.pending = p.HGet(ctx, k.pending, t.Token)
	}
}

// phase is where an execution stands relative to a transition.
type phase int

const (
	phaseRunning phase = iota // it runs before and after
	phaseEnding               // this transition ends it
	phaseEnded                // it had ended before (late results of a failed execution's branches)
)

// decision is what transitionReads.decide found.
type decision struct {
	res Advanced
	// indexed is the execution whose flow indexes must follow its status afterwards (see
	// advance).
	indexed *envelope.Execution
	ch      *ExecChange // nil: nothing to apply (a replay)
	phase   phase
	status  string // the execution's status after the change
	// summary is every step of an execution that ends under SaveSummary, kept in its record.
	summary []envelope.Step
}

// summarize loads what SaveSummary keeps when the change ends the execution under it.
func (d *decision) summarize(pol ExecPolicy, load func() ([]envelope.Step, error)) error {
	if d.ch == nil || d.phase != phaseEnding || pol.keep(d.status) != SaveSummary {
		return nil
	}
	stored, err := load()
	if err != nil {
		return err
	}
	d.summary = MergeSteps(stored, d.ch.Steps)
	return nil
}

// decide returns the stored result of a message applied before (ch nil), or runs decide on
// the execution and returns the change with what the caller reports once it is applied.
func (r *transitionReads) decide(k execKeys, decide func(*ExecState) (*ExecChange, error)) (d decision, err error) {
	stored, err := r.marker.Result()
	switch {
	case err == nil:
		d.res.Replayed = true
		if stored != "" {
			if err := json.Unmarshal([]byte(stored), &d.res.Records); err != nil {
				return d, fmt.Errorf("decode records: %w", err)
			}
		}
		cur, err := r.execState(k)
		if err != nil {
			return d, err
		}
		d.indexed = cur.Execution
		return d, nil
	case !errors.Is(err, redis.Nil):
		return d, fmt.Errorf("read marker: %w", err)
	}
	cur, err := r.execState(k)
	if err != nil {
		return d, err
	}
	cur.LoadSteps = r.load
	ch, err := decide(cur)
	if err != nil {
		return d, err
	}
	if ch == nil {
		ch = &ExecChange{}
	}
	d.ch = ch
	d.res.Records = ch.Records
	if cur.Execution != nil {
		d.status = cur.Execution.Status
	}
	if envelope.Terminal(d.status) {
		d.phase = phaseEnded
	}
	if e := ch.Execution; e != nil {
		if envelope.Terminal(e.Status) && !envelope.Terminal(d.status) {
			d.res.Ended, d.phase = true, phaseEnding
		}
		if e.Status != d.status {
			d.indexed = e
		}
		d.status = e.Status
	}
	return d, nil
}

// execState builds the ExecState from the reads.
func (r *transitionReads) execState(k execKeys) (*ExecState, error) {
	cur := &ExecState{Outputs: map[string]json.RawMessage{}}
	if raw, err := r.exec.Bytes(); err == nil {
		var rec execRecord
		if err := json.Unmarshal(raw, &rec); err != nil {
			return nil, fmt.Errorf("decode %s: %w", k.exec, err)
		}
		cur.Execution = &rec.Execution
	} else if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("load execution: %w", err)
	}
	if raw, err := r.state.Bytes(); err == nil {
		cur.State = raw
	} else if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("load execution: %w", err)
	}
	if err := r.outputs.Err(); err != nil {
		return nil, fmt.Errorf("load execution: %w", err)
	}
	for id, v := range r.outputs.Val() {
		cur.Outputs[id] = json.RawMessage(v)
	}
	if r.pending != nil {
		if raw, err := r.pending.Bytes(); err == nil {
			cur.Pending = raw
		} else if !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("load execution: %w", err)
		}
	}
	return cur, nil
}

// advanceShared is AdvanceExecution in two round trips that concurrent transitions share
// (autoPipe): one reads, one applies the change with a script that first checks nothing
// changed since. The check is the message's marker (absent) and the count of markers of the
// execution, which every transition raises by one (markers are emptied, never removed, while
// the execution lives), so it changes whenever the execution does. done is false when the
// check failed: the caller then takes the transactional path.
func (s *Store) advanceShared(ctx context.Context, t Transition, k execKeys, pol ExecPolicy, decide func(*ExecState) (*ExecChange, error)) (res Advanced, indexed *envelope.Execution, done bool, err error) {
	var rd transitionReads
	if err := s.pipe.do(ctx, func(p redis.Pipeliner) { rd.queue(ctx, p, k, t) }); err != nil {
		return res, nil, false, err
	}
	rd.load = s.stepLoader(ctx, k)
	d, err := rd.decide(k, decide)
	if err == nil {
		err = d.summarize(pol, rd.load)
	}
	res, indexed = d.res, d.indexed
	if err != nil || d.ch == nil {
		return res, indexed, err == nil, err
	}
	n, err := rd.count.Result()
	if err != nil {
		return res, nil, false, fmt.Errorf("count markers: %w", err)
	}
	c := s.writeChange(k, t, pol, d)
	args := []any{t.MessageID, n}
	for _, cmd := range c {
		args = append(args, len(cmd))
		args = append(args, cmd...)
	}
	var applied *redis.Cmd
	if err := s.pipe.do(ctx, func(p redis.Pipeliner) {
		applied = applyIfUnchangedScript.Eval(ctx, p, k.all(), args...)
	}); err != nil {
		return res, nil, false, err
	}
	ok, err := applied.Int()
	if err != nil {
		return res, nil, false, fmt.Errorf("apply change: %w", err)
	}
	return res, indexed, ok == 1, nil
}

// applyIfUnchangedScript runs a change's commands (ARGV from the third on: a count, then that
// many arguments, repeated) only if the message has no marker yet (ARGV[1]) and the execution
// still has the number of markers its change was computed from (ARGV[2]). KEYS[1] is the
// markers' hash; the other KEYS are the execution's other keys, which the commands write.
var applyIfUnchangedScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) ~= tonumber(ARGV[2]) then return 0 end
local i = 3
while i <= #ARGV do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
return 1`)

// writeChange lists the commands of a change. While an execution runs, every key lives for
// the retention; the change that ends it drops the router's working state and keeps what the
// policy says, and from then on the markers live only for the redelivery window.
func (s *Store) writeChange(k execKeys, t Transition, pol ExecPolicy, d decision) cmdList {
	var c cmdList
	ch := d.ch
	ttl := pol.Retention.Milliseconds()
	keep := SaveAll
	if d.phase != phaseRunning {
		keep = pol.keep(d.status)
	}
	recs := ch.Records
	if recs == nil {
		recs = []Record{}
	}
	c.add("HSET", k.msgs, t.MessageID, mustJSON(recs))
	if e := ch.Execution; e != nil {
		// Kept even under SaveNone until its flow's indexes and counters have seen it
		// (syncHistory deletes it then): a redelivery repeats that step from the record.
		rec := mustJSON(e)
		if d.phase == phaseEnding && keep == SaveSummary {
			rec = mustJSON(compact(e, d.summary))
		}
		c.add("SET", k.exec, rec, "PX", ttl)
	}
	if d.phase == phaseRunning {
		if ch.State != nil {
			c.add("SET", k.state, []byte(ch.State), "PX", ttl)
		}
		if len(ch.Outputs) > 0 {
			c.add(hset(k.outputs, ch.Outputs)...)
		}
	}
	if len(ch.DonePending) > 0 {
		vals := make([]any, 0, 2+len(ch.DonePending))
		vals = append(vals, "HDEL", k.pending)
		for _, tok := range ch.DonePending {
			vals = append(vals, tok)
		}
		c.add(vals...)
	}
	if len(ch.AddPending) > 0 {
		c.add(hset(k.pending, ch.AddPending)...)
	}
	if len(ch.Steps) > 0 && (keep == SaveAll || d.phase == phaseRunning) {
		steps := make([]any, 0, 2+2*len(ch.Steps))
		steps = append(steps, "HSET", k.steps)
		payloads := []any{"HSET", k.payloads}
		for _, st := range ch.Steps {
			rec, pl := splitStep(snapshot(st, pol.SnapshotLimit))
			steps = append(steps, st.Token, mustJSON(rec))
			if pl != nil && keep == SaveAll {
				payloads = append(payloads, st.Token, mustJSON(pl))
			}
		}
		c.add(steps...)
		if len(payloads) > 2 {
			c.add(payloads...)
		}
	}
	if ch.Reply != nil {
		c.add("RPUSH", k.reply, mustJSON(ch.Reply))
		c.add("PEXPIRE", k.reply, pol.ReplyTTL.Milliseconds())
	}
	switch d.phase {
	case phaseRunning:
		for _, key := range []string{k.exec, k.state, k.steps, k.payloads, k.outputs, k.pending, k.msgs} {
			c.add("PEXPIRE", key, ttl)
		}
		return c
	case phaseEnding:
		c.add("DEL", k.state, k.outputs)
		if keep != SaveAll {
			c.add("DEL", k.steps, k.payloads)
		}
	}
	for _, key := range []string{k.exec, k.steps, k.payloads, k.pending} {
		c.add("PEXPIRE", key, ttl)
	}
	c.add("PEXPIRE", k.msgs, pol.RedeliveryWindow.Milliseconds())
	return c
}

// hset is the HSET of a map of JSON values.
func hset(key string, m map[string]json.RawMessage) []any {
	args := make([]any, 0, 2+2*len(m))
	args = append(args, "HSET", key)
	for field, v := range m {
		args = append(args, field, []byte(v))
	}
	return args
}

// stepPayload is what a step record keeps apart, under SaveAll only.
type stepPayload struct {
	Input  json.RawMessage `json:"input,omitempty"`
	Output json.RawMessage `json:"output,omitempty"`
}

// splitStep separates a step's payloads from its record; pl is nil when it has none.
func splitStep(st envelope.Step) (rec envelope.Step, pl *stepPayload) {
	if len(st.Input) > 0 || len(st.Output) > 0 {
		pl = &stepPayload{Input: st.Input, Output: st.Output}
	}
	st.Input, st.Output = nil, nil
	return st, pl
}

// stepLoader reads an execution's steps with their payloads (ExecState.LoadSteps), once per
// transition however often it is called.
func (s *Store) stepLoader(ctx context.Context, k execKeys) func() ([]envelope.Step, error) {
	var once sync.Once
	var steps []envelope.Step
	var err error
	return func() ([]envelope.Step, error) {
		once.Do(func() { steps, err = s.loadSteps(ctx, k) })
		return slices.Clone(steps), err
	}
}

// MergeSteps lays newer step records over stored ones (same token: the newer record), in the
// order they started.
func MergeSteps(stored, newer []envelope.Step) []envelope.Step {
	out := make([]envelope.Step, 0, len(stored)+len(newer))
	seen := make(map[string]int, len(stored)+len(newer))
	for _, list := range [][]envelope.Step{stored, newer} {
		for _, st := range list {
			if i, ok := seen[st.Token]; ok {
				out[i] = st
				continue
			}
			seen[st.Token] = len(out)
			out = append(out, st)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out
}

// compactExec is the record of an execution kept under SaveSummary: short names, times in
// milliseconds relative to its receipt, and its steps' summaries, about a third of the full
// record and its step hash. execRecord reads both forms.
type compactExec struct {
	ID       string          `json:"i"`
	FlowID   string          `json:"f"`
	Revision int             `json:"r"`
	Trigger  string          `json:"t,omitempty"`
	Status   string          `json:"s"`
	Error    *envelope.Error `json:"e,omitempty"`
	Received int64           `json:"rx"` // unix ms
	Started  int64           `json:"st"` // ms after Received
	Finished int64           `json:"fi"` // ms after Received
	Steps    []stepSummary   `json:"x,omitempty"`
}

// compactPrefix is how every compactExec's JSON begins (its first field).
var compactPrefix = []byte(`{"i":`)

// stepSummary is what SaveSummary keeps of a step: no payloads, no token, short names.
type stepSummary struct {
	Node    string          `json:"n"`
	Status  string          `json:"s,omitempty"` // "" for succeeded
	Port    string          `json:"p,omitempty"`
	Attempt int             `json:"a,omitempty"` // 0 for 1
	Error   *envelope.Error `json:"e,omitempty"`
	Start   int64           `json:"o"` // ms after the execution's receipt
	Ms      int64           `json:"d,omitempty"`
}

func compact(e *envelope.Execution, steps []envelope.Step) compactExec {
	rx := e.ReceivedAt.UnixMilli()
	c := compactExec{ID: e.ID, FlowID: e.FlowID, Revision: e.Revision, Trigger: e.Trigger, Status: e.Status,
		Error: e.Error, Received: rx, Started: e.StartedAt.UnixMilli() - rx}
	if e.FinishedAt != nil {
		c.Finished = e.FinishedAt.UnixMilli() - rx
	}
	c.Steps = make([]stepSummary, len(steps))
	for i, st := range steps {
		sm := stepSummary{Node: st.NodeID, Status: st.Status, Port: st.Port, Attempt: st.Attempt,
			Error: st.Error, Start: st.StartedAt.UnixMilli() - rx, Ms: st.DurationMs}
		if sm.Status == envelope.StepSucceeded {
			sm.Status = ""
		}
		if sm.Attempt == 1 {
			sm.Attempt = 0
		}
		c.Steps[i] = sm
	}
	return c
}

func (c compactExec) execution() envelope.Execution {
	rx := time.UnixMilli(c.Received).UTC()
	e := envelope.Execution{ID: c.ID, FlowID: c.FlowID, Revision: c.Revision, Trigger: c.Trigger, Status: c.Status,
		Error: c.Error, ReceivedAt: rx, StartedAt: rx.Add(time.Duration(c.Started) * time.Millisecond)}
	if envelope.Terminal(c.Status) {
		fin := rx.Add(time.Duration(c.Finished) * time.Millisecond)
		e.FinishedAt, e.DurationMs = &fin, c.Finished
	}
	return e
}

// steps turns the summaries back into step records (without tokens, types or payloads).
func (c compactExec) steps() []envelope.Step {
	rx := time.UnixMilli(c.Received).UTC()
	out := make([]envelope.Step, len(c.Steps))
	for i, st := range c.Steps {
		start := rx.Add(time.Duration(st.Start) * time.Millisecond)
		out[i] = envelope.Step{ExecutionID: c.ID, NodeID: st.Node, Status: st.Status, Port: st.Port,
			Attempt: max(st.Attempt, 1), Error: st.Error, StartedAt: start, DurationMs: st.Ms}
		if out[i].Status == "" {
			out[i].Status = envelope.StepSucceeded
		}
		if out[i].Status != envelope.StepRunning && out[i].Status != envelope.StepSkipped {
			fin := start.Add(time.Duration(st.Ms) * time.Millisecond)
			out[i].FinishedAt = &fin
		}
	}
	return out
}

// execRecord reads an execution record in either stored form.
type execRecord struct {
	envelope.Execution
	compact *compactExec // set for a record kept under SaveSummary
}

func (r *execRecord) UnmarshalJSON(raw []byte) error {
	if bytes.HasPrefix(raw, compactPrefix) {
		var c compactExec
		if err := json.Unmarshal(raw, &c); err != nil {
			return err
		}
		r.Execution, r.compact = c.execution(), &c
		return nil
	}
	return json.Unmarshal(raw, &r.Execution)
}

func (s *Store) loadSteps(ctx context.Context, k execKeys) ([]envelope.Step, error) {
	var steps, payloads *redis.MapStringStringCmd
	if err := s.pipe.do(ctx, func(p redis.Pipeliner) {
		steps = p.HGetAll(ctx, k.steps)
		payloads = p.HGetAll(ctx, k.payloads)
	}); err != nil {
		return nil, err
	}
	if err := steps.Err(); err != nil {
		return nil, fmt.Errorf("load steps: %w", err)
	}
	if err := payloads.Err(); err != nil {
		return nil, fmt.Errorf("load step payloads: %w", err)
	}
	out := make([]envelope.Step, 0, len(steps.Val()))
	for tok, raw := range steps.Val() {
		var st envelope.Step
		if err := json.Unmarshal([]byte(raw), &st); err != nil {
			return nil, fmt.Errorf("decode step %s: %w", tok, err)
		}
		if raw, ok := payloads.Val()[tok]; ok {
			var pl stepPayload
			if err := json.Unmarshal([]byte(raw), &pl); err != nil {
				return nil, fmt.Errorf("decode payload of step %s: %w", tok, err)
			}
			st.Input, st.Output = pl.Input, pl.Output
		}
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].StartedAt.Equal(out[j].StartedAt) {
			return out[i].StartedAt.Before(out[j].StartedAt)
		}
		return out[i].Token < out[j].Token
	})
	return out, nil
}

// cmdList collects the commands of a change, to run in a MULTI or in a script.
type cmdList [][]any

func (c *cmdList) add(args ...any) { *c = append(*c, args) }

// Counter names in the stats hashes.
const (
	counterSuccess = "success"
	counterError   = "error"
	counterIgnored = "ignored"
)

func counterOf(status string) string {
	switch status {
	case envelope.StatusSucceeded:
		return counterSuccess
	case envelope.StatusFiltered:
		return counterIgnored
	default:
		return counterError
	}
}

func (s *Store) statsKey(flowID string, day time.Time) string {
	return s.tagged("flow", keyID(flowID), "stats", day.UTC().Format("20060102"))
}

// snapshot truncates a step's payloads for storage. A truncated payload becomes a JSON string
// holding its first limit bytes, so the record stays valid JSON and says what it began with.
func snapshot(st envelope.Step, limit int) envelope.Step {
	var cut bool
	st.Input, cut = truncate(st.Input, limit)
	st.Truncated = st.Truncated || cut
	st.Output, cut = truncate(st.Output, limit)
	st.Truncated = st.Truncated || cut
	return st
}

func truncate(raw json.RawMessage, limit int) (json.RawMessage, bool) {
	if len(raw) <= limit {
		return raw, false
	}
	head := raw[:limit]
	for len(head) > 0 && !utf8.Valid(head) {
		head = head[:len(head)-1] // do not split a multi-byte character
	}
	return mustJSON(string(head)), true
}

// MarkProduced records that a message's records are durable in Kafka, so a redelivery of the
// message replays nothing. Without it a redelivery produces them again, which is safe.
func (s *Store) MarkProduced(ctx context.Context, executionID, messageID string) error {
	k := s.execKeysOf(executionID)
	var cmd *redis.Cmd
	err := s.pipe.do(ctx, func(p redis.Pipeliner) {
		cmd = markProducedScript.Eval(ctx, p, []string{k.msgs}, messageID)
	})
	if err == nil {
		err = cmd.Err()
	}
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("mark %s/%s produced: %w", executionID, messageID, err)
	}
	return nil
}

// Only an existing marker is emptied: recreating an expired hash would leave it without a TTL.
var markProducedScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], '')
end
return 0`)

// CountIgnored counts a record a flow ignored (a partner record its filters rejected) once per
// record id, however often the record is delivered. It reports whether this call counted it.
func (s *Store) CountIgnored(ctx context.Context, flowID, recordID string, at time.Time, p ExecPolicy) (bool, error) {
	p = p.WithDefaults()
	minute := at.UTC().Truncate(time.Minute)
	n, err := countIgnoredScript.Run(ctx, s.rdb,
		[]string{s.tagged("flow", keyID(flowID), "ignored", keyID(recordID)), s.statsKey(flowID, minute), s.flowCountsKey(flowID)},
		p.RedeliveryWindow.Milliseconds(), strconv.FormatInt(minute.Unix()/60, 10)+":"+counterIgnored,
		(p.Retention + 24*time.Hour).Milliseconds(), counterIgnored).Int()
	if err != nil {
		return false, fmt.Errorf("count ignored record of %s: %w", flowID, err)
	}
	return n == 1, nil
}

var countIgnoredScript = redis.NewScript(`
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
  redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  return 1
end
return 0`)

// Execution loads one execution record.
func (s *Store) Execution(ctx context.Context, id string) (*envelope.Execution, error) {
	rec, err := getJSON[execRecord](ctx, s.rdb, s.execKey(id))
	if err != nil {
		return nil, err
	}
	return &rec.Execution, nil
}

// ExecutionSteps lists an execution's steps in the order they started.
func (s *Store) ExecutionSteps(ctx context.Context, id string) ([]envelope.Step, error) {
	k := s.execKeysOf(id)
	n, err := s.rdb.Exists(ctx, k.exec).Result()
	if err != nil {
		return nil, fmt.Errorf("load steps of %s: %w", id, err)
	}
	if n == 0 {
		return nil, ErrNotFound
	}
	steps, err := s.loadSteps(ctx, k)
	if err != nil {
		return nil, fmt.Errorf("load steps of %s: %w", id, err)
	}
	if len(steps) > 0 {
		return steps, nil
	}
	// Kept under SaveSummary: the steps are in the record.
	rec, err := getJSON[execRecord](ctx, s.rdb, k.exec)
	if errors.Is(err, ErrNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load steps of %s: %w", id, err)
	}
	if rec.compact == nil {
		return steps, nil
	}
	return rec.compact.steps(), nil
}

// StatsBucket is one minute of a flow's completed executions.
type StatsBucket struct {
	Minute  time.Time `json:"minute"`
	Success int64     `json:"success"`
	Error   int64     `json:"error"`
	Ignored int64     `json:"ignored"`
}

// FlowStats returns the minutes between from and to (inclusive, at minute resolution, UTC)
// in which the flow had completions or ignored records, oldest first. Minutes without any are
// left out.
func (s *Store) FlowStats(ctx context.Context, flowID string, from, to time.Time) ([]StatsBucket, error) {
	from, to = from.UTC().Truncate(time.Minute), to.UTC()
	if to.Before(from) {
		return []StatsBucket{}, nil
	}
	var cmds []*redis.MapStringStringCmd
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for day := from.Truncate(24 * time.Hour); !day.After(to); day = day.Add(24 * time.Hour) {
			cmds = append(cmds, p.HGetAll(ctx, s.statsKey(flowID, day)))
		}
		return nil
	}); err != nil {
		return nil, fmt.Errorf("load stats of %s: %w", flowID, err)
	}
	buckets := map[int64]*StatsBucket{}
	for _, c := range cmds {
		for field, v := range c.Val() {
			minStr, counter, ok := strings.Cut(field, ":")
			m, err := strconv.ParseInt(minStr, 10, 64)
			if !ok || err != nil {
				continue
			}
			at := time.Unix(m*60, 0).UTC()
			if at.Before(from) || at.After(to) {
				continue
			}
			n, _ := strconv.ParseInt(v, 10, 64)
			b := buckets[m]
			if b == nil {
				b = &StatsBucket{Minute: at}
				buckets[m] = b
			}
			switch counter {
			case counterSuccess:
				b.Success += n
			case counterError:
				b.Error += n
			case counterIgnored:
				b.Ignored += n
			}
		}
	}
	out := make([]StatsBucket, 0, len(buckets))
	for _, b := range buckets {
		out = append(out, *b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Minute.Before(out[j].Minute) })
	return out, nil
}

// PushReply hands a reply to the synchronous caller waiting for an execution.
func (s *Store) PushReply(ctx context.Context, executionID string, r envelope.Reply, ttl time.Duration) error {
	if ttl <= 0 {
		ttl = DefaultReplyTTL
	}
	key := s.execKeysOf(executionID).reply
	if _, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, key, mustJSON(r))
		p.PExpire(ctx, key, ttl)
		return nil
	}); err != nil {
		return fmt.Errorf("push reply of %s: %w", executionID, err)
	}
	return nil
}

// WaitReply waits up to timeout (or until ctx's deadline, if sooner) for an execution's
// reply; ErrNoReply when none came.
// blpopSeconds is a BLPOP timeout to the millisecond (0 would block forever).
func blpopSeconds(d time.Duration) string {
	return strconv.FormatFloat(max(d.Seconds(), 0.001), 'f', 3, 64)
}

func (s *Store) WaitReply(ctx context.Context, executionID string, timeout time.Duration) (*envelope.Reply, error) {
	if dl, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(dl))
	}
	if timeout <= 0 {
		return nil, ErrNoReply
	}
	key := s.execKeysOf(executionID).reply
	var kv []string
	var err error
	if timeout < time.Second {
		// go-redis's BLPop rounds a timeout under 1 s up to 1 s; BLPOP itself takes seconds with
		// a fraction (Redis 6), and the client's read timeout covers a wait that short.
		kv, err = s.rdb.Do(ctx, "BLPOP", key, blpopSeconds(timeout)).StringSlice()
	} else {
		kv, err = s.rdb.BLPop(ctx, timeout, key).Result()
	}
	if errors.Is(err, redis.Nil) {
		return nil, ErrNoReply
	}
	if err != nil {
		return nil, fmt.Errorf("wait for the reply of %s: %w", executionID, err)
	}
	if len(kv) != 2 {
		return nil, fmt.Errorf("wait for the reply of %s: BLPOP answered %d values", executionID, len(kv))
	}
	var r envelope.Reply
	if err := json.Unmarshal([]byte(kv[1]), &r); err != nil {
		return nil, fmt.Errorf("decode reply of %s: %w", executionID, err)
	}
	return &r, nil
}
