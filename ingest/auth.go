package ingest

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/store"
)

// DefaultSignatureHeader carries the HMAC signature when config.auth.header is not set.
const DefaultSignatureHeader = "X-Signature"

// authConfig is a webhook's config.auth. Secrets never sit in the flow document: they are the
// secret field of a stored connection the flow's owners may use.
type authConfig struct {
	Type       string // none, bearer, hmac
	Connection string
	Header     string // hmac: where the signature is
	Prefix     string // hmac: e.g. "sha256=" before the hex digest
}

// errMisconfigured marks problems in a flow's trigger config or its auth connection: the
// operator must fix the flow; the caller only learns that the webhook cannot take requests.
var errMisconfigured = errors.New("webhook misconfigured")

// loadSecret opens the auth secret from the connection, if the flow's owners may use it.
func (s *Server) loadSecret(ctx context.Context, a authConfig, owners []flowdoc.Owner) ([]byte, error) {
	if s.cfg.Secrets == nil {
		return nil, fmt.Errorf("%w: %s auth needs a secret key (FLOWD_SECRET_KEY) in the ingest role", errMisconfigured, a.Type)
	}
	c, err := s.cfg.Store.Connection(ctx, a.Connection)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: auth connection %s does not exist", errMisconfigured, a.Connection)
	}
	if err != nil {
		return nil, fmt.Errorf("load auth connection: %w", err)
	}
	if !connections.CanUse(c, owners) {
		// Same words as a missing one in the log a flow owner may see: no probing.
		return nil, fmt.Errorf("%w: auth connection %s does not exist or the flow's owners may not use it", errMisconfigured, a.Connection)
	}
	field, ok := connections.WebhookSecretField(a.Type, c.Type)
	if !ok {
		return nil, fmt.Errorf("%w: %s auth cannot use a connection of type %q", errMisconfigured, a.Type, c.Type)
	}
	secret, err := connections.Open(s.cfg.Secrets, c, field)
	if err != nil {
		return nil, fmt.Errorf("%w: auth connection %s: %w", errMisconfigured, a.Connection, err)
	}
	return secret, nil
}

func unauthorized(challenge, format string, args ...any) *httpproblem.Error {
	e := fail(fiber.StatusUnauthorized, problem.New(codeUnauthorized, "", format, args...))
	if challenge != "" {
		e = e.With(fiber.HeaderWWWAuthenticate, challenge)
	}
	return e
}

// authenticate checks the request against the flow's auth; every comparison is constant-time.
func authenticate(c *fiber.Ctx, m *flowMeta) *httpproblem.Error {
	switch m.auth.Type {
	case connections.WebhookAuthBearer:
		h := c.Get(fiber.HeaderAuthorization)
		scheme, token, ok := strings.Cut(strings.TrimSpace(h), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
			return unauthorized(`Bearer realm="flowd"`, "a bearer token is required")
		}
		// Comparing digests keeps the time independent of where, and whether, lengths differ.
		got, want := sha256.Sum256([]byte(strings.TrimSpace(token))), sha256.Sum256(m.secret)
		if !hmac.Equal(got[:], want[:]) {
			return unauthorized(`Bearer realm="flowd", error="invalid_token"`, "the bearer token is not valid")
		}
	case connections.WebhookAuthHMAC:
		sig := strings.TrimSpace(c.Get(m.auth.Header))
		if sig == "" {
			return unauthorized("", "the %s header with the HMAC-SHA256 signature of the body is required", m.auth.Header)
		}
		if m.auth.Prefix != "" {
			if len(sig) < len(m.auth.Prefix) || !strings.EqualFold(sig[:len(m.auth.Prefix)], m.auth.Prefix) {
				return unauthorized("", "the %s header must start with %q", m.auth.Header, m.auth.Prefix)
			}
			sig = sig[len(m.auth.Prefix):]
		}
		got, err := hex.DecodeString(sig)
		if err != nil {
			return unauthorized("", "the signature in %s is not hex", m.auth.Header)
		}
		mac := hmac.New(sha256.New, m.secret)
		mac.Write(c.Request().Body()) // the raw bytes as sent: what the sender signed
		if !hmac.Equal(mac.Sum(nil), got) {
			return unauthorized("", "the signature in %s does not match the body", m.auth.Header)
		}
	}
	return nil
}
