package store

// Dead letters are the records flowd's roles could never process, copied to the dead-letter
// topic (kafkax.DeadLetters) and indexed here by internal/deadletters, so that operators can
// list, show, replay and discard them.
//
// Each dead letter is a hash in a hash slot of its own (it holds the record's value, up to the
// indexer's bound, and there may be thousands: they spread over a cluster), expiring when the
// retention ends. The indexes that list them share the {dlq} slot:
//
//   - {dlq}:all holds every dead letter and {dlq}:flow:<fid> those of one flow (records whose
//     flow is known), scored by when the record was dead-lettered; both are trimmed to the
//     retention as dead letters are added, and {dlq}:all to a number (the oldest go first,
//     their hashes with them);
//   - {dlq}:replaying holds the dead letters whose replay was begun, scored by when the
//     replay's lease ends: hints where the sweep looks for replays to finish.
//
// Adding writes the hash, once (a dead letter indexed again after a redelivery keeps its
// status), then the indexes, again on every redelivery (changing nothing the second time): two
// steps, each atomic, the second idempotent.
//
// A replay moves a dead letter open → replaying → replayed, two transactions with the produce
// between them. Claiming it (ClaimReplay) is what makes a second replay answer "already
// replayed" or "in progress" instead of producing. A replay whose process died after the claim
// is finished by whoever takes it over once its lease ran out (ResumeReplay, found through the
// hints, which are written before the claim): it produces the record again, which the
// consumers' deduplication by execution makes harmless. A claim never exists without its hint;
// a hint without a claim (the claimant died before claiming) is removed by the sweep.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/envelope"
)

// Statuses of a dead letter.
const (
	DeadLetterOpen      = "open"
	DeadLetterReplaying = "replaying" // claimed for a replay, not yet acknowledged by Kafka
	DeadLetterReplayed  = "replayed"
	DeadLetterDiscarded = "discarded"
)

// DeadLetterStatuses lists every status.
var DeadLetterStatuses = []string{DeadLetterOpen, DeadLetterReplaying, DeadLetterReplayed, DeadLetterDiscarded}

// Errors of the dead letters' transitions.
var (
	ErrReplayed  = errors.New("dead letter already replayed")
	ErrReplaying = errors.New("dead letter being replayed")
	ErrDiscarded = errors.New("dead letter discarded")
)

// Header is one Kafka record header.
type Header struct {
	Key   string `json:"key"`
	Value []byte `json:"value"`
}

// DeadLetter is a record that could never be processed, as indexed from the dead-letter topic.
// Headers and Value are stored apart from the rest and loaded only with the one dead letter
// (DeadLetter, ClaimReplay); lists leave them empty.
type DeadLetter struct {
	// ID is deterministic from the dead letter's place on the dead-letter topic.
	ID     string `json:"id"`
	Reason string `json:"reason"`
	// Where the original record was consumed from, and its key.
	Topic     string `json:"topic"`
	Partition int    `json:"partition"`
	Offset    int64  `json:"offset"`
	Key       []byte `json:"key,omitempty"`
	// FlowID and ExecutionID are the original's, when it was written by a flowd role and
	// names them; a dead letter without a flow is for administrators only.
	FlowID      string `json:"flowId,omitempty"`
	ExecutionID string `json:"executionId,omitempty"`
	// Authentic says the original carried a valid signature of a flowd role.
	Authentic bool `json:"authentic"`
	// Parked is the step whose work item this is, when its retries ran out and it waits here
	// (authentic dead letters only): discarding the dead letter fails that step.
	Parked *envelope.Parked `json:"parked,omitempty"`
	// ValueBytes is the original value's size; Truncated says Value holds only its start.
	ValueBytes int       `json:"valueBytes"`
	Truncated  bool      `json:"truncated,omitempty"`
	At         time.Time `json:"at"` // when it was dead-lettered
	Status     string    `json:"status"`
	// LeaseUntil is when a replaying dead letter's replay may be taken over.
	LeaseUntil  *time.Time `json:"leaseUntil,omitempty"`
	ReplayedBy  string     `json:"replayedBy,omitempty"`
	ReplayedAt  *time.Time `json:"replayedAt,omitempty"`
	DiscardedBy string     `json:"discardedBy,omitempty"`
	DiscardedAt *time.Time `json:"discardedAt,omitempty"`

	Headers []Header `json:"-"`
	Value   []byte   `json:"-"`
}

// DeadLetterPolicy bounds what is kept of dead letters.
type DeadLetterPolicy struct {
	Retention time.Duration // how long a dead letter is kept after it was dead-lettered
	MaxCount  int           // how many are kept at most (0: no bound)
}

func (s *Store) deadLetterKey(id string) string { return s.tagged("dlq", keyID(id)) }

func (s *Store) deadLetterIndex(parts ...string) string {
	return s.p + "{dlq}:" + strings.Join(parts, ":")
}

func (s *Store) deadLettersOfFlow(flowID string) string {
	return s.deadLetterIndex("flow", keyID(flowID))
}

func msScore(t time.Time) float64 { return float64(t.UnixMilli()) }

// AddDeadLetter stores dl (with status open) and indexes it, unless it is stored already or
// its retention has already run out at now; it reports whether it stored it. Adding the same
// dead letter again changes nothing, so a redelivered record is harmless.
func (s *Store) AddDeadLetter(ctx context.Context, dl *DeadLetter, pol DeadLetterPolicy, now time.Time) (bool, error) {
	expires := dl.At.Add(pol.Retention)
	if !expires.After(now) {
		return false, nil
	}
	key := s.deadLetterKey(dl.ID)
	rec := *dl
	rec.Status = DeadLetterOpen
	added := false
	err := s.watch(ctx, func(tx *redis.Tx) error {
		added = false
		n, err := tx.Exists(ctx, key).Result()
		if err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		headers := dl.Headers
		if headers == nil {
			headers = []Header{}
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, "rec", mustJSON(&rec), "headers", mustJSON(headers), "value", dl.Value)
			p.PExpireAt(ctx, key, expires)
			return nil
		})
		added = err == nil
		return err
	}, key)
	if err != nil {
		return false, fmt.Errorf("add dead letter %s: %w", dl.ID, err)
	}
	cutoff := "(" + strconv.FormatInt(now.Add(-pol.Retention).UnixMilli(), 10)
	z := redis.Z{Score: msScore(dl.At), Member: dl.ID}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		all := s.deadLetterIndex("all")
		p.ZAdd(ctx, all, z)
		p.ZRemRangeByScore(ctx, all, "-inf", cutoff)
		if dl.FlowID != "" {
			fk := s.deadLettersOfFlow(dl.FlowID)
			p.ZAdd(ctx, fk, z)
			p.ZRemRangeByScore(ctx, fk, "-inf", cutoff)
			// The index outlives its newest entry's hash; a flow whose dead letters all
			// expired leaves no index behind.
			p.PExpireAt(ctx, fk, latest(now, dl.At).Add(pol.Retention))
		}
		return nil
	})
	if err != nil {
		return added, fmt.Errorf("index dead letter %s: %w", dl.ID, err)
	}
	if pol.MaxCount > 0 {
		if err := s.trimDeadLetters(ctx, pol.MaxCount); err != nil {
			return added, err
		}
	}
	return added, nil
}

func latest(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// trimDeadLetters deletes the oldest dead letters beyond maxCount.
func (s *Store) trimDeadLetters(ctx context.Context, maxCount int) error {
	all := s.deadLetterIndex("all")
	n, err := s.rdb.ZCard(ctx, all).Result()
	if err != nil {
		return fmt.Errorf("count dead letters: %w", err)
	}
	if n <= int64(maxCount) {
		return nil
	}
	ids, err := s.rdb.ZRange(ctx, all, 0, n-int64(maxCount)-1).Result()
	if err != nil {
		return fmt.Errorf("oldest dead letters: %w", err)
	}
	recs, err := s.deadLetterRecs(ctx, ids)
	if err != nil {
		return err
	}
	members := make([]any, len(ids))
	for i, id := range ids {
		members[i] = id
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZRem(ctx, all, members...)
		p.ZRem(ctx, s.deadLetterIndex("replaying"), members...)
		for _, dl := range recs {
			if dl != nil && dl.FlowID != "" {
				p.ZRem(ctx, s.deadLettersOfFlow(dl.FlowID), dl.ID)
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("unindex the oldest dead letters: %w", err)
	}
	// Unindexed first: a crash here leaves hashes no list shows, which expire on their own.
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, id := range ids {
			p.Del(ctx, s.deadLetterKey(id))
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete the oldest dead letters: %w", err)
	}
	return nil
}

// deadLetterRecs loads the dead letters' records without headers or value, nil where one no
// longer exists.
func (s *Store) deadLetterRecs(ctx context.Context, ids []string) ([]*DeadLetter, error) {
	out := make([]*DeadLetter, 0, len(ids))
	for chunk := range slices.Chunk(ids, 1000) {
		cmds := make([]*redis.StringCmd, len(chunk))
		_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
			for i, id := range chunk {
				cmds[i] = p.HGet(ctx, s.deadLetterKey(id), "rec")
			}
			return nil
		})
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, fmt.Errorf("load dead letters: %w", err)
		}
		for i, c := range cmds {
			raw, err := c.Bytes()
			if errors.Is(err, redis.Nil) {
				out = append(out, nil)
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("load dead letter %s: %w", chunk[i], err)
			}
			var dl DeadLetter
			if err := json.Unmarshal(raw, &dl); err != nil {
				return nil, fmt.Errorf("decode dead letter %s: %w", chunk[i], err)
			}
			out = append(out, &dl)
		}
	}
	return out, nil
}

// DeadLetter loads one dead letter with its headers and value.
func (s *Store) DeadLetter(ctx context.Context, id string) (*DeadLetter, error) {
	vals, err := s.rdb.HMGet(ctx, s.deadLetterKey(id), "rec", "headers", "value").Result()
	if err != nil {
		return nil, fmt.Errorf("load dead letter %s: %w", id, err)
	}
	return decodeDeadLetter(id, vals)
}

// decodeDeadLetter reads the fields rec, headers and value (ErrNotFound when rec is missing).
func decodeDeadLetter(id string, vals []any) (*DeadLetter, error) {
	raw, ok := vals[0].(string)
	if !ok {
		return nil, fmt.Errorf("dead letter %s: %w", id, ErrNotFound)
	}
	var dl DeadLetter
	if err := json.Unmarshal([]byte(raw), &dl); err != nil {
		return nil, fmt.Errorf("decode dead letter %s: %w", id, err)
	}
	if len(vals) < 3 {
		return &dl, nil
	}
	if h, ok := vals[1].(string); ok {
		if err := json.Unmarshal([]byte(h), &dl.Headers); err != nil {
			return nil, fmt.Errorf("decode dead letter %s headers: %w", id, err)
		}
	}
	if v, ok := vals[2].(string); ok {
		dl.Value = []byte(v)
	}
	return &dl, nil
}

// DeadLetterQuery chooses the dead letters DeadLetters lists.
type DeadLetterQuery struct {
	// All lists every dead letter, those naming no flow included; otherwise only those of
	// FlowIDs.
	All     bool
	FlowIDs []string
	// Since leaves out what was dead-lettered before (past the retention).
	Since time.Time
}

// DeadLetters lists the dead letters q chooses, newest first, without headers or value.
// There are at most the policy's MaxCount of them, so callers filter and page the list.
func (s *Store) DeadLetters(ctx context.Context, q DeadLetterQuery) ([]DeadLetter, error) {
	rng := &redis.ZRangeBy{Min: strconv.FormatInt(q.Since.UnixMilli(), 10), Max: "+inf"}
	keys := []string{s.deadLetterIndex("all")}
	if !q.All {
		keys = keys[:0]
		for _, f := range q.FlowIDs {
			keys = append(keys, s.deadLettersOfFlow(f))
		}
	}
	if len(keys) == 0 {
		return []DeadLetter{}, nil
	}
	cmds := make([]*redis.ZSliceCmd, len(keys))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.ZRevRangeByScoreWithScores(ctx, k, rng)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list dead letters: %w", err)
	}
	var entries []redis.Z
	for _, c := range cmds {
		entries = append(entries, c.Val()...)
	}
	slices.SortFunc(entries, func(a, b redis.Z) int {
		if a.Score != b.Score {
			if a.Score > b.Score {
				return -1
			}
			return 1
		}
		return strings.Compare(b.Member.(string), a.Member.(string))
	})
	ids := make([]string, 0, len(entries))
	for i, e := range entries {
		if i == 0 || e.Member != entries[i-1].Member {
			ids = append(ids, e.Member.(string))
		}
	}
	recs, err := s.deadLetterRecs(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make([]DeadLetter, 0, len(recs))
	for _, dl := range recs {
		if dl != nil {
			out = append(out, *dl)
		}
	}
	return out, nil
}

// ErrNoReplay means ResumeReplay found no replay to resume: the dead letter is open (its
// claimant died before claiming it, or is claiming it now).
var ErrNoReplay = errors.New("no replay begun")

// ClaimReplay begins replaying an open dead letter for by (who asked): it is replaying from
// now on, and until FinishReplay marks it replayed, or until its lease ends at now+lease, when
// ResumeReplay may take the replay over. It returns the dead letter with its headers and value.
// Errors: ErrReplayed, ErrReplaying (another replay holds it; the dead letter is returned),
// ErrDiscarded, ErrNotFound.
func (s *Store) ClaimReplay(ctx context.Context, id, by string, now time.Time, lease time.Duration) (*DeadLetter, error) {
	hints := s.deadLetterIndex("replaying")
	until := now.Add(lease)
	// The hint before the claim: a claim never exists without it.
	if err := s.rdb.ZAdd(ctx, hints, redis.Z{Score: msScore(until), Member: id}).Err(); err != nil {
		return nil, fmt.Errorf("claim dead letter %s: %w", id, err)
	}
	dl, err := s.claimReplay(ctx, id, by, now, until, false)
	switch {
	case err == nil:
	case errors.Is(err, ErrReplaying):
		// The holder's hint, as its claim wrote it.
		_ = s.rdb.ZAdd(ctx, hints, redis.Z{Score: msScore(*dl.LeaseUntil), Member: id}).Err()
	default:
		// Replayed, discarded or gone: nobody can claim it now, and the sweep would drop this
		// hint anyway.
		_ = s.rdb.ZRem(ctx, hints, id).Err()
	}
	return dl, err
}

// ResumeReplay takes over a replay whose lease ended by now, for another lease: the claimant
// may have died before producing the record or before marking it replayed. It returns the
// dead letter with its headers and value, or ErrReplaying (the lease runs still), ErrReplayed,
// ErrDiscarded, ErrNotFound or ErrNoReplay; its hint is then dropped or set to the lease that
// runs.
func (s *Store) ResumeReplay(ctx context.Context, id string, now time.Time, lease time.Duration) (*DeadLetter, error) {
	hints := s.deadLetterIndex("replaying")
	until := now.Add(lease)
	dl, err := s.claimReplay(ctx, id, "", now, until, true)
	switch {
	case err == nil:
		err = s.rdb.ZAdd(ctx, hints, redis.Z{Score: msScore(until), Member: id}).Err()
		if err != nil {
			return nil, fmt.Errorf("resume the replay of dead letter %s: %w", id, err)
		}
	case errors.Is(err, ErrReplaying):
		_ = s.rdb.ZAdd(ctx, hints, redis.Z{Score: msScore(*dl.LeaseUntil), Member: id}).Err()
	default:
		// A claimant may be about to claim an open dead letter, its fresh hint written: only a
		// hint that is still due goes.
		_ = dropDueHint.Run(ctx, s.rdb, []string{hints}, id, now.UnixMilli()).Err()
	}
	return dl, err
}

// dropDueHint removes member ARGV[1] of KEYS[1] if its score is at most ARGV[2].
var dropDueHint = redis.NewScript(`
local s = redis.call('ZSCORE', KEYS[1], ARGV[1])
if s and tonumber(s) <= tonumber(ARGV[2]) then
  return redis.call('ZREM', KEYS[1], ARGV[1])
end
return 0`)

func (s *Store) claimReplay(ctx context.Context, id, by string, now, until time.Time, resume bool) (*DeadLetter, error) {
	var out *DeadLetter
	err := s.changeDeadLetter(ctx, id, true, func(dl *DeadLetter) error {
		switch dl.Status {
		case DeadLetterOpen:
			if resume {
				return fmt.Errorf("dead letter %s: %w", id, ErrNoReplay)
			}
		case DeadLetterReplaying:
			if dl.LeaseUntil != nil && dl.LeaseUntil.After(now) {
				out = dl
				return ErrReplaying
			}
		case DeadLetterReplayed:
			return ErrReplayed
		case DeadLetterDiscarded:
			return ErrDiscarded
		}
		dl.Status, dl.LeaseUntil = DeadLetterReplaying, &until
		if by != "" {
			dl.ReplayedBy = by
		}
		out = dl
		return nil
	})
	return out, err
}

// FinishReplay marks a replaying dead letter replayed at now, once its record was produced.
// A dead letter replayed already is returned as it is.
func (s *Store) FinishReplay(ctx context.Context, id string, now time.Time) (*DeadLetter, error) {
	var out *DeadLetter
	err := s.changeDeadLetter(ctx, id, false, func(dl *DeadLetter) error {
		out = dl
		switch dl.Status {
		case DeadLetterReplayed:
			return errUnchanged
		case DeadLetterReplaying:
			at := now
			dl.Status, dl.LeaseUntil, dl.ReplayedAt = DeadLetterReplayed, nil, &at
			return nil
		}
		return fmt.Errorf("dead letter %s is %s, not replaying: %w", id, dl.Status, ErrConflict)
	})
	if err != nil {
		return nil, err
	}
	if err := s.rdb.ZRem(ctx, s.deadLetterIndex("replaying"), id).Err(); err != nil {
		return out, fmt.Errorf("dead letter %s replayed, its hint left: %w", id, err)
	}
	return out, nil
}

// StaleReplays lists up to n dead letters whose replay lease has ended by now (or whose
// claimant died before claiming): what ResumeReplay is for.
func (s *Store) StaleReplays(ctx context.Context, now time.Time, n int) ([]string, error) {
	ids, err := s.rdb.ZRangeByScore(ctx, s.deadLetterIndex("replaying"), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(n),
	}).Result()
	if err != nil {
		return nil, fmt.Errorf("stale replays: %w", err)
	}
	return ids, nil
}

// DiscardDeadLetter marks an open dead letter discarded by by at now: it is kept, listed with
// that status, until the retention ends, and never replayed. A discarded one is returned as it
// is; ErrReplayed and ErrReplaying say it was replayed or is being replayed.
func (s *Store) DiscardDeadLetter(ctx context.Context, id, by string, now time.Time) (*DeadLetter, error) {
	var out *DeadLetter
	err := s.changeDeadLetter(ctx, id, false, func(dl *DeadLetter) error {
		out = dl
		switch dl.Status {
		case DeadLetterDiscarded:
			return errUnchanged
		case DeadLetterReplaying:
			return ErrReplaying
		case DeadLetterReplayed:
			return ErrReplayed
		}
		at := now
		dl.Status, dl.DiscardedBy, dl.DiscardedAt = DeadLetterDiscarded, by, &at
		return nil
	})
	if err != nil {
		return out, err
	}
	return out, nil
}

// errUnchanged tells changeDeadLetter that decide changed nothing and all is well.
var errUnchanged = errors.New("unchanged")

// changeDeadLetter applies decide to the dead letter's record atomically (with its headers and
// value loaded when full). decide's error is returned as it is, nothing written; errUnchanged
// writes nothing and returns nil.
func (s *Store) changeDeadLetter(ctx context.Context, id string, full bool, decide func(dl *DeadLetter) error) error {
	key := s.deadLetterKey(id)
	fields := []string{"rec"}
	if full {
		fields = append(fields, "headers", "value")
	}
	var decided error
	err := s.watch(ctx, func(tx *redis.Tx) error {
		decided = nil
		vals, err := tx.HMGet(ctx, key, fields...).Result()
		if err != nil {
			return err
		}
		dl, err := decodeDeadLetter(id, vals)
		if err != nil {
			decided = err
			return nil
		}
		if decided = decide(dl); decided != nil {
			return nil
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, "rec", mustJSON(dl))
			return nil
		})
		return err
	}, key)
	if err != nil {
		return fmt.Errorf("change dead letter %s: %w", id, err)
	}
	if errors.Is(decided, errUnchanged) {
		return nil
	}
	return decided
}
