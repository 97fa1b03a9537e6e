package store

// Polls of trigger.poll flows. Routers keep one entry per running poll flow, in the due set of
// the runner pool its trigger runs in; the runners of that pool take due polls (leased, as
// schedules are), call the connector's trigger with the cursor kept here, produce an ingest
// record per new item, and only then remember the items and save the new cursor. Items are
// remembered by id for a while, so a poll repeated after a crash (the old cursor, the same
// items) produces nothing twice; the execution id of an item is derived from the flow and the
// item's id besides, so a record produced twice starts one execution.

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DuePoll is a poll taken to run: its flow, the revision it was set up for, and the cursor the
// last poll returned ("" before the first).
type DuePoll struct {
	FlowID   string
	Revision int
	Cursor   string
}

// Bounds of what a flow's poll remembers of the items it produced.
const (
	PollSeenMax = 100000
	PollSeenTTL = 7 * 24 * time.Hour
)

func (s *Store) pollKeys(pool string) []string {
	return []string{s.p + "{poll}:due:" + pool, s.p + "{poll}:rev", s.p + "{poll}:cursor", s.p + "{poll}:next"}
}

func (s *Store) pollSeenKey(flowID string) string { return s.p + "{poll}:seen:" + flowID }

// ensurePollScript sets a poll up for revision ARGV[2] in pool ARGV[5] unless it is set up for
// both already (ARGV[2] is "<rev>|<pool>"), due at ARGV[3]. It keeps the cursor of an earlier
// revision: a new revision does not read the source again from its start.
var ensurePollScript = redis.NewScript(`
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur == ARGV[2] then return 0 end
if cur then
  local oldpool = string.match(cur, '|(.*)$')
  if oldpool and oldpool ~= ARGV[5] then redis.call('ZREM', ARGV[4] .. oldpool, ARGV[1]) end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1`)

// EnsurePoll sets the poll of flowID up for revision rev in pool, first due at next, unless it
// is set up for both already. It reports whether it changed anything.
func (s *Store) EnsurePoll(ctx context.Context, flowID, pool string, rev int, next time.Time) (bool, error) {
	k := s.pollKeys(pool)
	prefix := strings.TrimSuffix(k[0], pool)
	n, err := ensurePollScript.Run(ctx, s.rdb, k, flowID, strconv.Itoa(rev)+"|"+pool, next.UnixMilli(), prefix, pool).Int()
	if err != nil {
		return false, fmt.Errorf("set up the poll of flow %s: %w", flowID, err)
	}
	return n == 1, nil
}

// DropPoll removes the poll of flowID (stopped, or no poll trigger any more); forget also
// removes its cursor and the items it remembers (the flow was deleted). A poll dropped without
// forgetting resumes from its cursor when it is set up again.
func (s *Store) DropPoll(ctx context.Context, flowID string, forget bool) error {
	k := s.pollKeys("")
	cur, err := s.rdb.HGet(ctx, k[1], flowID).Result()
	if err == redis.Nil && !forget {
		return nil
	}
	if err != nil && err != redis.Nil {
		return fmt.Errorf("drop the poll of flow %s: %w", flowID, err)
	}
	_, pool, _ := strings.Cut(cur, "|")
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if pool != "" {
			p.ZRem(ctx, k[0]+pool, flowID)
		}
		p.HDel(ctx, k[1], flowID)
		p.HDel(ctx, k[3], flowID)
		if forget {
			p.HDel(ctx, k[2], flowID)
			p.Del(ctx, s.pollSeenKey(flowID))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("drop the poll of flow %s: %w", flowID, err)
	}
	return nil
}

// TakeDuePolls leases up to n polls of pool due at now for lease, and returns them with when
// the earliest poll left is due (zero: none).
func (s *Store) TakeDuePolls(ctx context.Context, pool string, now time.Time, lease time.Duration, n int) ([]DuePoll, time.Time, error) {
	k := s.pollKeys(pool)
	rows, next, err := s.takeLeased(ctx, []string{k[0], k[1], k[2]}, now, lease, n)
	if err != nil {
		return nil, time.Time{}, err
	}
	out := make([]DuePoll, 0, len(rows))
	for _, row := range rows {
		revStr, _, _ := strings.Cut(row[1], "|")
		rev, _ := strconv.Atoi(revStr)
		out = append(out, DuePoll{FlowID: row[0], Revision: rev, Cursor: row[2]})
	}
	return out, next, nil
}

// SeenPollItems reports which of ids the poll of flowID produced before.
func (s *Store) SeenPollItems(ctx context.Context, flowID string, ids []string) (map[string]bool, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	scores, err := s.rdb.ZMScore(ctx, s.pollSeenKey(flowID), ids...).Result()
	if err != nil {
		return nil, fmt.Errorf("load the items flow %s polled: %w", flowID, err)
	}
	seen := make(map[string]bool)
	for i, sc := range scores {
		if sc != 0 {
			seen[ids[i]] = true
		}
	}
	return seen, nil
}

// polledScript remembers the items ARGV[8..] at ARGV[4] (ms), forgetting those older than
// ARGV[6] ms and beyond the latest ARGV[7]; then, if the poll of flow ARGV[1] is still set up
// for revision ARGV[2], saves its cursor ARGV[3] and makes it due at ARGV[5] (ms).
var polledScript = redis.NewScript(`
local now = tonumber(ARGV[4])
for i = 8, #ARGV do redis.call('ZADD', KEYS[5], now, ARGV[i]) end
if #ARGV >= 8 then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now - tonumber(ARGV[6]))
  local n = redis.call('ZCARD', KEYS[5])
  local max = tonumber(ARGV[7])
  if n > max then redis.call('ZREMRANGEBYRANK', KEYS[5], 0, n - max - 1) end
  redis.call('PEXPIRE', KEYS[5], ARGV[6])
end
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if not cur or string.match(cur, '^[^|]*') ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[1], ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[5], ARGV[1])
return 1`)

// PolledItems records a poll of flowID in pool: it remembers ids (the items it produced, whose
// records Kafka acknowledged), then saves cursor and makes the poll due at next, unless the
// poll was dropped or set up for another revision than rev meanwhile.
func (s *Store) PolledItems(ctx context.Context, flowID, pool string, rev int, cursor string, ids []string, now, next time.Time) error {
	k := append(s.pollKeys(pool), s.pollSeenKey(flowID))
	args := make([]any, 0, 7+len(ids))
	args = append(args, flowID, strconv.Itoa(rev), cursor, now.UnixMilli(), next.UnixMilli(), PollSeenTTL.Milliseconds(), PollSeenMax)
	for _, id := range ids {
		args = append(args, id)
	}
	if err := polledScript.Run(ctx, s.rdb, k, args...).Err(); err != nil {
		return fmt.Errorf("record the poll of flow %s: %w", flowID, err)
	}
	return nil
}

// NextPoll is when the poll of flowID runs next (false: it has none).
func (s *Store) NextPoll(ctx context.Context, flowID string) (time.Time, bool, error) {
	ms, err := s.rdb.HGet(ctx, s.pollKeys("")[3], flowID).Int64()
	if err == redis.Nil {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("load the next poll of flow %s: %w", flowID, err)
	}
	return time.UnixMilli(ms).UTC(), true, nil
}
