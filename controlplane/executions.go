package controlplane

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/store"
)

func (s *Server) mountExecutions(r fiber.Router) {
	r.Get("/flows/:id/executions", s.listExecutions)
	r.Get("/flows/:id/stats", s.flowStats)
	r.Get("/executions", s.listAllExecutions)
	r.Get("/executions/:id", s.getExecution)
	r.Get("/history", s.history)
}

var executionStatuses = []string{envelope.StatusRunning, envelope.StatusSucceeded, envelope.StatusFailed, envelope.StatusFiltered}

// parseExecutionList reads what every list of executions takes: page[size], page[number],
// sort (newest first is the only order) and filter[status].
func parseExecutionList(c *fiber.Ctx) (listParams, string, error) {
	lp, err := parseList(c, []string{"receivedAt"}, "-receivedAt")
	if err != nil {
		return lp, "", err
	}
	if !lp.desc {
		return lp, "", fail(fiber.StatusBadRequest, problem.New("invalid_parameter", "sort", "executions are listed newest first (sort=-receivedAt)"))
	}
	status := c.Query("filter[status]")
	if status != "" && !slices.Contains(executionStatuses, status) {
		return lp, "", fail(fiber.StatusBadRequest, problem.New("invalid_parameter", "filter[status]", "filter[status] must be one of running, succeeded, failed, filtered"))
	}
	return lp, status, nil
}

func (s *Server) listExecutions(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermFlowsRead); err != nil {
		return err
	}
	lp, status, err := parseExecutionList(c)
	if err != nil {
		return err
	}
	f, err := s.visibleFlow(c)
	if err != nil {
		return err
	}
	execs, total, err := s.st.FlowExecutions(c.UserContext(), f.ID, status, (lp.number-1)*lp.size, lp.size)
	if err != nil {
		return err
	}
	return sendList(c, execs, Meta{Total: total, Page: lp.number, PerPage: lp.size, TotalPages: (total + lp.size - 1) / lp.size})
}

// listAllExecutions lists the executions of every flow the caller can see (an administrator:
// every flow), newest first, as listExecutions does for one flow. The flows' own indexes are
// merged, so a page reaches at most the store.MaxMergedDepth newest executions; older ones
// are listed flow by flow. The total counts them all.
func (s *Server) listAllExecutions(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsRead)
	if err != nil {
		return err
	}
	lp, status, err := parseExecutionList(c)
	if err != nil {
		return err
	}
	if lp.number*lp.size > store.MaxMergedDepth {
		return fail(fiber.StatusBadRequest, problem.New("invalid_parameter", "page[number]",
			"the executions of every flow are listed to the %d newest (page[number] × page[size]); list one flow's executions for older ones", store.MaxMergedDepth))
	}
	flows, err := s.visibleFlows(c.UserContext(), p)
	if err != nil {
		return err
	}
	ids := make([]string, len(flows))
	for i, f := range flows {
		ids[i] = f.ID
	}
	execs, total, err := s.st.ExecutionsOfFlows(c.UserContext(), ids, status, (lp.number-1)*lp.size, lp.size)
	if err != nil {
		return err
	}
	return sendList(c, execs, Meta{Total: total, Page: lp.number, PerPage: lp.size, TotalPages: (total + lp.size - 1) / lp.size})
}

// executionView is an execution with its steps.
type executionView struct {
	envelope.Execution
	Steps []envelope.Step `json:"steps"`
	// Warnings say why a running execution may not be moving: a step waits in a pool no
	// runner serves (path: the step in Steps).
	Warnings []problem.Problem `json:"warnings,omitempty"`
}

func (s *Server) getExecution(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsRead)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	ex, err := s.st.Execution(ctx, c.Params("id"))
	if errors.Is(err, store.ErrNotFound) {
		return notFound("execution")
	}
	if err != nil {
		return err
	}
	// An execution is visible exactly when its flow is; once the flow is deleted, only to admins.
	f, err := s.st.Flow(ctx, ex.FlowID)
	switch {
	case errors.Is(err, store.ErrNotFound):
		if !p.IsAdmin() {
			return notFound("execution")
		}
	case err != nil:
		return err
	case !canSeeFlow(p, f):
		return notFound("execution")
	}
	steps, err := s.st.ExecutionSteps(ctx, ex.ID)
	if err != nil {
		return err
	}
	return sendData(c, fiber.StatusOK, executionView{Execution: *ex, Steps: steps, Warnings: s.stuckSteps(ctx, ex, steps)})
}

// stuckSteps warns of each running step of a running execution whose pool has no live runner.
// Finding out is advice: a failure is logged and warns of nothing.
func (s *Server) stuckSteps(ctx context.Context, ex *envelope.Execution, steps []envelope.Step) []problem.Problem {
	if ex.Status != envelope.StatusRunning || !slices.ContainsFunc(steps, func(st envelope.Step) bool { return st.Status == envelope.StepRunning }) {
		return nil
	}
	rev, err := s.st.Revision(ctx, ex.FlowID, ex.Revision)
	if err != nil {
		s.log.Warn("cannot load an execution's revision", "execution", ex.ID, "err", err)
		return nil
	}
	pools, served, err := s.nodePools(ctx, rev)
	if err != nil {
		s.log.Warn("cannot tell which pools have runners", "execution", ex.ID, "err", err)
		return nil
	}
	var ws []problem.Problem
	for i, st := range steps {
		if p, ok := pools[st.NodeID]; ok && st.Status == envelope.StepRunning && !served[p] {
			ws = append(ws, problem.New(codePoolUnserved, fmt.Sprintf("/steps/%d", i),
				"no runner serves pool %q: step %s waits until one runs (flowd runner --pool %s)", p, st.NodeID, p))
		}
	}
	return ws
}

// maxStatsRange bounds one stats query (per-minute buckets).
const maxStatsRange = 7 * 24 * time.Hour

func (s *Server) flowStats(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermFlowsRead); err != nil {
		return err
	}
	now := s.cfg.Now().UTC()
	from, to := now.Add(-time.Hour), now
	var ps problem.List
	if v := c.Query("from"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			ps = append(ps, problem.New("invalid_parameter", "from", "from must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z"))
		}
		from = t
	}
	if v := c.Query("to"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			ps = append(ps, problem.New("invalid_parameter", "to", "to must be an RFC 3339 time, e.g. 2026-01-02T15:04:05Z"))
		}
		to = t
	}
	if len(ps) == 0 && (!to.After(from) || to.Sub(from) > maxStatsRange) {
		ps = append(ps, problem.New("invalid_parameter", "to", "to must be after from, at most 7 days later"))
	}
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	f, err := s.visibleFlow(c)
	if err != nil {
		return err
	}
	buckets, err := s.st.FlowStats(c.UserContext(), f.ID, from, to)
	if err != nil {
		return err
	}
	var total struct {
		Success int64 `json:"success"`
		Error   int64 `json:"error"`
		Ignored int64 `json:"ignored"`
	}
	for _, b := range buckets {
		total.Success += b.Success
		total.Error += b.Error
		total.Ignored += b.Ignored
	}
	counts, err := s.st.Counts(c.UserContext(), f.ID)
	if err != nil {
		return err
	}
	return sendData(c, fiber.StatusOK, fiber.Map{"flowId": f.ID, "from": from, "to": to, "totals": total, "perMinute": buckets, "allTime": counts})
}

// history reports the memory the kept executions of every flow take in Redis and what was
// deleted from them, for operators (it spans tenants, so administrators only).
func (s *Server) history(c *fiber.Ctx) error {
	if !principal(c).IsAdmin() {
		return fail(fiber.StatusForbidden, problem.New("forbidden", "", "the execution history's usage spans every tenant: administrators only"))
	}
	u, err := s.st.History(c.UserContext())
	if err != nil {
		return err
	}
	return sendData(c, fiber.StatusOK, u)
}
