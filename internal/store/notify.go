package store

// Failure notifications are throttled per flow: the first failure of a window is sent at once
// and opens the window (the gate); the ones that follow are kept until the window ends and go
// out in one digest, which opens the next window.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// MaxDigestKept bounds the failures a digest lists; it counts them all.
const MaxDigestKept = 50

func (s *Store) notifyKeys(flowID string) (gate, pending, count string) {
	id := keyID(flowID)
	return s.tagged("notify", id, "gate"), s.tagged("notify", id, "pending"), s.tagged("notify", id, "count")
}

func (s *Store) notifyDueKey() string { return s.p + "{notify}:due" }

// NotifyGate opens the flow's window for window and reports whether it was closed (the
// caller sends at once) or open already (the caller defers).
func (s *Store) NotifyGate(ctx context.Context, flowID string, window time.Duration) (bool, error) {
	gate, _, _ := s.notifyKeys(flowID)
	ok, err := s.rdb.SetNX(ctx, gate, "1", window).Result()
	if err != nil {
		return false, fmt.Errorf("notification gate of %s: %w", flowID, err)
	}
	return ok, nil
}

// NotifyDefer keeps a failure for the flow's digest, due at due.
func (s *Store) NotifyDefer(ctx context.Context, flowID string, summary []byte, due time.Time) error {
	_, pending, count := s.notifyKeys(flowID)
	if _, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.RPush(ctx, pending, summary)
		p.LTrim(ctx, pending, 0, MaxDigestKept-1)
		p.Incr(ctx, count)
		p.Expire(ctx, pending, 48*time.Hour)
		p.Expire(ctx, count, 48*time.Hour)
		return nil
	}); err != nil {
		return fmt.Errorf("keep failure of %s for its digest: %w", flowID, err)
	}
	if err := s.rdb.ZAddNX(ctx, s.notifyDueKey(), redis.Z{Score: float64(due.UnixMilli()), Member: flowID}).Err(); err != nil {
		return fmt.Errorf("schedule the digest of %s: %w", flowID, err)
	}
	return nil
}

// NotifyDue lists the flows whose digest is due at now.
func (s *Store) NotifyDue(ctx context.Context, now time.Time) ([]string, error) {
	ids, err := s.rdb.ZRangeByScore(ctx, s.notifyDueKey(), &redis.ZRangeBy{Min: "-inf", Max: fmt.Sprint(now.UnixMilli()), Count: 100}).Result()
	if err != nil {
		return nil, fmt.Errorf("due digests: %w", err)
	}
	return ids, nil
}

// NotifyTake claims a due digest: one caller gets the kept failures and their count (ok);
// another finds it taken.
func (s *Store) NotifyTake(ctx context.Context, flowID string) (kept [][]byte, count int64, ok bool, err error) {
	n, err := s.rdb.ZRem(ctx, s.notifyDueKey(), flowID).Result()
	if err != nil || n == 0 {
		return nil, 0, false, err
	}
	_, pending, countKey := s.notifyKeys(flowID)
	var lr *redis.StringSliceCmd
	var cnt *redis.StringCmd
	if _, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		lr = p.LRange(ctx, pending, 0, -1)
		cnt = p.Get(ctx, countKey)
		p.Del(ctx, pending, countKey)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, 0, false, fmt.Errorf("take the digest of %s: %w", flowID, err)
	}
	for _, v := range lr.Val() {
		kept = append(kept, []byte(v))
	}
	count, _ = cnt.Int64()
	return kept, count, true, nil
}
