package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/identity"
)

// CreateTenant stores a new tenant; names are unique.
func (s *Store) CreateTenant(ctx context.Context, t identity.Tenant) error {
	nameKey := s.k("tenantname", keyID(t.Name))
	return s.watch(ctx, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, nameKey).Result()
		if err != nil {
			return fmt.Errorf("check tenant name: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("tenant %q: %w", t.Name, ErrExists)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, s.k("tenant", keyID(t.ID)), mustJSON(t), 0)
			p.Set(ctx, nameKey, t.ID, 0)
			p.ZAdd(ctx, s.k("tenants"), redis.Z{Score: float64(t.CreatedAt.UnixMilli()), Member: t.ID})
			return nil
		})
		return err
	}, nameKey)
}

// Tenant loads one tenant.
func (s *Store) Tenant(ctx context.Context, id string) (*identity.Tenant, error) {
	return getJSON[identity.Tenant](ctx, s.rdb, s.k("tenant", keyID(id)))
}

// UpdateTenant changes one tenant under optimistic locking: decide gets the current record
// and returns the new one (its name is kept).
func (s *Store) UpdateTenant(ctx context.Context, id string, decide func(cur *identity.Tenant) (*identity.Tenant, error)) (*identity.Tenant, error) {
	key := s.k("tenant", keyID(id))
	var out *identity.Tenant
	err := s.watch(ctx, func(tx *redis.Tx) error {
		cur, err := getJSON[identity.Tenant](ctx, tx, key)
		if err != nil {
			return err
		}
		next, err := decide(cur)
		if err != nil {
			return err
		}
		next.ID, next.Name, next.CreatedAt = cur.ID, cur.Name, cur.CreatedAt
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, mustJSON(next), 0)
			return nil
		})
		out = next
		return err
	}, key)
	return out, err
}

// Tenants lists every tenant in creation order.
func (s *Store) Tenants(ctx context.Context) ([]identity.Tenant, error) {
	return listJSON[identity.Tenant](ctx, s, s.k("tenants"), func(id string) string { return s.k("tenant", keyID(id)) })
}

// CreateUser stores a new user; usernames are unique.
func (s *Store) CreateUser(ctx context.Context, u identity.User) error {
	nameKey := s.k("username", keyID(u.Username))
	return s.watch(ctx, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, nameKey).Result()
		if err != nil {
			return fmt.Errorf("check username: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("username %q: %w", u.Username, ErrExists)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, s.k("user", keyID(u.ID)), mustJSON(u), 0)
			p.Set(ctx, nameKey, u.ID, 0)
			p.ZAdd(ctx, s.k("users"), redis.Z{Score: float64(u.CreatedAt.UnixMilli()), Member: u.ID})
			return nil
		})
		return err
	}, nameKey)
}

// User loads one user by internal id.
func (s *Store) User(ctx context.Context, id string) (*identity.User, error) {
	return getJSON[identity.User](ctx, s.rdb, s.k("user", keyID(id)))
}

// UserByUsername loads one user by its external username.
func (s *Store) UserByUsername(ctx context.Context, username string) (*identity.User, error) {
	id, err := s.rdb.Get(ctx, s.k("username", keyID(username))).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("lookup username: %w", err)
	}
	return s.User(ctx, id)
}

// Users lists every user in creation order.
func (s *Store) Users(ctx context.Context) ([]identity.User, error) {
	return listJSON[identity.User](ctx, s, s.k("users"), func(id string) string { return s.k("user", keyID(id)) })
}

// CreateToken stores a token by the hash of its secret.
func (s *Store) CreateToken(ctx context.Context, t identity.Token) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		var ttl time.Duration
		if t.ExpiresAt != nil {
			// Keep expired tokens a day so a caller gets "expired", not "unknown", then let Redis drop them.
			ttl = time.Until(*t.ExpiresAt) + 24*time.Hour
		}
		p.Set(ctx, s.k("token", t.Hash), mustJSON(t), ttl)
		p.Set(ctx, s.k("tokenid", keyID(t.ID)), t.Hash, ttl)
		p.SAdd(ctx, s.k("user", keyID(t.UserID), "tokens"), t.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("store token: %w", err)
	}
	return nil
}

// TokenByHash finds a token by the SHA-256 of its secret.
func (s *Store) TokenByHash(ctx context.Context, hash string) (*identity.Token, error) {
	return getJSON[identity.Token](ctx, s.rdb, s.k("token", hash))
}

// TokenByID finds a token by its public id.
func (s *Store) TokenByID(ctx context.Context, id string) (*identity.Token, error) {
	hash, err := s.rdb.Get(ctx, s.k("tokenid", keyID(id))).Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("lookup token id: %w", err)
	}
	return s.TokenByHash(ctx, hash)
}

// DeleteToken revokes a token.
func (s *Store) DeleteToken(ctx context.Context, t identity.Token) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.k("token", t.Hash), s.k("tokenid", keyID(t.ID)))
		p.SRem(ctx, s.k("user", keyID(t.UserID), "tokens"), t.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("revoke token: %w", err)
	}
	return nil
}

// AdminID returns the bootstrap administrator's user id, or ErrNotFound before the first start.
func (s *Store) AdminID(ctx context.Context) (string, error) {
	id, err := s.rdb.Get(ctx, s.k("admin")).Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", fmt.Errorf("lookup admin: %w", err)
	}
	return id, nil
}

// ClaimAdmin records the bootstrap administrator together with the user, once: a second
// process starting at the same moment gets ErrExists and uses the first one's admin.
func (s *Store) ClaimAdmin(ctx context.Context, u identity.User) error {
	adminKey := s.k("admin")
	nameKey := s.k("username", keyID(u.Username))
	return s.watch(ctx, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, adminKey, nameKey).Result()
		if err != nil {
			return fmt.Errorf("check admin: %w", err)
		}
		if n > 0 {
			return ErrExists
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, s.k("user", keyID(u.ID)), mustJSON(u), 0)
			p.Set(ctx, nameKey, u.ID, 0)
			p.ZAdd(ctx, s.k("users"), redis.Z{Score: float64(u.CreatedAt.UnixMilli()), Member: u.ID})
			p.Set(ctx, adminKey, u.ID, 0)
			return nil
		})
		return err
	}, adminKey, nameKey)
}

// listJSON loads every record whose id is in an index zset, in index order.
func listJSON[T any](ctx context.Context, s *Store, index string, key func(string) string) ([]T, error) {
	ids, err := s.rdb.ZRange(ctx, index, 0, -1).Result()
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", index, err)
	}
	return mgetJSON[T](ctx, s, ids, key)
}

// Tokens lists a user's tokens (records only; secrets are never stored).
func (s *Store) Tokens(ctx context.Context, userID string) ([]identity.Token, error) {
	ids, err := s.rdb.SMembers(ctx, s.k("user", keyID(userID), "tokens")).Result()
	if err != nil {
		return nil, fmt.Errorf("list tokens: %w", err)
	}
	hashes := make([]string, 0, len(ids))
	for _, id := range ids {
		h, err := s.rdb.Get(ctx, s.k("tokenid", keyID(id))).Result()
		if errors.Is(err, redis.Nil) {
			continue // expired and dropped by Redis
		}
		if err != nil {
			return nil, fmt.Errorf("lookup token: %w", err)
		}
		hashes = append(hashes, h)
	}
	return mgetJSON[identity.Token](ctx, s, hashes, func(h string) string { return s.k("token", h) })
}
