package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/events"
)

// enqueue adds events to the outbox inside the caller's transaction, so an event exists
// exactly when the change it announces was committed.
func (s *Store) enqueue(ctx context.Context, p redis.Pipeliner, evs []events.Event) {
	for _, ev := range evs {
		p.RPush(ctx, s.k("outbox"), mustJSON(ev))
	}
}

// OutboxBatch is a peeked run of events; Head identifies it when it is dropped.
type OutboxBatch struct {
	Events []events.Event
	Head   string
}

// OutboxPeek returns up to n events waiting to be published, oldest first.
func (s *Store) OutboxPeek(ctx context.Context, n int) (OutboxBatch, error) {
	raws, err := s.rdb.LRange(ctx, s.k("outbox"), 0, int64(n-1)).Result()
	if err != nil {
		return OutboxBatch{}, fmt.Errorf("read outbox: %w", err)
	}
	out := make([]events.Event, 0, len(raws))
	for _, r := range raws {
		var ev events.Event
		if err := json.Unmarshal([]byte(r), &ev); err != nil {
			return OutboxBatch{}, fmt.Errorf("decode outbox event: %w", err)
		}
		out = append(out, ev)
	}
	b := OutboxBatch{Events: out}
	if len(raws) > 0 {
		b.Head = raws[0]
	}
	return b, nil
}

// dropScript trims only if the list still starts with the batch that was published: if a
// slow drainer lost its lock, it must not drop events another drainer has not published yet.
var dropScript = redis.NewScript(`
if redis.call('LINDEX', KEYS[1], 0) == ARGV[1] then
  redis.call('LTRIM', KEYS[1], tonumber(ARGV[2]), -1)
  return 1
end
return 0`)

// OutboxDrop removes a published batch from the outbox.
func (s *Store) OutboxDrop(ctx context.Context, b OutboxBatch) error {
	if err := dropScript.Run(ctx, s.rdb, []string{s.k("outbox")}, b.Head, len(b.Events)).Err(); err != nil {
		return fmt.Errorf("trim outbox: %w", err)
	}
	return nil
}

// OutboxLen is how many events wait to be published.
func (s *Store) OutboxLen(ctx context.Context) (int64, error) {
	n, err := s.rdb.LLen(ctx, s.k("outbox")).Result()
	if err != nil {
		return 0, fmt.Errorf("outbox length: %w", err)
	}
	return n, nil
}

// OutboxLock makes owner the only drainer for ttl (or extends its hold). Only one process may
// peek-publish-drop at a time, or two could drop each other's unpublished events.
func (s *Store) OutboxLock(ctx context.Context, owner string, ttl time.Duration) (bool, error) {
	key := s.k("outbox", "lock")
	ok, err := s.rdb.SetNX(ctx, key, owner, ttl).Result()
	if err != nil {
		return false, fmt.Errorf("outbox lock: %w", err)
	}
	if ok {
		return true, nil
	}
	// Extend only our own hold, atomically.
	var extended bool
	err = s.watch(ctx, func(tx *redis.Tx) error {
		cur, err := tx.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) || (err == nil && cur != owner) {
			extended = false
			return nil
		}
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.PExpire(ctx, key, ttl)
			return nil
		})
		extended = err == nil
		return err
	}, key)
	return extended, err
}

var unlockScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// OutboxUnlock gives up owner's hold, so another drainer need not wait for it to expire.
func (s *Store) OutboxUnlock(ctx context.Context, owner string) error {
	if err := unlockScript.Run(ctx, s.rdb, []string{s.k("outbox", "lock")}, owner).Err(); err != nil {
		return fmt.Errorf("outbox unlock: %w", err)
	}
	return nil
}
