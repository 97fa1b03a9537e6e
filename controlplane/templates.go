package controlplane

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/flowtemplate"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/problem/schemaproblem"
	"github.com/flowd/flowd/internal/store"
)

// Templates: templates.read lists, reads and (with flows.update, since it makes a flow)
// instantiates them; flows.update creates and changes them, flows.delete deletes them. A
// template is seen by its owners, like a flow, and by everyone when an administrator made it
// public. See docs/integrations.md.
func (s *Server) mountTemplates(r fiber.Router) {
	r.Get("/templates", s.listTemplates)
	r.Post("/templates", s.createTemplate)
	r.Get("/templates/:id", s.getTemplate)
	r.Patch("/templates/:id", s.patchTemplate)
	r.Delete("/templates/:id", s.deleteTemplate)
	r.Post("/templates/:id/instantiate", s.instantiateTemplate)
}

var errHiddenTemplate = errors.New("template not visible")

func templateErr(err error) error {
	var ae *httpproblem.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ae):
		return err
	case errors.Is(err, store.ErrNotFound), errors.Is(err, errHiddenTemplate):
		return notFound("template")
	default:
		return err
	}
}

func canSeeTemplate(p *identity.Principal, t *flowtemplate.Template) bool {
	return t.Public || ownedBy(p, t.Owners)
}

func (s *Server) visibleTemplate(c *fiber.Ctx) (*flowtemplate.Template, error) {
	t, err := s.st.Template(c.UserContext(), c.Params("id"))
	if err == nil && !canSeeTemplate(principal(c), t) {
		err = errHiddenTemplate
	}
	return t, templateErr(err)
}

func (s *Server) listTemplates(c *fiber.Ctx) error {
	p, err := require(c, identity.PermTemplatesRead)
	if err != nil {
		return err
	}
	lp, err := parseList(c, []string{"name", "createdAt", "updatedAt"}, "createdAt")
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	var all []flowtemplate.Template
	if p.IsAdmin() {
		all, err = s.st.AllTemplates(ctx)
	} else {
		owners := []flowdoc.Owner{{ID: p.User.ID, Type: flowdoc.OwnerUser}}
		if p.User.Tenant != "" {
			owners = append(owners, flowdoc.Owner{ID: p.User.Tenant, Type: flowdoc.OwnerTenant})
		}
		all, err = s.st.TemplatesFor(ctx, owners...)
	}
	if err != nil {
		return err
	}
	search := strings.ToLower(lp.search)
	all = slices.DeleteFunc(all, func(t flowtemplate.Template) bool {
		return !canSeeTemplate(p, &t) || (search != "" && !strings.Contains(strings.ToLower(t.Name+"\n"+t.Description), search))
	})
	stamp := func(get func(flowtemplate.Template) *time.Time) func(flowtemplate.Template) time.Time {
		return func(t flowtemplate.Template) time.Time {
			if at := get(t); at != nil {
				return *at
			}
			return time.Time{}
		}
	}
	sortBy(all, lp, func(t flowtemplate.Template) string { return t.Name },
		stamp(func(t flowtemplate.Template) *time.Time { return t.CreatedAt }),
		stamp(func(t flowtemplate.Template) *time.Time { return t.UpdatedAt }))
	items, m := page(all, lp)
	return sendList(c, items, m)
}

func (s *Server) getTemplate(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermTemplatesRead); err != nil {
		return err
	}
	t, err := s.visibleTemplate(c)
	if err != nil {
		return err
	}
	setVersionETag(c, t.Version)
	return sendData(c, fiber.StatusOK, t)
}

func setVersionETag(c *fiber.Ctx, v int) { c.Set(fiber.HeaderETag, `"`+itoa(v)+`"`) }

// documentBody reads a JSON or YAML object from the request body, without the fields named.
func documentBody(c *fiber.Ctx, drop []string) (map[string]any, error) {
	doc, ps := flowdoc.ToJSON(c.Body(), c.Get(fiber.HeaderContentType))
	if len(ps) > 0 {
		return nil, fail(fiber.StatusBadRequest, ps...)
	}
	var obj map[string]any
	if err := json.Unmarshal(doc, &obj); err != nil || obj == nil {
		return nil, fail(fiber.StatusBadRequest, problem.New("malformed", "", "the request body must be a JSON (or YAML) object"))
	}
	for _, k := range drop {
		delete(obj, k)
	}
	return obj, nil
}

// decodeTemplate validates a template document; only an administrator makes one public.
func decodeTemplate(p *identity.Principal, obj map[string]any) (*flowtemplate.Template, error) {
	doc, err := json.Marshal(obj)
	if err != nil {
		return nil, fail(fiber.StatusBadRequest, problem.New("malformed", "", "cannot encode the template: %v", err))
	}
	t, ps := flowtemplate.Decode(doc)
	if len(ps) > 0 {
		return nil, fail(fiber.StatusBadRequest, ps...)
	}
	if t.Public && !p.IsAdmin() {
		return nil, fail(fiber.StatusBadRequest, problem.New("forbidden_field", "/public", "only an administrator makes a template public"))
	}
	return t, nil
}

func (s *Server) createTemplate(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsUpdate)
	if err != nil {
		return err
	}
	obj, err := documentBody(c, flowtemplate.ReadOnly)
	if err != nil {
		return err
	}
	t, err := decodeTemplate(p, obj)
	if err != nil {
		return err
	}
	ctx := c.UserContext()
	if err := s.checkOwners(ctx, p, t.Owners); err != nil {
		return err
	}
	t.Owners = addOwner(t.Owners, flowdoc.Owner{ID: p.User.ID, Type: flowdoc.OwnerUser})
	t.Owners = addOwner(t.Owners, flowdoc.Owner{ID: p.User.Tenant, Type: flowdoc.OwnerTenant})
	now := s.cfg.Now().UTC()
	t.ID, t.Version, t.CreatedAt, t.UpdatedAt = identity.NewID(), 1, &now, &now
	if err := s.st.CreateTemplate(ctx, t); err != nil {
		return err
	}
	audited(c, audit.Entry{Action: audit.TemplateCreate, Target: templateTarget(t), RevisionAfter: t.Version})
	c.Location("/api/v1/templates/" + t.ID)
	setVersionETag(c, t.Version)
	return sendData(c, fiber.StatusCreated, t)
}

// templateContent is a template without the fields the server manages.
func templateContent(t *flowtemplate.Template) []byte {
	c := *t
	c.ID, c.Version, c.CreatedAt, c.UpdatedAt = "", 0, nil, nil
	b, _ := json.Marshal(&c)
	return b
}

func (s *Server) patchTemplate(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsUpdate)
	if err != nil {
		return err
	}
	want, err := ifMatch(c)
	if err != nil {
		return err
	}
	patch, err := documentBody(c, flowtemplate.ReadOnly)
	if err != nil {
		return err
	}
	patchDoc, _ := json.Marshal(patch)
	ctx := c.UserContext()
	t, err := s.st.UpdateTemplate(ctx, c.Params("id"), func(cur *flowtemplate.Template) (*flowtemplate.Template, error) {
		if !ownedBy(p, cur.Owners) {
			return nil, errHiddenTemplate
		}
		if want != 0 && want != cur.Version {
			return nil, fail(fiber.StatusPreconditionFailed, problem.New("revision_mismatch", "If-Match",
				"the template is at version %d, not %d; fetch it again and reapply your change", cur.Version, want))
		}
		merged, err := jsonpatch.MergePatch(templateContent(cur), patchDoc)
		if err != nil {
			return nil, fail(fiber.StatusBadRequest, problem.New("malformed", "", "cannot apply the change: %v", err))
		}
		var obj map[string]any
		if err := json.Unmarshal(merged, &obj); err != nil {
			return nil, err
		}
		next, err := decodeTemplate(p, obj)
		if err != nil {
			return nil, err
		}
		if bytes.Equal(templateContent(cur), templateContent(next)) {
			return nil, errUnchanged
		}
		if err := s.checkOwners(ctx, p, next.Owners); err != nil {
			return nil, err
		}
		if len(next.Owners) == 0 {
			return nil, fail(fiber.StatusBadRequest, problem.New("required", "/owners", "a template needs at least one owner"))
		}
		now := s.cfg.Now().UTC()
		next.ID, next.Version, next.CreatedAt, next.UpdatedAt = cur.ID, cur.Version+1, cur.CreatedAt, &now
		return next, nil
	})
	changed := err == nil
	if errors.Is(err, errUnchanged) {
		t, err = s.visibleTemplate(c)
	}
	if err != nil {
		return templateErr(err)
	}
	if changed {
		audited(c, audit.Entry{Action: audit.TemplateUpdate, Target: templateTarget(t), RevisionBefore: t.Version - 1, RevisionAfter: t.Version})
	}
	setVersionETag(c, t.Version)
	return sendData(c, fiber.StatusOK, t)
}

func (s *Server) deleteTemplate(c *fiber.Ctx) error {
	p, err := require(c, identity.PermFlowsDelete)
	if err != nil {
		return err
	}
	var gone flowtemplate.Template
	err = s.st.DeleteTemplate(c.UserContext(), c.Params("id"), func(cur *flowtemplate.Template) error {
		if !ownedBy(p, cur.Owners) {
			return errHiddenTemplate
		}
		gone = *cur
		return nil
	})
	if err != nil {
		return templateErr(err)
	}
	audited(c, audit.Entry{Action: audit.TemplateDelete, Target: templateTarget(&gone), RevisionBefore: gone.Version})
	return c.SendStatus(fiber.StatusNoContent)
}

// templateTarget names a template in the audit log; its revisions are its versions.
func templateTarget(t *flowtemplate.Template) audit.Target {
	return audit.Target{Type: audit.TargetTemplate, ID: t.ID, Name: t.Name}
}

// instantiateFields are what an instantiation may say besides the parameters: they override
// the template's flow.
var instantiateFields = []string{"name", "description", "integration", "owners"}

// instantiateTemplate makes a flow from a template: the parameters are checked against the
// template's schema (problems at /parameters/<name>), filled in, and the result is saved like
// any new flow (its problems point into the flow document), recording the template's id and
// version in fromTemplate and fromTemplateVersion.
func (s *Server) instantiateTemplate(c *fiber.Ctx) error {
	p, err := require(c, identity.PermTemplatesRead)
	if err != nil {
		return err
	}
	if !p.Can(identity.PermFlowsUpdate) {
		return forbidden(identity.PermFlowsUpdate)
	}
	body, err := documentBody(c, nil)
	if err != nil {
		return err
	}
	var ps problem.List
	for k := range body {
		if k != "parameters" && !slices.Contains(instantiateFields, k) {
			ps = append(ps, problem.New(schemaproblem.CodeAdditionalProperty, "/"+k, "%q is not a field of an instantiation (parameters, %s)", k, strings.Join(instantiateFields, ", ")))
		}
	}
	params, isObj := body["parameters"].(map[string]any)
	if v, given := body["parameters"]; given && !isObj {
		ps = append(ps, problem.New(schemaproblem.CodeType, "/parameters", "parameters must be an object of parameter values, not %T", v))
	}
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	t, err := s.visibleTemplate(c)
	if err != nil {
		return err
	}
	flow, ps := t.Instantiate(params)
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	for _, k := range readOnly {
		delete(flow, k)
	}
	for _, k := range instantiateFields {
		if v, ok := body[k]; ok {
			flow[k] = v
		}
	}
	flow["fromTemplate"], flow["fromTemplateVersion"] = t.ID, t.Version
	f, err := s.newFlow(c.UserContext(), p, flow)
	if err != nil {
		return err
	}
	audited(c, audit.Entry{Action: audit.FlowCreate, Target: flowTarget(f), RevisionAfter: f.Revision})
	c.Location("/api/v1/flows/" + f.ID)
	setETag(c, f)
	return sendData(c, fiber.StatusCreated, f)
}
