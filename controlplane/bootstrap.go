package controlplane

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/store"
)

// AdminUsername is the bootstrap administrator's username.
const AdminUsername = "admin"

// EnsureAdmin makes sure an administrator exists. With envToken (FLOWD_ADMIN_TOKEN) set, that
// token authenticates the administrator. Without it, a token is generated on the very first
// start only and returned so the caller can print it once; later starts return "".
func EnsureAdmin(ctx context.Context, st Identity, envToken string) (string, error) {
	now := time.Now().UTC()
	adminID, err := st.AdminID(ctx)
	switch {
	case errors.Is(err, store.ErrNotFound):
		u := identity.User{
			ID: identity.NewID(), Username: AdminUsername, Status: identity.UserActive, Confirmed: true,
			Roles: []string{}, Permissions: []string{identity.PermAll}, CreatedAt: now, UpdatedAt: now,
		}
		if err := st.ClaimAdmin(ctx, u); err != nil {
			if errors.Is(err, store.ErrExists) {
				return EnsureAdmin(ctx, st, envToken) // another process won the race
			}
			return "", fmt.Errorf("create administrator: %w", err)
		}
		adminID = u.ID
		if envToken == "" {
			secret := identity.NewToken()
			tok := identity.Token{ID: identity.NewID(), UserID: adminID, Name: "bootstrap", Hash: identity.HashToken(secret), CreatedAt: now}
			if err := st.CreateToken(ctx, tok); err != nil {
				return "", fmt.Errorf("create administrator token: %w", err)
			}
			return secret, nil
		}
	case err != nil:
		return "", err
	}
	if envToken == "" {
		return "", nil
	}
	hash := identity.HashToken(envToken)
	if _, err := st.TokenByHash(ctx, hash); err == nil {
		return "", nil
	} else if !errors.Is(err, store.ErrNotFound) {
		return "", err
	}
	tok := identity.Token{ID: identity.NewID(), UserID: adminID, Name: "FLOWD_ADMIN_TOKEN", Hash: hash, CreatedAt: now}
	if err := st.CreateToken(ctx, tok); err != nil {
		return "", fmt.Errorf("register FLOWD_ADMIN_TOKEN: %w", err)
	}
	return "", nil
}
