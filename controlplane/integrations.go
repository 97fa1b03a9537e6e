package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/integration"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/store"
)

// Integrations use the flows' permissions and ownership: flows.read to see them, flows.update
// to create and change them, flows.delete to delete them, flows.control to start and stop their
// flows. See docs/integrations.md.
func (s *Server) mountIntegrations(r fiber.Router) {
	r.Get("/integrations", s.listIntegrations)
	r.Post("/integrations", s.createIntegration)
	r.Post("/integrations/import", s.importIntegration)
	r.Get("/integrations/:id", s.getIntegration)
	r.Patch("/integrations/:id", s.patchIntegration)
	r.Delete("/integrations/:id", s.deleteIntegration)
	r.Post("/integrations/:id/start", s.startIntegration)
	r.Post("/integrations/:id/stop", s.stopIntegration)
	r.Get("/integrations/:id/stats", s.integrationStats)
	r.Post("/integrations/:id/clone", s.cloneIntegration)
	r.Get("/integrations/:id/export", s.exportIntegration)
}

// ownedBy: the caller, or the caller's tenant, is among owners (admins see all): the rule
// canSeeFlow applies to flows.
func ownedBy(p *identity.Principal, owners []flowdoc.Owner) bool {
	return canSeeFlow(p, &flowdoc.Flow{Owners: owners})
}

var errHiddenIntegration = errors.New("integration not visible")

func integrationErr(err error) error {
	var ae *httpproblem.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return err
	case errors.Is(err, store.ErrNotFound), errors.Is(err, errHiddenIntegration):
		return notFound("integration")
	case errors.Is(err, store.ErrNoIntegration):
		return errIntegrationUnavailable(err)
	default:
		return err
	}
}

// errIntegrationUnavailable answers a flow naming an integration it may not join; one answer
// for "missing" and "not yours", so nobody probes for other tenants' integrations.
func errIntegrationUnavailable(cause error) error {
	return fail(fiber.StatusBadRequest, problem.New("integration_unavailable", "/integration",
		"the integration does not exist or the flow's owners may not use it (%v)", cause))
}

// checkIntegration: the integration a flow names must be one the caller sees, sharing an
// owner with the flow. The store checks again, atomically, that it still exists.
func (s *Server) checkIntegration(ctx context.Context, p *identity.Principal, f *flowdoc.Flow) error {
	if f.Integration == "" {
		return nil
	}
	in, err := s.st.Integration(ctx, f.Integration)
	if errors.Is(err, store.ErrNotFound) || (err == nil && (!ownedBy(p, in.Owners) || !integration.SharesOwner(in, f.Owners))) {
		return errIntegrationUnavailable(errors.New("integration " + f.Integration))
	}
	return err
}

func (s *Server) visibleIntegration(c *fiber.Ctx) (*integration.Integration, error) {
	in, err := s.st.Integration(c.UserContext(), c.Params("id"))
	if err == nil && !ownedBy(principal(c), in.Owners) {
		err = errHiddenIntegration
	}
	return in, integrationErr(err)
}

// visibleIntegrations are the integrations p may see.
func (s *Server) visibleIntegrations(ctx context.Context, p *identity.Principal) ([]integration.Integration, error) {
	var all []integration.Integration
	var err error
	if p.IsAdmin() {
		all, err = s.st.AllIntegrations(ctx)
	} else {
		owners := []flowdoc.Owner{{ID: p.User.ID, Type: flowdoc.OwnerUser}}
		if p.User.Tenant != "" {
			owners = append(owners, flowdoc.Owner{ID: p.User.Tenant, Type: flowdoc.OwnerTenant})
		}
		all, err = s.st.IntegrationsOwnedBy(ctx, owners...)
	}
	if err != nil {
		return nil, err
	}
	return slices.DeleteFunc(all, func(in integration.Integration) bool { return !ownedBy(p, in.Owners) }), nil
}

func (s *Server) listIntegrations(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsRead)
	if err != nil {
		return err
	}
	lp, err := parseList(c, []string{"name", "createdAt", "updatedAt"}, "createdAt")
	if err != nil {
		return err
	}
	all, err := s.visibleIntegrations(c.UserContext(), p)
	if err != nil {
		return err
	}
	search := strings.ToLower(lp.search)
	out := make([]integration.Integration, 0, len(all))
	for _, in := range all {
		if search == "" || strings.Contains(strings.ToLower(in.Name+"\n"+in.Description), search) {
			out = append(out, in)
		}
	}
	stamp := func(get func(integration.Integration) *time.Time) func(integration.Integration) time.Time {
		return func(in integration.Integration) time.Time {
			if t := get(in); t != nil {
				return *t
			}
			return time.Time{}
		}
	}
	sortBy(out, lp, func(in integration.Integration) string { return in.Name },
		stamp(func(in integration.Integration) *time.Time { return in.CreatedAt }),
		stamp(func(in integration.Integration) *time.Time { return in.UpdatedAt }))
	items, m := page(out, lp)
	return sendList(c, items, m)
}

// integrationView is an integration as GET shows it: the document and its flows' ids.
type integrationView struct {
	*integration.Integration
	Flows []string `json:"flows"`
}

func (s *Server) getIntegration(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermFlowsRead); err != nil {
		return err
	}
	in, err := s.visibleIntegration(c)
	if err != nil {
		return err
	}
	flows, err := s.st.IntegrationFlows(c.UserContext(), in.ID)
	if err != nil {
		return err
	}
	view := integrationView{Integration: in, Flows: make([]string, 0, len(flows))}
	for _, f := range flows {
		view.Flows = append(view.Flows, f.ID)
	}
	setIntegrationETag(c, in)
	return sendData(c, fiber.StatusOK, view)
}

func setIntegrationETag(c *fiber.Ctx, in *integration.Integration) {
	c.Set(fiber.HeaderETag, `"`+itoa(in.Revision)+`"`)
}

// integrationBody reads a JSON or YAML integration document without the server's fields.
func integrationBody(c *fiber.Ctx) (map[string]any, error) {
	doc, ps := flowdoc.ToJSON(c.Body(), c.Get(fiber.HeaderContentType))
	if len(ps) > 0 {
		return nil, fail(fiber.StatusBadRequest, ps...)
	}
	var obj map[string]any
	if err := json.Unmarshal(doc, &obj); err != nil || obj == nil {
		return nil, fail(fiber.StatusBadRequest, problem.New("malformed", "", "the request body must be a JSON (or YAML) object"))
	}
	for _, k := range integration.ReadOnly {
		delete(obj, k)
	}
	return obj, nil
}

func decodeIntegration(obj map[string]any) (*integration.Integration, error) {
	doc, err := json.Marshal(obj)
	if err != nil {
		return nil, fail(fiber.StatusBadRequest, problem.New("malformed", "", "cannot encode the integration: %v", err))
	}
	in, ps := integration.Decode(doc)
	if len(ps) > 0 {
		return nil, fail(fiber.StatusBadRequest, ps...)
	}
	return in, nil
}

func (s *Server) createIntegration(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsUpdate)
	if err != nil {
		return err
	}
	obj, err := integrationBody(c)
	if err != nil {
		return err
	}
	in, err := decodeIntegration(obj)
	if err != nil {
		return err
	}
	if err := s.newIntegration(c.UserContext(), p, in); err != nil {
		return err
	}
	audited(c, audit.Entry{Action: audit.IntegrationCreate, Target: integrationTarget(in), RevisionAfter: in.Revision})
	c.Location("/api/v1/integrations/" + in.ID)
	setIntegrationETag(c, in)
	return sendData(c, fiber.StatusCreated, integrationView{Integration: in, Flows: []string{}})
}

// newIntegration stores a decoded integration as revision 1, owned by p and p's tenant besides
// the owners it names.
func (s *Server) newIntegration(ctx context.Context, p *identity.Principal, in *integration.Integration) error {
	if err := s.checkOwners(ctx, p, in.Owners); err != nil {
		return err
	}
	in.Owners = addOwner(in.Owners, flowdoc.Owner{ID: p.User.ID, Type: flowdoc.OwnerUser})
	in.Owners = addOwner(in.Owners, flowdoc.Owner{ID: p.User.Tenant, Type: flowdoc.OwnerTenant})
	now := s.cfg.Now().UTC()
	in.ID, in.Revision, in.CreatedAt, in.UpdatedAt = identity.NewID(), 1, &now, &now
	return s.st.CreateIntegration(ctx, in)
}

// integrationContent is an integration without the fields the server manages, canonical.
func integrationContent(in *integration.Integration) []byte {
	c := *in
	c.ID, c.Revision, c.CreatedAt, c.UpdatedAt = "", 0, nil, nil
	b, _ := json.Marshal(&c)
	return b
}

func sameJSON(a, b any) bool {
	ja, err1 := json.Marshal(a)
	jb, err2 := json.Marshal(b)
	return err1 == nil && err2 == nil && bytes.Equal(ja, jb)
}

func (s *Server) patchIntegration(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsUpdate)
	if err != nil {
		return err
	}
	want, err := ifMatch(c)
	if err != nil {
		return err
	}
	patch, err := integrationBody(c)
	if err != nil {
		return err
	}
	patchDoc, _ := json.Marshal(patch)
	ctx := c.UserContext()
	in, err := s.st.UpdateIntegration(ctx, c.Params("id"), func(cur *integration.Integration) (store.IntegrationChange, error) {
		if !ownedBy(p, cur.Owners) {
			return store.IntegrationChange{}, errHiddenIntegration
		}
		if want != 0 && want != cur.Revision {
			return store.IntegrationChange{}, fail(fiber.StatusPreconditionFailed, problem.New("revision_mismatch", "If-Match",
				"the integration is at revision %d, not %d; fetch it again and reapply your change", cur.Revision, want))
		}
		merged, err := jsonpatch.MergePatch(integrationContent(cur), patchDoc)
		if err != nil {
			return store.IntegrationChange{}, fail(fiber.StatusBadRequest, problem.New("malformed", "", "cannot apply the change: %v", err))
		}
		var obj map[string]any
		if err := json.Unmarshal(merged, &obj); err != nil {
			return store.IntegrationChange{}, err
		}
		next, err := decodeIntegration(obj)
		if err != nil {
			return store.IntegrationChange{}, err
		}
		if bytes.Equal(integrationContent(cur), integrationContent(next)) {
			return store.IntegrationChange{}, errUnchanged
		}
		if err := s.checkOwners(ctx, p, next.Owners); err != nil {
			return store.IntegrationChange{}, err
		}
		if err := s.membersStayOwned(ctx, cur, next); err != nil {
			return store.IntegrationChange{}, err
		}
		now := s.cfg.Now().UTC()
		next.ID, next.Revision, next.CreatedAt, next.UpdatedAt = cur.ID, cur.Revision+1, cur.CreatedAt, &now
		ch := store.IntegrationChange{Integration: next}
		if !sameJSON(cur.Settings, next.Settings) {
			// Each member flow gets a revision carrying the new settings: the executions
			// that started before keep theirs, the ones that start after see the new ones.
			ch.Member = s.settingsRevision(p, now)
		}
		return ch, nil
	})
	if errors.Is(err, errUnchanged) {
		if in, err = s.visibleIntegration(c); err != nil {
			return err
		}
	} else if err != nil {
		return integrationErr(err)
	} else {
		audited(c, audit.Entry{Action: audit.IntegrationUpdate, Target: integrationTarget(in), RevisionBefore: in.Revision - 1, RevisionAfter: in.Revision})
	}
	s.publishNow(ctx)
	flows, err := s.st.IntegrationFlows(ctx, in.ID)
	if err != nil {
		return err
	}
	view := integrationView{Integration: in, Flows: make([]string, 0, len(flows))}
	for _, f := range flows {
		view.Flows = append(view.Flows, f.ID)
	}
	setIntegrationETag(c, in)
	return sendData(c, fiber.StatusOK, view)
}

// membersStayOwned refuses a change of owners that would leave a member flow sharing no owner
// with its integration.
func (s *Server) membersStayOwned(ctx context.Context, cur, next *integration.Integration) error {
	if sameJSON(cur.Owners, next.Owners) {
		return nil
	}
	if len(next.Owners) == 0 {
		return fail(fiber.StatusBadRequest, problem.New("required", "/owners", "an integration needs at least one owner"))
	}
	flows, err := s.st.IntegrationFlows(ctx, cur.ID)
	if err != nil {
		return err
	}
	for _, f := range flows {
		if !integration.SharesOwner(next, f.Owners) {
			return fail(fiber.StatusBadRequest, problem.New("owners_exclude_flow", "/owners",
				"flow %s (%s) would share no owner with the integration; move it out first", f.ID, f.Name))
		}
	}
	return nil
}

// publishNow makes the events committed with a change visible before the answer, so that every
// role learns of new revisions within moments; if the broker is down they follow later.
func (s *Server) publishNow(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.cfg.Relay.Flush(ctx); err != nil {
		s.log.Warn("flow events not yet published; they will be retried", "err", err)
		s.cfg.Relay.Kick()
	}
}

func (s *Server) deleteIntegration(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsDelete)
	if err != nil {
		return err
	}
	var gone integration.Integration
	err = s.st.DeleteIntegration(c.UserContext(), c.Params("id"), func(cur *integration.Integration) error {
		if !ownedBy(p, cur.Owners) {
			return errHiddenIntegration
		}
		gone = *cur
		return nil
	})
	if errors.Is(err, store.ErrIntegrationNotEmpty) {
		return fail(fiber.StatusConflict, problem.New("integration_not_empty", "",
			"the integration still has flows; delete them or move them out (PATCH a flow with \"integration\": null) first"))
	}
	if err != nil {
		return integrationErr(err)
	}
	audited(c, audit.Entry{Action: audit.IntegrationDelete, Target: integrationTarget(&gone), RevisionBefore: gone.Revision})
	return c.SendStatus(fiber.StatusNoContent)
}

// integrationTarget names an integration in the audit log.
func integrationTarget(in *integration.Integration) audit.Target {
	return audit.Target{Type: audit.TargetIntegration, ID: in.ID, Name: in.Name}
}

// flowOutcome is what a start or stop of an integration did to one of its flows.
type flowOutcome struct {
	ID       string            `json:"id"`
	Name     string            `json:"name"`
	Status   string            `json:"status"`
	Errors   []problem.Problem `json:"errors,omitempty"`
	Warnings []problem.Problem `json:"warnings,omitempty"`
}

func (s *Server) startIntegration(c *fiber.Ctx) error {
	return s.integrationLifecycle(c, flowdoc.ActionStart, flowdoc.ActionStarted)
}

func (s *Server) stopIntegration(c *fiber.Ctx) error {
	return s.integrationLifecycle(c, flowdoc.ActionStop, flowdoc.ActionStopped)
}

// integrationLifecycle starts or stops every flow of an integration, each on its own: a flow
// that cannot start (its errors say why) holds up none of the others. The answer lists every
// flow's outcome and counts the flows that failed.
func (s *Server) integrationLifecycle(c *fiber.Ctx, action, confirm flowdoc.Action) error {
	p, err := require(c, identity.PermFlowsControl)
	if err != nil {
		return err
	}
	in, err := s.visibleIntegration(c)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	flows, err := s.st.IntegrationFlows(ctx, in.ID)
	if err != nil {
		return err
	}
	out := make([]flowOutcome, 0, len(flows))
	for i := range flows {
		f := &flows[i]
		if !canSeeFlow(p, f) {
			continue
		}
		res := flowOutcome{ID: f.ID, Name: f.Name, Status: f.Status}
		var warnings []problem.Problem
		if action == flowdoc.ActionStart && !flowdoc.Settled(action, f.Status) {
			if warnings, err = s.startable(ctx, f); err != nil {
				res.Errors = problemsOf(err)
				if res.Errors == nil {
					return err
				}
				out = append(out, res)
				continue
			}
		}
		next, changed, err := s.transition(ctx, f.ID, p, action)
		if err == nil && s.cfg.AutoConfirm {
			if _, ok := flowdoc.Next(confirm, next.Status); ok {
				next, _, err = s.transition(ctx, f.ID, p, confirm)
			}
		}
		if err == nil && changed {
			audited(c, audit.Entry{Action: auditLifecycle[action], Target: flowTarget(next), RevisionBefore: next.Revision, RevisionAfter: next.Revision})
		}
		if err != nil {
			if res.Errors = problemsOf(flowErr(err)); res.Errors == nil {
				return err
			}
			out = append(out, res)
			continue
		}
		res.Status, res.Warnings = next.Status, warnings
		out = append(out, res)
	}
	s.publishNow(ctx)
	failed := 0
	for i := range out {
		if len(out[i].Errors) > 0 {
			failed++
			continue
		}
		if transient(out[i].Status) && s.cfg.LifecycleWait > 0 {
			f := s.awaitConfirmation(ctx, &flowdoc.Flow{ID: out[i].ID, Status: out[i].Status}, out[i].Status)
			out[i].Status = f.Status
		}
	}
	return sendData(c, fiber.StatusOK, fiber.Map{"id": in.ID, "flows": out, "failed": failed})
}

// problemsOf is the problems of an API error, nil for any other error.
func problemsOf(err error) []problem.Problem {
	var ae *httpproblem.Error
	if errors.As(err, &ae) {
		return ae.Problems
	}
	return nil
}

// integrationStats counts an integration's flows by status and their executions ever ended by
// outcome (the flows' own counters, summed).
type integrationStats struct {
	Flows      map[string]int   `json:"flows"`
	Executions store.FlowCounts `json:"executions"`
}

func (s *Server) integrationStats(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsRead)
	if err != nil {
		return err
	}
	in, err := s.visibleIntegration(c)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	flows, err := s.st.IntegrationFlows(ctx, in.ID)
	if err != nil {
		return err
	}
	st := integrationStats{Flows: map[string]int{"total": 0}}
	for _, status := range flowdoc.Statuses {
		st.Flows[status] = 0
	}
	for i := range flows {
		f := &flows[i]
		if !canSeeFlow(p, f) {
			continue
		}
		st.Flows["total"]++
		st.Flows[f.Status]++
		n, err := s.st.Counts(ctx, f.ID)
		if err != nil {
			return err
		}
		st.Executions.Success += n.Success
		st.Executions.Error += n.Error
		st.Executions.Ignored += n.Ignored
	}
	return sendData(c, fiber.StatusOK, st)
}
