package controlplane

import (
	"encoding/json"
	"errors"
	"maps"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/store"
)

func (s *Server) mountIdentity(r fiber.Router) {
	r.Post("/tenants", s.createTenant)
	r.Get("/tenants", s.listTenants)
	r.Get("/tenants/:id", s.getTenant)
	r.Patch("/tenants/:id", s.patchTenant)
	r.Post("/users", s.createUser)
	r.Get("/users", s.listUsers)
	r.Get("/users/me", s.me)
	r.Get("/users/:id", s.getUser)
	r.Post("/users/:id/tokens", s.createToken)
	r.Get("/users/:id/tokens", s.listTokens)
	r.Delete("/tokens/:id", s.deleteToken)
}

var nameRe = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9@._+-]{0,127}$`)

// decodeBody parses a small JSON body into v with a clear error. It ignores Content-Type on
// purpose: `curl -d '{...}'` labels JSON as a form.
func decodeBody(c *fiber.Ctx, v any) error {
	if err := json.Unmarshal(c.Body(), v); err != nil {
		return fail(fiber.StatusBadRequest, problem.New("malformed", "", "request body is not valid JSON: %v", err))
	}
	return nil
}

func (s *Server) createTenant(c *fiber.Ctx) error {
	p, err := require(c, identity.PermAll)
	if err != nil {
		return err
	}
	_ = p
	var in struct {
		Name          string    `json:"name"`
		PartnerTopics *[]string `json:"partnerTopics"`
	}
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	var ps problem.List
	if !nameRe.MatchString(in.Name) {
		ps = append(ps, problem.New("invalid", "/name", "name is required: 1-128 letters, digits or @._+-"))
	}
	ps = append(ps, s.checkTopicPatterns(in.PartnerTopics)...)
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	now := s.cfg.Now().UTC()
	t := identity.Tenant{ID: identity.NewID(), Name: in.Name, Status: "ACTIVE", PartnerTopics: in.PartnerTopics, CreatedAt: now, UpdatedAt: now}
	if err := s.st.CreateTenant(c.UserContext(), t); err != nil {
		if errors.Is(err, store.ErrExists) {
			return fail(fiber.StatusConflict, problem.New("exists", "/name", "a tenant named %q already exists", in.Name))
		}
		return err
	}
	audited(c, audit.Entry{Action: audit.TenantCreate, Target: audit.Target{Type: audit.TargetTenant, ID: t.ID, Name: t.Name}})
	c.Location("/api/v1/tenants/" + t.ID)
	return sendData(c, fiber.StatusCreated, t)
}

// topicPattern is a Kafka topic name, or a prefix of one followed by '*'.
var topicPattern = regexp.MustCompile(`^(?:[A-Za-z0-9._-]{1,249}\*?|\*)$`)

// checkTopicPatterns checks a tenant's partner-topic list: well-formed, and naming none of
// flowd's or Kafka's own topics (those stay refused whatever a list says).
func (s *Server) checkTopicPatterns(list *[]string) problem.List {
	if list == nil {
		return nil
	}
	const maxPatterns = 256
	if len(*list) > maxPatterns {
		return problem.List{problem.New("size", "/partnerTopics", "at most %d partner topics or prefixes", maxPatterns)}
	}
	var ps problem.List
	for i, p := range *list {
		path := "/partnerTopics/" + itoa(i)
		switch {
		case !topicPattern.MatchString(p):
			ps = append(ps, problem.New("invalid", path, "%q is not a topic name or a prefix ending in '*'", p))
		case p != "*" && s.cfg.ReservedTopic(strings.TrimSuffix(p, "*")):
			ps = append(ps, problem.New(flowdoc.CodeTopicReserved, path, "%q names topics reserved for flowd and Kafka themselves", p))
		}
	}
	return ps
}

// patchTenant lets an administrator set a tenant's partner topics (null lifts the list).
func (s *Server) patchTenant(c *fiber.Ctx) error {
	if _, err := require(c, identity.PermAll); err != nil {
		return err
	}
	var in map[string]json.RawMessage
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	var ps problem.List
	var topics *[]string
	for k, raw := range in {
		if k != "partnerTopics" {
			ps = append(ps, problem.New("additional_property", "/"+k, "%q cannot be changed; only partnerTopics can", k))
			continue
		}
		if err := json.Unmarshal(raw, &topics); err != nil {
			ps = append(ps, problem.New("type", "/partnerTopics", "partnerTopics must be a list of topic names or prefixes ending in '*', or null"))
		}
	}
	ps = append(ps, s.checkTopicPatterns(topics)...)
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	t, err := s.st.UpdateTenant(c.UserContext(), c.Params("id"), func(cur *identity.Tenant) (*identity.Tenant, error) {
		next := *cur
		if _, ok := in["partnerTopics"]; ok {
			next.PartnerTopics = topics
		}
		next.UpdatedAt = s.cfg.Now().UTC()
		return &next, nil
	})
	if errors.Is(err, store.ErrNotFound) {
		return notFound("tenant")
	}
	if err != nil {
		return err
	}
	audited(c, audit.Entry{Action: audit.TenantUpdate, Target: audit.Target{Type: audit.TargetTenant, ID: t.ID, Name: t.Name},
		Changes: slices.Sorted(maps.Keys(in))})
	return sendData(c, fiber.StatusOK, t)
}

func (s *Server) listTenants(c *fiber.Ctx) error {
	p := principal(c)
	lp, err := parseList(c, []string{"name", "createdAt"}, "createdAt")
	if err != nil {
		return err
	}
	all, err := s.st.Tenants(c.UserContext())
	if err != nil {
		return err
	}
	var vis []identity.Tenant
	for _, t := range all {
		if p.IsAdmin() || t.ID == p.User.Tenant {
			vis = append(vis, t)
		}
	}
	sortBy(vis, lp, func(t identity.Tenant) string { return t.Name }, func(t identity.Tenant) time.Time { return t.CreatedAt }, nil)
	items, m := page(vis, lp)
	return sendList(c, items, m)
}

func (s *Server) getTenant(c *fiber.Ctx) error {
	p := principal(c)
	id := c.Params("id")
	if !p.IsAdmin() && id != p.User.Tenant {
		return notFound("tenant")
	}
	t, err := s.st.Tenant(c.UserContext(), id)
	if errors.Is(err, store.ErrNotFound) {
		return notFound("tenant")
	}
	if err != nil {
		return err
	}
	return sendData(c, fiber.StatusOK, t)
}

func (s *Server) createUser(c *fiber.Ctx) error {
	p, err := require(c, identity.PermUsersWrite)
	if err != nil {
		return err
	}
	var in struct {
		Username    string    `json:"username"`
		Tenant      string    `json:"tenant"`
		Permissions *[]string `json:"permissions"`
	}
	if err := decodeBody(c, &in); err != nil {
		return err
	}
	var ps problem.List
	if !nameRe.MatchString(in.Username) {
		ps = append(ps, problem.New("invalid", "/username", "username is required: 1-128 letters, digits or @._+-"))
	}
	if !p.IsAdmin() {
		// Tenant administrators create users in their own tenant only.
		if in.Tenant != "" && in.Tenant != p.User.Tenant {
			ps = append(ps, problem.New("forbidden_tenant", "/tenant", "you can only create users in your own tenant"))
		}
		in.Tenant = p.User.Tenant
	}
	if in.Tenant != "" {
		if _, err := s.st.Tenant(c.UserContext(), in.Tenant); errors.Is(err, store.ErrNotFound) {
			ps = append(ps, problem.New("unknown_tenant", "/tenant", "tenant %q does not exist", in.Tenant))
		} else if err != nil {
			return err
		}
	}
	perms := identity.DefaultPermissions
	if in.Permissions != nil {
		perms = *in.Permissions
	}
	for i, perm := range perms {
		switch {
		case !identity.IsKnown(perm):
			ps = append(ps, problem.New("unknown_permission", "/permissions/"+itoa(i), "unknown permission %q", perm))
		case !p.Can(perm):
			// Nobody grants what they do not hold.
			ps = append(ps, problem.New("forbidden_permission", "/permissions/"+itoa(i), "you cannot grant %q: you do not hold it", perm))
		}
	}
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	now := s.cfg.Now().UTC()
	u := identity.User{
		ID: identity.NewID(), Username: in.Username, Status: identity.UserActive, Confirmed: true,
		Tenant: in.Tenant, Roles: []string{}, Permissions: slices.Compact(slices.Sorted(slices.Values(perms))),
		CreatedAt: now, UpdatedAt: now,
	}
	if err := s.st.CreateUser(c.UserContext(), u); err != nil {
		if errors.Is(err, store.ErrExists) {
			return fail(fiber.StatusConflict, problem.New("exists", "/username", "username %q is taken", in.Username))
		}
		return err
	}
	audited(c, audit.Entry{Action: audit.UserCreate, Target: audit.Target{Type: audit.TargetUser, ID: u.ID, Name: u.Username}})
	c.Location("/api/v1/users/" + u.ID)
	return sendData(c, fiber.StatusCreated, u)
}

// canSeeUser: yourself; users of your tenant with users.read; everyone as admin.
func canSeeUser(p *identity.Principal, u *identity.User) bool {
	if p.IsAdmin() || p.User.ID == u.ID {
		return true
	}
	return p.User.Tenant != "" && u.Tenant == p.User.Tenant && p.Can(identity.PermUsersRead)
}

// canManageUser: tokens for yourself; for users of your tenant with users.write, if they hold
// nothing you do not (no escalation through someone else's token).
func canManageUser(p *identity.Principal, u *identity.User) bool {
	if p.IsAdmin() || p.User.ID == u.ID {
		return true
	}
	if p.User.Tenant == "" || u.Tenant != p.User.Tenant || !p.Can(identity.PermUsersWrite) {
		return false
	}
	for _, perm := range u.Permissions {
		if !p.Can(perm) {
			return false
		}
	}
	return true
}

func (s *Server) visibleUsers(c *fiber.Ctx) ([]identity.User, listParams, error) {
	p := principal(c)
	lp, err := parseList(c, []string{"username", "createdAt"}, "createdAt")
	if err != nil {
		return nil, lp, err
	}
	all, err := s.st.Users(c.UserContext())
	if err != nil {
		return nil, lp, err
	}
	username := c.Query("username")
	var vis []identity.User
	for i := range all {
		u := &all[i]
		if !canSeeUser(p, u) || (username != "" && u.Username != username) {
			continue
		}
		if lp.search != "" && !strings.Contains(strings.ToLower(u.Username), strings.ToLower(lp.search)) {
			continue
		}
		vis = append(vis, *u)
	}
	sortBy(vis, lp, func(u identity.User) string { return u.Username }, func(u identity.User) time.Time { return u.CreatedAt }, nil)
	return vis, lp, nil
}

func (s *Server) listUsers(c *fiber.Ctx) error {
	vis, lp, err := s.visibleUsers(c)
	if err != nil {
		return err
	}
	items, m := page(vis, lp)
	return sendList(c, items, m)
}

// flowMateUser adds the `_id` field FlowMate clients read the internal id from.
type flowMateUser struct {
	identity.User
	MongoID string `json:"_id"`
}

// listUsersFlowMate is `GET /users` as the FlowMate partner API serves it: a bare user for
// `?username=`, a bare array otherwise, and the data/meta envelope with `meta=true`.
func (s *Server) listUsersFlowMate(c *fiber.Ctx) error {
	vis, lp, err := s.visibleUsers(c)
	if err != nil {
		return err
	}
	out := make([]flowMateUser, len(vis))
	for i, u := range vis {
		out[i] = flowMateUser{User: u, MongoID: u.ID}
	}
	if c.QueryBool("meta") {
		items, m := page(out, lp)
		return sendList(c, items, m)
	}
	if c.Query("username") != "" {
		if len(out) == 0 {
			return notFound("user")
		}
		return c.JSON(out[0])
	}
	items, _ := page(out, lp)
	return c.JSON(items)
}

func (s *Server) me(c *fiber.Ctx) error {
	return sendData(c, fiber.StatusOK, principal(c).User)
}

func (s *Server) loadUser(c *fiber.Ctx, see func(*identity.Principal, *identity.User) bool) (*identity.User, error) {
	u, err := s.st.User(c.UserContext(), c.Params("id"))
	if errors.Is(err, store.ErrNotFound) || (err == nil && !see(principal(c), u)) {
		return nil, notFound("user")
	}
	return u, err
}

func (s *Server) getUser(c *fiber.Ctx) error {
	u, err := s.loadUser(c, canSeeUser)
	if err != nil {
		return err
	}
	// The same shape as GET /users?username= (with `_id`), on both routes.
	return sendData(c, fiber.StatusOK, flowMateUser{User: *u, MongoID: u.ID})
}

// tokenTarget names a token by its id and name, never by its secret or hash.
func tokenTarget(t identity.Token) audit.Target {
	return audit.Target{Type: audit.TargetToken, ID: t.ID, Name: t.Name}
}

// maxTokenLifetime bounds expiresIn so a typo does not mint a century-long token.
const maxTokenLifetime = 5 * 365 * 24 * time.Hour

func (s *Server) createToken(c *fiber.Ctx) error {
	u, err := s.loadUser(c, canSeeUser)
	if err != nil {
		return err
	}
	if !canManageUser(principal(c), u) {
		return forbidden(identity.PermUsersWrite)
	}
	var in struct {
		Name      string `json:"name"`
		ExpiresIn string `json:"expiresIn"`
	}
	if len(c.Body()) > 0 {
		if err := decodeBody(c, &in); err != nil {
			return err
		}
	}
	if len(in.Name) > 128 {
		return fail(fiber.StatusBadRequest, problem.New("invalid", "/name", "name is limited to 128 characters"))
	}
	now := s.cfg.Now().UTC()
	tok := identity.Token{ID: identity.NewID(), UserID: u.ID, Name: in.Name, CreatedAt: now}
	if in.ExpiresIn != "" {
		d, err := time.ParseDuration(in.ExpiresIn)
		if err != nil || d <= 0 || d > maxTokenLifetime {
			return fail(fiber.StatusBadRequest, problem.New("invalid", "/expiresIn", "expiresIn must be a positive duration such as \"720h\", at most 5 years"))
		}
		exp := now.Add(d)
		tok.ExpiresAt = &exp
	}
	secret := identity.NewToken()
	tok.Hash = identity.HashToken(secret)
	if err := s.st.CreateToken(c.UserContext(), tok); err != nil {
		return err
	}
	audited(c, audit.Entry{Action: audit.TokenCreate, Target: tokenTarget(tok)})
	// The secret is returned this once; only its hash is stored.
	return sendData(c, fiber.StatusCreated, fiber.Map{
		"id": tok.ID, "userId": tok.UserID, "name": tok.Name, "token": secret,
		"expiresAt": tok.ExpiresAt, "createdAt": tok.CreatedAt,
	})
}

func (s *Server) listTokens(c *fiber.Ctx) error {
	u, err := s.loadUser(c, canSeeUser)
	if err != nil {
		return err
	}
	if !canManageUser(principal(c), u) {
		return forbidden(identity.PermUsersWrite)
	}
	toks, err := s.st.Tokens(c.UserContext(), u.ID)
	if err != nil {
		return err
	}
	for i := range toks {
		toks[i].Hash = ""
	}
	lp, err := parseList(c, []string{"createdAt"}, "createdAt")
	if err != nil {
		return err
	}
	sortBy(toks, lp, nil, func(t identity.Token) time.Time { return t.CreatedAt }, nil)
	items, m := page(toks, lp)
	return sendList(c, items, m)
}

func (s *Server) deleteToken(c *fiber.Ctx) error {
	ctx := c.UserContext()
	tok, err := s.st.TokenByID(ctx, c.Params("id"))
	if errors.Is(err, store.ErrNotFound) {
		return notFound("token")
	}
	if err != nil {
		return err
	}
	u, err := s.st.User(ctx, tok.UserID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return err
	}
	p := principal(c)
	if u == nil {
		if !p.IsAdmin() {
			return notFound("token")
		}
	} else if !canManageUser(p, u) {
		return notFound("token")
	}
	if err := s.st.DeleteToken(ctx, *tok); err != nil {
		return err
	}
	audited(c, audit.Entry{Action: audit.TokenDelete, Target: tokenTarget(*tok)})
	return c.SendStatus(fiber.StatusNoContent)
}
