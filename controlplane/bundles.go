package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/bundle"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/integration"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/problem/schemaproblem"
	"github.com/flowd/flowd/internal/store"
)

// Clone, export and import of integrations (docs/integrations.md). Routes are mounted in
// mountIntegrations.

// prefixed re-roots the paths of an API error's problems under prefix (a flow's problems
// under /flows/3, say); other errors pass through.
func prefixed(err error, prefix string) error {
	var ae *httpproblem.Error
	if !errors.As(err, &ae) {
		return err
	}
	return fail(ae.Status, prefixProblems(ae.Problems, prefix)...)
}

// flowObject is a flow document as a JSON object, for newFlow.
func flowObject(f *flowdoc.Flow) (map[string]any, error) {
	raw, err := flowdoc.Canonical(f)
	if err != nil {
		return nil, fmt.Errorf("encode flow %q: %w", f.Name, err)
	}
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("decode flow %q: %w", f.Name, err)
	}
	return obj, nil
}

// memberFlows are the flows of in that p sees, oldest first.
func (s *Server) memberFlows(ctx context.Context, p *identity.Principal, id string) ([]flowdoc.Flow, error) {
	flows, err := s.st.IntegrationFlows(ctx, id)
	if err != nil {
		return nil, err
	}
	flows = slices.DeleteFunc(flows, func(f flowdoc.Flow) bool { return !canSeeFlow(p, &f) })
	created := flowTime(func(f flowdoc.Flow) *time.Time { return f.CreatedAt })
	slices.SortStableFunc(flows, func(a, b flowdoc.Flow) int { return created(a).Compare(created(b)) })
	return flows, nil
}

// cloneIntegration copies an integration and its flows (inactive, same owners, same
// connections): {"name": "..."} names the copy, by default "<name> (copy)".
// cloneName reads a clone's optional body, {"name": ...}; "" when it names none.
func cloneName(c *fiber.Ctx) (string, error) {
	if len(strings.TrimSpace(string(c.Body()))) == 0 {
		return "", nil
	}
	body, err := documentBody(c, nil)
	if err != nil {
		return "", err
	}
	for k := range body {
		if k != "name" {
			return "", fail(fiber.StatusBadRequest, problem.New(schemaproblem.CodeAdditionalProperty, "/"+k, "a clone takes only a name"))
		}
	}
	var name string
	if v, ok := body["name"]; ok {
		if name, _ = v.(string); strings.TrimSpace(name) == "" || len(name) > 200 {
			return "", fail(fiber.StatusBadRequest, problem.New(schemaproblem.CodeType, "/name", "name must be a non-blank string of at most 200 characters"))
		}
	}
	return name, nil
}

// cloneFlow copies a flow: same content, inactive, owned by the caller and its tenant. It
// leaves the source's integration, whose owners the caller may not share.
func (s *Server) cloneFlow(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsUpdate)
	if err != nil {
		return err
	}
	name, err := cloneName(c)
	if err != nil {
		return err
	}
	src, err := s.visibleFlow(c)
	if err != nil {
		return err
	}
	cp := contentOf(src)
	cp.Name, cp.Owners, cp.Integration, cp.IntegrationSettings = name, nil, "", nil
	if name == "" {
		base := []rune(src.Name)
		if len(base) > 193 { // names hold 200 characters, " (copy)" included
			base = base[:193]
		}
		cp.Name = string(base) + " (copy)"
	}
	obj, err := flowObject(&cp)
	if err != nil {
		return err
	}
	f, err := s.newFlow(c.UserContext(), p, obj)
	if err != nil {
		return err
	}
	audited(c, audit.Entry{Action: audit.FlowCreate, Target: flowTarget(f), RevisionAfter: f.Revision})
	c.Location("/api/v1/flows/" + f.ID)
	setETag(c, f)
	return sendData(c, fiber.StatusCreated, f)
}

func (s *Server) cloneIntegration(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsUpdate)
	if err != nil {
		return err
	}
	name, err := cloneName(c)
	if err != nil {
		return err
	}
	src, err := s.visibleIntegration(c)
	if err != nil {
		return err
	}
	if name == "" {
		name = src.Name + " (copy)"
	}
	ctx := c.UserContext()
	flows, err := s.memberFlows(ctx, p, src.ID)
	if err != nil {
		return err
	}
	// Every copy is checked before anything is written: a flow stored before a check existed
	// refuses the clone rather than leaving half of it behind.
	objs := make([]map[string]any, len(flows))
	for i := range flows {
		cp := contentOf(&flows[i])
		cp.Integration, cp.IntegrationSettings = "", nil
		if objs[i], err = flowObject(&cp); err != nil {
			return err
		}
		if _, err := s.decodeFlow(objs[i]); err != nil {
			return prefixed(err, "/flows/"+strconv.Itoa(i))
		}
	}
	in := &integration.Integration{Name: name, Description: src.Description, Owners: slices.Clone(src.Owners),
		SettingsSchema: src.SettingsSchema, Settings: src.Settings}
	if err := s.newIntegration(ctx, p, in); err != nil {
		return err
	}
	view := integrationView{Integration: in, Flows: []string{}}
	for i, obj := range objs {
		obj["integration"] = in.ID
		f, err := s.newFlow(ctx, p, obj)
		if err != nil {
			return prefixed(err, "/flows/"+strconv.Itoa(i))
		}
		view.Flows = append(view.Flows, f.ID)
	}
	audited(c, audit.Entry{Action: audit.IntegrationClone, Target: integrationTarget(in), RevisionAfter: in.Revision})
	c.Location("/api/v1/integrations/" + in.ID)
	setIntegrationETag(c, in)
	return sendData(c, fiber.StatusCreated, view)
}

// exportIntegration answers the integration as a bundle (?format=json, the default, or yaml),
// the document itself rather than wrapped in data, ready to save and to import elsewhere.
func (s *Server) exportIntegration(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsRead)
	if err != nil {
		return err
	}
	format := c.Query("format", "json")
	if format != "json" && format != "yaml" {
		return fail(fiber.StatusBadRequest, problem.New("invalid_parameter", "format", "format must be json or yaml"))
	}
	in, err := s.visibleIntegration(c)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	flows, err := s.memberFlows(ctx, p, in.ID)
	if err != nil {
		return err
	}
	b := bundle.Bundle{Format: bundle.Format, Flows: make([]flowdoc.Flow, 0, len(flows)), Connections: []bundle.Connection{},
		Integration: bundle.Integration{Name: in.Name, Description: in.Description, SettingsSchema: in.SettingsSchema, Settings: in.Settings}}
	names := map[string]string{} // connection id -> name
	for i := range flows {
		pf, err := bundle.Portable(&flows[i])
		if err != nil {
			return err
		}
		for _, ref := range bundle.Refs(&pf) {
			id := ref.Value()
			name, ok := names[id]
			if !ok {
				conn, err := s.st.Connection(ctx, id)
				if errors.Is(err, store.ErrNotFound) {
					return fail(fiber.StatusConflict, problem.New("connection_missing", "/flows/"+strconv.Itoa(i)+ref.Path,
						"flow %s names connection %s, which no longer exists; fix the flow before exporting", flows[i].ID, id))
				}
				if err != nil {
					return err
				}
				name = conn.Name
				names[id] = name
				if !slices.ContainsFunc(b.Connections, func(x bundle.Connection) bool { return strings.EqualFold(x.Name, name) }) {
					b.Connections = append(b.Connections, bundle.Connection{Name: conn.Name, Type: conn.Type})
				}
			}
			ref.Set(name)
		}
		b.Flows = append(b.Flows, pf)
	}
	file := strings.Map(func(r rune) rune {
		if r < 0x80 && (r == '-' || r == '_' || r == '.' || ('a' <= r && r <= 'z') || ('A' <= r && r <= 'Z') || ('0' <= r && r <= '9')) {
			return r
		}
		return '-'
	}, in.Name)
	if format == "yaml" {
		out, err := b.YAML()
		if err != nil {
			return err
		}
		c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+file+`.yaml"`)
		c.Set(fiber.HeaderContentType, "application/yaml")
		return c.Send(out)
	}
	c.Set(fiber.HeaderContentDisposition, `attachment; filename="`+file+`.json"`)
	return c.JSON(b)
}

// importPlan is what an import creates or changes, and the connections it maps names to.
// changes says whether applying the plan created or changed anything.
func (pl *importPlan) changes() bool {
	if pl.Integration.Action != actionUnchanged {
		return true
	}
	for _, f := range pl.Flows {
		if f.Action != actionUnchanged {
			return true
		}
	}
	return false
}

type importPlan struct {
	DryRun      bool             `json:"dryRun"`
	Integration plannedItem      `json:"integration"`
	Flows       []plannedItem    `json:"flows"`
	Connections []plannedConnect `json:"connections"`
}

// plannedItem is one integration or flow of an import: create, update or unchanged.
type plannedItem struct {
	Action string `json:"action"`
	ID     string `json:"id,omitempty"`
	Name   string `json:"name"`
}

type plannedConnect struct {
	Name string `json:"name"`
	Type string `json:"type"`
	ID   string `json:"id"`
}

// Import actions.
const (
	actionCreate    = "create"
	actionUpdate    = "update"
	actionUnchanged = "unchanged"
)

// importedFlow is a bundle flow ready to store: decoded, its connections mapped to ids.
type importedFlow struct {
	flow *flowdoc.Flow
	into *flowdoc.Flow // the existing flow it replaces; nil for a new one
}

// bundleFields are the top-level fields of a bundle.
var bundleFields = []string{"format", "integration", "flows", "connections"}

// importIntegration reads a bundle (JSON or YAML) and creates its integration and flows for
// the caller, or, when the caller already has an integration of that name, updates it: its
// flows are matched by name (in order, for repeated names), changed ones get a new revision and
// missing ones are created; the integration's other flows are left alone. Connections are
// mapped by name to the caller's own or shared ones. Everything is checked before anything is
// written; ?dryRun=true only answers the plan.
func (s *Server) importIntegration(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsUpdate)
	if err != nil {
		return err
	}
	dry, err := strconv.ParseBool(c.Query("dryRun", "false"))
	if err != nil {
		return fail(fiber.StatusBadRequest, problem.New("invalid_parameter", "dryRun", "dryRun must be true or false"))
	}
	body, err := documentBody(c, nil)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	var ps problem.List
	for k := range body {
		if !slices.Contains(bundleFields, k) {
			ps = append(ps, problem.New(schemaproblem.CodeAdditionalProperty, "/"+k, "%q is not a field of a bundle (%s)", k, strings.Join(bundleFields, ", ")))
		}
	}
	if body["format"] != bundle.Format {
		ps = append(ps, problem.New(schemaproblem.CodeEnum, "/format", "format must be %q", bundle.Format))
	}
	// The integration.
	var in *integration.Integration
	if obj, ok := body["integration"].(map[string]any); !ok {
		ps = append(ps, problem.New(schemaproblem.CodeRequired, "/integration", "a bundle has an integration object"))
	} else {
		delete(obj, "owners") // the importer owns what it imports
		for _, k := range integration.ReadOnly {
			delete(obj, k)
		}
		raw, _ := json.Marshal(obj)
		var ips problem.List
		if in, ips = integration.Decode(raw); len(ips) > 0 {
			ps = append(ps, prefixProblems(ips, "/integration")...)
		}
	}
	// The connections the bundle declares, and the caller's of those names.
	declared := map[string]string{} // lower-case name -> type
	if v, ok := body["connections"]; ok {
		list, isList := v.([]any)
		if !isList {
			ps = append(ps, problem.New(schemaproblem.CodeType, "/connections", "connections is a list of {name, type}"))
		}
		for i, e := range list {
			m, _ := e.(map[string]any)
			name, _ := m["name"].(string)
			typ, _ := m["type"].(string)
			if name == "" {
				ps = append(ps, problem.New(schemaproblem.CodeRequired, "/connections/"+strconv.Itoa(i)+"/name", "a connection is named"))
				continue
			}
			declared[strings.ToLower(name)] = typ
		}
	}
	owners := []flowdoc.Owner{{ID: p.User.ID, Type: flowdoc.OwnerUser}}
	if p.User.Tenant != "" {
		owners = append(owners, flowdoc.Owner{ID: p.User.Tenant, Type: flowdoc.OwnerTenant})
	}
	conns, err := s.usableConnections(ctx, p, owners)
	if err != nil {
		return err
	}
	// The flows, each decoded and its connections mapped.
	var flows []importedFlow
	mapped := []plannedConnect{}
	list, isList := body["flows"].([]any)
	if !isList {
		ps = append(ps, problem.New(schemaproblem.CodeType, "/flows", "flows is a list of flow documents"))
	}
	for i, e := range list {
		at := "/flows/" + strconv.Itoa(i)
		obj, ok := e.(map[string]any)
		if !ok {
			ps = append(ps, problem.New(schemaproblem.CodeType, at, "a flow is an object"))
			continue
		}
		for _, k := range append(slices.Clone(readOnly), "owners", "integration", "fromTemplate", "fromTemplateVersion") {
			delete(obj, k)
		}
		f, err := s.decodeFlow(obj)
		if err != nil {
			if fps := problemsOf(err); fps != nil {
				ps = append(ps, prefixProblems(fps, at)...)
				continue
			}
			return err
		}
		for _, ref := range bundle.Refs(f) {
			name := ref.Value()
			conn := conns[strings.ToLower(name)]
			switch {
			case conn == nil:
				ps = append(ps, problem.New("connection_not_found", at+ref.Path,
					"no connection named %q that you may use: create one (the bundle's has type %q) or share it with your tenant, then import again", name, declared[strings.ToLower(name)]))
				continue
			case declared[strings.ToLower(name)] != "" && declared[strings.ToLower(name)] != conn.Type:
				ps = append(ps, problem.New("connection_type", at+ref.Path,
					"connection %q is of type %s here, the bundle's is of type %s", name, conn.Type, declared[strings.ToLower(name)]))
				continue
			}
			ref.Set(conn.ID)
			if !slices.ContainsFunc(mapped, func(m plannedConnect) bool { return m.ID == conn.ID }) {
				mapped = append(mapped, plannedConnect{Name: conn.Name, Type: conn.Type, ID: conn.ID})
			}
		}
		f.Owners = owners
		flows = append(flows, importedFlow{flow: f})
	}
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}

	plan := importPlan{DryRun: dry, Integration: plannedItem{Action: actionCreate, Name: in.Name}, Connections: mapped}
	existing, err := s.importTarget(ctx, p, in.Name)
	if err != nil {
		return err
	}
	if existing != nil {
		plan.Integration = plannedItem{Action: actionUnchanged, ID: existing.ID, Name: existing.Name}
		if !sameJSON(existing.SettingsSchema, in.SettingsSchema) || !sameJSON(existing.Settings, in.Settings) || existing.Description != in.Description {
			plan.Integration.Action = actionUpdate
		}
		members, err := s.memberFlows(ctx, p, existing.ID)
		if err != nil {
			return err
		}
		for i := range flows {
			j := slices.IndexFunc(members, func(m flowdoc.Flow) bool { return m.Name == flows[i].flow.Name })
			if j < 0 {
				continue
			}
			cur := members[j]
			members = slices.Delete(members, j, j+1)
			flows[i].into = &cur
			if !flowdoc.Editable(cur.Status) {
				ps = append(ps, problem.New("flow_not_inactive", "/flows/"+strconv.Itoa(i),
					"flow %s (%s) is %s; stop it before an import changes it", cur.ID, cur.Name, cur.Status))
			}
		}
		if len(ps) > 0 {
			return fail(fiber.StatusConflict, ps...)
		}
	}
	for _, f := range flows {
		item := plannedItem{Action: actionCreate, Name: f.flow.Name}
		if f.into != nil {
			item.ID, item.Action = f.into.ID, actionUpdate
			if sameContent(f.into, replacement(f.into, f.flow)) {
				item.Action = actionUnchanged
			}
		}
		plan.Flows = append(plan.Flows, item)
	}
	if dry {
		return sendData(c, fiber.StatusOK, plan)
	}

	status := fiber.StatusOK
	if existing == nil {
		in.Owners = nil
		if err := s.newIntegration(ctx, p, in); err != nil {
			return prefixed(err, "/integration")
		}
		plan.Integration.ID, status = in.ID, fiber.StatusCreated
	} else if plan.Integration.Action == actionUpdate {
		if _, err := s.st.UpdateIntegration(ctx, existing.ID, func(cur *integration.Integration) (store.IntegrationChange, error) {
			next := *cur
			next.Description, next.SettingsSchema, next.Settings = in.Description, in.SettingsSchema, in.Settings
			now := s.cfg.Now().UTC()
			next.Revision, next.UpdatedAt = cur.Revision+1, &now
			ch := store.IntegrationChange{Integration: &next}
			if !sameJSON(cur.Settings, next.Settings) {
				ch.Member = s.settingsRevision(p, now)
			}
			return ch, nil
		}); err != nil {
			return integrationErr(err)
		}
	}
	for i, f := range flows {
		at := "/flows/" + strconv.Itoa(i)
		f.flow.Integration = plan.Integration.ID
		if f.into == nil {
			obj, err := flowObject(f.flow)
			if err != nil {
				return err
			}
			created, err := s.newFlow(ctx, p, obj)
			if err != nil {
				return prefixed(err, at)
			}
			plan.Flows[i].ID = created.ID
			continue
		}
		if plan.Flows[i].Action == actionUnchanged {
			continue
		}
		if err := s.replaceFlow(ctx, p, f.into.ID, f.flow); err != nil {
			return prefixed(err, at)
		}
	}
	s.publishNow(ctx)
	if plan.changes() {
		audited(c, audit.Entry{Action: audit.IntegrationImport, Target: audit.Target{Type: audit.TargetIntegration, ID: plan.Integration.ID, Name: in.Name}})
	}
	return sendData(c, status, plan)
}

// settingsRevision is the change an integration's new settings make to each member flow: a new
// revision (the store puts the settings in it), announced as flow.updated.
func (s *Server) settingsRevision(p *identity.Principal, now time.Time) func(f *flowdoc.Flow) (store.Mutation, error) {
	return func(f *flowdoc.Flow) (store.Mutation, error) {
		nf := *f
		nf.Revision, nf.UpdatedAt = f.Revision+1, &now
		return store.Mutation{Flow: &nf, NewRevision: true, Events: []events.Event{s.event(events.FlowUpdated, &nf, p)}}, nil
	}
}

// replacement is cur's content replaced by with's, keeping what is cur's own: owners, status
// and the integration it belongs to.
func replacement(cur, with *flowdoc.Flow) *flowdoc.Flow {
	next := *with
	next.Owners, next.Integration, next.IntegrationSettings = cur.Owners, cur.Integration, cur.IntegrationSettings
	next.FromTemplate, next.FromTemplateVersion = cur.FromTemplate, cur.FromTemplateVersion
	return &next
}

// replaceFlow gives an inactive flow the content of with as a new revision.
func (s *Server) replaceFlow(ctx context.Context, p *identity.Principal, id string, with *flowdoc.Flow) error {
	_, err := s.st.UpdateFlow(ctx, id, func(cur *flowdoc.Flow) (store.Mutation, error) {
		if !canSeeFlow(p, cur) {
			return store.Mutation{}, errHidden
		}
		if !flowdoc.Editable(cur.Status) {
			return store.Mutation{}, conflict(cur, "change")
		}
		next := replacement(cur, with)
		if sameContent(cur, next) {
			return store.Mutation{}, errUnchanged
		}
		if err := s.checkAccess(ctx, next); err != nil {
			return store.Mutation{}, err
		}
		now := s.cfg.Now().UTC()
		next.ID, next.Status, next.Revision, next.Type = cur.ID, cur.Status, cur.Revision+1, flowdoc.DerivedType(next)
		next.StatusReason, next.CreatedAt, next.UpdatedAt = cur.StatusReason, cur.CreatedAt, &now
		return store.Mutation{Flow: next, NewRevision: true, Events: []events.Event{s.event(events.FlowUpdated, next, p)}}, nil
	})
	if errors.Is(err, errUnchanged) {
		return nil
	}
	return flowErr(err)
}

// importTarget is the integration named name that an import by p updates: p's own (or p's
// tenant's) of that name; nil when there is none.
func (s *Server) importTarget(ctx context.Context, p *identity.Principal, name string) (*integration.Integration, error) {
	all, err := s.visibleIntegrations(ctx, p)
	if err != nil {
		return nil, err
	}
	for i := range all {
		in := &all[i]
		if in.Name != name {
			continue
		}
		if p.IsAdmin() && !slices.Contains(in.Owners, flowdoc.Owner{ID: p.User.ID, Type: flowdoc.OwnerUser}) {
			continue // an administrator's import never lands in a tenant's integration
		}
		return in, nil
	}
	return nil, nil
}

// usableConnections maps the lower-case names of the connections p may use in flows owned by
// owners to them; p's own win over ones shared with p's tenant.
func (s *Server) usableConnections(ctx context.Context, p *identity.Principal, owners []flowdoc.Owner) (map[string]*store.Connection, error) {
	out := map[string]*store.Connection{}
	if p.User.Tenant != "" {
		shared, err := s.st.ConnectionsSharedWith(ctx, p.User.Tenant)
		if err != nil {
			return nil, err
		}
		for i := range shared {
			if connections.CanUse(&shared[i], owners) {
				out[strings.ToLower(shared[i].Name)] = &shared[i]
			}
		}
	}
	own, err := s.st.ConnectionsOwnedBy(ctx, p.User.ID)
	if err != nil {
		return nil, err
	}
	for i := range own {
		out[strings.ToLower(own[i].Name)] = &own[i]
	}
	return out, nil
}

func prefixProblems(ps problem.List, prefix string) problem.List {
	out := make(problem.List, len(ps))
	for i, p := range ps {
		p.Path = prefix + p.Path
		out[i] = p
	}
	return out
}
