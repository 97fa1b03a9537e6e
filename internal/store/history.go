package store

// History: what is kept of ended executions, and what bounds it.
//
// An execution's status reaches its flow's indexes and counters after the change that set it
// (syncHistory), idempotently, and again whenever that message is redelivered. An ended
// execution that is kept is measured (MEMORY USAGE of its keys) and entered in the global
// history, whose byte total the budget bounds. Counters and statistics are never pruned.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/envelope"
)

// indexStatuses are the statuses with an index of their own, in the order syncIndexScript
// gets their keys.
var indexStatuses = append([]string{envelope.StatusRunning}, envelope.TerminalStatuses...)

// Why executions were deleted before their age ran out, or by it (fields of history:pruned).
const (
	PrunedByCount  = "count"
	PrunedByBudget = "budget"
	PrunedByAge    = "age"
)

// syncHistory brings the flow's indexes, counters and the global history in line with an
// execution's status, deletes what the count and the budget no longer allow, and, under
// SaveNone, the record itself once it has been counted.
func (s *Store) syncHistory(ctx context.Context, pol ExecPolicy, e *envelope.Execution) error {
	keep := SaveAll
	if envelope.Terminal(e.Status) {
		keep = pol.keep(e.Status)
	}
	pruned, err := s.syncIndex(ctx, pol, e, keep != SaveNone)
	if err != nil {
		return err
	}
	if len(pruned) > 0 {
		if err := s.deleteExecutions(ctx, e.FlowID, pruned, PrunedByCount); err != nil {
			return err
		}
	}
	switch {
	case !envelope.Terminal(e.Status):
		return nil
	case keep == SaveNone:
		k := s.execKeysOf(e.ID)
		if err := s.rdb.Del(ctx, k.exec, k.steps, k.payloads).Err(); err != nil {
			return fmt.Errorf("drop execution %s: %w", e.ID, err)
		}
		return nil
	}
	total, err := s.addToHistory(ctx, pol, e)
	if err != nil {
		return err
	}
	if pol.Budget > 0 && total > pol.Budget {
		return s.enforceBudget(ctx, pol.Budget)
	}
	return nil
}

// pruneLockTTL bounds how long a crashed pruner keeps the others from pruning.
const pruneLockTTL = 10 * time.Second

// enforceBudget prunes to the budget unless another process is at it already: one pruner at a
// time, or each would delete the whole excess. After releasing the lock it looks again, since
// executions that ended meanwhile left the pruning to it.
func (s *Store) enforceBudget(ctx context.Context, budget int64) error {
	_, _, bytes, _ := s.historyKeys()
	for range 8 {
		l, ok, err := s.tryLock(ctx, s.k("history", "prune"), pruneLockTTL)
		if err != nil || !ok {
			return err // someone else prunes, and looks again when done
		}
		err = s.pruneToBudget(ctx, budget)
		if rerr := l.Release(context.WithoutCancel(ctx)); err == nil && rerr != nil && !errors.Is(rerr, ErrLockLost) {
			err = rerr
		}
		if err != nil {
			return err
		}
		total, err := s.rdb.Get(ctx, bytes).Int64()
		if err != nil && !errors.Is(err, redis.Nil) {
			return fmt.Errorf("prune the history: %w", err)
		}
		if total <= budget {
			return nil
		}
	}
	return nil
}

// syncIndex updates the flow's indexes and counters and returns the executions the count
// retention removed from the indexes (their keys are the caller's to delete).
func (s *Store) syncIndex(ctx context.Context, pol ExecPolicy, e *envelope.Execution, listed bool) ([]string, error) {
	target := 0
	for i, st := range indexStatuses {
		if st == e.Status {
			target = i + 1
		}
	}
	if target == 0 {
		return nil, fmt.Errorf("index execution %s: unknown status %q", e.ID, e.Status)
	}
	keys := make([]string, 0, 3+len(indexStatuses))
	for _, st := range indexStatuses {
		keys = append(keys, s.flowExecsKey(e.FlowID, st))
	}
	now := time.Now()
	at := now
	if e.FinishedAt != nil {
		at = *e.FinishedAt
	}
	minute := at.UTC().Truncate(time.Minute)
	keys = append(keys, s.statsKey(e.FlowID, minute), s.flowCountedKey(e.FlowID), s.flowCountsKey(e.FlowID))
	maxCount := pol.MaxCount
	if maxCount < 0 {
		maxCount = 0
	}
	var cmd *redis.Cmd
	err := s.pipe.do(ctx, func(p redis.Pipeliner) {
		cmd = syncIndexScript.Eval(ctx, p, keys, e.ID, e.ReceivedAt.UnixMilli(), target,
			"("+strconv.FormatInt(now.Add(-pol.Retention).UnixMilli(), 10),
			pol.Retention.Milliseconds(), strconv.FormatInt(minute.Unix()/60, 10)+":"+counterOf(e.Status),
			(pol.Retention + 24*time.Hour).Milliseconds(), boolArg(listed), now.UnixMilli(),
			"("+strconv.FormatInt(now.Add(-pol.RedeliveryWindow).UnixMilli(), 10),
			pol.RedeliveryWindow.Milliseconds(), maxCount, counterOf(e.Status))
	})
	if err == nil {
		err = cmd.Err()
	}
	if err != nil {
		return nil, fmt.Errorf("index execution %s: %w", e.ID, err)
	}
	pruned, err := cmd.StringSlice()
	if err != nil {
		return nil, fmt.Errorf("index execution %s: %w", e.ID, err)
	}
	return pruned, nil
}

func boolArg(b bool) int {
	if b {
		return 1
	}
	return 0
}

// syncIndexScript. KEYS: 1 the flow's running index, 2-4 its terminal indexes (succeeded,
// failed, filtered), 5 the stats hash of the minute the execution ended, 6 counted, 7 counts.
// ARGV: 1 id, 2 score (receive time), 3 the index of the status's key in KEYS, 4 the age
// cutoff, 5 retention, 6 stats field, 7 stats TTL, 8 listed (1/0), 9 now, 10 the window's
// cutoff, 11 the window, 12 max count (0: none), 13 counts field. An execution is counted when
// it first enters counted, and never moves from a terminal index back to running. An id new to
// its index trims whatever fell out of the retention from every index. Returns the ids the
// count retention removed (the oldest succeeded or filtered ones).
var syncIndexScript = redis.NewScript(`
local id, target, listed = ARGV[1], tonumber(ARGV[3]), ARGV[8] == '1'
if target == 1 then
  for i = 2, 4 do
    if redis.call('ZSCORE', KEYS[i], id) then return {} end
  end
  if redis.call('ZSCORE', KEYS[6], id) then return {} end
end
if listed then
  for i = 1, 4 do
    if i ~= target then redis.call('ZREM', KEYS[i], id) end
  end
  if redis.call('ZADD', KEYS[target], ARGV[2], id) == 1 then
    for i = 1, 4 do redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', ARGV[4]) end
  end
  redis.call('PEXPIRE', KEYS[target], ARGV[5])
else
  for i = 1, 4 do redis.call('ZREM', KEYS[i], id) end
end
local pruned = {}
if target == 1 then return pruned end
redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', ARGV[10])
if redis.call('ZADD', KEYS[6], ARGV[9], id) == 1 then
  redis.call('HINCRBY', KEYS[5], ARGV[6], 1)
  redis.call('PEXPIRE', KEYS[5], ARGV[7])
  redis.call('HINCRBY', KEYS[7], ARGV[13], 1)
end
redis.call('PEXPIRE', KEYS[6], ARGV[11])
local max = tonumber(ARGV[12])
if not listed or max <= 0 then return pruned end
local over = redis.call('ZCARD', KEYS[2]) + redis.call('ZCARD', KEYS[4]) - max
if over <= 0 then return pruned end
local a = redis.call('ZRANGE', KEYS[2], 0, over - 1, 'WITHSCORES')
local b = redis.call('ZRANGE', KEYS[4], 0, over - 1, 'WITHSCORES')
local i, j = 1, 1
while #pruned < over do
  local key, m
  if j > #b or (i <= #a and tonumber(a[i + 1]) <= tonumber(b[j + 1])) then
    key, m, i = KEYS[2], a[i], i + 2
  else
    key, m, j = KEYS[4], b[j], j + 2
  end
  if not m then break end
  redis.call('ZREM', key, m)
  pruned[#pruned + 1] = m
end
return pruned`)

func (s *Store) flowCountedKey(flowID string) string {
	return s.tagged("flow", keyID(flowID), "counted")
}

func (s *Store) flowCountsKey(flowID string) string {
	return s.tagged("flow", keyID(flowID), "counts")
}

// memoryScript sums MEMORY USAGE of the given keys (all of one execution, one slot); -1 when
// the record (KEYS[1]) is gone: the count retention deleted it meanwhile.
var memoryScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local n = 0
for i = 1, #KEYS do
  local m = redis.call('MEMORY', 'USAGE', KEYS[i], 'SAMPLES', '0')
  if m then n = n + m end
end
return n`)

// historyScore packs when an entry's age runs out (seconds) and its size (16-byte units, at
// most 2^20-1) into one zset score, exact in a double: ordering by score orders by expiry.
func historyScore(expiry time.Time, bytes int64) (score int64, units int64) {
	units = min((bytes+15)/16, 1<<20-1)
	return expiry.Unix()<<20 + units, units
}

// The scripts below decode a score's size as (score % 2^20) * 16.

// addToHistoryScript. KEYS: 1 the zset of e's class, 2 bytes, 3 kept, 4 failed, 5 pruned.
// ARGV: 1 member, 2 score, 3 bytes (units * 16), 4 the score below which entries have expired.
// Enters the member once, then forgets entries of both classes whose age has run out (their
// keys expired). Returns the byte total.
var addToHistoryScript = redis.NewScript(`
if redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[1]) == 1 then
  redis.call('INCRBY', KEYS[2], ARGV[3])
end
for _, z in ipairs({KEYS[3], KEYS[4]}) do
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', '(' .. ARGV[4], 'WITHSCORES', 'LIMIT', 0, 64)
  for i = 1, #gone, 2 do
    redis.call('ZREM', z, gone[i])
    redis.call('DECRBY', KEYS[2], math.fmod(tonumber(gone[i + 1]), 1048576) * 16)
    redis.call('HINCRBY', KEYS[5], 'age', 1)
  end
end
return tonumber(redis.call('GET', KEYS[2]) or '0')`)

// removeFromHistoryScript. KEYS: 1 kept, 2 failed, 3 bytes, 4 pruned. ARGV: the reason to
// count ("" none), then members. Each member leaves once. Returns the byte total.
var removeFromHistoryScript = redis.NewScript(`
for i = 2, #ARGV do
  local m = ARGV[i]
  for k = 1, 2 do
    local sc = redis.call('ZSCORE', KEYS[k], m)
    if sc then
      redis.call('ZREM', KEYS[k], m)
      redis.call('DECRBY', KEYS[3], math.fmod(tonumber(sc), 1048576) * 16)
      if ARGV[1] ~= '' then redis.call('HINCRBY', KEYS[4], ARGV[1], 1) end
    end
  end
end
return tonumber(redis.call('GET', KEYS[3]) or '0')`)

func (s *Store) historyKeys() (kept, failed, bytes, pruned string) {
	return s.k("history", "kept"), s.k("history", "failed"), s.k("history", "bytes"), s.k("history", "pruned")
}

// addToHistory measures a kept execution and enters it in the global history; it returns the
// history's byte total.
func (s *Store) addToHistory(ctx context.Context, pol ExecPolicy, e *envelope.Execution) (int64, error) {
	k := s.execKeysOf(e.ID)
	var size *redis.Cmd
	if err := s.pipe.do(ctx, func(p redis.Pipeliner) {
		size = memoryScript.Eval(ctx, p, []string{k.exec, k.steps, k.payloads, k.pending})
	}); err != nil {
		return 0, fmt.Errorf("measure execution %s: %w", e.ID, err)
	}
	n, err := size.Int64()
	if err != nil {
		return 0, fmt.Errorf("measure execution %s: %w", e.ID, err)
	}
	if n < 0 {
		// Deleted by the count retention before it was entered (only the count deletes what
		// is not in the history yet): nothing to keep, but it was deleted for the count.
		_, _, _, pruned := s.historyKeys()
		if err := s.rdb.HIncrBy(ctx, pruned, PrunedByCount, 1).Err(); err != nil {
			return 0, fmt.Errorf("count execution %s deleted: %w", e.ID, err)
		}
		return 0, nil
	}
	kept, failed, bytes, pruned := s.historyKeys()
	class := kept
	if e.Status == envelope.StatusFailed {
		class = failed
	}
	at := time.Now()
	if e.FinishedAt != nil {
		at = *e.FinishedAt
	}
	score, units := historyScore(at.Add(pol.Retention), n)
	now, _ := historyScore(time.Now(), 0)
	var total *redis.Cmd
	if err := s.pipe.do(ctx, func(p redis.Pipeliner) {
		total = addToHistoryScript.Eval(ctx, p, []string{class, bytes, kept, failed, pruned},
			e.ID, score, units*16, now)
	}); err != nil {
		return 0, fmt.Errorf("enter execution %s in the history: %w", e.ID, err)
	}
	t, err := total.Int64()
	if err != nil {
		return 0, fmt.Errorf("enter execution %s in the history: %w", e.ID, err)
	}
	// The count retention may have deleted it between the measurement and the entry, and
	// found nothing to remove from the history then: look again, and remove it if so.
	var exists *redis.IntCmd
	if err := s.pipe.do(ctx, func(p redis.Pipeliner) { exists = p.Exists(ctx, k.exec) }); err != nil {
		return 0, fmt.Errorf("enter execution %s in the history: %w", e.ID, err)
	}
	if exists.Val() == 0 && exists.Err() == nil {
		return t, s.deleteExecutions(ctx, e.FlowID, []string{e.ID}, PrunedByCount)
	}
	return t, nil
}

// deleteExecutions deletes ended executions of one flow: their keys, their index entries and
// their place in the global history, in that order, so that an interruption leaves at worst
// an entry whose record is gone (the listing drops those as it meets them). reason is counted
// in history:pruned once per execution that this call removed from the history, so two
// pruners meeting on one execution count it once; "" counts nothing.
func (s *Store) deleteExecutions(ctx context.Context, flowID string, ids []string, reason string) error {
	if len(ids) == 0 {
		return nil
	}
	// The script's arguments: the reason, then the ids (also the ZREM arguments below).
	members := make([]any, 0, 1+len(ids))
	members = append(members, reason)
	for _, id := range ids {
		members = append(members, id)
	}
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			k := s.execKeysOf(id)
			p.Del(ctx, k.exec, k.steps, k.payloads, k.pending)
		}
		for _, st := range indexStatuses {
			p.ZRem(ctx, s.flowExecsKey(flowID, st), members[1:]...)
		}
		return nil
	}); err != nil {
		return fmt.Errorf("delete executions of %s: %w", flowID, err)
	}
	kept, failed, bytes, pruned := s.historyKeys()
	if err := removeFromHistoryScript.Run(ctx, s.rdb, []string{kept, failed, bytes, pruned}, members...).Err(); err != nil {
		return fmt.Errorf("remove executions of %s from the history: %w", flowID, err)
	}
	return nil
}

// pruneBatch bounds the executions one pruning step deletes.
const pruneBatch = 64

// pruneToBudget deletes the oldest kept executions, succeeded and filtered ones before failed
// ones, until the history's bytes are within budget.
func (s *Store) pruneToBudget(ctx context.Context, budget int64) error {
	kept, failed, bytes, pruned := s.historyKeys()
	total, err := s.rdb.Get(ctx, bytes).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("prune the history: %w", err)
	}
	deleted := 0
	for total > budget {
		var entries []redis.Z
		for _, class := range []string{kept, failed} {
			z, err := s.rdb.ZRangeWithScores(ctx, class, 0, pruneBatch-1).Result()
			if err != nil {
				return fmt.Errorf("prune the history: %w", err)
			}
			if len(z) > 0 {
				entries = z
				break
			}
		}
		if len(entries) == 0 {
			break // nothing left to delete: the budget is smaller than what is running
		}
		// Delete only as many as the excess needs, oldest first.
		excess, cut := total-budget, 0
		for cut < len(entries) && excess > 0 {
			excess -= max(int64(entries[cut].Score)%(1<<20)*16, 1)
			cut++
		}
		byFlow, err := s.flowsOf(ctx, entries[:cut])
		if err != nil {
			return err
		}
		for fid, ids := range byFlow {
			if err := s.deleteExecutions(ctx, fid, ids, PrunedByBudget); err != nil {
				return err
			}
		}
		deleted += cut
		t, err := s.rdb.Get(ctx, bytes).Int64()
		if err != nil {
			return fmt.Errorf("prune the history: %w", err)
		}
		total = t
	}
	s.notePruned(ctx, deleted, total, budget, pruned)
	return nil
}

// flowsOf groups history entries by the flow of their execution; those whose record is gone
// already (expired) come under "", to be removed from the history only.
func (s *Store) flowsOf(ctx context.Context, entries []redis.Z) (map[string][]string, error) {
	cmds := make([]*redis.StringCmd, len(entries))
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, z := range entries {
			cmds[i] = p.Get(ctx, s.execKey(fmt.Sprint(z.Member)))
		}
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("prune the history: %w", err)
	}
	byFlow := map[string][]string{}
	for i, z := range entries {
		id, fid := fmt.Sprint(z.Member), ""
		if raw, err := cmds[i].Bytes(); err == nil {
			var rec execRecord
			if json.Unmarshal(raw, &rec) == nil {
				fid = rec.FlowID
			}
		}
		byFlow[fid] = append(byFlow[fid], id)
	}
	return byFlow, nil
}

// lastPruneLog rate-limits the log line about budget pruning (unix nanoseconds).
var lastPruneLog atomic.Int64

func (s *Store) notePruned(ctx context.Context, deleted int, total, budget int64, pruned string) {
	if deleted == 0 {
		return
	}
	now := time.Now().UnixNano()
	last := lastPruneLog.Load()
	if now-last < int64(10*time.Second) || !lastPruneLog.CompareAndSwap(last, now) {
		return
	}
	n, _ := s.rdb.HGet(ctx, pruned, PrunedByBudget).Int64()
	slog.WarnContext(ctx, "execution history reached its memory budget: the oldest succeeded executions are being deleted first",
		"budgetBytes", budget, "historyBytes", total, "deletedForBudgetTotal", n)
}

// HistoryUsage is the global history's size and what was deleted from it.
type HistoryUsage struct {
	Bytes     int64            `json:"bytes"`
	Kept      int64            `json:"kept"`   // succeeded and filtered executions kept
	Failed    int64            `json:"failed"` // failed executions kept
	Pruned    map[string]int64 `json:"pruned"` // count|budget|age -> executions deleted
	Timestamp time.Time        `json:"at"`
}

// History reports the global history's size.
func (s *Store) History(ctx context.Context) (HistoryUsage, error) {
	kept, failed, bytes, pruned := s.historyKeys()
	var b *redis.StringCmd
	var nk, nf *redis.IntCmd
	var pr *redis.MapStringStringCmd
	if _, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		b = p.Get(ctx, bytes)
		nk = p.ZCard(ctx, kept)
		nf = p.ZCard(ctx, failed)
		pr = p.HGetAll(ctx, pruned)
		return nil
	}); err != nil && !errors.Is(err, redis.Nil) {
		return HistoryUsage{}, fmt.Errorf("load history usage: %w", err)
	}
	u := HistoryUsage{Kept: nk.Val(), Failed: nf.Val(), Pruned: map[string]int64{}, Timestamp: time.Now().UTC()}
	u.Bytes, _ = b.Int64()
	for _, r := range []string{PrunedByCount, PrunedByBudget, PrunedByAge} {
		u.Pruned[r], _ = strconv.ParseInt(pr.Val()[r], 10, 64)
	}
	return u, nil
}

// FlowCounts are a flow's executions ever ended, by outcome; pruning never lowers them.
type FlowCounts struct {
	Success int64 `json:"success"`
	Error   int64 `json:"error"`
	Ignored int64 `json:"ignored"`
}

// Counts returns a flow's counters.
func (s *Store) Counts(ctx context.Context, flowID string) (FlowCounts, error) {
	m, err := s.rdb.HGetAll(ctx, s.flowCountsKey(flowID)).Result()
	if err != nil {
		return FlowCounts{}, fmt.Errorf("load counts of %s: %w", flowID, err)
	}
	var c FlowCounts
	c.Success, _ = strconv.ParseInt(m[counterSuccess], 10, 64)
	c.Error, _ = strconv.ParseInt(m[counterError], 10, 64)
	c.Ignored, _ = strconv.ParseInt(m[counterIgnored], 10, 64)
	return c, nil
}
