package controlplane

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
)

// Connection types and OAuth2 grants.
const (
	ConnBasic  = "basic"
	ConnAPIKey = "api_key"
	ConnBearer = "bearer"
	ConnOAuth2 = "oauth2"

	GrantClientCredentials = "client_credentials"
	GrantAuthorizationCode = "authorization_code"
)

// Mask stands for a secret value in every response. A client that sends it back in a PATCH
// keeps the stored value, so round-tripping a GET response never overwrites a secret.
const Mask = "****"

// DefaultAPIKeyHeader is the header of an api_key connection that names none.
const DefaultAPIKeyHeader = "X-API-Key"

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

// fieldKind is how a connection field is checked.
type fieldKind int

const (
	kindString fieldKind = iota
	kindURL
	kindHeader
	kindScopes
	kindTime
)

type fieldSpec struct {
	name     string
	secret   bool
	required bool
	kind     fieldKind
	def      string
}

// connFields lists the fields of a type (and, for oauth2, grant). expiresAt is kept beside the
// record (TokenExpiresAt), not among the fields, because the resolver reads it on every call.
func connFields(typ, grant string) []fieldSpec {
	switch typ {
	case ConnBasic:
		return []fieldSpec{{name: "username", required: true}, {name: "password", secret: true, required: true}}
	case ConnAPIKey:
		return []fieldSpec{{name: "header", kind: kindHeader, def: DefaultAPIKeyHeader}, {name: "key", secret: true, required: true}}
	case ConnBearer:
		return []fieldSpec{{name: "token", secret: true, required: true}}
	case ConnOAuth2:
		common := []fieldSpec{
			{name: "grant", required: true},
			{name: "tokenUrl", required: true, kind: kindURL},
			{name: "clientId", required: true},
			{name: "scopes", kind: kindScopes},
		}
		switch grant {
		case GrantClientCredentials:
			return append(common, fieldSpec{name: "clientSecret", secret: true, required: true})
		case GrantAuthorizationCode:
			// Public clients (PKCE) have no secret; the refresh token is what keeps it alive.
			return append(common,
				fieldSpec{name: "clientSecret", secret: true},
				fieldSpec{name: "accessToken", secret: true},
				fieldSpec{name: "refreshToken", secret: true, required: true},
				fieldSpec{name: "expiresAt", kind: kindTime})
		}
		return common
	}
	return nil
}

var connTypes = []string{ConnAPIKey, ConnBasic, ConnBearer, ConnOAuth2}

// tokenState are the oauth2 fields the resolver rewrites on refresh. For client_credentials they
// are only a cache: never accepted from clients, and dropped whenever the settings change.
var tokenState = []string{"accessToken", "refreshToken", "expiresAt"}

const (
	maxSecretLen = 16 << 10
	maxFieldLen  = 2 << 10
	maxScopes    = 64
)

var headerRe = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")

// keptSecret stands for a secret already stored and left as it is.
type keptSecret struct{}

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

// isTokenCache: a client_credentials token is flowd's cache, not something the user set, so
// responses leave it out and a GET response sent back as a PATCH stays valid.
func isTokenCache(c *store.Connection, field string) bool {
	return c.Type == ConnOAuth2 && c.Fields["grant"] == GrantClientCredentials && slices.Contains(tokenState, field)
}

// view never reads a secret: it only knows which fields are sealed.
func view(c *store.Connection) connectionView {
	data := make(map[string]any, len(c.Fields)+len(c.Secrets)+1)
	for k, v := range c.Fields {
		data[k] = v
	}
	names := make([]string, 0, len(c.Secrets))
	for k := range c.Secrets {
		if isTokenCache(c, k) {
			continue
		}
		data[k] = Mask
		names = append(names, k)
	}
	sort.Strings(names)
	if c.TokenExpiresAt != nil && !isTokenCache(c, "expiresAt") {
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
	if typ != "" && !slices.Contains(connTypes, typ) {
		return fail(fiber.StatusBadRequest, problem.New("invalid_parameter", "filter[type]", "filter[type] must be one of %s", strings.Join(connTypes, ", ")))
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

// sealed is what a validated body turns into: fields to store, secrets to (re)seal, secrets to
// drop, and the token expiry.
type sealed struct {
	fields  map[string]any
	set     map[string]string
	drop    []string
	expires *time.Time
}

// mergeData overlays a request's data on the stored connection (cur nil on create) and checks
// the result against the type, reporting every problem with its path.
func mergeData(typ string, cur *store.Connection, patch map[string]any) (sealed, problem.List) {
	merged := map[string]any{}
	explicit := map[string]bool{}
	var ps problem.List
	curGrant := ""
	if cur != nil {
		curGrant, _ = cur.Fields["grant"].(string)
		for k, v := range cur.Fields {
			merged[k] = v
		}
		for k := range cur.Secrets {
			merged[k] = keptSecret{}
		}
		if cur.TokenExpiresAt != nil {
			merged["expiresAt"] = cur.TokenExpiresAt.UTC().Format(time.RFC3339)
		}
		if cur.Type == ConnOAuth2 && curGrant == GrantClientCredentials {
			// A cached client-credentials token is dropped on any change of the settings.
			for _, k := range tokenState {
				delete(merged, k)
			}
		}
	}
	for k, v := range patch {
		explicit[k] = true
		switch v {
		case nil:
			delete(merged, k)
		case Mask:
			if _, ok := merged[k].(keptSecret); !ok {
				ps = append(ps, problem.New("masked_value", "/data/"+k, "%q is the mask of a stored secret, not a value: send the secret itself", Mask))
				merged[k] = keptSecret{} // reported once, not again as missing
			}
		default:
			merged[k] = v
		}
	}
	grant, _ := merged["grant"].(string)
	specs := connFields(typ, grant)
	// Without a valid grant the other oauth2 fields cannot be judged; report the grant alone.
	grantUnknown := typ == ConnOAuth2 && grant != GrantClientCredentials && grant != GrantAuthorizationCode
	if _, ok := merged["grant"]; ok && grantUnknown {
		ps = append(ps, problem.New("invalid", "/data/grant", "grant must be %s or %s", GrantClientCredentials, GrantAuthorizationCode))
	}
	out := sealed{fields: map[string]any{}, set: map[string]string{}}
	known := map[string]bool{}
	for _, f := range specs {
		known[f.name] = true
		path := "/data/" + f.name
		v, present := merged[f.name]
		if !present {
			if f.required {
				ps = append(ps, problem.New("required", path, "%s is required for a %s connection", f.name, describeType(typ, grant)))
			} else if f.def != "" {
				out.fields[f.name] = f.def
			}
			continue
		}
		if _, kept := v.(keptSecret); kept {
			continue
		}
		if p, ok := checkField(f, path, v, &out); !ok {
			ps = append(ps, p)
		}
	}
	keys := make([]string, 0, len(merged))
	for k := range merged {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		// Stored fields the type or new grant does not use are dropped, not reported.
		if known[k] || !explicit[k] || grantUnknown {
			continue
		}
		if typ == ConnOAuth2 && slices.Contains(tokenState, k) && grant == GrantClientCredentials {
			ps = append(ps, problem.New("not_allowed", "/data/"+k, "%s is fetched by flowd for the client_credentials grant and cannot be set", k))
			continue
		}
		ps = append(ps, problem.New("unknown_field", "/data/"+k, "unknown field %q for a %s connection", k, describeType(typ, grant)))
	}
	if cur != nil {
		for k := range cur.Secrets {
			if _, kept := merged[k].(keptSecret); !kept || !known[k] {
				if _, replaced := out.set[k]; !replaced {
					out.drop = append(out.drop, k)
				}
			}
		}
		sort.Strings(out.drop)
	}
	return out, ps
}

func describeType(typ, grant string) string {
	if typ == ConnOAuth2 && grant != "" {
		return typ + " (" + grant + ")"
	}
	return typ
}

// checkField validates one given value and records it in out; messages never quote a secret.
func checkField(f fieldSpec, path string, v any, out *sealed) (problem.Problem, bool) {
	if f.kind == kindScopes {
		scopes, ok := scopeList(v)
		if !ok {
			return problem.New("invalid_type", path, "scopes must be an array of strings (or one space-separated string)"), false
		}
		if len(scopes) > maxScopes {
			return problem.New("invalid", path, "at most %d scopes", maxScopes), false
		}
		out.fields[f.name] = scopes
		return problem.Problem{}, true
	}
	str, ok := v.(string)
	if !ok {
		return problem.New("invalid_type", path, "%s must be a string", f.name), false
	}
	if f.secret {
		if str == "" {
			return problem.New("required", path, "%s must not be empty", f.name), false
		}
		if len(str) > maxSecretLen {
			return problem.New("invalid", path, "%s is limited to %d bytes", f.name, maxSecretLen), false
		}
		out.set[f.name] = str
		return problem.Problem{}, true
	}
	if strings.TrimSpace(str) == "" {
		if f.required {
			return problem.New("required", path, "%s must not be empty", f.name), false
		}
		if f.def != "" {
			out.fields[f.name] = f.def
		}
		return problem.Problem{}, true
	}
	if len(str) > maxFieldLen {
		return problem.New("invalid", path, "%s is limited to %d characters", f.name, maxFieldLen), false
	}
	switch f.kind {
	case kindURL:
		u, err := url.Parse(str)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return problem.New("invalid", path, "%s must be an absolute http(s) URL", f.name), false
		}
	case kindHeader:
		if !headerRe.MatchString(str) {
			return problem.New("invalid", path, "%s must be an HTTP header name such as X-API-Key", f.name), false
		}
	case kindTime:
		t, err := time.Parse(time.RFC3339, str)
		if err != nil {
			return problem.New("invalid", path, "%s must be an RFC 3339 time such as 2030-01-02T15:04:05Z", f.name), false
		}
		t = t.UTC()
		out.expires = &t
		return problem.Problem{}, true
	}
	out.fields[f.name] = str
	return problem.Problem{}, true
}

func scopeList(v any) ([]string, bool) {
	switch x := v.(type) {
	case string:
		return strings.Fields(x), true
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, ok := e.(string)
			if !ok || strings.TrimSpace(s) == "" || strings.ContainsAny(s, " \t\r\n") || len(s) > 256 {
				return nil, false
			}
			out = append(out, s)
		}
		return out, true
	case []string:
		return x, true
	}
	return nil, false
}

// apply seals the new secrets into conn and drops the removed ones.
func (s *Server) apply(conn *store.Connection, d sealed) error {
	conn.Fields = d.fields
	if conn.Secrets == nil {
		conn.Secrets = map[string]secrets.Sealed{}
	}
	for _, k := range d.drop {
		delete(conn.Secrets, k)
	}
	for k, v := range d.set {
		sl, err := s.cfg.Secrets.Encrypt([]byte(v), store.ConnectionAAD(conn.ID, k))
		if err != nil {
			return fmt.Errorf("seal connection %s field %s: %w", conn.ID, k, err)
		}
		conn.Secrets[k] = sl
	}
	if _, ok := conn.Secrets["accessToken"]; !ok || d.set["accessToken"] != "" {
		conn.TokenType = "" // the type the endpoint named belonged to the old token
	}
	conn.TokenExpiresAt = d.expires
	return nil
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
	if !slices.Contains(connTypes, typ) {
		ps = append(ps, problem.New("invalid", "/type", "type must be one of %s", strings.Join(connTypes, ", ")))
	}
	shared := in.shared != nil && *in.shared
	if shared && p.User.Tenant == "" {
		ps = append(ps, problem.New("no_tenant", "/shared", "you belong to no tenant to share the connection with"))
	}
	var d sealed
	if slices.Contains(connTypes, typ) {
		if !in.hasData {
			in.data = map[string]any{}
		}
		var dps problem.List
		d, dps = mergeData(typ, nil, in.data)
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
	if err := s.apply(conn, d); err != nil {
		return err
	}
	if err := s.st.CreateConnection(c.UserContext(), conn); err != nil {
		return connErr(err)
	}
	s.log.Info("connection created", "connection", conn.ID, "name", conn.Name, "type", conn.Type, "owner", conn.Owner)
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
		var d sealed
		if in.hasData && in.data != nil {
			var dps problem.List
			d, dps = mergeData(cur.Type, cur, in.data)
			ps = append(ps, dps...)
		}
		if len(ps) > 0 {
			return nil, fail(fiber.StatusBadRequest, ps...)
		}
		if in.hasData && in.data != nil {
			if err := s.apply(cur, d); err != nil {
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
	return sendData(c, fiber.StatusOK, view(conn))
}

func (s *Server) deleteConnection(c *fiber.Ctx) error {
	p, err := require(c, identity.PermSecretsDelete)
	if err != nil {
		return err
	}
	id := c.Params("id")
	err = s.st.DeleteConnection(c.UserContext(), id, func(cur *store.Connection) error {
		if !canUseConnection(p, cur) {
			return errConnHidden
		}
		if cur.Owner != p.User.ID {
			return notOwner()
		}
		return nil
	})
	if err != nil {
		return connErr(err)
	}
	s.log.Info("connection deleted", "connection", id, "owner", p.User.ID)
	return c.SendStatus(fiber.StatusNoContent)
}
