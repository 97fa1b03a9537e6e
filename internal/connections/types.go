package connections

// Connection types, their fields and the checks a connection's data passes: defined here once,
// used by the control plane (create, update, show), ingest (webhook auth) and runners (Resolve).

import (
	"fmt"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
)

// Connection types and OAuth2 grants.
const (
	TypeBasic  = "basic"
	TypeAPIKey = "api_key"
	TypeBearer = "bearer"
	TypeOAuth2 = "oauth2"

	GrantClientCredentials = "client_credentials"
	GrantAuthorizationCode = "authorization_code"
)

// Mask stands for a secret value in every response. A client that sends it back in a PATCH
// keeps the stored value, so round-tripping a GET response never overwrites a secret.
const Mask = "****"

// DefaultAPIKeyHeader is the header of an api_key connection that names none.
const DefaultAPIKeyHeader = "X-API-Key"

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
	case TypeBasic:
		return []fieldSpec{{name: "username", required: true}, {name: "password", secret: true, required: true}}
	case TypeAPIKey:
		return []fieldSpec{{name: "header", kind: kindHeader, def: DefaultAPIKeyHeader}, {name: "key", secret: true, required: true}}
	case TypeBearer:
		return []fieldSpec{{name: "token", secret: true, required: true}}
	case TypeOAuth2:
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

// Types lists the connection types, sorted.
var Types = []string{TypeAPIKey, TypeBasic, TypeBearer, TypeOAuth2}

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

// IsTokenCache reports whether field of c is flowd's cache. A client_credentials token is flowd's cache, not something the user set, so
// responses leave it out and a GET response sent back as a PATCH stays valid.
func IsTokenCache(c *store.Connection, field string) bool {
	return c.Type == TypeOAuth2 && c.Fields["grant"] == GrantClientCredentials && slices.Contains(tokenState, field)
}

// Change is what a validated request turns into: fields to store, secrets to (re)seal, secrets to
// drop, and the token expiry.
type Change struct {
	fields  map[string]any
	set     map[string]string
	drop    []string
	expires *time.Time
}

// Merge overlays a request's data on the stored connection (cur nil on create) and checks
// the result against the type, reporting every problem with its path (under /data).
func Merge(typ string, cur *store.Connection, patch map[string]any) (Change, problem.List) {
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
		if cur.Type == TypeOAuth2 && curGrant == GrantClientCredentials {
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
	grantUnknown := typ == TypeOAuth2 && grant != GrantClientCredentials && grant != GrantAuthorizationCode
	if _, ok := merged["grant"]; ok && grantUnknown {
		ps = append(ps, problem.New("invalid", "/data/grant", "grant must be %s or %s", GrantClientCredentials, GrantAuthorizationCode))
	}
	out := Change{fields: map[string]any{}, set: map[string]string{}}
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
		if typ == TypeOAuth2 && slices.Contains(tokenState, k) && grant == GrantClientCredentials {
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
	if typ == TypeOAuth2 && grant != "" {
		return typ + " (" + grant + ")"
	}
	return typ
}

// checkField validates one given value and records it in out; messages never quote a secret.
func checkField(f fieldSpec, path string, v any, out *Change) (problem.Problem, bool) {
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

// Seal seals the change's new secrets into conn with kr and drops the removed ones.
func Seal(kr *secrets.Keyring, conn *store.Connection, d Change) error {
	conn.Fields = d.fields
	if conn.Secrets == nil {
		conn.Secrets = map[string]secrets.Sealed{}
	}
	for _, k := range d.drop {
		delete(conn.Secrets, k)
	}
	for k, v := range d.set {
		sl, err := kr.Encrypt([]byte(v), store.ConnectionAAD(conn.ID, k))
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

// Auth types of a webhook trigger's config.auth (schemas/trigger-webhook.schema.json).
const (
	WebhookAuthNone   = "none"
	WebhookAuthBearer = "bearer"
	WebhookAuthHMAC   = "hmac"
)

// WebhookSecretField is the one field of a connection of type connType that webhook auth of
// authType verifies requests with; false when that type cannot serve it. Ingest decrypts
// nothing else: connectors' credentials are opened by runners only.
func WebhookSecretField(authType, connType string) (string, bool) {
	switch {
	case authType == WebhookAuthBearer && connType == TypeBearer:
		return "token", true
	case authType == WebhookAuthHMAC && connType == TypeAPIKey:
		return "key", true
	case authType == WebhookAuthHMAC && connType == TypeBasic:
		return "password", true
	}
	return "", false
}

// WebhookConnectionTypes lists the connection types webhook auth of authType can use.
func WebhookConnectionTypes(authType string) []string {
	var out []string
	for _, t := range []string{TypeAPIKey, TypeBasic, TypeBearer, TypeOAuth2} {
		if _, ok := WebhookSecretField(authType, t); ok {
			out = append(out, t)
		}
	}
	return out
}
