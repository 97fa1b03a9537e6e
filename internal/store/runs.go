package store

// Run records let runners recognise a redelivered work item and drop it without running the
// step again. Kafka redelivers whatever was fetched but not committed (a crash, a rebalance, a
// commit that failed), so every work item may arrive more than once; its identity is the
// execution id, the token (one activation of a node) and the attempt the router asked for.
//
// A finished item's Result is on the results topic already (the record is written only after
// the broker acknowledged it), so a redelivery needs to know only that it finished. A runner
// takes the claim before executing, extends it while the step runs, and drops it in the same
// script that records the item as finished. A runner that finds the claim taken waits for the
// record (or for the claim to go away) instead of running the step a second time.

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

// RunKey identifies one work item.
type RunKey struct {
	ExecutionID string
	Token       string
	Attempt     int
}

func (k RunKey) field() string { return strconv.Itoa(k.Attempt) + "/" + k.Token }

func (s *Store) runClaimKey(k RunKey) string {
	return s.tagged("run", keyID(k.ExecutionID), keyID(k.Token), strconv.Itoa(k.Attempt), "claim")
}

// RunDone reports whether the work item finished before.
func (s *Store) RunDone(ctx context.Context, k RunKey) (bool, error) {
	ok, err := s.rdb.HExists(ctx, s.execKeysOf(k.ExecutionID).runs, k.field()).Result()
	if err != nil {
		return false, fmt.Errorf("load run %s/%s/%d: %w", k.ExecutionID, k.Token, k.Attempt, err)
	}
	return ok, nil
}

// finishRunScript records the item as finished, keeps the record for the window and drops the
// claim if it is still the caller's, in one step, so a waiter never sees the claim gone before
// the record is there.
var finishRunScript = redis.NewScript(`
redis.call('HSET', KEYS[1], ARGV[1], '')
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if ARGV[3] ~= '' and redis.call('GET', KEYS[2]) == ARGV[3] then
  redis.call('DEL', KEYS[2])
end
return 1`)

// FinishRun records that the work item's Result was acknowledged by Kafka, for window (<= 0:
// DefaultRedeliveryWindow), and releases claim when it is given and still held.
func (s *Store) FinishRun(ctx context.Context, k RunKey, window time.Duration, claim RunClaim) error {
	if window <= 0 {
		window = DefaultRedeliveryWindow
	}
	token := ""
	if c, ok := claim.(*redisClaim); ok && c != nil {
		token = c.l.token
	}
	var cmd *redis.Cmd
	err := s.pipe.do(ctx, func(p redis.Pipeliner) {
		cmd = finishRunScript.Eval(ctx, p, []string{s.execKeysOf(k.ExecutionID).runs, s.runClaimKey(k)}, k.field(), window.Milliseconds(), token)
	})
	if err == nil {
		err = cmd.Err()
	}
	if err != nil {
		return fmt.Errorf("finish run %s/%s/%d: %w", k.ExecutionID, k.Token, k.Attempt, err)
	}
	return nil
}

// RunClaim is a runner's claim on executing one work item.
type RunClaim interface {
	// Extend keeps the claim for another ttl. ErrLockLost means it expired and may be someone
	// else's by now.
	Extend(ctx context.Context, ttl time.Duration) error
	// Release drops the claim without a result (the runner gave the item up), so a redelivery
	// does not wait for the claim to expire.
	Release(ctx context.Context) error
}

// redisClaim is a RunClaim held as a Redis lock.
type redisClaim struct{ l *Lock }

// ClaimRun takes the claim on executing k for ttl. ok is false when another holder has it.
func (s *Store) ClaimRun(ctx context.Context, k RunKey, ttl time.Duration) (c RunClaim, ok bool, err error) {
	l, ok, err := s.tryLock(ctx, s.runClaimKey(k), ttl)
	if err != nil || !ok {
		return nil, ok, err
	}
	return &redisClaim{l: l}, true, nil
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

// Extend implements RunClaim.
func (c *redisClaim) Extend(ctx context.Context, ttl time.Duration) error {
	n, err := extendScript.Run(ctx, c.l.rdb, []string{c.l.key}, c.l.token, ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("extend run claim: %w", err)
	}
	if n == 0 {
		return ErrLockLost
	}
	return nil
}

// Release implements RunClaim; a claim that expired already is released.
func (c *redisClaim) Release(ctx context.Context) error {
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
	// Done says the item finished before (a redelivery): its Result is on the results topic.
	Done bool
	// Claim is this caller's claim on running the item. It is nil when Done is set or when
	// another holder has the claim.
	Claim RunClaim
}

// beginRunScript answers from the run record when there is one, else takes the claim.
var beginRunScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return 1 end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 2 end
return 0`)

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
		runCmd = beginRunScript.Eval(ctx, p, []string{ek.runs, s.runClaimKey(k)}, token, ttl.Milliseconds(), k.field())
	}); err != nil {
		return nil, fmt.Errorf("begin run %s/%s/%d: %w", k.ExecutionID, k.Token, k.Attempt, err)
	}
	st := &RunStart{}
	n, err := runCmd.Int()
	if err != nil {
		return nil, fmt.Errorf("begin run %s/%s/%d: %w", k.ExecutionID, k.Token, k.Attempt, err)
	}
	switch n {
	case 1:
		st.Done = true
	case 2:
		st.Claim = &redisClaim{l: &Lock{rdb: s.rdb, key: s.runClaimKey(k), token: token}}
	}
	if raw, err := execCmd.Bytes(); err == nil {
		var rec execRecord
		if err := json.Unmarshal(raw, &rec); err != nil {
			return nil, fmt.Errorf("decode execution %s: %w", k.ExecutionID, err)
		}
		st.Execution = &rec.Execution
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
