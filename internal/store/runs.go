package store

// Run records let runners recognise a redelivered work item and answer it without running the
// step again. Kafka redelivers whatever was fetched but not committed (a crash, a rebalance, a
// commit that failed), so every work item may arrive more than once; its identity is the
// execution id, the token (one activation of a node) and the attempt the router asked for.
//
// Key layout (P is the store prefix; ids are escaped so ':' inside one cannot forge another key):
//
//	P run:{<executionId>}:<token>:<attempt>       string  the finished envelope.Result (JSON), written
//	                                                      only after the Result was acknowledged by
//	                                                      Kafka; expires after the run TTL (default 7 days)
//	P run:{<executionId>}:<token>:<attempt>:claim string  which runner is executing the item right now;
//	                                                      expires unless its holder extends it, so a
//	                                                      crashed runner blocks a redelivery only briefly
//
// A runner takes the claim before executing, extends it while the step runs, and drops it in the
// same script that stores the result. A runner that finds the claim taken waits for the result
// (or for the claim to go away) instead of running the step a second time.

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/envelope"
)

// DefaultRunTTL is how long a finished run is remembered: longer than any redelivery can lag.
const DefaultRunTTL = 7 * 24 * time.Hour

// RunKey identifies one work item.
type RunKey struct {
	ExecutionID string
	Token       string
	Attempt     int
}

func (s *Store) runKey(k RunKey) string {
	return s.tagged("run", keyID(k.ExecutionID), keyID(k.Token), strconv.Itoa(k.Attempt))
}

func (s *Store) runClaimKey(k RunKey) string { return s.runKey(k) + ":claim" }

// RunResult returns the stored result of a finished work item, or ErrNotFound.
func (s *Store) RunResult(ctx context.Context, k RunKey) (*envelope.Result, error) {
	return getJSON[envelope.Result](ctx, s.rdb, s.runKey(k))
}

// saveRunScript stores the result and drops the claim if it is still the caller's, in one step,
// so a waiter never sees the claim gone before the result is there.
var saveRunScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1`)

// SaveRunResult records the finished result of a work item for ttl (<= 0: DefaultRunTTL) and
// releases claim when it is given and still held.
func (s *Store) SaveRunResult(ctx context.Context, k RunKey, res *envelope.Result, ttl time.Duration, claim *RunClaim) error {
	if ttl <= 0 {
		ttl = DefaultRunTTL
	}
	token := ""
	if claim != nil {
		token = claim.l.token
	}
	var cmd *redis.Cmd
	err := s.pipe.do(ctx, func(p redis.Pipeliner) {
		cmd = saveRunScript.Eval(ctx, p, []string{s.runKey(k), s.runClaimKey(k)}, mustJSON(res), ttl.Milliseconds(), token)
	})
	if err == nil {
		err = cmd.Err()
	}
	if err != nil {
		return fmt.Errorf("save run %s/%s/%d: %w", k.ExecutionID, k.Token, k.Attempt, err)
	}
	return nil
}

// RunClaim is a runner's claim on executing one work item.
type RunClaim struct{ l *Lock }

// ClaimRun takes the claim on executing k for ttl. ok is false when another holder has it.
func (s *Store) ClaimRun(ctx context.Context, k RunKey, ttl time.Duration) (c *RunClaim, ok bool, err error) {
	l, ok, err := s.tryLock(ctx, s.runClaimKey(k), ttl)
	if err != nil || !ok {
		return nil, ok, err
	}
	return &RunClaim{l: l}, true, nil
}

// RunClaimed reports whether someone holds the claim on k.
func (s *Store) RunClaimed(ctx context.Context, k RunKey) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.runClaimKey(k)).Result()
	if err != nil {
		return false, fmt.Errorf("check run claim: %w", err)
	}
	return n > 0, nil
}

// extendScript renews the claim only while it is still ours.
var extendScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)

// Extend keeps the claim for another ttl. ErrLockLost means it expired and may be someone
// else's by now.
func (c *RunClaim) Extend(ctx context.Context, ttl time.Duration) error {
	n, err := extendScript.Run(ctx, c.l.rdb, []string{c.l.key}, c.l.token, ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("extend run claim: %w", err)
	}
	if n == 0 {
		return ErrLockLost
	}
	return nil
}

// Release drops the claim without a result (the runner gave the item up), so a redelivery
// does not wait for the claim to expire.
func (c *RunClaim) Release(ctx context.Context) error {
	err := c.l.Release(ctx)
	if errors.Is(err, ErrLockLost) {
		return nil // expired already: nothing to hand over
	}
	return err
}

// RunStart is what a runner learns about a work item before running it, in one round trip.
type RunStart struct {
	// Execution and Activation are the execution and the activation the item's token names
	// while the router awaits its result; nil when there is no such execution or the token is
	// not pending (never dispatched, or completed already).
	Execution  *envelope.Execution
	Activation *envelope.Activation
	// Prior is the recorded result of the item when it finished before (a redelivery).
	Prior *envelope.Result
	// Claim is this caller's claim on running the item. It is nil when Prior is set or when
	// another holder has the claim.
	Claim *RunClaim
}

// beginRunScript answers from the run record when there is one, else takes the claim.
var beginRunScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2} end
return {0}`)

// BeginRun loads, in one round trip, what a runner checks and needs before running a work
// item: the pending activation, the run record of an earlier delivery, and otherwise the claim
// on running it (for ttl). A caller that gets a claim it then does not use releases it.
func (s *Store) BeginRun(ctx context.Context, k RunKey, ttl time.Duration) (*RunStart, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, fmt.Errorf("claim token: %w", err)
	}
	token := hex.EncodeToString(b[:])
	ek := s.execKeysOf(k.ExecutionID)
	var execCmd, actCmd *redis.StringCmd
	var runCmd *redis.Cmd
	if err := s.pipe.do(ctx, func(p redis.Pipeliner) {
		execCmd = p.Get(ctx, ek.exec)
		actCmd = p.HGet(ctx, ek.pending, k.Token)
		runCmd = beginRunScript.Eval(ctx, p, []string{s.runKey(k), s.runClaimKey(k)}, token, ttl.Milliseconds())
	}); err != nil {
		return nil, fmt.Errorf("begin run %s/%s/%d: %w", k.ExecutionID, k.Token, k.Attempt, err)
	}
	st := &RunStart{}
	vals, err := runCmd.Slice()
	if err != nil || len(vals) == 0 {
		return nil, fmt.Errorf("begin run %s/%s/%d: %v %w", k.ExecutionID, k.Token, k.Attempt, vals, err)
	}
	switch n, _ := vals[0].(int64); n {
	case 1:
		raw, _ := vals[1].(string)
		var res envelope.Result
		if err := json.Unmarshal([]byte(raw), &res); err != nil {
			return nil, fmt.Errorf("decode run %s/%s/%d: %w", k.ExecutionID, k.Token, k.Attempt, err)
		}
		st.Prior = &res
	case 2:
		st.Claim = &RunClaim{l: &Lock{rdb: s.rdb, key: s.runClaimKey(k), token: token}}
	}
	if raw, err := execCmd.Bytes(); err == nil {
		var e envelope.Execution
		if err := json.Unmarshal(raw, &e); err != nil {
			return nil, fmt.Errorf("decode execution %s: %w", k.ExecutionID, err)
		}
		st.Execution = &e
	} else if !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("load execution %s: %w", k.ExecutionID, err)
	}
	if raw, err := actCmd.Bytes(); err == nil && st.Execution != nil {
		var a envelope.Activation
		if err := json.Unmarshal(raw, &a); err != nil {
			return nil, fmt.Errorf("decode activation %s of %s: %w", k.Token, k.ExecutionID, err)
		}
		st.Activation = &a
	} else if err != nil && !errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("load activation %s of %s: %w", k.Token, k.ExecutionID, err)
	}
	return st, nil
}
