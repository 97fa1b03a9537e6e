package controlplane

import (
	"time"

	"github.com/gofiber/fiber/v2"

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
	var in struct {
		ExecutionIDs []string `json:"executionIds"`
		Code         string   `json:"code"`
	}
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	switch {
	case len(in.ExecutionIDs) == 0 && in.Code == "":
		return fail(fiber.StatusBadRequest, problem.New("required", "/executionIds", "name the failed executions to resolve (executionIds) or an error code (code)"))
	case len(in.ExecutionIDs) > 0 && in.Code != "":
		return fail(fiber.StatusBadRequest, problem.New("invalid", "/code", "give executionIds or code, not both"))
	case len(in.ExecutionIDs) > maxResolve:
		return fail(fiber.StatusBadRequest, problem.New("too_large", "/executionIds", "at most %d executions per call", maxResolve))
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
