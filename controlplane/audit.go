package controlplane

import (
	"bytes"
	"context"
	"encoding/json"
	"regexp"
	"slices"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/metrics"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/store"
)

// The audit log. A handler that changed something notes what (audited) once its store write
// succeeded; auditTrail, around every route, appends the notes once the request answered with
// success, and drops them when it failed. So each audited change is one call in its handler,
// and a request that fails records nothing.

const auditKey = "flowd.audit"

// audited notes entries for the request's audit trail; auditTrail fills in who and when.
func audited(c *fiber.Ctx, entries ...audit.Entry) {
	prev, _ := c.Locals(auditKey).([]audit.Entry)
	c.Locals(auditKey, append(prev, entries...))
}

// auditTimeout bounds an append: the answer waits for it.
const auditTimeout = 5 * time.Second

// auditTrail appends the entries the handler noted, once it answered below 400. An append
// that fails is logged and counted; the change was made, so the answer stands.
func (s *Server) auditTrail(c *fiber.Ctx) error {
	err := c.Next()
	entries, _ := c.Locals(auditKey).([]audit.Entry)
	p := principal(c)
	if err != nil || len(entries) == 0 || p == nil || c.Response().StatusCode() >= fiber.StatusBadRequest {
		return err
	}
	now := s.cfg.Now().UTC()
	for i := range entries {
		e := &entries[i]
		e.ID, e.Time = identity.NewID(), now
		e.Actor = audit.Actor{ID: p.User.ID, Username: p.User.Username}
		e.Tenant = p.User.Tenant
	}
	// The request's context may end with the answer; the entries must still be written.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.UserContext()), auditTimeout)
	defer cancel()
	if err := s.st.AppendAudit(ctx, s.cfg.AuditRetention, entries...); err != nil {
		for _, e := range entries {
			s.log.Error("audit entry not written; the change itself was made", "action", e.Action,
				"target", e.Target.Type+" "+e.Target.ID, "actor", e.Actor.ID, "err", err)
			metrics.AuditAppendFailed()
		}
	}
	return nil
}

func flowTarget(f *flowdoc.Flow) audit.Target {
	return audit.Target{Type: audit.TargetFlow, ID: f.ID, Name: f.Name}
}

// changedFields names the top-level fields of a flow's content that differ between a and b.
func changedFields(a, b *flowdoc.Flow) []string {
	fields := func(f *flowdoc.Flow) map[string]json.RawMessage {
		c := contentOf(f)
		raw, err := flowdoc.Canonical(&c)
		var m map[string]json.RawMessage
		if err == nil {
			_ = json.Unmarshal(raw, &m)
		}
		return m
	}
	fa, fb := fields(a), fields(b)
	var out []string
	for k, v := range fa {
		if w, ok := fb[k]; !ok || !bytes.Equal(v, w) {
			out = append(out, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

func (s *Server) mountAudit(r fiber.Router) {
	r.Get("/audit", s.listAudit)
}

const auditPageSize = 20

// auditWord is what an action, an id or a type filter may hold.
var auditWord = regexp.MustCompile(`^[A-Za-z0-9._@+-]{1,200}$`)

// listAudit: GET /api/v1/audit, newest first. A tenant's users with audit.read read their
// tenant's entries; administrators every tenant's (filter[tenant] picks one); a user of no
// tenant only their own.
func (s *Server) listAudit(c *fiber.Ctx) error {
	p, err := require(c, identity.PermAuditRead)
	if err != nil {
		return err
	}
	lp, err := parseList(c, []string{"time"}, "-time")
	if err != nil {
		return err
	}
	if c.Query("page[size]") == "" {
		lp.size = auditPageSize
	}
	var ps problem.List
	if !lp.desc {
		ps = append(ps, problem.New("invalid_parameter", "sort", "the audit log is listed newest first (sort=-time)"))
	}
	f := audit.Filter{Action: c.Query("filter[action]"), Actor: c.Query("filter[actor]"),
		TargetType: c.Query("filter[targetType]"), TargetID: c.Query("filter[targetId]")}
	tenant := c.Query("filter[tenant]")
	for _, w := range []struct{ name, v string }{
		{"action", f.Action}, {"actor", f.Actor}, {"targetType", f.TargetType}, {"targetId", f.TargetID}, {"tenant", tenant},
	} {
		if w.v != "" && !auditWord.MatchString(w.v) {
			ps = append(ps, problem.New("invalid_parameter", "filter["+w.name+"]", "filter[%s] is 1-200 letters, digits or ._@+-", w.name))
		}
	}
	for _, b := range []struct {
		name string
		t    *time.Time
	}{{"from", &f.From}, {"to", &f.To}} {
		if v := c.Query("filter[" + b.name + "]"); v != "" {
			if *b.t, err = time.Parse(time.RFC3339Nano, v); err != nil {
				ps = append(ps, problem.New("invalid_parameter", "filter["+b.name+"]", "filter[%s] must be a time in RFC 3339, e.g. 2025-03-01T12:00:00Z", b.name))
			}
		}
	}
	if !f.From.IsZero() && !f.To.IsZero() && f.To.Before(f.From) {
		ps = append(ps, problem.New("invalid_parameter", "filter[to]", "filter[to] is before filter[from]"))
	}
	if !p.IsAdmin() && tenant != "" && tenant != p.User.Tenant {
		ps = append(ps, problem.New("forbidden_tenant", "filter[tenant]", "you can only read your own tenant's audit log"))
	}
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	q := store.AuditQuery{Filter: f, Since: s.cfg.Now().Add(-s.cfg.AuditRetention),
		Offset: (lp.number - 1) * lp.size, Limit: lp.size}
	switch {
	case p.IsAdmin():
		if tenant != "" {
			q.Tenants = []string{tenant}
		}
	case p.User.Tenant != "":
		q.Tenants = []string{p.User.Tenant}
	default:
		// Users of no tenant share their stream with the administrator: each sees their own.
		if f.Actor != "" && f.Actor != p.User.ID {
			return sendList(c, []audit.Entry{}, Meta{Page: lp.number, PerPage: lp.size})
		}
		q.Tenants, q.Filter.Actor = []string{""}, p.User.ID
	}
	entries, total, err := s.st.AuditLog(c.UserContext(), q)
	if err != nil {
		return err
	}
	return sendList(c, entries, Meta{Total: total, Page: lp.number, PerPage: lp.size, TotalPages: (total + lp.size - 1) / lp.size})
}
