package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
)

func (s *Store) flowKey(id string) string { return s.k("flow", keyID(id)) }

func (s *Store) ownerKey(o flowdoc.Owner) string {
	return s.k("owner", keyID(o.Type), keyID(o.ID), "flows")
}

// CreateFlow stores a new flow as revision 1 together with its owner indexes and the events
// that announce it.
func (s *Store) CreateFlow(ctx context.Context, f *flowdoc.Flow, evs ...events.Event) error {
	key := s.flowKey(f.ID)
	return s.watch(ctx, func(tx *redis.Tx) error {
		// The history of a deleted flow is kept for a while (DeleteFlow): an id is not
		// reused until it has expired, so a revision never changes once written.
		n, err := tx.Exists(ctx, key, key+":revs").Result()
		if err != nil {
			return fmt.Errorf("check flow: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("flow %s: %w", f.ID, ErrExists)
		}
		if err := s.joinIntegration(ctx, tx, f); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			doc := mustJSON(f)
			p.Set(ctx, key, doc, 0)
			p.HSet(ctx, key+":revs", strconv.Itoa(f.Revision), revisionDoc(f))
			p.ZAdd(ctx, s.k("flows"), redis.Z{Score: float64(f.CreatedAt.UnixMilli()), Member: f.ID})
			for _, o := range f.Owners {
				p.SAdd(ctx, s.ownerKey(o), f.ID)
			}
			s.indexMembership(ctx, p, nil, f)
			s.enqueue(ctx, p, evs)
			return nil
		})
		return err
	}, key)
}

// revisionDoc is the flow as kept in its revision history: content only, no run state.
func revisionDoc(f *flowdoc.Flow) []byte {
	c := *f
	c.Status, c.StatusReason = "", nil
	return mustJSON(&c)
}

// Flow loads the current version of one flow.
func (s *Store) Flow(ctx context.Context, id string) (*flowdoc.Flow, error) {
	return getJSON[flowdoc.Flow](ctx, s.rdb, s.flowKey(id))
}

// AllFlows lists every flow (for administrators).
func (s *Store) AllFlows(ctx context.Context) ([]flowdoc.Flow, error) {
	return listJSON[flowdoc.Flow](ctx, s, s.k("flows"), s.flowKey)
}

// FlowsOwnedBy lists the flows any of owners owns.
func (s *Store) FlowsOwnedBy(ctx context.Context, owners ...flowdoc.Owner) ([]flowdoc.Flow, error) {
	keys := make([]string, 0, len(owners))
	for _, o := range owners {
		keys = append(keys, s.ownerKey(o))
	}
	ids, err := s.rdb.SUnion(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("list owned flows: %w", err)
	}
	sort.Strings(ids)
	return mgetJSON[flowdoc.Flow](ctx, s, ids, s.flowKey)
}

// Mutation is what an update decides after seeing the current flow.
type Mutation struct {
	Flow        *flowdoc.Flow  // the new current document
	NewRevision bool           // also append it to the revision history
	Events      []events.Event // committed with the change, published by the outbox relay
}

// UpdateFlow applies decide to the current flow atomically: if another writer changes the flow
// in between, decide runs again on the newer version, so no update is ever lost.
func (s *Store) UpdateFlow(ctx context.Context, id string, decide func(cur *flowdoc.Flow) (Mutation, error)) (*flowdoc.Flow, error) {
	key := s.flowKey(id)
	var out *flowdoc.Flow
	err := s.watch(ctx, func(tx *redis.Tx) error {
		cur, err := getJSON[flowdoc.Flow](ctx, tx, key)
		if err != nil {
			return err
		}
		m, err := decide(cur)
		if err != nil {
			return err
		}
		if m.NewRevision {
			if err := s.joinIntegration(ctx, tx, m.Flow); err != nil {
				return err
			}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, mustJSON(m.Flow), 0)
			if m.NewRevision {
				p.HSet(ctx, key+":revs", strconv.Itoa(m.Flow.Revision), revisionDoc(m.Flow))
			}
			for _, o := range cur.Owners {
				if !hasOwner(m.Flow.Owners, o) {
					p.SRem(ctx, s.ownerKey(o), id)
				}
			}
			for _, o := range m.Flow.Owners {
				p.SAdd(ctx, s.ownerKey(o), id)
			}
			s.indexMembership(ctx, p, cur, m.Flow)
			s.enqueue(ctx, p, m.Events)
			return nil
		})
		out = m.Flow
		return err
	}, key)
	return out, err
}

// RevisionGrace is how long the revisions of a deleted flow stay readable: as long as execution
// records are kept by default. Work acknowledged before the delete (an ingest record already on
// the bus, an execution halfway through) names the revision it runs, and the router and the
// runners load that revision by number: deleting the history at once dead-lettered such records
// and lost executions whose webhook had been answered 2xx. After the grace period what still
// refers to the flow is dead-lettered as "revision not available".
const RevisionGrace = DefaultExecutionRetention

// DeleteFlow removes a flow if allow accepts the current version: the flow disappears from the
// API, its listings and every role's view of current flows at once, while its revision history
// expires only after RevisionGrace, so in-flight work drains on the revision it started with.
func (s *Store) DeleteFlow(ctx context.Context, id string, allow func(cur *flowdoc.Flow) ([]events.Event, error)) error {
	key := s.flowKey(id)
	return s.watch(ctx, func(tx *redis.Tx) error {
		cur, err := getJSON[flowdoc.Flow](ctx, tx, key)
		if err != nil {
			return err
		}
		evs, err := allow(cur)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key)
			p.Expire(ctx, key+":revs", RevisionGrace)
			p.ZRem(ctx, s.k("flows"), id)
			for _, o := range cur.Owners {
				p.SRem(ctx, s.ownerKey(o), id)
			}
			s.indexMembership(ctx, p, cur, nil)
			s.enqueue(ctx, p, evs)
			return nil
		})
		return err
	}, key)
}

// Revisions returns every revision of a flow, oldest first.
func (s *Store) Revisions(ctx context.Context, id string) ([]flowdoc.Flow, error) {
	all, err := s.rdb.HGetAll(ctx, s.flowKey(id)+":revs").Result()
	if err != nil {
		return nil, fmt.Errorf("list revisions: %w", err)
	}
	if len(all) == 0 {
		return nil, ErrNotFound
	}
	out := make([]flowdoc.Flow, 0, len(all))
	for _, raw := range all {
		var f flowdoc.Flow
		if err := json.Unmarshal([]byte(raw), &f); err != nil {
			return nil, fmt.Errorf("decode revision of %s: %w", id, err)
		}
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Revision < out[j].Revision })
	return out, nil
}

// Revision returns one revision of a flow.
func (s *Store) Revision(ctx context.Context, id string, n int) (*flowdoc.Flow, error) {
	raw, err := s.rdb.HGet(ctx, s.flowKey(id)+":revs", strconv.Itoa(n)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load revision: %w", err)
	}
	var f flowdoc.Flow
	if err := json.Unmarshal(raw, &f); err != nil {
		return nil, fmt.Errorf("decode revision %d of %s: %w", n, id, err)
	}
	return &f, nil
}

func hasOwner(list []flowdoc.Owner, o flowdoc.Owner) bool {
	for _, x := range list {
		if x == o {
			return true
		}
	}
	return false
}

// mgetJSON loads records by id in one round trip, skipping ids whose record vanished in between.
// It pipelines GETs rather than sending one MGET: the keys may lie in different hash slots.
func mgetJSON[T any](ctx context.Context, s *Store, ids []string, key func(string) string) ([]T, error) {
	if len(ids) == 0 {
		return []T{}, nil
	}
	cmds := make([]*redis.StringCmd, len(ids))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			cmds[i] = p.Get(ctx, key(id))
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("load records: %w", err)
	}
	out := make([]T, 0, len(cmds))
	for _, c := range cmds {
		raw, err := c.Bytes()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", c.Args()[1], err)
		}
		var rec T
		if err := json.Unmarshal(raw, &rec); err != nil {
			return nil, fmt.Errorf("decode %s: %w", c.Args()[1], err)
		}
		out = append(out, rec)
	}
	return out, nil
}
