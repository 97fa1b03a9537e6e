// Package store owns flowd's state in Redis and its key layout. Nothing else in flowd builds a
// Redis key. Every multi-key write runs in one MULTI/EXEC, guarded by WATCH where it reads first,
// so a crash or a concurrent writer never leaves half a change behind.
//
// Key layout (P is the configured prefix, default "flowd:"):
//
//	P flow:{id}                  string  current flow document (JSON, with status and revision)
//	P flow:{id}:revs             hash    revision number -> flow document as of that revision
//	P flows                      zset    every flow id, scored by creation time (ms)
//	P owner:user:{uid}:flows     set     flow ids a user owns
//	P owner:tenant:{tid}:flows   set     flow ids a tenant owns
//	P tenant:{id}                string  tenant (JSON)
//	P tenants                    zset    tenant ids by creation time
//	P tenantname:{name}          string  tenant id (names are unique)
//	P user:{id}                  string  user (JSON)
//	P users                      zset    user ids by creation time
//	P username:{username}        string  user id (usernames are unique)
//	P user:{id}:tokens           set     token ids of a user
//	P token:{sha256}             string  token record (JSON) by hash of the secret
//	P tokenid:{id}               string  sha256 of a token, to revoke by id
//	P admin                      string  id of the bootstrap administrator
//	P outbox                     list    events committed with a change, not yet on Kafka
//	P outbox:lock                string  which process is draining the outbox
//	P connection:{id}            string  connection (JSON; secret fields AES-256-GCM sealed, never clear)
//	P connection:{id}:lock       string  which process is refreshing the connection's OAuth2 token
//	P connections:user:{uid}     zset    connection ids a user owns, by creation time
//	P connections:tenant:{tid}   zset    connection ids shared with a tenant, by creation time
//	P connname:{uid}:{name}      string  connection id (names are unique per owner, ignoring case)
//	P idem:{flowId}:{sha256}     string  webhook Idempotency-Key claim: pending|done|failed:{executionId}
//	P exec:{id}                  string  execution record (JSON)
//	P exec:{id}:state            string  router bookkeeping: per-scope counters, merge arrivals
//	P exec:{id}:steps            hash    token -> step record
//	P exec:{id}:outputs          hash    node id -> latest output (steps.<id> in expressions)
//	P exec:{id}:pending          hash    token -> activation sent to a runner, not yet completed
//	P exec:{id}:msgs             hash    consumed message id -> records it produces (redelivery marker)
//	P exec:{id}:reply            list    replies for a synchronous webhook caller
//	P flow:{fid}:execs[:status]  zset    execution ids by receive time, trimmed to the retention
//	P flow:{fid}:stats:{day}     hash    "{minute}:{success|error|ignored}" -> count
//	P flow:{fid}:ignored:{rid}   string  partner record already counted as ignored
//	P run:{exec}:{token}:{att}   string  a runner's finished Result, to answer redeliveries
//	P run:{exec}:{token}:{att}:claim  string  the runner executing that work item now
//
// Each file documents its keys in detail (executions.go, runs.go, idempotency.go,
// connections.go); ids inside keys are escaped so that no id can forge another record's key.
package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/redis/go-redis/v9"
)

// Errors callers switch on.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrConflict means the record is in a state that forbids the change (e.g. an active flow).
	ErrConflict = errors.New("conflict")
	// ErrPrecondition means the caller's If-Match revision is not the current one.
	ErrPrecondition = errors.New("precondition failed")
)

// DefaultPrefix is the key prefix when none is configured.
const DefaultPrefix = "flowd:"

// Store is flowd's state in Redis.
type Store struct {
	rdb  redis.UniversalClient
	p    string
	pipe *autoPipe
}

// New wraps a Redis client. prefix namespaces every key (tests use a unique one each).
func New(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Store{rdb: rdb, p: prefix, pipe: &autoPipe{rdb: rdb}}
}

// Redis exposes the client for health checks.
func (s *Store) Redis() redis.UniversalClient { return s.rdb }

// Ping tells whether Redis answers.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis ping: %w", err)
	}
	return nil
}

// keyID escapes ':' (and '%') in an id, so an id taken from a request can never address
// another record's key (an id "x:revs" must not reach flow x's revisions).
var keyID = strings.NewReplacer("%", "%25", ":", "%3A").Replace

func (s *Store) k(parts ...string) string {
	out := s.p
	for i, part := range parts {
		if i > 0 {
			out += ":"
		}
		out += part
	}
	return out
}

// maxTxRetries bounds how often an optimistic transaction is re-run after a concurrent write.
const maxTxRetries = 50

// watch runs fn under WATCH keys, retrying when another writer got there first. fn re-reads
// state each time, so a retried update applies to the latest data and no update is lost.
func (s *Store) watch(ctx context.Context, fn func(tx *redis.Tx) error, keys ...string) error {
	for range maxTxRetries {
		err := s.rdb.Watch(ctx, fn, keys...)
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		return err
	}
	return fmt.Errorf("too much contention on %v: %w", keys, redis.TxFailedErr)
}

// watchFast is watch with one round trip less where the client allows it: on a single-node
// client the WATCH travels in fn's first pipeline (fn gets watchInPipeline set and must send
// it there); a cluster client needs the keys up front to find their node.
func (s *Store) watchFast(ctx context.Context, fn func(tx *redis.Tx, watchInPipeline bool) error, keys ...string) error {
	c, single := s.rdb.(*redis.Client)
	for range maxTxRetries {
		var err error
		if single {
			err = c.Watch(ctx, func(tx *redis.Tx) error { return fn(tx, true) })
		} else {
			err = s.rdb.Watch(ctx, func(tx *redis.Tx) error { return fn(tx, false) }, keys...)
		}
		if errors.Is(err, redis.TxFailedErr) {
			continue
		}
		return err
	}
	return fmt.Errorf("too much contention on %v: %w", keys, redis.TxFailedErr)
}

func getJSON[T any](ctx context.Context, c redis.Cmdable, key string) (*T, error) {
	raw, err := c.Get(ctx, key).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("redis get %s: %w", key, err)
	}
	var v T
	if err := json.Unmarshal(raw, &v); err != nil {
		return nil, fmt.Errorf("decode %s: %w", key, err)
	}
	return &v, nil
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		// Only our own record types reach here; failing to encode them is a programming error.
		panic(fmt.Sprintf("store: encode %T: %v", v, err))
	}
	return b
}
