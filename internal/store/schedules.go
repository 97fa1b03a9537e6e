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

// TakeDueSchedules leases up to n schedules due at now for lease, and returns them with when
// the earliest schedule left is due (zero: none).
func (s *Store) TakeDueSchedules(ctx context.Context, now time.Time, lease time.Duration, n int) ([]DueSchedule, time.Time, error) {
	k := s.scheduleKeys()
	rows, next, err := s.takeLeased(ctx, []string{k[0], k[1], k[2]}, now, lease, n)
	if err != nil {
		return nil, time.Time{}, err
	}
	out := make([]DueSchedule, 0, len(rows))
	for _, row := range rows {
		rev, _ := strconv.Atoi(row[1])
		d := DueSchedule{FlowID: row[0], Revision: rev}
		if ms, _ := strconv.ParseInt(row[2], 10, 64); ms > 0 {
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
