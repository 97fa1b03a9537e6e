package store

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/integration"
)

// Integrations. An integration's member flows are indexed by the flows' own writes (CreateFlow,
// UpdateFlow, DeleteFlow keep P {meta}:integration:<id>:flows in step with Flow.Integration),
// and each member flow's IntegrationSettings is kept equal to the integration's settings here,
// in the same transactions: a flow joining reads the integration under WATCH, and a change of
// the settings rewrites every member in one MULTI/EXEC, so neither can miss the other.

// Errors of integrations callers switch on.
var (
	// ErrNoIntegration: the integration a flow names does not exist.
	ErrNoIntegration = errors.New("no such integration")
	// ErrIntegrationNotEmpty: an integration that still has flows cannot be deleted.
	ErrIntegrationNotEmpty = fmt.Errorf("integration has flows: %w", ErrConflict)
)

func (s *Store) integrationKey(id string) string { return s.k("integration", keyID(id)) }

func (s *Store) integrationFlowsKey(id string) string {
	return s.k("integration", keyID(id), "flows")
}

func (s *Store) integrationOwnerKey(o flowdoc.Owner) string {
	return s.k("owner", keyID(o.Type), keyID(o.ID), "integrations")
}

// CreateIntegration stores a new integration with its owner indexes.
func (s *Store) CreateIntegration(ctx context.Context, in *integration.Integration) error {
	key := s.integrationKey(in.ID)
	return s.watch(ctx, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("check integration: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("integration %s: %w", in.ID, ErrExists)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, mustJSON(in), 0)
			p.ZAdd(ctx, s.k("integrations"), redis.Z{Score: float64(in.CreatedAt.UnixMilli()), Member: in.ID})
			for _, o := range in.Owners {
				p.SAdd(ctx, s.integrationOwnerKey(o), in.ID)
			}
			return nil
		})
		return err
	}, key)
}

// Integration loads one integration.
func (s *Store) Integration(ctx context.Context, id string) (*integration.Integration, error) {
	return getJSON[integration.Integration](ctx, s.rdb, s.integrationKey(id))
}

// AllIntegrations lists every integration (for administrators).
func (s *Store) AllIntegrations(ctx context.Context) ([]integration.Integration, error) {
	return listJSON[integration.Integration](ctx, s, s.k("integrations"), s.integrationKey)
}

// IntegrationsOwnedBy lists the integrations any of owners owns.
func (s *Store) IntegrationsOwnedBy(ctx context.Context, owners ...flowdoc.Owner) ([]integration.Integration, error) {
	keys := make([]string, 0, len(owners))
	for _, o := range owners {
		keys = append(keys, s.integrationOwnerKey(o))
	}
	ids, err := s.rdb.SUnion(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("list owned integrations: %w", err)
	}
	sort.Strings(ids)
	return mgetJSON[integration.Integration](ctx, s, ids, s.integrationKey)
}

// IntegrationFlows lists the current documents of an integration's flows, by id.
func (s *Store) IntegrationFlows(ctx context.Context, id string) ([]flowdoc.Flow, error) {
	ids, err := s.rdb.SMembers(ctx, s.integrationFlowsKey(id)).Result()
	if err != nil {
		return nil, fmt.Errorf("list the flows of integration %s: %w", id, err)
	}
	sort.Strings(ids)
	return mgetJSON[flowdoc.Flow](ctx, s, ids, s.flowKey)
}

// IntegrationChange is what an update of an integration decides after seeing the current one.
type IntegrationChange struct {
	Integration *integration.Integration
	// Member, when set, changes each member flow in the same transaction (the store sets the
	// flow's IntegrationSettings to the new settings); an error aborts the whole change.
	Member func(cur *flowdoc.Flow) (Mutation, error)
}

// UpdateIntegration applies decide to the current integration atomically, together with the
// changes it asks of the member flows; a concurrent change of the integration or of a member
// makes decide run again on the newer state.
func (s *Store) UpdateIntegration(ctx context.Context, id string, decide func(cur *integration.Integration) (IntegrationChange, error)) (*integration.Integration, error) {
	key, members := s.integrationKey(id), s.integrationFlowsKey(id)
	var out *integration.Integration
	err := s.watch(ctx, func(tx *redis.Tx) error {
		cur, err := getJSON[integration.Integration](ctx, tx, key)
		if err != nil {
			return err
		}
		ch, err := decide(cur)
		if err != nil {
			return err
		}
		var flows []Mutation
		if ch.Member != nil {
			ids, err := tx.SMembers(ctx, members).Result()
			if err != nil {
				return fmt.Errorf("list the flows of integration %s: %w", id, err)
			}
			sort.Strings(ids)
			for _, fid := range ids {
				fk := s.flowKey(fid)
				if err := tx.Watch(ctx, fk).Err(); err != nil {
					return fmt.Errorf("watch flow %s: %w", fid, err)
				}
				f, err := getJSON[flowdoc.Flow](ctx, tx, fk)
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					return err
				}
				m, err := ch.Member(f)
				if err != nil {
					return err
				}
				m.Flow.Integration, m.Flow.IntegrationSettings = id, ch.Integration.Settings
				flows = append(flows, m)
			}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, mustJSON(ch.Integration), 0)
			for _, o := range cur.Owners {
				if !hasOwner(ch.Integration.Owners, o) {
					p.SRem(ctx, s.integrationOwnerKey(o), id)
				}
			}
			for _, o := range ch.Integration.Owners {
				p.SAdd(ctx, s.integrationOwnerKey(o), id)
			}
			for _, m := range flows {
				fk := s.flowKey(m.Flow.ID)
				p.Set(ctx, fk, mustJSON(m.Flow), 0)
				if m.NewRevision {
					p.HSet(ctx, fk+":revs", fmt.Sprint(m.Flow.Revision), revisionDoc(m.Flow))
				}
				s.enqueue(ctx, p, m.Events)
			}
			return nil
		})
		out = ch.Integration
		return err
	}, key, members)
	return out, err
}

// DeleteIntegration removes an integration if allow accepts it and no flow belongs to it any
// more (ErrIntegrationNotEmpty otherwise).
func (s *Store) DeleteIntegration(ctx context.Context, id string, allow func(cur *integration.Integration) error) error {
	key, members := s.integrationKey(id), s.integrationFlowsKey(id)
	return s.watch(ctx, func(tx *redis.Tx) error {
		cur, err := getJSON[integration.Integration](ctx, tx, key)
		if err != nil {
			return err
		}
		if err := allow(cur); err != nil {
			return err
		}
		n, err := tx.SCard(ctx, members).Result()
		if err != nil {
			return fmt.Errorf("count the flows of integration %s: %w", id, err)
		}
		if n > 0 {
			return fmt.Errorf("integration %s has %d flow(s): %w", id, n, ErrIntegrationNotEmpty)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key, members)
			p.ZRem(ctx, s.k("integrations"), id)
			for _, o := range cur.Owners {
				p.SRem(ctx, s.integrationOwnerKey(o), id)
			}
			return nil
		})
		return err
	}, key, members)
}

// joinIntegration gives f, about to be written in tx, the settings of the integration it
// names (none without one). The integration is read under WATCH, so a change of its settings
// committed meanwhile makes the flow's write run again with them.
func (s *Store) joinIntegration(ctx context.Context, tx *redis.Tx, f *flowdoc.Flow) error {
	if f.Integration == "" {
		f.IntegrationSettings = nil
		return nil
	}
	key := s.integrationKey(f.Integration)
	if err := tx.Watch(ctx, key).Err(); err != nil {
		return fmt.Errorf("watch integration %s: %w", f.Integration, err)
	}
	in, err := getJSON[integration.Integration](ctx, tx, key)
	if errors.Is(err, ErrNotFound) {
		return fmt.Errorf("integration %q: %w", f.Integration, ErrNoIntegration)
	}
	if err != nil {
		return err
	}
	f.IntegrationSettings = in.Settings
	return nil
}

// indexMembership queues the member-index changes of a flow going from cur to next (nil: the
// flow is new, or deleted).
func (s *Store) indexMembership(ctx context.Context, p redis.Pipeliner, cur, next *flowdoc.Flow) {
	was, is := "", ""
	if cur != nil {
		was = cur.Integration
	}
	if next != nil {
		is = next.Integration
	}
	if was == is {
		return
	}
	id := cur
	if id == nil {
		id = next
	}
	if was != "" {
		p.SRem(ctx, s.integrationFlowsKey(was), id.ID)
	}
	if is != "" {
		p.SAdd(ctx, s.integrationFlowsKey(is), id.ID)
	}
}
