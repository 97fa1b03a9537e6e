package router

import (
	"context"
	"encoding/json"
	"errors"
	"sort"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/store"
)

// fakeStore is an in-memory Store with the contract of internal/store: one transition per
// message, a marker per consumed message that makes a redelivery a replay, and records kept
// in the marker until MarkProduced.
type fakeStore struct {
	mu       sync.Mutex
	flows    map[string][]flowdoc.Flow // revisions by flow id, revision n at index n-1
	execs    map[string]*fakeExecution
	ignored  map[string]bool
	statuses map[string][]byte
	delayed  map[string]store.Delayed
	scheds   map[string]*fakeSchedule
	awaited  map[string]string // flow id -> partner topic it started before
}

type fakeSchedule struct {
	rev             int
	last, next, due time.Time
}

type fakeExecution struct {
	exec    *envelope.Execution
	state   json.RawMessage
	outputs map[string]json.RawMessage
	pending map[string]json.RawMessage
	steps   map[string]envelope.Step
	msgs    map[string][]store.Record // consumed message id -> records not yet produced
	replies []envelope.Reply
}

func newFakeStore() *fakeStore {
	return &fakeStore{flows: map[string][]flowdoc.Flow{}, execs: map[string]*fakeExecution{},
		ignored: map[string]bool{}, statuses: map[string][]byte{}, delayed: map[string]store.Delayed{}, scheds: map[string]*fakeSchedule{},
		awaited: map[string]string{}}
}

// save stores f as its flow's next revision.
func (s *fakeStore) save(f flowdoc.Flow) *flowdoc.Flow {
	s.mu.Lock()
	defer s.mu.Unlock()
	f.Revision = len(s.flows[f.ID]) + 1
	s.flows[f.ID] = append(s.flows[f.ID], f)
	return &f
}

func (s *fakeStore) Flow(_ context.Context, id string) (*flowdoc.Flow, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	revs := s.flows[id]
	if len(revs) == 0 {
		return nil, store.ErrNotFound
	}
	f := revs[len(revs)-1]
	return &f, nil
}

func (s *fakeStore) Revision(_ context.Context, id string, n int) (*flowdoc.Flow, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	revs := s.flows[id]
	if n < 1 || n > len(revs) {
		return nil, store.ErrNotFound
	}
	f := revs[n-1]
	return &f, nil
}

func (s *fakeStore) AllFlows(ctx context.Context) ([]flowdoc.Flow, error) {
	s.mu.Lock()
	ids := make([]string, 0, len(s.flows))
	for id := range s.flows {
		ids = append(ids, id)
	}
	s.mu.Unlock()
	sort.Strings(ids)
	var out []flowdoc.Flow
	for _, id := range ids {
		f, _ := s.Flow(ctx, id)
		out = append(out, *f)
	}
	return out, nil
}

func (s *fakeStore) UpdateFlow(ctx context.Context, id string, decide func(cur *flowdoc.Flow) (store.Mutation, error)) (*flowdoc.Flow, error) {
	cur, err := s.Flow(ctx, id)
	if err != nil {
		return nil, err
	}
	m, err := decide(cur)
	if err != nil || m.Flow == nil {
		return cur, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	revs := s.flows[id]
	if m.NewRevision {
		m.Flow.Revision = len(revs) + 1
		s.flows[id] = append(revs, *m.Flow)
	} else {
		revs[len(revs)-1] = *m.Flow
	}
	return m.Flow, nil
}

func (s *fakeStore) AdvanceExecution(_ context.Context, t store.Transition, decide func(*store.ExecState) (*store.ExecChange, error)) (store.Advanced, error) {
	if t.ExecutionID == "" || t.MessageID == "" {
		return store.Advanced{}, errors.New("a transition needs an execution id and a message id")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.execs[t.ExecutionID]
	if e == nil {
		e = &fakeExecution{outputs: map[string]json.RawMessage{}, pending: map[string]json.RawMessage{},
			steps: map[string]envelope.Step{}, msgs: map[string][]store.Record{}}
	}
	if recs, ok := e.msgs[t.MessageID]; ok {
		return store.Advanced{Records: recs, Replayed: true}, nil
	}
	cur := &store.ExecState{State: e.state, Outputs: map[string]json.RawMessage{}}
	if e.exec != nil {
		x := *e.exec
		cur.Execution = &x
	}
	for k, v := range e.outputs {
		cur.Outputs[k] = v
	}
	if t.Token != "" {
		cur.Pending = e.pending[t.Token]
	}
	cur.LoadSteps = func() ([]envelope.Step, error) { return e.sortedSteps(), nil }
	ch, err := decide(cur)
	if err != nil {
		return store.Advanced{}, err
	}
	if ch == nil {
		ch = &store.ExecChange{}
	}
	res := store.Advanced{Records: ch.Records}
	if x := ch.Execution; x != nil {
		res.Ended = envelope.Terminal(x.Status) && (e.exec == nil || !envelope.Terminal(e.exec.Status))
		cp := *x
		e.exec = &cp
	}
	if ch.State != nil {
		e.state = ch.State
	}
	for k, v := range ch.Outputs {
		e.outputs[k] = v
	}
	for k, v := range ch.AddPending {
		e.pending[k] = v
	}
	for _, k := range ch.DonePending {
		delete(e.pending, k)
	}
	for _, st := range ch.Steps {
		e.steps[st.Token] = st
	}
	if ch.Reply != nil {
		e.replies = append(e.replies, *ch.Reply)
	}
	e.msgs[t.MessageID] = ch.Records
	s.execs[t.ExecutionID] = e
	return res, nil
}

func (e *fakeExecution) sortedSteps() []envelope.Step {
	out := make([]envelope.Step, 0, len(e.steps))
	for _, st := range e.steps {
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].StartedAt.Before(out[j].StartedAt) })
	return out
}

func (s *fakeStore) MarkProduced(_ context.Context, executionID, messageID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.execs[executionID]; e != nil {
		if _, ok := e.msgs[messageID]; ok {
			e.msgs[messageID] = nil
		}
	}
	return nil
}

func (s *fakeStore) CountIgnored(_ context.Context, flowID, recordID string, _ time.Time, _ store.ExecPolicy) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := flowID + "/" + recordID
	counted := !s.ignored[k]
	s.ignored[k] = true
	return counted, nil
}

func (s *fakeStore) SetTriggerStatus(_ context.Context, flowID string, report []byte, _ time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.statuses[flowID] = report
	return nil
}

func (s *fakeStore) AwaitPartnerTopic(_ context.Context, flowID, topic string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.awaited[flowID] = topic
	return nil
}

func (s *fakeStore) PartnerTopicAwaited(_ context.Context, flowID, topic string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.awaited[flowID] == topic, nil
}

func (s *fakeStore) ForgetAwaitedTopic(_ context.Context, flowID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.awaited, flowID)
	return nil
}

func (s *fakeStore) Tenant(context.Context, string) (*identity.Tenant, error) {
	return nil, store.ErrNotFound
}

func (s *fakeStore) User(context.Context, string) (*identity.User, error) {
	return nil, store.ErrNotFound
}

func (s *fakeStore) Schedule(_ context.Context, recs ...store.Delayed) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, d := range recs {
		s.delayed[d.ID] = d
	}
	return nil
}

func (s *fakeStore) TakeDue(_ context.Context, now time.Time, lease time.Duration, n int) ([]store.Delayed, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.Delayed
	var next time.Time
	for id, d := range s.delayed {
		if !d.Record.Due.After(now) && len(out) < n {
			out = append(out, d)
			d.Record.Due = now.Add(lease)
			s.delayed[id] = d
		} else if next.IsZero() || d.Record.Due.Before(next) {
			next = d.Record.Due
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, next, nil
}

func (s *fakeStore) Done(_ context.Context, ids ...string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, id := range ids {
		delete(s.delayed, id)
	}
	return nil
}

// waiting returns the records in the delay queue.
func (s *fakeStore) EnsureSchedule(_ context.Context, flowID string, rev int, next, now time.Time) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scheds[flowID]
	if sc != nil && sc.rev == rev {
		return false, nil
	}
	if sc == nil {
		sc = &fakeSchedule{last: now}
		s.scheds[flowID] = sc
	}
	sc.rev, sc.next, sc.due = rev, next, next
	return true, nil
}

func (s *fakeStore) DropSchedule(_ context.Context, flowID string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.scheds, flowID)
	return nil
}

func (s *fakeStore) TakeDueSchedules(_ context.Context, now time.Time, lease time.Duration, n int) ([]store.DueSchedule, time.Time, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []store.DueSchedule
	var next time.Time
	for id, sc := range s.scheds {
		if !sc.due.After(now) && len(out) < n {
			sc.due = now.Add(lease)
			out = append(out, store.DueSchedule{FlowID: id, Revision: sc.rev, Last: sc.last})
		}
		if next.IsZero() || sc.due.Before(next) {
			next = sc.due
		}
	}
	return out, next, nil
}

func (s *fakeStore) FiredSchedule(_ context.Context, flowID string, rev int, last, next time.Time) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scheds[flowID]
	if sc == nil || sc.rev != rev {
		return nil
	}
	if last.After(sc.last) {
		sc.last = last
	}
	sc.next, sc.due = next, next
	return nil
}

func (s *fakeStore) EnsurePoll(context.Context, string, string, int, time.Time) (bool, error) {
	return false, nil
}

func (s *fakeStore) DropPoll(context.Context, string, bool) error { return nil }

// forgetMarkers drops an execution's markers, as their redelivery window ending does.
func (s *fakeStore) forgetMarkers(execID string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.execs[execID]; e != nil {
		e.msgs = map[string][]store.Record{}
	}
}

func (s *fakeStore) waiting() []store.Delayed {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]store.Delayed, 0, len(s.delayed))
	for _, d := range s.delayed {
		out = append(out, d)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

func (s *fakeStore) Execution(_ context.Context, id string) (*envelope.Execution, error) {
	if x := s.execution(id); x != nil {
		return x, nil
	}
	return nil, store.ErrNotFound
}

func (s *fakeStore) ExecutionSteps(_ context.Context, id string) ([]envelope.Step, error) {
	return s.stepsOf(id), nil
}

// execution returns a copy of the stored execution record, nil if there is none.
func (s *fakeStore) execution(id string) *envelope.Execution {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.execs[id]
	if e == nil || e.exec == nil {
		return nil
	}
	x := *e.exec
	return &x
}

func (s *fakeStore) stepsOf(id string) []envelope.Step {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := s.execs[id]; e != nil {
		return e.sortedSteps()
	}
	return nil
}

// fakeWriter keeps what is produced; fail makes the next writes fail.
type fakeWriter struct {
	mu   sync.Mutex
	msgs []kafka.Message
	fail int
}

var errBrokerDown = errors.New("broker unavailable")

func (w *fakeWriter) WriteMessages(_ context.Context, msgs ...kafka.Message) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.fail > 0 {
		w.fail--
		return errBrokerDown
	}
	w.msgs = append(w.msgs, msgs...)
	return nil
}

// take returns what was produced since the last take.
func (w *fakeWriter) take() []kafka.Message {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.msgs
	w.msgs = nil
	return out
}

var _ Store = (*fakeStore)(nil)
