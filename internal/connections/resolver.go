// Package connections owns connections: their types and fields, the checks their data passes
// (types.go; for the types connectors define, connectortypes.go), sealing and opening their secrets, and turning a stored connection into the
// credentials a connector needs, at call time, inside the runner (Resolver). It is the only
// place that decrypts a connection (Open); what Resolve returns is handed to the connector for
// one call and never written to Kafka, Redis or logs. OAuth2 access tokens are fetched or
// refreshed here, by one process at a time under a Redis lock.
package connections

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"reflect"
	"slices"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
)

// ErrNotFound means the connection does not exist or the flow's owners may not use it; the two
// are not told apart, so a flow cannot probe for other users' connections.
var ErrNotFound = errors.New("connection not found")

// Error is a failed resolve, classified for the runner's retry policy.
type Error struct {
	Code      string // connection_not_found, connection_invalid, connection_type, oauth2_token, unavailable
	Retryable bool
	Err       error
}

func (e *Error) Error() string { return e.Code + ": " + e.Err.Error() }
func (e *Error) Unwrap() error { return e.Err }

func permanent(code string, err error) error { return &Error{Code: code, Err: err} }
func retryable(code string, err error) error { return &Error{Code: code, Retryable: true, Err: err} }

// Defaults of a Resolver's tunables.
const (
	DefaultSkew    = 60 * time.Second
	DefaultLockTTL = 30 * time.Second
	// DefaultTokenLifetime is assumed when a token endpoint does not say when a token expires,
	// so a token is still renewed now and then rather than used until it is rejected.
	DefaultTokenLifetime = time.Hour
)

// Store is what a Resolver needs of the connection store (*store.Store provides it).
type Store interface {
	Connection(ctx context.Context, id string) (*store.Connection, error)
	UpdateConnection(ctx context.Context, id string, decide func(cur *store.Connection) (*store.Connection, error)) (*store.Connection, error)
	TryLockConnection(ctx context.Context, id string, ttl time.Duration) (*store.Lock, bool, error)
	ConnectionLocked(ctx context.Context, id string) (bool, error)
}

var _ Store = (*store.Store)(nil)

// Resolver resolves connections for runners.
type Resolver struct {
	st   Store
	kr   *secrets.Keyring
	http *http.Client
	log  *slog.Logger

	// Skew renews an access token this long before it expires.
	Skew time.Duration
	// LockTTL bounds one refresh; the token request gets two thirds of it.
	LockTTL time.Duration
	// Wait bounds how long a caller waits for another process's refresh.
	Wait time.Duration
	// Poll is how often a waiting caller looks for the refreshed token.
	Poll time.Duration
}

// NewResolver builds a Resolver. httpClient talks to token endpoints (nil: a client with a
// 20 s timeout).
func NewResolver(st Store, kr *secrets.Keyring, httpClient *http.Client, log *slog.Logger) *Resolver {
	if httpClient == nil {
		httpClient = &http.Client{Timeout: 20 * time.Second}
	}
	if log == nil {
		log = slog.Default()
	}
	return &Resolver{
		st: st, kr: kr, http: httpClient, log: log,
		Skew: DefaultSkew, LockTTL: DefaultLockTTL, Wait: DefaultLockTTL + 10*time.Second, Poll: 50 * time.Millisecond,
	}
}

// CanUse reports whether a flow with these owners may use c: the connection's owner is among
// them, or it is shared and the flow belongs to the owner's tenant.
func CanUse(c *store.Connection, owners []flowdoc.Owner) bool {
	if slices.Contains(owners, flowdoc.Owner{ID: c.Owner, Type: flowdoc.OwnerUser}) {
		return true
	}
	return c.Shared && c.Tenant != "" && slices.Contains(owners, flowdoc.Owner{ID: c.Tenant, Type: flowdoc.OwnerTenant})
}

// Resolve loads a connection for a step of connector with the given owners and returns it
// ready for the connector: basic → username, password; api_key → header, key; bearer → token;
// oauth2 → accessToken, tokenType; a type a connector defines → every stored field, secrets
// decrypted, for that connector only.
func (r *Resolver) Resolve(ctx context.Context, connectionID, connector string, owners []flowdoc.Owner) (*sdk.Connection, error) {
	c, err := r.load(ctx, connectionID)
	if err != nil {
		return nil, err
	}
	if !CanUse(c, owners) {
		r.log.Warn("connection refused: not usable by the flow's owners", "connection", c.ID, "owners", owners)
		return nil, permanent("connection_not_found", fmt.Errorf("connection %s: %w", connectionID, ErrNotFound))
	}
	out := &sdk.Connection{Type: c.Type, Data: map[string]any{}}
	if owner, _, ok := sdk.ParseCredentialType(c.Type); ok {
		// Another connector's credentials are not this one's business, whatever the flow says.
		if owner != connector {
			return nil, permanent("connection_type", fmt.Errorf("connection %s is of type %s, which only connector %q may use, not %q", c.ID, c.Type, owner, connector))
		}
		maps.Copy(out.Data, c.Fields)
		if err := r.open(c, out.Data, slices.Sorted(maps.Keys(c.Secrets))...); err != nil {
			return nil, err
		}
		return out, nil
	}
	switch c.Type {
	case TypeBasic:
		out.Data["username"] = c.Fields["username"]
		err = r.open(c, out.Data, "password")
	case TypeAPIKey:
		out.Data["header"] = c.Fields["header"]
		err = r.open(c, out.Data, "key")
	case TypeBearer:
		err = r.open(c, out.Data, "token")
	case TypeOAuth2:
		var tok, typ string
		tok, typ, err = r.accessToken(ctx, c)
		out.Data["accessToken"], out.Data["tokenType"] = tok, typ
	default:
		err = permanent("connection_invalid", fmt.Errorf("connection %s has unknown type %q", c.ID, c.Type))
	}
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (r *Resolver) load(ctx context.Context, id string) (*store.Connection, error) {
	c, err := r.st.Connection(ctx, id)
	if errors.Is(err, store.ErrNotFound) {
		return nil, permanent("connection_not_found", fmt.Errorf("connection %s: %w", id, ErrNotFound))
	}
	if err != nil {
		return nil, retryable("unavailable", fmt.Errorf("load connection %s: %w", id, err))
	}
	return c, nil
}

// open decrypts the named secret fields into data.
func (r *Resolver) open(c *store.Connection, data map[string]any, fields ...string) error {
	for _, f := range fields {
		v, err := r.secret(c, f)
		if err != nil {
			return err
		}
		data[f] = v
	}
	return nil
}

func (r *Resolver) secret(c *store.Connection, field string) (string, error) {
	b, err := Open(r.kr, c, field)
	if err != nil {
		// A wrong or missing key is an operator problem, never a reason to retry the step.
		return "", permanent("connection_invalid", err)
	}
	return string(b), nil
}

// ErrNoSecret means a connection lacks the secret field asked for.
var ErrNoSecret = errors.New("no such secret field")

// Open decrypts one secret field of c with kr: the one place a stored secret is opened. Runners
// open a connection's secrets for a connector call (Resolve); ingest opens the one secret a
// webhook's auth checks requests against.
func Open(kr *secrets.Keyring, c *store.Connection, field string) ([]byte, error) {
	sl, ok := c.Secrets[field]
	if !ok {
		return nil, fmt.Errorf("connection %s has no %s: %w", c.ID, field, ErrNoSecret)
	}
	b, err := kr.Decrypt(sl, store.ConnectionAAD(c.ID, field))
	if err != nil {
		return nil, fmt.Errorf("connection %s field %s: %w", c.ID, field, err)
	}
	return b, nil
}

// optionalSecret is secret for fields that may be absent.
func (r *Resolver) optionalSecret(c *store.Connection, field string) (string, error) {
	if _, ok := c.Secrets[field]; !ok {
		return "", nil
	}
	return r.secret(c, field)
}

// fresh reports whether c holds an access token that is not within Skew of its expiry. A token
// the user stored without an expiry is taken as valid.
func (r *Resolver) fresh(c *store.Connection) bool {
	if _, ok := c.Secrets["accessToken"]; !ok {
		return false
	}
	return c.TokenExpiresAt == nil || time.Now().Add(r.Skew).Before(*c.TokenExpiresAt)
}

func (r *Resolver) current(c *store.Connection) (string, string, error) {
	tok, err := r.secret(c, "accessToken")
	if err != nil {
		return "", "", err
	}
	typ := c.TokenType
	if typ == "" {
		typ = "Bearer"
	}
	return tok, typ, nil
}

// errCredentialsChanged means the connection's settings changed while its token was refreshed:
// the token obtained with the old settings is dropped and the caller starts over.
var errCredentialsChanged = errors.New("connection changed during the token refresh")

// accessToken returns a fresh OAuth2 access token. One process refreshes under the Redis lock;
// the others poll until the new token is stored or the lock is free again.
func (r *Resolver) accessToken(ctx context.Context, c *store.Connection) (string, string, error) {
	id := c.ID
	deadline := time.Now().Add(r.Wait)
	for {
		if r.fresh(c) {
			return r.current(c)
		}
		if time.Now().After(deadline) {
			return "", "", retryable("oauth2_token", fmt.Errorf("connection %s: no fresh token within %s", id, r.Wait))
		}
		lock, ok, err := r.st.TryLockConnection(ctx, id, r.LockTTL)
		if err != nil {
			return "", "", retryable("unavailable", err)
		}
		if ok {
			c, err = r.refreshLocked(ctx, id)
			r.release(ctx, lock, id)
			if errors.Is(err, errCredentialsChanged) {
				if c, err = r.load(ctx, id); err != nil {
					return "", "", err
				}
				continue
			}
			if err != nil {
				return "", "", err
			}
			return r.current(c)
		}
		if c, err = r.awaitRefresh(ctx, id, deadline); err != nil {
			return "", "", err
		}
	}
}

func (r *Resolver) release(ctx context.Context, l *store.Lock, id string) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := l.Release(ctx); err != nil {
		r.log.Warn("oauth2 refresh lock", "connection", id, "err", err)
	}
}

// awaitRefresh polls until another process stored a fresh token or released the lock.
func (r *Resolver) awaitRefresh(ctx context.Context, id string, deadline time.Time) (*store.Connection, error) {
	t := time.NewTicker(r.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, retryable("oauth2_token", fmt.Errorf("connection %s: waiting for the token refresh: %w", id, ctx.Err()))
		case <-t.C:
		}
		if time.Now().After(deadline) {
			return nil, retryable("oauth2_token", fmt.Errorf("connection %s: another process did not finish its token refresh in %s", id, r.Wait))
		}
		c, err := r.load(ctx, id)
		if err != nil {
			return nil, err
		}
		if r.fresh(c) {
			return c, nil
		}
		locked, err := r.st.ConnectionLocked(ctx, id)
		if err != nil {
			return nil, retryable("unavailable", err)
		}
		if !locked {
			return c, nil // the holder failed or gave up: the caller tries itself
		}
	}
}

// refreshLocked obtains a new token while holding the lock and stores it sealed. It returns
// the connection as stored afterwards.
func (r *Resolver) refreshLocked(ctx context.Context, id string) (*store.Connection, error) {
	// Re-read under the lock: another process may have refreshed since we looked.
	c, err := r.load(ctx, id)
	if err != nil || r.fresh(c) {
		return c, err
	}
	// The refresh belongs to every waiting caller, not to this one: a caller that gives up must
	// not abort a request whose answer may rotate the refresh token.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.LockTTL*2/3)
	defer cancel()
	rctx = context.WithValue(rctx, oauth2.HTTPClient, r.http)
	tok, err := r.fetch(rctx, c)
	if err != nil {
		return c, err
	}
	grant, _ := c.Fields["grant"].(string)
	exp := tok.Expiry
	if exp.IsZero() {
		exp = time.Now().Add(DefaultTokenLifetime)
	}
	exp = exp.UTC()
	access, err := r.kr.Encrypt([]byte(tok.AccessToken), store.ConnectionAAD(c.ID, "accessToken"))
	if err != nil {
		return c, permanent("connection_invalid", fmt.Errorf("seal token of connection %s: %w", c.ID, err))
	}
	oldRefresh, _ := r.optionalSecret(c, "refreshToken")
	rotated := grant == "authorization_code" && tok.RefreshToken != "" && tok.RefreshToken != oldRefresh
	var refresh secrets.Sealed
	if rotated {
		if refresh, err = r.kr.Encrypt([]byte(tok.RefreshToken), store.ConnectionAAD(c.ID, "refreshToken")); err != nil {
			return c, permanent("connection_invalid", fmt.Errorf("seal token of connection %s: %w", c.ID, err))
		}
	}
	wctx, wcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer wcancel()
	stored, err := r.st.UpdateConnection(wctx, c.ID, func(cur *store.Connection) (*store.Connection, error) {
		if !sameCredentials(cur, c) {
			return nil, errCredentialsChanged
		}
		if cur.Secrets == nil {
			cur.Secrets = map[string]secrets.Sealed{}
		}
		cur.Secrets["accessToken"] = access
		if rotated {
			cur.Secrets["refreshToken"] = refresh
		}
		cur.TokenExpiresAt, cur.TokenType = &exp, tok.TokenType
		return cur, nil
	})
	switch {
	case errors.Is(err, errCredentialsChanged):
		r.log.Info("oauth2 token dropped: the connection changed during the refresh", "connection", c.ID, "name", c.Name)
		return c, err
	case errors.Is(err, store.ErrNotFound):
		return c, permanent("connection_not_found", fmt.Errorf("connection %s: %w", c.ID, ErrNotFound))
	case err != nil:
		return c, retryable("unavailable", fmt.Errorf("store token of connection %s: %w", c.ID, err))
	}
	r.log.Info("oauth2 token obtained", "connection", c.ID, "name", c.Name, "grant", grant, "expiresAt", exp, "refreshTokenRotated", rotated)
	return stored, nil
}

// fetch asks the token endpoint: client_credentials for a new token, authorization_code with
// the refresh_token grant. The client authenticates with HTTP Basic when it has a secret.
func (r *Resolver) fetch(ctx context.Context, c *store.Connection) (*oauth2.Token, error) {
	grant, _ := c.Fields["grant"].(string)
	tokenURL, _ := c.Fields["tokenUrl"].(string)
	clientID, _ := c.Fields["clientId"].(string)
	scopes := stringList(c.Fields["scopes"])
	clientSecret, err := r.optionalSecret(c, "clientSecret")
	if err != nil {
		return nil, err
	}
	style := oauth2.AuthStyleInHeader
	if clientSecret == "" {
		style = oauth2.AuthStyleInParams // a public client identifies itself with client_id only
	}
	var tok *oauth2.Token
	switch grant {
	case "client_credentials":
		cc := clientcredentials.Config{ClientID: clientID, ClientSecret: clientSecret, TokenURL: tokenURL, Scopes: scopes, AuthStyle: style}
		tok, err = cc.Token(ctx)
	case "authorization_code":
		refresh, rerr := r.secret(c, "refreshToken")
		if rerr != nil {
			return nil, rerr
		}
		conf := oauth2.Config{ClientID: clientID, ClientSecret: clientSecret, Scopes: scopes,
			Endpoint: oauth2.Endpoint{TokenURL: tokenURL, AuthStyle: style}}
		tok, err = conf.TokenSource(ctx, &oauth2.Token{RefreshToken: refresh}).Token()
	default:
		return nil, permanent("connection_invalid", fmt.Errorf("connection %s has unknown oauth2 grant %q", c.ID, grant))
	}
	if err != nil {
		return nil, r.tokenError(c, err)
	}
	if tok.AccessToken == "" {
		return nil, retryable("oauth2_token", fmt.Errorf("connection %s: token endpoint returned no access token", c.ID))
	}
	return tok, nil
}

// tokenError classifies a token endpoint failure: a 4xx answer (bad client, revoked refresh
// token) will not heal by retrying; network errors, 429 and 5xx may. The endpoint's response
// body is left out of the error, in case it echoes what it was sent.
func (r *Resolver) tokenError(c *store.Connection, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) {
		status := 0
		if re.Response != nil {
			status = re.Response.StatusCode
		}
		msg := fmt.Errorf("connection %s: token endpoint answered %d %s", c.ID, status, re.ErrorCode)
		r.log.Warn("oauth2 token request refused", "connection", c.ID, "name", c.Name, "status", status, "error", re.ErrorCode)
		if status == http.StatusTooManyRequests || status >= 500 {
			return retryable("oauth2_token", msg)
		}
		return permanent("oauth2_token", msg)
	}
	r.log.Warn("oauth2 token request failed", "connection", c.ID, "name", c.Name, "err", err)
	return retryable("oauth2_token", fmt.Errorf("connection %s: token request: %w", c.ID, err))
}

// sameCredentials: nothing a token depends on changed (type, settings, secrets, token state).
// A rename or a change of sharing does not count, so it never discards a refreshed token.
func sameCredentials(a, b *store.Connection) bool {
	if a.Type != b.Type || a.TokenType != b.TokenType || !reflect.DeepEqual(a.Fields, b.Fields) {
		return false
	}
	if (a.TokenExpiresAt == nil) != (b.TokenExpiresAt == nil) || (a.TokenExpiresAt != nil && !a.TokenExpiresAt.Equal(*b.TokenExpiresAt)) {
		return false
	}
	return maps.EqualFunc(a.Secrets, b.Secrets, secrets.Sealed.Equal)
}

func stringList(v any) []string {
	switch x := v.(type) {
	case []string:
		return x
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
