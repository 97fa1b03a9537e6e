package controlplane

import (
	"errors"
	"slices"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/store"
)

// The error dashboard's verbs: a flow's open errors grouped by code, and marking them
// resolved (one by one, or every open one of a code).

func (s *Server) mountErrors(r fiber.Router) {
	r.Get("/flows/:id/errors", s.flowErrors)
	r.Post("/flows/:id/errors/resolve", s.resolveErrors)
	r.Post("/flows/:id/errors/retry", s.retryErrors)
	r.Post("/executions/:id/retry", s.retryExecution)
}

func (s *Server) flowErrors(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermFlowsRead); err != nil {
		return err
	}
	f, err := s.visibleFlow(c)
	if err != nil {
		return err
	}
	sum, err := s.st.ErrorGroups(c.UserContext(), f.ID)
	if err != nil {
		return err
	}
	return sendData(c, fiber.StatusOK, sum)
}

// maxResolve bounds one resolve call.
const maxResolve = store.MaxErrorScan

func (s *Server) resolveErrors(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermFlowsControl); err != nil {
		return err
	}
	f, err := s.visibleFlow(c)
	if err != nil {
		return err
	}
	var in selection
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	if err := in.check("resolve"); err != nil {
		return err
	}
	ctx := c.UserContext()
	ids := in.ExecutionIDs
	if in.Code != "" {
		if ids, err = s.st.OpenFailures(ctx, f.ID, in.Code, maxResolve); err != nil {
			return err
		}
	}
	n, err := s.st.ResolveErrors(ctx, f.ID, ids, historyAge(f))
	if err != nil {
		return err
	}
	s.log.Info("errors resolved", "flow", f.ID, "resolved", n, "code", in.Code, "by", principal(c).User.ID)
	if n > 0 {
		audited(c, audit.Entry{Action: audit.ErrorsResolve, Target: flowTarget(f), Count: n})
	}
	return sendData(c, fiber.StatusOK, fiber.Map{"resolved": n})
}

// historyAge is how long the flow's failures are kept: its own maxAge, or the default.
func historyAge(f *flowdoc.Flow) time.Duration {
	if f.History != nil {
		if d, err := time.ParseDuration(f.History.MaxAge); err == nil && d > 0 {
			return d
		}
	}
	return store.DefaultExecutionRetention
}

// selection names a flow's failed executions: by id, or every open one of an error code.
type selection struct {
	ExecutionIDs []string `json:"executionIds"`
	Code         string   `json:"code"`
}

// check refuses a selection that names nothing, both ways, or too many; verb says what it is for.
func (sel selection) check(verb string) error {
	switch {
	case len(sel.ExecutionIDs) == 0 && sel.Code == "":
		return fail(fiber.StatusBadRequest, problem.New("required", "/executionIds", "name the failed executions to %s (executionIds) or an error code (code)", verb))
	case len(sel.ExecutionIDs) > 0 && sel.Code != "":
		return fail(fiber.StatusBadRequest, problem.New("invalid", "/code", "give executionIds or code, not both"))
	case len(sel.ExecutionIDs) > maxResolve:
		return fail(fiber.StatusBadRequest, problem.New("too_large", "/executionIds", "at most %d executions per call", maxResolve))
	}
	return nil
}

// retryRequest is the body of the retry routes.
type retryRequest struct {
	selection
	// Revision is "original" (the revision the execution ran, the default) or "current".
	Revision string `json:"revision"`
}

func (in retryRequest) revision(f *flowdoc.Flow) (int, error) {
	switch in.Revision {
	case "", "original":
		return 0, nil
	case "current":
		return f.Revision, nil
	}
	return 0, fail(fiber.StatusBadRequest, problem.New("invalid", "/revision", "revision must be original or current"))
}

type retried struct {
	ExecutionID    string `json:"executionId"`
	RetryID        string `json:"retryId"`
	AlreadyRetried bool   `json:"alreadyRetried"`
}

// retryOne asks for the retry of failed execution id of flow f and marks its error resolved.
func (s *Server) retryOne(c *fiber.Ctx, f *flowdoc.Flow, id string, rev int) (retried, error) {
	ev := events.Event{FlowID: f.ID, Actor: principal(c).User.ID, Tenant: principal(c).User.Tenant}
	rid, again, err := s.st.RetryExecution(c.UserContext(), id, rev, ev, historyAge(f))
	if err != nil {
		return retried{}, err
	}
	if _, err := s.st.ResolveErrors(c.UserContext(), f.ID, []string{id}, historyAge(f)); err != nil {
		return retried{}, err
	}
	return retried{ExecutionID: id, RetryID: rid, AlreadyRetried: again}, nil
}

// retryExecution: POST /api/v1/executions/{id}/retry.
func (s *Server) retryExecution(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsControl)
	if err != nil {
		return err
	}
	var in retryRequest
	if len(c.Body()) > 0 {
		if err := decodeBody(c, &in); err != nil {
			return err
		}
	}
	ctx := c.UserContext()
	ex, err := s.st.Execution(ctx, c.Params("id"))
	if errors.Is(err, store.ErrNotFound) {
		return notFound("execution")
	}
	if err != nil {
		return err
	}
	f, err := s.st.Flow(ctx, ex.FlowID)
	if errors.Is(err, store.ErrNotFound) || (err == nil && !canSeeFlow(p, f)) {
		return notFound("execution")
	}
	if err != nil {
		return err
	}
	if ex.Status != envelope.StatusFailed {
		return fail(fiber.StatusConflict, problem.New("not_failed", "", "execution %s is %s: only failed executions are retried", ex.ID, ex.Status))
	}
	rev, err := in.revision(f)
	if err != nil {
		return err
	}
	r, err := s.retryOne(c, f, ex.ID, rev)
	if err != nil {
		return err
	}
	s.cfg.Relay.Kick()
	s.log.Info("execution retry requested", "execution", ex.ID, "retry", r.RetryID, "by", p.User.ID)
	if !r.AlreadyRetried { // asking again starts nothing new
		audited(c, audit.Entry{Action: audit.ExecutionRetry, Target: audit.Target{Type: audit.TargetExecution, ID: ex.ID}})
	}
	return sendData(c, fiber.StatusAccepted, r)
}

// retryErrors: POST /api/v1/flows/{id}/errors/retry retries open failures by id or by code.
func (s *Server) retryErrors(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermFlowsControl); err != nil {
		return err
	}
	f, err := s.visibleFlow(c)
	if err != nil {
		return err
	}
	var in retryRequest
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	rev, err := in.revision(f)
	if err != nil {
		return err
	}
	if err := in.check("retry"); err != nil {
		return err
	}
	ctx := c.UserContext()
	open, err := s.st.OpenFailures(ctx, f.ID, in.Code, maxResolve)
	if err != nil {
		return err
	}
	ids := open
	if len(in.ExecutionIDs) > 0 {
		// Only the flow's open failures are retried; anything else named is skipped.
		ids = nil
		for _, id := range in.ExecutionIDs {
			if slices.Contains(open, id) {
				ids = append(ids, id)
			}
		}
	}
	out := make([]retried, 0, len(ids))
	for _, id := range ids {
		r, err := s.retryOne(c, f, id, rev)
		if err != nil {
			return err
		}
		out = append(out, r)
	}
	s.cfg.Relay.Kick()
	if len(out) > 0 {
		audited(c, audit.Entry{Action: audit.ErrorsRetry, Target: flowTarget(f), Count: len(out)})
	}
	return sendData(c, fiber.StatusAccepted, fiber.Map{"retried": len(out), "retries": out})
}
