package store

import (
	"context"
	"fmt"
	"sort"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/flowtemplate"
)

func (s *Store) templateKey(id string) string { return s.k("template", keyID(id)) }

func (s *Store) templateOwnerKey(o flowdoc.Owner) string {
	return s.k("owner", keyID(o.Type), keyID(o.ID), "templates")
}

func (s *Store) publicTemplatesKey() string { return s.k("templates", "public") }

// CreateTemplate stores a new flow template with its owner indexes.
func (s *Store) CreateTemplate(ctx context.Context, t *flowtemplate.Template) error {
	key := s.templateKey(t.ID)
	return s.watch(ctx, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, key).Result()
		if err != nil {
			return fmt.Errorf("check template: %w", err)
		}
		if n > 0 {
			return fmt.Errorf("template %s: %w", t.ID, ErrExists)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, mustJSON(t), 0)
			p.ZAdd(ctx, s.k("templates"), redis.Z{Score: float64(t.CreatedAt.UnixMilli()), Member: t.ID})
			s.indexTemplate(ctx, p, nil, t)
			return nil
		})
		return err
	}, key)
}

// indexTemplate queues the owner and public index changes of a template going from cur to next
// (nil: new, or deleted).
func (s *Store) indexTemplate(ctx context.Context, p redis.Pipeliner, cur, next *flowtemplate.Template) {
	if cur != nil {
		for _, o := range cur.Owners {
			if next == nil || !hasOwner(next.Owners, o) {
				p.SRem(ctx, s.templateOwnerKey(o), cur.ID)
			}
		}
		if cur.Public && (next == nil || !next.Public) {
			p.SRem(ctx, s.publicTemplatesKey(), cur.ID)
		}
	}
	if next != nil {
		for _, o := range next.Owners {
			p.SAdd(ctx, s.templateOwnerKey(o), next.ID)
		}
		if next.Public {
			p.SAdd(ctx, s.publicTemplatesKey(), next.ID)
		}
	}
}

// Template loads one template.
func (s *Store) Template(ctx context.Context, id string) (*flowtemplate.Template, error) {
	return getJSON[flowtemplate.Template](ctx, s.rdb, s.templateKey(id))
}

// AllTemplates lists every template (for administrators).
func (s *Store) AllTemplates(ctx context.Context) ([]flowtemplate.Template, error) {
	return listJSON[flowtemplate.Template](ctx, s, s.k("templates"), s.templateKey)
}

// TemplatesFor lists the public templates and those any of owners owns.
func (s *Store) TemplatesFor(ctx context.Context, owners ...flowdoc.Owner) ([]flowtemplate.Template, error) {
	keys := []string{s.publicTemplatesKey()}
	for _, o := range owners {
		keys = append(keys, s.templateOwnerKey(o))
	}
	ids, err := s.rdb.SUnion(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("list templates: %w", err)
	}
	sort.Strings(ids)
	return mgetJSON[flowtemplate.Template](ctx, s, ids, s.templateKey)
}

// UpdateTemplate applies decide to the current template atomically.
func (s *Store) UpdateTemplate(ctx context.Context, id string, decide func(cur *flowtemplate.Template) (*flowtemplate.Template, error)) (*flowtemplate.Template, error) {
	key := s.templateKey(id)
	var out *flowtemplate.Template
	err := s.watch(ctx, func(tx *redis.Tx) error {
		cur, err := getJSON[flowtemplate.Template](ctx, tx, key)
		if err != nil {
			return err
		}
		next, err := decide(cur)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Set(ctx, key, mustJSON(next), 0)
			s.indexTemplate(ctx, p, cur, next)
			return nil
		})
		out = next
		return err
	}, key)
	return out, err
}

// DeleteTemplate removes a template if allow accepts it. Flows made from it keep their
// fromTemplate and fromTemplateVersion: they are a record of where a flow came from.
func (s *Store) DeleteTemplate(ctx context.Context, id string, allow func(cur *flowtemplate.Template) error) error {
	key := s.templateKey(id)
	return s.watch(ctx, func(tx *redis.Tx) error {
		cur, err := getJSON[flowtemplate.Template](ctx, tx, key)
		if err != nil {
			return err
		}
		if err := allow(cur); err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key)
			p.ZRem(ctx, s.k("templates"), id)
			s.indexTemplate(ctx, p, cur, nil)
			return nil
		})
		return err
	}, key)
}
