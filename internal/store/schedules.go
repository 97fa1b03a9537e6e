package store

// Schedules of trigger.schedule flows. Routers keep one entry per running schedule flow: the
// revision it was set up for, the last tick fired, and the next one. Every router looks for
// due schedules; taking one pushes its due time a lease ahead (as the delay queue does), so one
// router fires a tick while the others wait, and a router that dies holding it leaves it to
// another once the lease runs out. A tick fired twice anyway (a lease that ran out mid-fire)
// starts one execution: its execution id is derived from the flow and the tick.

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// DueSchedule is a schedule taken to fire: its flow, the revision it was set up for and the
// last tick fired (zero: none since it started).
type DueSchedule struct {
	FlowID   string
	Revision int
	Last     time.Time
}

func (s *Store) scheduleKeys() []string {
	return []string{s.p + "{sched}:due", s.p + "{sched}:rev", s.p + "{sched}:last", s.p + "{sched}:next"}
}

// ensureScheduleScript sets a schedule up for revision ARGV[2] unless it is set up for it
// already: due and next at ARGV[3] (ms). A schedule set up for another revision keeps its last
// tick, so a revision does not fire the ticks fired before; a new one starts at ARGV[4].
var ensureScheduleScript = redis.NewScript(`
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then redis.call('HSET', KEYS[3], ARGV[1], ARGV[4]) end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1`)

// EnsureSchedule sets the schedule of flowID up for revision rev, first due at next, unless it
// is set up for rev already (every router reconciling the flow calls it). It reports whether
// it changed anything.
func (s *Store) EnsureSchedule(ctx context.Context, flowID string, rev int, next, now time.Time) (bool, error) {
	n, err := ensureScheduleScript.Run(ctx, s.rdb, s.scheduleKeys(), flowID, rev, next.UnixMilli(), now.UnixMilli()).Int()
	if err != nil {
		return false, fmt.Errorf("set up the schedule of flow %s: %w", flowID, err)
	}
	return n == 1, nil
}

// DropSchedule removes the schedule of flowID (stopped, deleted, or no schedule any more).
func (s *Store) DropSchedule(ctx context.Context, flowID string) error {
	k := s.scheduleKeys()
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, k[0], flowID)
		for _, h := range k[1:] {
			p.HDel(ctx, h, flowID)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("drop the schedule of flow %s: %w", flowID, err)
	}
	return nil
}

// takeSchedulesScript leases up to ARGV[3] schedules due at ARGV[1] (ms) until ARGV[2] and
// returns each one's flow id, revision and last tick, then when the earliest one left is due
// (or -1).
var takeSchedulesScript = redis.NewScript(`
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], ARGV[2], id)
  table.insert(out, id)
  table.insert(out, redis.call('HGET', KEYS[2], id) or '0')
  table.insert(out, redis.call('HGET', KEYS[3], id) or '0')
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then table.insert(out, first[2]) else table.insert(out, '-1') end
return out`)

// TakeDueSchedules leases up to n schedules due at now for lease, and returns them with when
// the earliest schedule left is due (zero: none).
func (s *Store) TakeDueSchedules(ctx context.Context, now time.Time, lease time.Duration, n int) ([]DueSchedule, time.Time, error) {
	vals, err := takeSchedulesScript.Run(ctx, s.rdb, s.scheduleKeys(), now.UnixMilli(), now.Add(lease).UnixMilli(), n).StringSlice()
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("take due schedules: %w", err)
	}
	var next time.Time
	if len(vals) > 0 {
		if ms, err := strconv.ParseFloat(vals[len(vals)-1], 64); err == nil && ms >= 0 {
			next = time.UnixMilli(int64(ms)).UTC()
		}
		vals = vals[:len(vals)-1]
	}
	out := make([]DueSchedule, 0, len(vals)/3)
	for i := 0; i+2 < len(vals); i += 3 {
		rev, _ := strconv.Atoi(vals[i+1])
		d := DueSchedule{FlowID: vals[i], Revision: rev}
		if ms, _ := strconv.ParseInt(vals[i+2], 10, 64); ms > 0 {
			d.Last = time.UnixMilli(ms).UTC()
		}
		out = append(out, d)
	}
	return out, next, nil
}

// firedScheduleScript records that revision ARGV[2]'s schedule fired up to ARGV[3] (ms) and is
// next due at ARGV[4], unless it was dropped or set up for another revision meanwhile.
var firedScheduleScript = redis.NewScript(`
if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if tonumber(ARGV[3]) > last then redis.call('HSET', KEYS[3], ARGV[1], ARGV[3]) end
redis.call('HSET', KEYS[4], ARGV[1], ARGV[4])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
return 1`)

// FiredSchedule records that the schedule of flowID at revision rev fired its ticks up to last
// (zero: none) and is next due at next.
func (s *Store) FiredSchedule(ctx context.Context, flowID string, rev int, last, next time.Time) error {
	ms := int64(0)
	if !last.IsZero() {
		ms = last.UnixMilli()
	}
	if err := firedScheduleScript.Run(ctx, s.rdb, s.scheduleKeys(), flowID, rev, ms, next.UnixMilli()).Err(); err != nil {
		return fmt.Errorf("record the ticks of flow %s: %w", flowID, err)
	}
	return nil
}

// NextRun is when the schedule of flowID fires next (false: it has none).
func (s *Store) NextRun(ctx context.Context, flowID string) (time.Time, bool, error) {
	ms, err := s.rdb.HGet(ctx, s.scheduleKeys()[3], flowID).Int64()
	if err == redis.Nil {
		return time.Time{}, false, nil
	}
	if err != nil {
		return time.Time{}, false, fmt.Errorf("load the next run of flow %s: %w", flowID, err)
	}
	return time.UnixMilli(ms).UTC(), true, nil
}
