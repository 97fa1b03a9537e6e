// Package store owns flowd's state in Redis and its key layout. Nothing else in flowd builds a
// Redis key. Every multi-key write runs in one MULTI/EXEC, guarded by WATCH where it reads first,
// so a crash or a concurrent writer never leaves half a change behind.
//
// Key layout (P is the configured prefix, default "flowd:"). The part in braces is the key's
// Redis Cluster hash tag: keys that change together in one transaction or script share it, so
// they live in one hash slot and the store runs on a cluster as on a single node.
//
//	P {meta}:flow:<id>                  string  current flow document (JSON, with status and revision)
//	P {meta}:flow:<id>:revs             hash    revision number -> flow document as of that revision
//	P {meta}:flows                      zset    every flow id, scored by creation time (ms)
//	P {meta}:owner:user:<uid>:flows     set     flow ids a user owns
//	P {meta}:owner:tenant:<tid>:flows   set     flow ids a tenant owns
//	P {meta}:integration:<id>           string  integration (JSON: settingsSchema, settings, owners)
//	P {meta}:integration:<id>:flows     set     ids of the flows that belong to it (integrations.go)
//	P {meta}:integrations               zset    every integration id, by creation time (ms)
//	P {meta}:owner:<type>:<id>:integrations set integration ids a user or a tenant owns
//	P {meta}:template:<id>              string  flow template (JSON: parameters schema, flow, version)
//	P {meta}:templates                  zset    every template id, by creation time (ms)
//	P {meta}:templates:public           set     ids of the templates every tenant may use
//	P {meta}:owner:<type>:<id>:templates set    template ids a user or a tenant owns
//	P {meta}:tenant:<id>                string  tenant (JSON)
//	P {meta}:tenants                    zset    tenant ids by creation time
//	P {meta}:tenantname:<name>          string  tenant id (names are unique)
//	P {meta}:user:<id>                  string  user (JSON)
//	P {meta}:users                      zset    user ids by creation time
//	P {meta}:username:<username>        string  user id (usernames are unique)
//	P {meta}:user:<id>:tokens           set     token ids of a user
//	P {meta}:token:<sha256>             string  token record (JSON) by hash of the secret
//	P {meta}:tokenid:<id>               string  sha256 of a token, to revoke by id
//	P {meta}:admin                      string  id of the bootstrap administrator
//	P {meta}:outbox                     list    events committed with a change, not yet on Kafka
//	P {meta}:outbox:lock                string  which process is draining the outbox
//	P {meta}:connection:<id>            string  connection (JSON; secret fields AES-256-GCM sealed, never clear)
//	P {meta}:connection:<id>:lock       string  which process is refreshing the connection's OAuth2 token
//	P {meta}:connections:user:<uid>     zset    connection ids a user owns, by creation time
//	P {meta}:connections:tenant:<tid>   zset    connection ids shared with a tenant, by creation time
//	P {meta}:connname:<uid>:<name>      string  connection id (names are unique per owner, ignoring case)
//	P {meta}:history:kept               zset    every kept succeeded or filtered execution; score: the
//	                                            second its age runs out times 2^20, plus the bytes its
//	                                            keys take in 16-byte units (historyScore)
//	P {meta}:history:failed             zset    the same for failed executions
//	P {meta}:history:bytes              string  the sum of the kept executions' bytes (the budget's gauge)
//	P {meta}:history:pruned             hash    count|budget|age -> executions deleted for that reason
//	P {meta}:history:prune              string  the process pruning to the budget now (a lock)
//	P {meta}:layout                     string  the key layout's version (see upgrade.go)
//	P {audit}:tenant:<tid>              stream  the audit log of a tenant's users: field e, an audit.Entry (JSON);
//	                                            id: the entry's time (ms); trimmed to the retention on append,
//	                                            expires a retention after the last append (audit.go)
//	P {audit}:none                      stream  the same for users of no tenant (the bootstrap administrator)
//	P {audit}:tenants                   zset    tenant ("" for none) of each audit stream -> its last append (ms)
//	P {delay}:due                       zset    id of each record held back (a step's retry) -> when it
//	                                            is due (ms); a producer taking it pushes it a lease ahead
//	P {delay}:recs                      hash    id -> the record (Record JSON) to produce when due
//	P {sched}:due                       zset    flow id of each running schedule flow -> when it is due (ms);
//	                                            a router taking it pushes it a lease ahead
//	P {sched}:rev|last|next             hash    flow id -> the revision its schedule is set up for, the last
//	                                            tick fired (ms; the start when none), the next tick (ms)
//	P {dlq}:all                         zset    every dead letter's id, by when it was dead-lettered (ms);
//	                                            trimmed to the retention and to a number
//	P {dlq}:flow:<fid>                  zset    the same for one flow's dead letters (expires with the newest)
//	P {dlq}:replaying                   zset    dead letters whose replay began -> when its lease ends (ms):
//	                                            where an unfinished replay is found and taken over
//	P dlq:{<id>}                        hash    dead letter: rec (JSON: reason, origin, flow, status), headers
//	                                            and value (the original record's); expires with the retention
//	P idem:{<flowId>}:<sha256(key)>     string  webhook Idempotency-Key claim: "pending:<executionId>"
//	                                            while produced (expires after the lease, so a crashed
//	                                            producer blocks retries only briefly), "done:<id>" once
//	                                            acknowledged, "failed:<id>" (a retry reuses the id)
//	P exec:{<id>}                       string  execution record (envelope.Execution JSON)
//	P exec:{<id>}:state                 string  router bookkeeping, opaque here: per-scope node counters,
//	                                            merge arrival sets, in-flight count, sync flag (JSON)
//	P exec:{<id>}:steps                 hash    token -> step record (envelope.Step JSON without payloads)
//	P exec:{<id>}:payloads              hash    token -> the step's input and output (snapshots truncated)
//	P exec:{<id>}:outputs               hash    node id -> latest output (steps.<id> in expressions)
//	P exec:{<id>}:pending               hash    token -> activation sent to a runner, not yet completed
//	P exec:{<id>}:msgs                  hash    consumed message id -> records it produces ("" once
//	                                            produced): the redelivery marker
//	P exec:{<id>}:reply                 list    replies for a synchronous webhook caller (short TTL)
//	P exec:{<id>}:retried               string  the id of the execution that retries this failed one
//	                                            (retries.go)
//	P exec:{<id>}:runs                  hash    "<attempt>/<token>" -> "" once the work item's Result
//	                                            was acknowledged by Kafka; expires a redelivery window
//	                                            after the execution's last finished item
//	P run:{<exec>}:<token>:<att>:claim  string  the runner executing that work item now; expires unless
//	                                            its holder extends it
//	P flow:{<fid>}:execs:<status>       zset    execution ids by receive time (ms), one per status (running,
//	                                            succeeded, failed, filtered), trimmed to the retention
//	P flow:{<fid>}:counted              zset    executions counted at their end, by end time; trimmed to
//	                                            the redelivery window (it guards the counters)
//	P flow:{<fid>}:counts               hash    success|error|ignored -> executions ever ended so
//	P flow:{<fid>}:stats:<yyyymmdd>     hash    "<unix minute>:<success|error|ignored>" -> count (UTC day)
//	P flow:{<fid>}:ignored:<rid>        string  partner record already counted as ignored (for the
//	                                            redelivery window)
//	P flow:{<fid>}:trigger              string  the router's report on the flow's trigger (expires)
//	P notify:{<fid>}:gate               string  set while the flow's notification window is open (expires)
//	P notify:{<fid>}:pending            list    failures kept for the flow's next digest (notify.go)
//	P notify:{<fid>}:count              string  how many failures the next digest reports
//	P {notify}:due                      zset    flow id -> when its digest is due (ms)
//	P flow:{<fid>}:resolved             set     failed executions an operator marked resolved (errors.go)
//
// The control plane (flows, identity, connections, the outbox) is small, changes rarely and
// is read through caches, so it shares one slot and keeps its multi-record transactions. An
// execution's keys and its runs share the execution's slot; a flow's history indexes and
// counters share the flow's. The one change that spans two slots, an execution's status and
// its flow's indexes, is made in two steps that are each atomic, the second idempotent and
// repeated on redelivery (see AdvanceExecution).
//
// This is the one list of the keys; each file explains how its keys are used (executions.go,
// history.go, runs.go, idempotency.go, connections.go, deadletters.go, audit.go). Ids inside keys are escaped (':' as
// %3A) so that no id can forge another record's key.
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

// CheckPrefix tells whether prefix can namespace flowd's keys: braces would change the hash
// tags the key layout relies on.
func CheckPrefix(prefix string) error {
	if strings.ContainsAny(prefix, "{}") {
		return fmt.Errorf("key prefix %q: braces are not allowed (they would change Redis Cluster hash slots)", prefix)
	}
	return nil
}

// New wraps a Redis client, a single node or a cluster. prefix namespaces every key (tests use
// a unique one each); it must pass CheckPrefix, or its braces are escaped.
func New(rdb redis.UniversalClient, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if CheckPrefix(prefix) != nil {
		prefix = keyID(prefix)
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
// Braces are escaped too: an id must never choose a key's hash slot.
var keyID = strings.NewReplacer("%", "%25", ":", "%3A", "{", "%7B", "}", "%7D").Replace

// metaTag is the hash tag of the control plane's keys.
const metaTag = "{meta}"

// k builds a control-plane key (in the {meta} slot) from its parts.
func (s *Store) k(parts ...string) string {
	return s.p + metaTag + ":" + strings.Join(parts, ":")
}

// tagged builds a key in the hash slot of id (already escaped): P kind:{id}[:rest...].
func (s *Store) tagged(kind, id string, rest ...string) string {
	out := s.p + kind + ":{" + id + "}"
	if len(rest) > 0 {
		out += ":" + strings.Join(rest, ":")
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
