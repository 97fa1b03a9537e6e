package controlplane

import (
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/store"
)

func (s *Server) mountConnections(r fiber.Router) {
	g := r.Group("/connections", s.needSecrets)
	g.Get("", s.listConnections)
	g.Post("", s.createConnection)
	g.Get("/:id", s.getConnection)
	g.Patch("/:id", s.patchConnection)
	g.Delete("/:id", s.deleteConnection)
}

// needSecrets refuses connection routes when no key is configured: storing a secret we could
// not encrypt is not an option.
func (s *Server) needSecrets(c *fiber.Ctx) error {
	if s.cfg.Secrets == nil {
		return fail(fiber.StatusServiceUnavailable, problem.New("secrets_unconfigured", "",
			"connections need an encryption key: set FLOWD_SECRET_KEY or a key file on the API server"))
	}
	return c.Next()
}

// connectionView is a connection as every response shows it: secrets masked.
type connectionView struct {
	ID           string         `json:"id"`
	Name         string         `json:"name"`
	Type         string         `json:"type"`
	Owner        string         `json:"owner"`
	Tenant       string         `json:"tenant,omitempty"`
	Shared       bool           `json:"shared"`
	Data         map[string]any `json:"data"`
	SecretFields []string       `json:"secretFields"`
	CreatedAt    time.Time      `json:"createdAt"`
	UpdatedAt    time.Time      `json:"updatedAt"`
}

// view never reads a secret: it only knows which fields are sealed.
func view(c *store.Connection) connectionView {
	data := make(map[string]any, len(c.Fields)+len(c.Secrets)+1)
	for k, v := range c.Fields {
		data[k] = v
	}
	names := make([]string, 0, len(c.Secrets))
	for k := range c.Secrets {
		if connections.IsTokenCache(c, k) {
			continue
		}
		data[k] = connections.Mask
		names = append(names, k)
	}
	sort.Strings(names)
	if c.TokenExpiresAt != nil && !connections.IsTokenCache(c, "expiresAt") {
		data["expiresAt"] = c.TokenExpiresAt.UTC().Format(time.RFC3339)
	}
	return connectionView{
		ID: c.ID, Name: c.Name, Type: c.Type, Owner: c.Owner, Tenant: c.Tenant, Shared: c.Shared,
		Data: data, SecretFields: names, CreatedAt: c.CreatedAt, UpdatedAt: c.UpdatedAt,
	}
}

// canUseConnection: the owner, or anyone of the owner's tenant if it is shared. Administrators
// get no exception: nobody sees another user's private credentials (ThingWorx Flow seed).
func canUseConnection(p *identity.Principal, c *store.Connection) bool {
	return c.Owner == p.User.ID || (c.Shared && c.Tenant != "" && c.Tenant == p.User.Tenant)
}

func (s *Server) listConnections(c *fiber.Ctx) error {
	p, err := require(c, identity.PermSecretsRead)
	if err != nil {
		return err
	}
	lp, err := parseList(c, []string{"name", "createdAt", "updatedAt"}, "createdAt")
	if err != nil {
		return err
	}
	typ := c.Query("filter[type]")
	// Any connector-defined type name is a fair filter: its connector may have been removed
	// while connections of its type remain.
	if typ != "" && !slices.Contains(connections.Types, typ) && !connections.IsConnectorType(typ) {
		return fail(fiber.StatusBadRequest, problem.New("invalid_parameter", "filter[type]",
			"filter[type] must be one of %s, or a connector-defined type <connector>.<name>", strings.Join(connections.Types, ", ")))
	}
	ctx := c.UserContext()
	all, err := s.st.ConnectionsOwnedBy(ctx, p.User.ID)
	if err != nil {
		return err
	}
	if p.User.Tenant != "" {
		shared, err := s.st.ConnectionsSharedWith(ctx, p.User.Tenant)
		if err != nil {
			return err
		}
		all = append(all, shared...)
	}
	search := strings.ToLower(lp.search)
	seen := make(map[string]bool, len(all))
	out := make([]connectionView, 0, len(all))
	for i := range all {
		conn := &all[i]
		if seen[conn.ID] || !canUseConnection(p, conn) ||
			(typ != "" && conn.Type != typ) ||
			(search != "" && !strings.Contains(strings.ToLower(conn.Name), search)) {
			continue
		}
		seen[conn.ID] = true
		out = append(out, view(conn))
	}
	sortBy(out, lp, func(v connectionView) string { return v.Name },
		func(v connectionView) time.Time { return v.CreatedAt }, func(v connectionView) time.Time { return v.UpdatedAt })
	items, m := page(out, lp)
	return sendList(c, items, m)
}

// errConnHidden stands for "exists but not yours": reported exactly like a missing connection.
var errConnHidden = errors.New("connection not visible")

func connErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, store.ErrNotFound), errors.Is(err, errConnHidden):
		return notFound("connection")
	case errors.Is(err, store.ErrExists):
		return fail(fiber.StatusConflict, problem.New("exists", "/name", "you already have a connection with this name"))
	}
	return err
}

func notOwner() error {
	return fail(fiber.StatusForbidden, problem.New("not_owner", "", "only the owner of a connection may change or delete it"))
}

func (s *Server) getConnection(c *fiber.Ctx) error {
	p, err := require(c, identity.PermSecretsRead)
	if err != nil {
		return err
	}
	conn, err := s.st.Connection(c.UserContext(), c.Params("id"))
	if err == nil && !canUseConnection(p, conn) {
		err = errConnHidden
	}
	if err != nil {
		return connErr(err)
	}
	return sendData(c, fiber.StatusOK, view(conn))
}

// connInput is a decoded request body; nil members were absent.
type connInput struct {
	name    *string
	typ     *string
	shared  *bool
	data    map[string]any
	hasData bool
}

// fields names the fields the input changes, for the audit log: never their values (data
// holds secrets), nor the names inside data.
func (in connInput) fields() []string {
	var out []string
	for _, f := range []struct {
		name string
		set  bool
	}{{"data", in.hasData && in.data != nil}, {"name", in.name != nil}, {"shared", in.shared != nil}} {
		if f.set {
			out = append(out, f.name)
		}
	}
	return out
}

func connTarget(c *store.Connection) audit.Target {
	return audit.Target{Type: audit.TargetConnection, ID: c.ID, Name: c.Name}
}

// serverFields may be echoed back from a response; they are ignored, never an error.
var serverFields = []string{"id", "owner", "tenant", "secretFields", "createdAt", "updatedAt"}

func decodeConnInput(c *fiber.Ctx) (connInput, problem.List, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(c.Body(), &top); err != nil || top == nil {
		return connInput{}, nil, fail(fiber.StatusBadRequest, problem.New("malformed", "", "request body must be a JSON object"))
	}
	var in connInput
	var ps problem.List
	keys := make([]string, 0, len(top))
	for k := range top {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		raw := top[k]
		switch k {
		case "name":
			in.name = decodeField[string](raw, k, "a string", &ps)
		case "type":
			in.typ = decodeField[string](raw, k, "a string", &ps)
		case "shared":
			in.shared = decodeField[bool](raw, k, "true or false", &ps)
		case "data":
			in.hasData = true
			if json.Unmarshal(raw, &in.data) != nil || in.data == nil {
				ps = append(ps, problem.New("invalid_type", "/data", "data must be an object"))
			}
		default:
			if !slices.Contains(serverFields, k) {
				ps = append(ps, problem.New("unknown_field", "/"+k, "unknown field %q (expected name, type, shared, data)", k))
			}
		}
	}
	return in, ps, nil
}

// decodeField decodes one top-level field, recording a problem (and returning nil) when its
// JSON type is wrong.
func decodeField[T any](raw json.RawMessage, name, want string, ps *problem.List) *T {
	var v T
	if json.Unmarshal(raw, &v) != nil {
		*ps = append(*ps, problem.New("invalid_type", "/"+name, "%s must be %s", name, want))
		return nil
	}
	return &v
}

func checkName(name string) problem.List {
	switch {
	case strings.TrimSpace(name) == "":
		return problem.List{problem.New("required", "/name", "name is required")}
	case len(name) > 128:
		return problem.List{problem.New("invalid", "/name", "name is limited to 128 characters")}
	case strings.TrimSpace(name) != name || strings.ContainsFunc(name, unicode.IsControl):
		return problem.List{problem.New("invalid", "/name", "name must not start or end with spaces or contain control characters")}
	}
	return nil
}

func (s *Server) seal(conn *store.Connection, d connections.Change) error {
	return connections.Seal(s.cfg.Secrets, conn, d)
}

// knownType reports whether connections of type typ can be created here: a built-in type, or
// one an installed connector defines.
func (s *Server) knownType(typ string) bool {
	if slices.Contains(connections.Types, typ) {
		return true
	}
	_, ok := s.cfg.Catalog.ConnectionType(typ)
	return ok
}

// unknownType is the problem of a type nobody defines, listing what is known.
func (s *Server) unknownType(typ string) problem.Problem {
	defined := "no installed connector defines one"
	if l := s.cfg.Catalog.ConnectionTypes(); len(l) > 0 {
		defined = "installed: " + strings.Join(l, ", ")
	}
	return problem.New("invalid", "/type", "unknown type %q: type must be one of %s, or a type an installed connector defines, named <connector>.<name> (%s)",
		typ, strings.Join(connections.Types, ", "), defined)
}

// mergeData checks data for a connection of type typ (cur nil on create): a built-in type by its
// fields, a connector-defined one against the schema its connector declares.
func (s *Server) mergeData(typ string, cur *store.Connection, data map[string]any) (connections.Change, problem.List) {
	if slices.Contains(connections.Types, typ) {
		return connections.Merge(typ, cur, data)
	}
	t, ok := s.cfg.Catalog.ConnectionType(typ)
	if !ok {
		// Only a stored connection gets here: its connector was removed since it was created.
		conn, _, _ := sdk.ParseCredentialType(typ)
		return connections.Change{}, problem.List{problem.New("type_unavailable", "/data",
			"connection type %s is defined by connector %q, which is not installed here: its data cannot be checked", typ, conn)}
	}
	return t.Merge(cur, data)
}

func (s *Server) createConnection(c *fiber.Ctx) error {
	p, err := require(c, identity.PermSecretsCreate)
	if err != nil {
		return err
	}
	in, ps, err := decodeConnInput(c)
	if err != nil {
		return err
	}
	name, typ := "", ""
	if in.name != nil {
		name = *in.name
	}
	ps = append(ps, checkName(name)...)
	if in.typ != nil {
		typ = *in.typ
	}
	known := s.knownType(typ)
	if !known {
		ps = append(ps, s.unknownType(typ))
	}
	shared := in.shared != nil && *in.shared
	if shared && p.User.Tenant == "" {
		ps = append(ps, problem.New("no_tenant", "/shared", "you belong to no tenant to share the connection with"))
	}
	var d connections.Change
	if known {
		if !in.hasData {
			in.data = map[string]any{}
		}
		var dps problem.List
		d, dps = s.mergeData(typ, nil, in.data)
		ps = append(ps, dps...)
	}
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	now := s.cfg.Now().UTC()
	conn := &store.Connection{
		ID: identity.NewID(), Name: name, Type: typ, Owner: p.User.ID, Tenant: p.User.Tenant,
		Shared: shared, CreatedAt: now, UpdatedAt: now,
	}
	if err := s.seal(conn, d); err != nil {
		return err
	}
	if err := s.st.CreateConnection(c.UserContext(), conn); err != nil {
		return connErr(err)
	}
	s.log.Info("connection created", "connection", conn.ID, "name", conn.Name, "type", conn.Type, "owner", conn.Owner)
	audited(c, audit.Entry{Action: audit.ConnectionCreate, Target: connTarget(conn)})
	c.Location("/api/v1/connections/" + conn.ID)
	return sendData(c, fiber.StatusCreated, view(conn))
}

func (s *Server) patchConnection(c *fiber.Ctx) error {
	p, err := require(c, identity.PermSecretsCreate)
	if err != nil {
		return err
	}
	in, ps, err := decodeConnInput(c)
	if err != nil {
		return err
	}
	if len(ps) > 0 {
		return fail(fiber.StatusBadRequest, ps...)
	}
	now := s.cfg.Now().UTC()
	conn, err := s.st.UpdateConnection(c.UserContext(), c.Params("id"), func(cur *store.Connection) (*store.Connection, error) {
		if !canUseConnection(p, cur) {
			return nil, errConnHidden
		}
		if cur.Owner != p.User.ID {
			return nil, notOwner()
		}
		var ps problem.List
		if in.name != nil {
			ps = append(ps, checkName(*in.name)...)
			cur.Name = *in.name
		}
		if in.typ != nil && *in.typ != cur.Type {
			ps = append(ps, problem.New("immutable", "/type", "the type of a connection cannot change; create a new connection"))
		}
		if in.shared != nil {
			if *in.shared && cur.Tenant == "" {
				ps = append(ps, problem.New("no_tenant", "/shared", "you belong to no tenant to share the connection with"))
			}
			cur.Shared = *in.shared
		}
		var d connections.Change
		if in.hasData && in.data != nil {
			var dps problem.List
			d, dps = s.mergeData(cur.Type, cur, in.data)
			ps = append(ps, dps...)
		}
		if len(ps) > 0 {
			return nil, fail(fiber.StatusBadRequest, ps...)
		}
		if in.hasData && in.data != nil {
			if err := s.seal(cur, d); err != nil {
				return nil, err
			}
		}
		cur.UpdatedAt = now
		return cur, nil
	})
	if err != nil {
		return connErr(err)
	}
	s.log.Info("connection updated", "connection", conn.ID, "name", conn.Name, "type", conn.Type, "owner", conn.Owner)
	audited(c, audit.Entry{Action: audit.ConnectionUpdate, Target: connTarget(conn), Changes: in.fields()})
	return sendData(c, fiber.StatusOK, view(conn))
}

func (s *Server) deleteConnection(c *fiber.Ctx) error {
	p, err := require(c, identity.PermSecretsDelete)
	if err != nil {
		return err
	}
	id := c.Params("id")
	var gone store.Connection
	err = s.st.DeleteConnection(c.UserContext(), id, func(cur *store.Connection) error {
		if !canUseConnection(p, cur) {
			return errConnHidden
		}
		if cur.Owner != p.User.ID {
			return notOwner()
		}
		gone = *cur
		return nil
	})
	if err != nil {
		return connErr(err)
	}
	s.log.Info("connection deleted", "connection", id, "owner", p.User.ID)
	audited(c, audit.Entry{Action: audit.ConnectionDelete, Target: connTarget(&gone)})
	return c.SendStatus(fiber.StatusNoContent)
}
