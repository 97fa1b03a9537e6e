package store

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/secrets"
)

// Connection is a stored credential. Secret fields are sealed one by one, so a change of one
// secret never needs the others decrypted and the API can say which are set without
// decrypting any. Nothing in a Connection is ever plaintext secret material.
type Connection struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Type   string `json:"type"`
	Owner  string `json:"owner"`            // user id; only the owner changes or deletes it
	Tenant string `json:"tenant,omitempty"` // the owner's tenant, which Shared shares it with
	Shared bool   `json:"shared"`
	// Fields are the non-secret settings (username, header, tokenUrl, clientId, scopes, ...).
	Fields map[string]any `json:"fields,omitempty"`
	// Secrets maps a field name to its ciphertext, sealed with ConnectionAAD(ID, field).
	Secrets map[string]secrets.Sealed `json:"secrets,omitempty"`
	// TokenExpiresAt is when the OAuth2 access token in Secrets expires (nil: unknown).
	TokenExpiresAt *time.Time `json:"tokenExpiresAt,omitempty"`
	// TokenType is the OAuth2 token type the token endpoint named ("" means Bearer).
	TokenType string    `json:"tokenType,omitempty"`
	CreatedAt time.Time `json:"createdAt"`
	UpdatedAt time.Time `json:"updatedAt"`
}

// ConnectionAAD binds a sealed field to its connection and field name, so a ciphertext copied
// to another record or another field does not decrypt.
func ConnectionAAD(connectionID, field string) []byte {
	return []byte("connection/" + connectionID + "/" + field)
}

func (s *Store) connKey(id string) string { return s.k("connection", keyID(id)) }

// connNameKey makes names unique per owner, ignoring case: "Prod" and "prod" side by side
// would only confuse whoever picks one in a flow.
func (s *Store) connNameKey(owner, name string) string {
	return s.k("connname", keyID(owner), keyID(strings.ToLower(name)))
}

func (s *Store) connUserKey(uid string) string   { return s.k("connections", "user", keyID(uid)) }
func (s *Store) connTenantKey(tid string) string { return s.k("connections", "tenant", keyID(tid)) }

// CreateConnection stores a new connection; ErrExists if its owner already has one by that name.
func (s *Store) CreateConnection(ctx context.Context, c *Connection) error {
	key, nameKey := s.connKey(c.ID), s.connNameKey(c.Owner, c.Name)
	return s.watch(ctx, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, nameKey).Result()
		if err != nil {
			return fmt.Errorf("check connection name: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("connection %q: %w", c.Name, ErrExists)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, mustJSON(c), 0)
			p.Set(ctx, nameKey, c.ID, 0)
			score := float64(c.CreatedAt.UnixMilli())
			p.ZAdd(ctx, s.connUserKey(c.Owner), redis.Z{Score: score, Member: c.ID})
			if c.Shared && c.Tenant != "" {
				p.ZAdd(ctx, s.connTenantKey(c.Tenant), redis.Z{Score: score, Member: c.ID})
			}
			return nil
		})
		return err
	}, key, nameKey)
}

// Connection loads one connection.
func (s *Store) Connection(ctx context.Context, id string) (*Connection, error) {
	return getJSON[Connection](ctx, s.rdb, s.connKey(id))
}

// ConnectionsOwnedBy lists a user's connections in creation order.
func (s *Store) ConnectionsOwnedBy(ctx context.Context, uid string) ([]Connection, error) {
	return listJSON[Connection](ctx, s, s.connUserKey(uid), s.connKey)
}

// ConnectionsSharedWith lists the connections shared with a tenant in creation order.
func (s *Store) ConnectionsSharedWith(ctx context.Context, tenant string) ([]Connection, error) {
	return listJSON[Connection](ctx, s, s.connTenantKey(tenant), s.connKey)
}

// UpdateConnection applies decide to the current connection atomically; if another writer
// changes it in between, decide runs again on the newer version. decide cannot change the id,
// owner or tenant. A rename to a name the owner already uses is ErrExists.
func (s *Store) UpdateConnection(ctx context.Context, id string, decide func(cur *Connection) (*Connection, error)) (*Connection, error) {
	key := s.connKey(id)
	var out *Connection
	err := s.watch(ctx, func(tx *redis.Tx) error {
		cur, err := getJSON[Connection](ctx, tx, key)
		if err != nil {
			return err
		}
		old := *cur
		next, err := decide(cur)
		if err != nil {
			return err
		}
		next.ID, next.Owner, next.Tenant = old.ID, old.Owner, old.Tenant
		oldName, newName := s.connNameKey(old.Owner, old.Name), s.connNameKey(old.Owner, next.Name)
		if newName != oldName {
			// Watched from here on: a concurrent create of that name fails one of the two.
			if err := tx.Watch(ctx, newName).Err(); err != nil {
				return fmt.Errorf("watch connection name: %w", err)
			}
			n, err := tx.Exists(ctx, newName).Result()
			if err != nil {
				return fmt.Errorf("check connection name: %w", err)
			}
			if n > 0 {
				return fmt.Errorf("connection %q: %w", next.Name, ErrExists)
			}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, mustJSON(next), 0)
			if newName != oldName {
				p.Del(ctx, oldName)
				p.Set(ctx, newName, id, 0)
			}
			if old.Tenant != "" {
				if next.Shared {
					p.ZAdd(ctx, s.connTenantKey(old.Tenant), redis.Z{Score: float64(old.CreatedAt.UnixMilli()), Member: id})
				} else {
					p.ZRem(ctx, s.connTenantKey(old.Tenant), id)
				}
			}
			return nil
		})
		out = next
		return err
	}, key)
	return out, err
}

// DeleteConnection removes a connection and its indexes if allow accepts the current version.
func (s *Store) DeleteConnection(ctx context.Context, id string, allow func(cur *Connection) error) error {
	key := s.connKey(id)
	return s.watch(ctx, func(tx *redis.Tx) error {
		cur, err := getJSON[Connection](ctx, tx, key)
		if err != nil {
			return err
		}
		if err := allow(cur); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key, s.connNameKey(cur.Owner, cur.Name), s.connLockKey(id))
			p.ZRem(ctx, s.connUserKey(cur.Owner), id)
			if cur.Tenant != "" {
				p.ZRem(ctx, s.connTenantKey(cur.Tenant), id)
			}
			return nil
		})
		return err
	}, key)
}

func (s *Store) connLockKey(id string) string { return s.k("connection", keyID(id), "lock") }

// Lock is a held Redis lock. It expires by itself after its TTL, so a holder that dies never
// blocks others for longer than that.
type Lock struct {
	rdb   redis.UniversalClient
	key   string
	token string
}

// TryLockConnection takes the lock that serialises OAuth2 token refreshes of one connection
// across every runner process. ok is false when someone else holds it.
func (s *Store) TryLockConnection(ctx context.Context, id string, ttl time.Duration) (l *Lock, ok bool, err error) {
	return s.tryLock(ctx, s.connLockKey(id), ttl)
}

// ConnectionLocked reports whether someone holds the connection's refresh lock.
func (s *Store) ConnectionLocked(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.connLockKey(id)).Result()
	if err != nil {
		return false, fmt.Errorf("check lock: %w", err)
	}
	return n > 0, nil
}

func (s *Store) tryLock(ctx context.Context, key string, ttl time.Duration) (*Lock, bool, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, false, fmt.Errorf("lock token: %w", err)
	}
	token := hex.EncodeToString(b[:])
	ok, err := s.rdb.SetNX(ctx, key, token, ttl).Result()
	if err != nil {
		return nil, false, fmt.Errorf("take lock: %w", err)
	}
	if !ok {
		return nil, false, nil
	}
	return &Lock{rdb: s.rdb, key: key, token: token}, true, nil
}

// releaseScript deletes the lock only if it is still ours: a holder whose TTL ran out must not
// release the lock the next holder took since.
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// ErrLockLost means the lock expired before it was released: someone else may have held it.
var ErrLockLost = errors.New("lock expired before release")

// Release frees the lock if it is still held by this holder.
func (l *Lock) Release(ctx context.Context) error {
	n, err := releaseScript.Run(ctx, l.rdb, []string{l.key}, l.token).Int()
	if err != nil {
		return fmt.Errorf("release lock: %w", err)
	}
	if n == 0 {
		return ErrLockLost
	}
	return nil
}
