package store

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// A due set is a sorted set of ids scored by when each is due (ms), with what each id carries
// in hashes beside it: the delay queue's records, the schedules, the polls. Taking due ids
// pushes them a lease ahead instead of removing them, so a process that dies holding some
// leaves them to be taken again when the lease runs out.

// takeLeasedScript leases up to ARGV[3] ids of the due set KEYS[1] due at ARGV[1] (ms) until
// ARGV[2], and returns each with its field in every hash KEYS[2..] (empty when missing), then when
// the earliest id left is due (or -1). An id missing from KEYS[2] is gone: it is removed.
var takeLeasedScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  local v = redis.call('HGET', KEYS[2], id)
  if v then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(out, id)
    table.insert(out, v)
    for i = 3, #KEYS do table.insert(out, redis.call('HGET', KEYS[i], id) or '') end
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then table.insert(out, first[2]) else table.insert(out, '-1') end
return out`)

// takeLeased leases up to n ids of the due set keys[0] due at now for lease, and returns each
// as a row: the id, then its field in each hash keys[1:]; and when the earliest id left is due
// (zero: none).
func (s *Store) takeLeased(ctx context.Context, keys []string, now time.Time, lease time.Duration, n int) ([][]string, time.Time, error) {
	vals, err := takeLeasedScript.Run(ctx, s.rdb, keys, now.UnixMilli(), now.Add(lease).UnixMilli(), n).StringSlice()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("take due %s: %w", keys[0], err)
	}
	var next time.Time
	if ms, err := strconv.ParseFloat(vals[len(vals)-1], 64); err == nil && ms >= 0 {
		next = time.UnixMilli(int64(ms)).UTC()
	}
	vals = vals[:len(vals)-1]
	width := len(keys)
	rows := make([][]string, 0, len(vals)/width)
	for i := 0; i+width <= len(vals); i += width {
		rows = append(rows, vals[i:i+width])
	}
	return rows, next, nil
}
