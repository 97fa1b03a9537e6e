package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/oih"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/store"
)

func (s *Server) mountFlows(r fiber.Router) {
	r.Get("/flows", s.listFlows)
	r.Post("/flows", s.createFlow)
	r.Get("/flows/:id", s.getFlow)
	r.Patch("/flows/:id", s.patchFlow)
	r.Delete("/flows/:id", s.deleteFlow)
	r.Post("/flows/:id/start", s.startFlow)
	r.Post("/flows/:id/stop", s.stopFlow)
	r.Get("/flows/:id/revisions", s.listRevisions)
	r.Get("/flows/:id/revisions/:n", s.getRevision)
}

// canSeeFlow: the caller, or the caller's tenant, is among the owners (admins see all).
func canSeeFlow(p *identity.Principal, f *flowdoc.Flow) bool {
	if p.IsAdmin() {
		return true
	}
	for _, o := range f.Owners {
		if (o.Type == "user" && o.ID == p.User.ID) || (o.Type == "tenant" && p.User.Tenant != "" && o.ID == p.User.Tenant) {
			return true
		}
	}
	return false
}

// errHidden stands for "exists but not yours": reported exactly like a missing flow.
var errHidden = errors.New("flow not visible")

// flowErr maps store and visibility errors to responses; existence never leaks across tenants.
func flowErr(err error) error {
	var ae *httpproblem.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return err
	case errors.Is(err, store.ErrNotFound), errors.Is(err, errHidden):
		return notFound("flow")
	case errors.Is(err, store.ErrNoIntegration):
		return errIntegrationUnavailable(err)
	default:
		return err
	}
}

func (s *Server) visibleFlow(c *fiber.Ctx) (*flowdoc.Flow, error) {
	f, err := s.st.Flow(c.UserContext(), c.Params("id"))
	if err == nil && !canSeeFlow(principal(c), f) {
		err = errHidden
	}
	return f, flowErr(err)
}

func (s *Server) listFlows(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsRead)
	if err != nil {
		return err
	}
	lp, err := parseList(c, []string{"name", "createdAt", "updatedAt"}, "createdAt")
	if err != nil {
		return err
	}
	status, ps := parseStatusFilter(c.Query("filter[status]"))
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	all, err := s.visibleFlows(c.UserContext(), p)
	if err != nil {
		return err
	}
	// filter[user] narrows the caller's own visible set; it never widens it.
	user, typ, search := c.Query("filter[user]"), c.Query("filter[type]"), strings.ToLower(lp.search)
	integ := c.Query("filter[integration]")
	out := make([]flowdoc.Flow, 0, len(all))
	for i := range all {
		f := &all[i]
		if (status != "" && f.Status != status) ||
			(typ != "" && f.Type != typ) ||
			(integ != "" && f.Integration != integ) ||
			(user != "" && !slices.Contains(f.Owners, flowdoc.Owner{ID: user, Type: "user"})) ||
			(search != "" && !strings.Contains(strings.ToLower(f.Name+"\n"+f.Description), search)) {
			continue
		}
		out = append(out, *f)
	}
	sortBy(out, lp, func(f flowdoc.Flow) string { return f.Name }, flowTime(func(f flowdoc.Flow) *time.Time { return f.CreatedAt }), flowTime(func(f flowdoc.Flow) *time.Time { return f.UpdatedAt }))
	items, m := page(out, lp)
	return sendList(c, items, m)
}

// visibleFlows are the flows p may see: every flow for an administrator, else those p or p's
// tenant owns.
func (s *Server) visibleFlows(ctx context.Context, p *identity.Principal) ([]flowdoc.Flow, error) {
	var all []flowdoc.Flow
	var err error
	if p.IsAdmin() {
		all, err = s.st.AllFlows(ctx)
	} else {
		owners := []flowdoc.Owner{{ID: p.User.ID, Type: "user"}}
		if p.User.Tenant != "" {
			owners = append(owners, flowdoc.Owner{ID: p.User.Tenant, Type: "tenant"})
		}
		all, err = s.st.FlowsOwnedBy(ctx, owners...)
	}
	if err != nil {
		return nil, err
	}
	// The owners' indexes select; ownership as every route checks it decides.
	return slices.DeleteFunc(all, func(f flowdoc.Flow) bool { return !canSeeFlow(p, &f) }), nil
}

func flowTime(get func(flowdoc.Flow) *time.Time) func(flowdoc.Flow) time.Time {
	return func(f flowdoc.Flow) time.Time {
		if t := get(f); t != nil {
			return *t
		}
		return time.Time{}
	}
}

// parseStatusFilter accepts the FlowMate forms: active|inactive|1|0, plus the transient
// states and failed.
func parseStatusFilter(v string) (string, problem.List) {
	switch v {
	case "":
		return "", nil
	case "1":
		return flowdoc.StatusActive, nil
	case "0":
		return flowdoc.StatusInactive, nil
	}
	if slices.Contains(flowdoc.Statuses, v) {
		return v, nil
	}
	return "", problem.List{problem.New("invalid_parameter", "filter[status]", "filter[status] must be %s, 1 or 0", strings.Join(flowdoc.Statuses, ", "))}
}

func (s *Server) getFlow(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermFlowsRead); err != nil {
		return err
	}
	format, err := parseFormat(c)
	if err != nil {
		return err
	}
	f, err := s.visibleFlow(c)
	if err != nil {
		return err
	}
	setETag(c, f)
	if format == formatOIH {
		return s.sendOIH(c, f)
	}
	view := flowView{Flow: f}
	if flowdoc.Runs(f.Status) {
		// The router's report on the flow's trigger source (a partner topic's replication).
		if view.TriggerStatus, err = s.st.TriggerStatus(c.UserContext(), f.ID); err != nil {
			return err
		}
		if t := f.Trigger(); t != nil && (t.Type == flowdoc.TypeSchedule || t.Type == flowdoc.TypePoll) {
			next, ok, err := s.st.NextRun(c.UserContext(), f.ID)
			if t.Type == flowdoc.TypePoll {
				next, ok, err = s.st.NextPoll(c.UserContext(), f.ID)
			}
			if err != nil {
				return err
			}
			if ok {
				view.NextRunAt = &next
			}
		}
	}
	return sendData(c, fiber.StatusOK, view)
}

// flowView is a flow as GET /flows/{id} shows it: the document, and what the router last
// reported about its trigger (triggerStatus, read-only; absent until a router has looked).
type flowView struct {
	*flowdoc.Flow
	TriggerStatus json.RawMessage `json:"triggerStatus,omitempty"`
	// NextRunAt is when a running schedule flow fires next, or a poll flow polls next (absent
	// until a router set it up).
	NextRunAt *time.Time `json:"nextRunAt,omitempty"`
}

func setETag(c *fiber.Ctx, f *flowdoc.Flow) {
	c.Set(fiber.HeaderETag, `"`+strconv.Itoa(f.Revision)+`"`)
}

// readOnly are the fields the server manages; clients may echo them back and they are ignored.
var readOnly = []string{"id", "status", "statusReason", "revision", "type", "createdAt", "updatedAt", "triggerStatus", "nextRunAt", "integrationSettings"}

// bodyObject turns a JSON or YAML request body into a JSON object without server fields, and
// returns the status it named ("" if none), which only start and stop change.
func bodyObject(c *fiber.Ctx) (map[string]any, string, error) {
	doc, ps := flowdoc.ToJSON(c.Body(), c.Get(fiber.HeaderContentType))
	if len(ps) > 0 {
		return nil, "", fail(fiber.StatusBadRequest, ps...)
	}
	var obj map[string]any
	if err := json.Unmarshal(doc, &obj); err != nil || obj == nil {
		return nil, "", fail(fiber.StatusBadRequest, problem.New("malformed", "", "the request body must be a JSON (or YAML) object"))
	}
	status, _ := obj["status"].(string)
	for _, k := range readOnly {
		delete(obj, k)
	}
	return obj, status, nil
}

// revalidate checks a stored flow as a save would.
func (s *Server) revalidate(f *flowdoc.Flow) error {
	raw, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode flow %s: %w", f.ID, err)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return fmt.Errorf("decode flow %s: %w", f.ID, err)
	}
	for _, k := range readOnly {
		delete(obj, k)
	}
	_, err = s.decodeFlow(obj)
	return err
}

// decodeFlow validates a flow document (schema and graph semantics), reporting every problem.
func (s *Server) decodeFlow(obj map[string]any) (*flowdoc.Flow, error) {
	doc, err := json.Marshal(obj)
	if err != nil {
		return nil, fail(fiber.StatusBadRequest, problem.New("malformed", "", "cannot encode the flow: %v", err))
	}
	f, ps := flowdoc.Decode(doc, s.cfg.Validation)
	if len(ps) > 0 {
		return nil, fail(fiber.StatusBadRequest, ps...)
	}
	// A graph without edges is stored and shown with "edges": [], so that a later merge patch
	// that leaves the graph alone still validates.
	if f.Graph.Edges == nil {
		f.Graph.Edges = []flowdoc.Edge{}
	}
	if f.Graph.Nodes == nil {
		f.Graph.Nodes = []flowdoc.Node{}
	}
	return f, nil
}

// checkOwners: a non-admin may only name their own tenant and users of it as owners, so
// nobody can plant a flow in another tenant.
func (s *Server) checkOwners(ctx context.Context, p *identity.Principal, owners []flowdoc.Owner) error {
	if p.IsAdmin() {
		return nil
	}
	var ps problem.List
	for i, o := range owners {
		path := "/owners/" + itoa(i)
		switch o.Type {
		case "tenant":
			if o.ID != p.User.Tenant || p.User.Tenant == "" {
				ps = append(ps, problem.New("forbidden_owner", path, "you can only add your own tenant as an owner"))
			}
		case "user":
			if o.ID == p.User.ID {
				continue
			}
			u, err := s.st.User(ctx, o.ID)
			if errors.Is(err, store.ErrNotFound) || (err == nil && (p.User.Tenant == "" || u.Tenant != p.User.Tenant)) {
				ps = append(ps, problem.New("forbidden_owner", path, "owner %q is not a user of your tenant", o.ID))
			} else if err != nil {
				return err
			}
		}
	}
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	return nil
}

func addOwner(owners []flowdoc.Owner, o flowdoc.Owner) []flowdoc.Owner {
	if o.ID == "" || slices.Contains(owners, o) {
		return owners
	}
	return append(owners, o)
}

func (s *Server) event(typ string, f *flowdoc.Flow, p *identity.Principal) events.Event {
	return events.Event{
		ID: identity.NewID(), Type: typ, FlowID: f.ID, Revision: f.Revision, Status: f.Status,
		Actor: p.User.ID, Tenant: p.User.Tenant, At: s.cfg.Now().UTC(),
	}
}

func (s *Server) createFlow(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsUpdate)
	if err != nil {
		return err
	}
	obj, _, err := bodyObject(c)
	if err != nil {
		return err
	}
	f, warnings, paths, err := s.decodeAny(obj)
	if err != nil {
		return err
	}
	if err := s.storeNewFlow(c.UserContext(), p, f); err != nil {
		return inOIH(err, paths)
	}
	audited(c, audit.Entry{Action: audit.FlowCreate, Target: flowTarget(f), RevisionAfter: f.Revision})
	c.Location("/api/v1/flows/" + f.ID)
	setETag(c, f)
	return sendFlow(c, fiber.StatusCreated, f, warnings)
}

// newFlow validates a flow document (flowd's shape) and stores it as revision 1, owned by p
// and p's tenant besides the owners it names.
func (s *Server) newFlow(ctx context.Context, p *identity.Principal, obj map[string]any) (*flowdoc.Flow, error) {
	f, err := s.decodeFlow(obj)
	if err != nil {
		return nil, err
	}
	return f, s.storeNewFlow(ctx, p, f)
}

// storeNewFlow stores a decoded flow as revision 1.
func (s *Server) storeNewFlow(ctx context.Context, p *identity.Principal, f *flowdoc.Flow) error {
	if err := s.checkOwners(ctx, p, f.Owners); err != nil {
		return err
	}
	f.Owners = addOwner(f.Owners, flowdoc.Owner{ID: p.User.ID, Type: "user"})
	f.Owners = addOwner(f.Owners, flowdoc.Owner{ID: p.User.Tenant, Type: "tenant"})
	now := s.cfg.Now().UTC()
	f.ID, f.Status, f.Revision, f.Type = identity.NewID(), flowdoc.StatusInactive, 1, flowdoc.DerivedType(f)
	f.CreatedAt, f.UpdatedAt = &now, &now
	if err := s.checkAccess(ctx, f); err != nil {
		return err
	}
	if err := s.checkIntegration(ctx, p, f); err != nil {
		return err
	}
	if err := s.st.CreateFlow(ctx, f, s.event(events.FlowCreated, f, p)); err != nil {
		return flowErr(err)
	}
	s.cfg.Relay.Kick()
	return nil
}

// ifMatch reads `If-Match: <revision>` (quoted or bare); 0 means no precondition.
func ifMatch(c *fiber.Ctx) (int, error) {
	v := strings.Trim(strings.TrimPrefix(strings.TrimSpace(c.Get(fiber.HeaderIfMatch)), "W/"), `"`)
	if v == "" || v == "*" {
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, fail(fiber.StatusBadRequest, problem.New("invalid_header", "If-Match", "If-Match must be a flow revision number, e.g. \"3\""))
	}
	return n, nil
}

// conflict refuses to change or delete a flow that runs (or is about to), saying what to do.
func conflict(f *flowdoc.Flow, verb string) error {
	msg := fmt.Sprintf("flow is %s; stop it before you %s it", f.Status, verb)
	if f.Status == flowdoc.StatusStopping {
		msg = fmt.Sprintf("flow is stopping; %s it once it is inactive", verb)
	}
	return fail(fiber.StatusConflict, problem.New("flow_not_inactive", "/status", "%s", msg))
}

func (s *Server) patchFlow(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsUpdate)
	if err != nil {
		return err
	}
	want, err := ifMatch(c)
	if err != nil {
		return err
	}
	patch, status, err := bodyObject(c)
	if err != nil {
		return err
	}
	patchDoc, _ := json.Marshal(patch)
	ctx := c.UserContext()
	var warnings problem.List // of a patch in the OIH shape
	var before int
	var changes []string
	f, err := s.st.UpdateFlow(ctx, c.Params("id"), func(cur *flowdoc.Flow) (store.Mutation, error) {
		if !canSeeFlow(p, cur) {
			return store.Mutation{}, errHidden
		}
		if !flowdoc.Editable(cur.Status) {
			return store.Mutation{}, conflict(cur, "change")
		}
		if want != 0 && want != cur.Revision {
			return store.Mutation{}, fail(fiber.StatusPreconditionFailed, problem.New("revision_mismatch", "If-Match",
				"the flow is at revision %d, not %d; fetch it again and reapply your change", cur.Revision, want))
		}
		// The status may be echoed back as it is; changing it is for start and stop.
		if status != "" && status != cur.Status {
			return store.Mutation{}, fail(fiber.StatusBadRequest, problem.New("read_only", "/status",
				"a flow's status changes with POST /api/v1/flows/%s/start or /stop, not with PATCH", cur.ID))
		}
		var next *flowdoc.Flow
		if oih.Detect(patch) {
			next, warnings, err = s.mergeOIH(cur, patchDoc)
		} else {
			next, err = s.merge(cur, patchDoc)
		}
		if err != nil {
			return store.Mutation{}, err
		}
		if sameContent(cur, next) {
			return store.Mutation{}, errUnchanged // no new revision for a change that changes nothing
		}
		if err := s.checkOwners(ctx, p, next.Owners); err != nil {
			return store.Mutation{}, err
		}
		if len(next.Owners) == 0 {
			return store.Mutation{}, fail(fiber.StatusBadRequest, problem.New("required", "/owners", "a flow needs at least one owner"))
		}
		if err := s.checkAccess(ctx, next); err != nil {
			return store.Mutation{}, err
		}
		if err := s.checkIntegration(ctx, p, next); err != nil {
			return store.Mutation{}, err
		}
		now := s.cfg.Now().UTC()
		next.ID, next.Status, next.Revision, next.Type = cur.ID, cur.Status, cur.Revision+1, flowdoc.DerivedType(next)
		next.StatusReason = cur.StatusReason // a failed flow stays failed, with its reason, until started or stopped
		next.CreatedAt, next.UpdatedAt = cur.CreatedAt, &now
		before, changes = cur.Revision, changedFields(cur, next)
		return store.Mutation{Flow: next, NewRevision: true, Events: []events.Event{s.event(events.FlowUpdated, next, p)}}, nil
	})
	if errors.Is(err, errUnchanged) {
		if f, err = s.visibleFlow(c); err != nil {
			return err
		}
		setETag(c, f)
		return sendData(c, fiber.StatusOK, f)
	}
	if err != nil {
		return flowErr(err)
	}
	s.cfg.Relay.Kick()
	audited(c, audit.Entry{Action: audit.FlowUpdate, Target: flowTarget(f), RevisionBefore: before, RevisionAfter: f.Revision, Changes: changes})
	setETag(c, f)
	return sendFlow(c, fiber.StatusOK, f, warnings)
}

// contentOf is a flow without the fields the server manages: what a client writes.
func contentOf(f *flowdoc.Flow) flowdoc.Flow {
	c := *f
	c.ID, c.Status, c.Revision, c.Type, c.CreatedAt, c.UpdatedAt, c.StatusReason = "", "", 0, "", nil, nil, nil
	return c
}

// errUnchanged ends an update whose result equals the current flow.
var errUnchanged = errors.New("the change changes nothing")

// sameContent tells whether two flows differ only in what the server manages.
func sameContent(a, b *flowdoc.Flow) bool {
	content := func(f *flowdoc.Flow) []byte {
		c := contentOf(f)
		b, err := flowdoc.Canonical(&c)
		if err != nil {
			return nil
		}
		return b
	}
	ca, cb := content(a), content(b)
	return ca != nil && bytes.Equal(ca, cb)
}

// merge applies an RFC 7396 JSON merge patch to the flow's content and validates the result.
func (s *Server) merge(cur *flowdoc.Flow, patch []byte) (*flowdoc.Flow, error) {
	content := contentOf(cur)
	// Canonical writes empty node and edge lists as [] (a flow stored with "edges": null by an
	// earlier flowd must still take a patch).
	base, err := flowdoc.Canonical(&content)
	if err != nil {
		return nil, err
	}
	merged, err := jsonpatch.MergePatch(base, patch)
	if err != nil {
		return nil, fail(fiber.StatusBadRequest, problem.New("malformed", "", "cannot apply the change: %v", err))
	}
	var obj map[string]any
	if err := json.Unmarshal(merged, &obj); err != nil {
		return nil, err
	}
	return s.decodeFlow(obj)
}

func (s *Server) deleteFlow(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsDelete)
	if err != nil {
		return err
	}
	want, err := ifMatch(c)
	if err != nil {
		return err
	}
	var gone flowdoc.Flow
	err = s.st.DeleteFlow(c.UserContext(), c.Params("id"), func(cur *flowdoc.Flow) ([]events.Event, error) {
		if !canSeeFlow(p, cur) {
			return nil, errHidden
		}
		if !flowdoc.Editable(cur.Status) {
			return nil, conflict(cur, "delete")
		}
		// A flow changed since the caller looked at it is not deleted behind their back.
		if want != 0 && want != cur.Revision {
			return nil, fail(fiber.StatusPreconditionFailed, problem.New("revision_mismatch", "If-Match",
				"the flow is at revision %d, not %d; fetch it again before deleting it", cur.Revision, want))
		}
		gone = *cur
		return []events.Event{s.event(events.FlowDeleted, cur, p)}, nil
	})
	if err != nil {
		return flowErr(err)
	}
	s.cfg.Relay.Kick()
	audited(c, audit.Entry{Action: audit.FlowDelete, Target: flowTarget(&gone), RevisionBefore: gone.Revision})
	return c.SendStatus(fiber.StatusNoContent)
}

// auditLifecycle names the audit action of an owner's lifecycle action.
var auditLifecycle = map[flowdoc.Action]string{flowdoc.ActionStart: audit.FlowStart, flowdoc.ActionStop: audit.FlowStop}

// announce names the event that publishes a flow's new lifecycle status.
var announce = map[string]string{
	flowdoc.StatusStarting: events.FlowStarting,
	flowdoc.StatusActive:   events.FlowStarted,
	flowdoc.StatusStopping: events.FlowStopping,
	flowdoc.StatusInactive: events.FlowStopped,
}

// transition applies a lifecycle action (flowdoc's state machine) atomically with its event,
// and says whether it changed the flow. A flow the action has nothing left to do for is left
// as it is (start and stop are idempotent); one the action does not apply to is a 409 that
// says why.
func (s *Server) transition(ctx context.Context, id string, p *identity.Principal, action flowdoc.Action) (*flowdoc.Flow, bool, error) {
	changed := false
	f, err := s.st.UpdateFlow(ctx, id, func(cur *flowdoc.Flow) (store.Mutation, error) {
		changed = false
		if !canSeeFlow(p, cur) {
			return store.Mutation{}, errHidden
		}
		if flowdoc.Settled(action, cur.Status) {
			return store.Mutation{Flow: cur}, nil
		}
		to, ok := flowdoc.Next(action, cur.Status)
		if !ok {
			return store.Mutation{}, fail(fiber.StatusConflict, problem.New("flow_busy", "/status", "%s", flowdoc.Refusal(action, cur.Status)))
		}
		next := *cur
		next.Status, next.StatusReason = to, nil // a start or stop clears the last failure
		changed = true
		return store.Mutation{Flow: &next, Events: []events.Event{s.event(announce[to], &next, p)}}, nil
	})
	return f, changed, err
}

func (s *Server) startFlow(c *fiber.Ctx) error {
	// A flow stored before its topic became reserved (or under another topic prefix) must not
	// start: checked again here, and by the router when it subscribes.
	if f, err := s.visibleFlow(c); err == nil {
		// A draft is stored but does not run: say what it lacks. The root routes are OIH's
		// Flow Repository API: there, paths point into the flow's OIH document.
		if ps := startProblems(c, f); len(ps) > 0 {
			return fail(fiber.StatusBadRequest, ps...)
		}
		warnings, err := s.startable(c.UserContext(), f)
		if err != nil {
			if oihRoute(c) {
				return inOIH(err, oih.LayoutOf(f))
			}
			return err
		}
		return s.lifecycle(c, flowdoc.ActionStart, flowdoc.ActionStarted, warnings...)
	}
	return s.lifecycle(c, flowdoc.ActionStart, flowdoc.ActionStarted)
}

// startable checks a flow about to start, returning the warnings that go with the start.
func (s *Server) startable(ctx context.Context, f *flowdoc.Flow) ([]problem.Problem, error) {
	if ps := flowdoc.StartProblems(f); len(ps) > 0 { // a draft: stored, but not runnable
		return nil, fail(fiber.StatusBadRequest, ps...)
	}
	if ps := flowdoc.ReservedTopicProblems(f, s.cfg.ReservedTopic); len(ps) > 0 {
		return nil, fail(fiber.StatusBadRequest, ps...)
	}
	// A flow stored before a check existed (a trigger config's schema, a connector's)
	// is checked again, so it cannot fail at run time for what a save would refuse.
	if err := s.revalidate(f); err != nil {
		return nil, err
	}
	if err := s.checkAccess(ctx, f); err != nil {
		return nil, err
	}
	return s.unservedPools(ctx, f), nil
}

// unservedPools warns of each node of f that runs in a pool no live runner serves: the flow
// starts, but its steps there wait until such a runner runs. A failure to find out is only
// logged: the warning is advice, the start is what was asked.
func (s *Server) unservedPools(ctx context.Context, f *flowdoc.Flow) []problem.Problem {
	pools, served, err := s.nodePools(ctx, f)
	if err != nil {
		s.log.Warn("cannot tell which pools have runners", "flow", f.ID, "err", err)
		return nil
	}
	var ws []problem.Problem
	for i, n := range f.Graph.Nodes {
		p, ok := pools[n.ID]
		if !ok || served[p] {
			continue
		}
		path := fmt.Sprintf("/graph/nodes/%d", i)
		if n.Pool != "" {
			path += "/pool"
		}
		ws = append(ws, problem.New(codePoolUnserved, path,
			"no runner serves pool %q: node %s waits until one runs (flowd runner --pool %s)", p, n.ID, p))
	}
	return ws
}

// nodePools maps each node of f that a runner runs to its pool, and tells which of those
// pools have a live runner.
func (s *Server) nodePools(ctx context.Context, f *flowdoc.Flow) (map[string]string, map[string]bool, error) {
	pools := map[string]string{}
	var names []string
	for i := range f.Graph.Nodes {
		n := &f.Graph.Nodes[i]
		if p := nodePool(n); p != "" {
			pools[n.ID] = p
			if !slices.Contains(names, p) {
				names = append(names, p)
			}
		}
	}
	served, err := s.st.ServedPools(ctx, names, time.Now())
	return pools, served, err
}

// codePoolUnserved is the warning of a step in a pool no runner serves.
const codePoolUnserved = "pool_unserved"

// nodePool is the runner pool n runs in, "" for a node no runner runs.
func nodePool(n *flowdoc.Node) string {
	if n.Type != flowdoc.TypeAction && n.Type != flowdoc.TypePoll {
		return ""
	}
	return envelope.PoolName(n.Pool)
}

func (s *Server) stopFlow(c *fiber.Ctx) error {
	return s.lifecycle(c, flowdoc.ActionStop, flowdoc.ActionStopped)
}

// checkAccess refuses a flow using partner topics one of its tenants may not use, or a
// webhook auth connection its owners may not use or that cannot verify that auth: such a flow
// would fail at run time for what its document says.
func (s *Server) checkAccess(ctx context.Context, f *flowdoc.Flow) error {
	ps, err := s.topics.Check(ctx, f)
	if err != nil {
		return err
	}
	aps, err := s.authProblems(ctx, f)
	if err != nil {
		return err
	}
	if ps = append(ps, aps...); len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	return nil
}

// authProblems checks the connection a webhook trigger's auth names, as ingest will use it.
func (s *Server) authProblems(ctx context.Context, f *flowdoc.Flow) ([]problem.Problem, error) {
	for i, n := range f.Graph.Nodes {
		if n.Type != flowdoc.TypeWebhook {
			continue
		}
		auth, _ := n.Config["auth"].(map[string]any)
		typ, _ := auth["type"].(string)
		id, _ := auth["connection"].(string)
		if id == "" || (typ != connections.WebhookAuthBearer && typ != connections.WebhookAuthHMAC) {
			continue
		}
		path := fmt.Sprintf("/graph/nodes/%d/config/auth/connection", i)
		c, err := s.st.Connection(ctx, id)
		if errors.Is(err, store.ErrNotFound) || (err == nil && !connections.CanUse(c, f.Owners)) {
			// One answer for both: no probing for other owners' connections.
			return []problem.Problem{problem.New("connection_unavailable", path,
				"connection %q does not exist or the flow's owners may not use it", id)}, nil
		}
		if err != nil {
			return nil, err
		}
		if _, ok := connections.WebhookSecretField(typ, c.Type); !ok {
			return []problem.Problem{problem.New("connection_type", path,
				"%s auth verifies requests with a connection of type %s; connection %q is of type %s",
				typ, strings.Join(connections.WebhookConnectionTypes(typ), " or "), id, c.Type)}, nil
		}
	}
	return nil, nil
}

// transient reports whether a flow waits for a router's confirmation.
func transient(status string) bool {
	return status == flowdoc.StatusStarting || status == flowdoc.StatusStopping
}

// lifecycle applies the owner's action, then waits for the router's confirm action (until a
// router confirms lifecycle changes, the API confirms them itself when AutoConfirm is set).
// warnings go with the answer, beside the flow.
func (s *Server) lifecycle(c *fiber.Ctx, action, confirm flowdoc.Action, warnings ...problem.Problem) error {
	p, err := require(c, identity.PermFlowsControl)
	if err != nil {
		return err
	}
	f, changed, err := s.transition(c.UserContext(), c.Params("id"), p, action)
	if err == nil && s.cfg.AutoConfirm {
		if _, ok := flowdoc.Next(confirm, f.Status); ok {
			f, _, err = s.transition(c.UserContext(), c.Params("id"), p, confirm)
		}
	}
	if err != nil {
		return flowErr(err)
	}
	if changed {
		audited(c, audit.Entry{Action: auditLifecycle[action], Target: flowTarget(f), RevisionBefore: f.Revision, RevisionAfter: f.Revision})
	}
	// Make the events visible before answering; if the broker is down they stay in the
	// outbox and are published when it returns.
	ctx, cancel := context.WithTimeout(c.UserContext(), 5*time.Second)
	defer cancel()
	if err := s.cfg.Relay.Flush(ctx); err != nil {
		s.log.Warn("lifecycle events not yet published; they will be retried", "flow", f.ID, "err", err)
		s.cfg.Relay.Kick()
	}
	if transient(f.Status) && s.cfg.LifecycleWait > 0 {
		f = s.awaitConfirmation(c.UserContext(), f, f.Status)
	}
	status := fiber.StatusOK
	if transient(f.Status) {
		status = fiber.StatusAccepted
	}
	if len(warnings) > 0 {
		return c.Status(status).JSON(fiber.Map{"data": f, "warnings": warnings})
	}
	return sendData(c, status, f)
}

// awaitConfirmation polls until the router confirms the transition, for at most
// LifecycleWait, so a client usually gets the settled state; past that it gets the transient
// state and a 202, and can poll GET /flows/{id}.
func (s *Server) awaitConfirmation(ctx context.Context, f *flowdoc.Flow, via string) *flowdoc.Flow {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.LifecycleWait)
	defer cancel()
	t := time.NewTicker(25 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return f
		case <-t.C:
		}
		cur, err := s.st.Flow(ctx, f.ID)
		if err != nil {
			return f
		}
		if cur.Status != via {
			return cur
		}
	}
}

func (s *Server) listRevisions(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermFlowsRead); err != nil {
		return err
	}
	lp, err := parseList(c, []string{"revision"}, "revision")
	if err != nil {
		return err
	}
	f, err := s.visibleFlow(c)
	if err != nil {
		return err
	}
	revs, err := s.st.Revisions(c.UserContext(), f.ID)
	if err != nil {
		return flowErr(err)
	}
	if lp.desc {
		slices.Reverse(revs)
	}
	items, m := page(revs, lp)
	return sendList(c, items, m)
}

func (s *Server) getRevision(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermFlowsRead); err != nil {
		return err
	}
	n, err := strconv.Atoi(c.Params("n"))
	if err != nil || n < 1 {
		return fail(fiber.StatusBadRequest, problem.New("invalid_parameter", "n", "revision must be a positive integer"))
	}
	f, err := s.visibleFlow(c)
	if err != nil {
		return err
	}
	rev, err := s.st.Revision(c.UserContext(), f.ID, n)
	if err != nil {
		return flowErr(err)
	}
	return sendData(c, fiber.StatusOK, rev)
}
