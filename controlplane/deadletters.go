package controlplane

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/deadletters"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/store"
)

// DeadLetters is what the control plane does with dead letters; *deadletters.Service does it.
type DeadLetters interface {
	List(ctx context.Context, scope store.DeadLetterQuery, f deadletters.Filter) ([]store.DeadLetter, error)
	Get(ctx context.Context, id string) (*store.DeadLetter, error)
	Replay(ctx context.Context, id, by string) (*store.DeadLetter, error)
	ReplayMany(ctx context.Context, dls []store.DeadLetter, by string) (deadletters.Report, error)
	Discard(ctx context.Context, id, by string) (*store.DeadLetter, error)
	NotReplayable(dl *store.DeadLetter) string
}

var _ DeadLetters = (*deadletters.Service)(nil)

// Dead letters are read with flows.read and replayed or discarded with flows.control (the
// permission that starts and stops flows: a replay runs one), each only of the flows the
// caller can see; dead letters naming no flow, or records no flowd role wrote, only by
// administrators. Another tenant's dead letter is a 404, as its flow is.
func (s *Server) mountDeadLetters(r fiber.Router) {
	r.Get("/dead-letters", s.listDeadLetters)
	r.Post("/dead-letters/replay", s.replayDeadLetters)
	r.Get("/dead-letters/:id", s.getDeadLetter)
	r.Post("/dead-letters/:id/replay", s.replayDeadLetter)
	r.Delete("/dead-letters/:id", s.discardDeadLetter)
}

// deadLetterView is a dead letter as the API shows it; the one-dead-letter answers add the
// record's headers and value.
type deadLetterView struct {
	ID             string      `json:"id"`
	Status         string      `json:"status"`
	Reason         string      `json:"reason"`
	Topic          string      `json:"topic"`
	Partition      int         `json:"partition"`
	Offset         int64       `json:"offset"`
	Key            *string     `json:"key,omitempty"`
	KeyBase64      string      `json:"keyBase64,omitempty"`
	FlowID         string      `json:"flowId,omitempty"`
	ExecutionID    string      `json:"executionId,omitempty"`
	Authentic      bool        `json:"authentic"`
	ParkedStep     *parkedView `json:"parkedStep,omitempty"`
	ValueBytes     int         `json:"valueBytes"`
	Truncated      bool        `json:"truncated"`
	DeadLetteredAt time.Time   `json:"deadLetteredAt"`
	Replayable     bool        `json:"replayable"`
	NotReplayable  string      `json:"notReplayableReason,omitempty"`
	ReplayedBy     string      `json:"replayedBy,omitempty"`
	ReplayedAt     *time.Time  `json:"replayedAt,omitempty"`
	DiscardedBy    string      `json:"discardedBy,omitempty"`
	DiscardedAt    *time.Time  `json:"discardedAt,omitempty"`

	Headers     []headerView    `json:"headers,omitempty"`
	Value       json.RawMessage `json:"value,omitempty"`       // the value, when it is whole and JSON
	ValueText   *string         `json:"valueText,omitempty"`   // else as text, when it is UTF-8
	ValueBase64 string          `json:"valueBase64,omitempty"` // else in base64
}

// parkedView is the step a dead letter holds parked: replaying runs its attempt, discarding
// fails it.
type parkedView struct {
	NodeID  string `json:"nodeId"`
	Token   string `json:"token"`
	Attempt int    `json:"attempt"`
}

type headerView struct {
	Key         string  `json:"key"`
	Value       *string `json:"value,omitempty"`
	ValueBase64 string  `json:"valueBase64,omitempty"`
}

// text returns b as a string when it is UTF-8, else "" and b in base64.
func text(b []byte) (*string, string) {
	if utf8.Valid(b) {
		s := string(b)
		return &s, ""
	}
	return nil, base64.StdEncoding.EncodeToString(b)
}

func (s *Server) deadLetterView(dl *store.DeadLetter, full bool) deadLetterView {
	why := s.cfg.DeadLetters.NotReplayable(dl)
	v := deadLetterView{
		ID: dl.ID, Status: dl.Status, Reason: dl.Reason, Topic: dl.Topic, Partition: dl.Partition, Offset: dl.Offset,
		FlowID: dl.FlowID, ExecutionID: dl.ExecutionID, Authentic: dl.Authentic, ValueBytes: dl.ValueBytes,
		Truncated: dl.Truncated, DeadLetteredAt: dl.At, Replayable: why == "", NotReplayable: why,
		ReplayedBy: dl.ReplayedBy, ReplayedAt: dl.ReplayedAt, DiscardedBy: dl.DiscardedBy, DiscardedAt: dl.DiscardedAt,
	}
	if pk := dl.Parked; pk != nil {
		v.ParkedStep = &parkedView{NodeID: pk.NodeID, Token: pk.Token, Attempt: pk.Attempt}
	}
	if len(dl.Key) > 0 {
		v.Key, v.KeyBase64 = text(dl.Key)
	}
	if !full {
		return v
	}
	v.Headers = make([]headerView, len(dl.Headers))
	for i, h := range dl.Headers {
		v.Headers[i].Key = h.Key
		v.Headers[i].Value, v.Headers[i].ValueBase64 = text(h.Value)
	}
	switch {
	case !dl.Truncated && len(dl.Value) > 0 && json.Valid(dl.Value):
		v.Value = dl.Value
	default:
		v.ValueText, v.ValueBase64 = text(dl.Value)
	}
	return v
}

// deadLettersOn returns the configured dead letters, or a 503 when this API has none.
func (s *Server) deadLettersOn() (DeadLetters, error) {
	if s.cfg.DeadLetters == nil {
		return nil, fail(fiber.StatusServiceUnavailable, problem.New("dead_letters_unavailable", "", "this API does not index dead letters"))
	}
	return s.cfg.DeadLetters, nil
}

// deadLetterScope is the dead letters p may see, of one flow when flowID is set.
func (s *Server) deadLetterScope(ctx context.Context, p *identity.Principal, flowID string) (store.DeadLetterQuery, error) {
	if p.IsAdmin() {
		if flowID != "" {
			return store.DeadLetterQuery{FlowIDs: []string{flowID}}, nil
		}
		return store.DeadLetterQuery{All: true}, nil
	}
	flows, err := s.visibleFlows(ctx, p)
	if err != nil {
		return store.DeadLetterQuery{}, err
	}
	q := store.DeadLetterQuery{FlowIDs: make([]string, 0, len(flows))}
	for _, f := range flows {
		if flowID == "" || f.ID == flowID {
			q.FlowIDs = append(q.FlowIDs, f.ID)
		}
	}
	return q, nil
}

// deadLetterFilter checks a list's filters, reported at path(name) each.
func deadLetterFilter(flowID string, f deadletters.Filter, path func(string) string) problem.List {
	var ps problem.List
	if len(flowID) > 200 {
		ps = append(ps, problem.New("invalid_parameter", path("flowId"), "a flow id has at most 200 characters"))
	}
	if len(f.ExecutionID) > 200 {
		ps = append(ps, problem.New("invalid_parameter", path("executionId"), "an execution id has at most 200 characters"))
	}
	if len(f.Reason) > 200 {
		ps = append(ps, problem.New("invalid_parameter", path("reason"), "the reason filter is limited to 200 characters"))
	}
	if len(f.Topic) > 255 {
		ps = append(ps, problem.New("invalid_parameter", path("topic"), "a topic name has at most 255 characters"))
	}
	if f.Status != "" && !slices.Contains(store.DeadLetterStatuses, f.Status) {
		ps = append(ps, problem.New("invalid_parameter", path("status"), "the status must be one of %s", strings.Join(store.DeadLetterStatuses, ", ")))
	}
	return ps
}

func (s *Server) listDeadLetters(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsRead)
	if err != nil {
		return err
	}
	dls, err := s.deadLettersOn()
	if err != nil {
		return err
	}
	lp, err := parseList(c, []string{"deadLetteredAt"}, "-deadLetteredAt")
	if err != nil {
		return err
	}
	flowID := c.Query("filter[flowId]")
	f := deadletters.Filter{ExecutionID: c.Query("filter[executionId]"), Reason: c.Query("filter[reason]"),
		Topic: c.Query("filter[topic]"), Status: c.Query("filter[status]")}
	ps := deadLetterFilter(flowID, f, func(name string) string { return "filter[" + name + "]" })
	if !lp.desc {
		ps = append(ps, problem.New("invalid_parameter", "sort", "dead letters are listed newest first (sort=-deadLetteredAt)"))
	}
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	scope, err := s.deadLetterScope(c.UserContext(), p, flowID)
	if err != nil {
		return err
	}
	all, err := dls.List(c.UserContext(), scope, f)
	if err != nil {
		return err
	}
	items, m := page(all, lp)
	out := make([]deadLetterView, len(items))
	for i := range items {
		out[i] = s.deadLetterView(&items[i], false)
	}
	return sendList(c, out, m)
}

// visibleDeadLetter loads the dead letter the path names, if p may see it: an administrator
// every one, anyone else those of the flows they see (a 404 otherwise, as for a missing one).
func (s *Server) visibleDeadLetter(c *fiber.Ctx, p *identity.Principal) (*store.DeadLetter, error) {
	dls, err := s.deadLettersOn()
	if err != nil {
		return nil, err
	}
	ctx := c.UserContext()
	dl, err := dls.Get(ctx, c.Params("id"))
	if errors.Is(err, store.ErrNotFound) {
		return nil, notFound("dead letter")
	}
	if err != nil {
		return nil, err
	}
	if p.IsAdmin() {
		return dl, nil
	}
	if dl.FlowID == "" {
		return nil, notFound("dead letter")
	}
	f, err := s.st.Flow(ctx, dl.FlowID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		return nil, notFound("dead letter")
	case err != nil:
		return nil, err
	case !canSeeFlow(p, f):
		return nil, notFound("dead letter")
	}
	return dl, nil
}

func (s *Server) getDeadLetter(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsRead)
	if err != nil {
		return err
	}
	dl, err := s.visibleDeadLetter(c, p)
	if err != nil {
		return err
	}
	return sendData(c, fiber.StatusOK, s.deadLetterView(dl, true))
}

// deadLetterConflict answers a replay or discard the dead letter's status forbids.
func deadLetterConflict(err error, dl *store.DeadLetter) error {
	switch {
	case errors.Is(err, store.ErrReplayed):
		return fail(fiber.StatusConflict, problem.New("already_replayed", "", "the dead letter was replayed already; it is not produced again"))
	case errors.Is(err, store.ErrReplaying):
		msg := "the dead letter is being replayed"
		if dl != nil && dl.LeaseUntil != nil {
			msg += "; if that replay does not finish, it is taken over after " + dl.LeaseUntil.UTC().Format(time.RFC3339)
		}
		return fail(fiber.StatusConflict, problem.New("replay_in_progress", "", "%s", msg))
	case errors.Is(err, store.ErrDiscarded):
		return fail(fiber.StatusConflict, problem.New("dead_letter_discarded", "", "the dead letter was discarded; it is not replayed"))
	case errors.Is(err, deadletters.ErrNotReplayable):
		return fail(fiber.StatusConflict, problem.New("not_replayable", "", "%s", strings.TrimPrefix(err.Error(), deadletters.ErrNotReplayable.Error()+": ")))
	case errors.Is(err, store.ErrNotFound):
		return notFound("dead letter")
	}
	return err
}

func (s *Server) replayDeadLetter(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsControl)
	if err != nil {
		return err
	}
	dl, err := s.visibleDeadLetter(c, p)
	if err != nil {
		return err
	}
	dl, err = s.cfg.DeadLetters.Replay(c.UserContext(), dl.ID, p.User.ID)
	switch {
	case err == nil:
		audited(c, deadLetterEntry(audit.DeadLetterReplay, dl.ID))
		return sendData(c, fiber.StatusOK, s.deadLetterView(dl, false))
	case errors.Is(err, deadletters.ErrPending):
		// Claimed, so no other replay produces it; the sweep produces it once the lease ran out.
		s.log.Warn("dead letter replay not acknowledged yet; it is retried", "id", dl.ID, "err", err)
		audited(c, deadLetterEntry(audit.DeadLetterReplay, dl.ID))
		return sendData(c, fiber.StatusAccepted, s.deadLetterView(dl, false))
	}
	return deadLetterConflict(err, dl)
}

func (s *Server) discardDeadLetter(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsControl)
	if err != nil {
		return err
	}
	dl, err := s.visibleDeadLetter(c, p)
	if err != nil {
		return err
	}
	was := dl.Status
	dl, err = s.cfg.DeadLetters.Discard(c.UserContext(), dl.ID, p.User.ID)
	if errors.Is(err, deadletters.ErrPending) {
		s.log.Warn("discarded a parked step's dead letter, but its failure was not acknowledged", "id", dl.ID, "err", err)
		return fail(fiber.StatusServiceUnavailable, problem.New("not_acknowledged", "",
			"the dead letter is discarded, but failing its parked step was not acknowledged by Kafka; discard it again"))
	}
	if err != nil {
		return deadLetterConflict(err, dl)
	}
	// Discarding again changes nothing, but for a parked step's dead letter: it fails the step
	// again, finishing a discard that answered 503.
	if was != store.DeadLetterDiscarded || dl.Parked != nil {
		audited(c, deadLetterEntry(audit.DeadLetterDiscard, dl.ID))
	}
	return sendData(c, fiber.StatusOK, s.deadLetterView(dl, false))
}

func deadLetterEntry(action, id string) audit.Entry {
	return audit.Entry{Action: action, Target: audit.Target{Type: audit.TargetDeadLetter, ID: id}}
}

// replayRequest is the body of POST /dead-letters/replay.
type replayRequest struct {
	Filter *struct {
		FlowID      string `json:"flowId"`
		ExecutionID string `json:"executionId"`
		Reason      string `json:"reason"`
		Topic       string `json:"topic"`
		Status      string `json:"status"`
	} `json:"filter"`
	Limit *int `json:"limit"`
}

// replayDeadLetters replays the caller's dead letters a filter matches, oldest first, at most
// deadletters.MaxReplay (or limit) per call, and reports what it did. The filter must name a
// flow, a reason or a topic: nobody replays everything by accident. The status defaults to open.
func (s *Server) replayDeadLetters(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsControl)
	if err != nil {
		return err
	}
	dls, err := s.deadLettersOn()
	if err != nil {
		return err
	}
	var in replayRequest
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	var ps problem.List
	limit := deadletters.MaxReplay
	if in.Limit != nil {
		if *in.Limit < 1 || *in.Limit > deadletters.MaxReplay {
			ps = append(ps, problem.New("invalid", "/limit", "limit must be from 1 to %d", deadletters.MaxReplay))
		}
		limit = *in.Limit
	}
	if in.Filter == nil || (in.Filter.FlowID == "" && in.Filter.ExecutionID == "" && in.Filter.Reason == "" && in.Filter.Topic == "") {
		ps = append(ps, problem.New("required", "/filter", "filter must name a flowId, an executionId, a reason or a topic"))
		return fail(fiber.StatusBadRequest, ps...)
	}
	fl := *in.Filter
	f := deadletters.Filter{ExecutionID: fl.ExecutionID, Reason: fl.Reason, Topic: fl.Topic, Status: fl.Status}
	if f.Status == "" {
		f.Status = store.DeadLetterOpen
	}
	ps = append(ps, deadLetterFilter(fl.FlowID, f, func(name string) string { return "/filter/" + name })...)
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	ctx := c.UserContext()
	scope, err := s.deadLetterScope(ctx, p, fl.FlowID)
	if err != nil {
		return err
	}
	matched, err := dls.List(ctx, scope, f)
	if err != nil {
		return err
	}
	slices.Reverse(matched) // oldest first: records are replayed in the order they failed
	batch := matched[:min(limit, len(matched))]
	rep, err := dls.ReplayMany(ctx, batch, p.User.ID)
	if err != nil {
		return err
	}
	for _, id := range rep.ReplayedIDs {
		audited(c, deadLetterEntry(audit.DeadLetterReplay, id))
	}
	return sendData(c, fiber.StatusOK, struct {
		Matched   int `json:"matched"`
		Remaining int `json:"remaining"`
		deadletters.Report
	}{len(matched), len(matched) - len(batch), rep})
}
