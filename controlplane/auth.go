package controlplane

import (
	"errors"
	"strings"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/store"
)

const principalKey = "flowd.principal"

func unauthorized(msg string) error {
	return fail(fiber.StatusUnauthorized, problem.New("unauthorized", "", "%s", msg))
}

// authenticate resolves `Authorization: Bearer <token>` to a principal. Tokens are looked up
// by their SHA-256, so no secret is ever compared in application code.
func (s *Server) authenticate(c *fiber.Ctx) error {
	h := c.Get(fiber.HeaderAuthorization)
	scheme, secret, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(secret) == "" {
		c.Set(fiber.HeaderWWWAuthenticate, `Bearer realm="flowd"`)
		return unauthorized("send an API token as `Authorization: Bearer <token>`")
	}
	ctx := c.UserContext()
	tok, err := s.st.TokenByHash(ctx, identity.HashToken(secret))
	if errors.Is(err, store.ErrNotFound) {
		return unauthorized("the API token is not valid")
	}
	if err != nil {
		return err
	}
	if tok.Expired(s.cfg.Now()) {
		return unauthorized("the API token has expired")
	}
	u, err := s.st.User(ctx, tok.UserID)
	if errors.Is(err, store.ErrNotFound) {
		return unauthorized("the API token's user no longer exists")
	}
	if err != nil {
		return err
	}
	if u.Status != identity.UserActive {
		return unauthorized("the API token's user is not active")
	}
	c.Locals(principalKey, &identity.Principal{User: *u, TokenID: tok.ID})
	return c.Next()
}

func principal(c *fiber.Ctx) *identity.Principal {
	p, _ := c.Locals(principalKey).(*identity.Principal)
	return p
}

// require returns the principal if it holds perm, else a 403.
func require(c *fiber.Ctx, perm string) (*identity.Principal, error) {
	p := principal(c)
	if p == nil {
		return nil, unauthorized("authentication required")
	}
	if !p.Can(perm) {
		return nil, forbidden(perm)
	}
	return p, nil
}
