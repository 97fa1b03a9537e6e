package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Which runner pools have a live runner. Every runner renews its membership of its pool while
// it runs; a flow started with an action on a pool nobody serves is told so (the API's start
// warns, an execution waiting on such a pool says so), instead of waiting without a word.
//
//	P pool:{<pool>}:runners   zset   runner instance → when its membership lapses (unix ms)

func (s *Store) poolRunnersKey(pool string) string {
	return s.tagged("pool", keyID(pool), "runners")
}

// ServePool records that runner serves pool until until; lapsed memberships are dropped.
func (s *Store) ServePool(ctx context.Context, pool, runner string, now, until time.Time) error {
	k := s.poolRunnersKey(pool)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, k, redis.Z{Score: float64(until.UnixMilli()), Member: runner})
		p.ZRemRangeByScore(ctx, k, "-inf", "("+strconv.FormatInt(now.UnixMilli(), 10))
		p.PExpireAt(ctx, k, until)
		return nil
	})
	if err != nil {
		return fmt.Errorf("renew the membership of runner %s in pool %s: %w", runner, pool, err)
	}
	return nil
}

// LeavePool ends runner's membership of pool (a runner that stops).
func (s *Store) LeavePool(ctx context.Context, pool, runner string) error {
	if err := s.rdb.ZRem(ctx, s.poolRunnersKey(pool), runner).Err(); err != nil {
		return fmt.Errorf("leave pool %s: %w", pool, err)
	}
	return nil
}

// ServedPools reports which of pools have a runner whose membership lasts past now.
func (s *Store) ServedPools(ctx context.Context, pools []string, now time.Time) (map[string]bool, error) {
	if len(pools) == 0 {
		return map[string]bool{}, nil
	}
	cmds := make([]*redis.IntCmd, len(pools))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, pool := range pools {
			cmds[i] = p.ZCount(ctx, s.poolRunnersKey(pool), strconv.FormatInt(now.UnixMilli(), 10), "+inf")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("find the runners of pools %v: %w", pools, err)
	}
	out := make(map[string]bool, len(pools))
	for i, pool := range pools {
		out[pool] = cmds[i].Val() > 0
	}
	return out, nil
}
