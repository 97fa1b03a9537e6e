package store

// Idempotency keys let a webhook caller retry a request without starting the flow twice: the
// first request with a key claims it for an execution id, and every repeat within the TTL is
// answered with that id instead of producing again.
//
// Reusing the execution id after a failure matters: a produce that timed out may still land,
// and the router recognises two records with one execution id as one execution.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Idempotency states.
const (
	IdemPending = "pending"
	IdemDone    = "done"
	IdemFailed  = "failed"
)

func (s *Store) idemKey(flowID, key string) string {
	sum := sha256.Sum256([]byte(key))
	return s.tagged("idem", keyID(flowID), hex.EncodeToString(sum[:]))
}

// claimIdemScript claims a free (or failed) key for an execution; otherwise it reports the
// state and execution id already there.
var claimIdemScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if not v then
  redis.call('SET', KEYS[1], 'pending:' .. ARGV[1], 'PX', ARGV[2])
  return {'claimed', ARGV[1]}
end
local sep = string.find(v, ':', 1, true)
local state, id = string.sub(v, 1, sep - 1), string.sub(v, sep + 1)
if state == 'failed' then
  redis.call('SET', KEYS[1], 'pending:' .. id, 'PX', ARGV[2])
  return {'claimed', id}
end
return {state, id}`)

// ClaimIdempotency claims key for flowID. When the key is new, it is claimed for executionID;
// when an earlier attempt failed, it is claimed again for that attempt's execution id. claimed
// says whether the caller now holds the key (and must call FinishIdempotency); id is the
// execution id to use or report; state is the current state when not claimed (IdemPending
// or IdemDone). lease bounds how long a claim blocks others if its holder never finishes.
func (s *Store) ClaimIdempotency(ctx context.Context, flowID, key, executionID string, lease time.Duration) (id, state string, claimed bool, err error) {
	res, err := claimIdemScript.Run(ctx, s.rdb, []string{s.idemKey(flowID, key)}, executionID, lease.Milliseconds()).StringSlice()
	if err != nil {
		return "", "", false, fmt.Errorf("claim idempotency key: %w", err)
	}
	if len(res) != 2 {
		return "", "", false, fmt.Errorf("claim idempotency key: unexpected reply %q", res)
	}
	if res[0] == "claimed" {
		return res[1], IdemPending, true, nil
	}
	return res[1], res[0], false, nil
}

// finishIdemScript moves a claim to its final state, only if the claim is still the caller's:
// after an expired lease another request may hold the key now.
var finishIdemScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == 'pending:' .. ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2] .. ':' .. ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0`)

// FinishIdempotency records the outcome of a claimed key: IdemDone after the broker
// acknowledged the record, IdemFailed when producing failed (a retry then goes through with
// the same execution id). ttl is how long the outcome is remembered.
func (s *Store) FinishIdempotency(ctx context.Context, flowID, key, executionID, state string, ttl time.Duration) error {
	if state != IdemDone && state != IdemFailed {
		return fmt.Errorf("finish idempotency key: bad state %q", state)
	}
	err := finishIdemScript.Run(ctx, s.rdb, []string{s.idemKey(flowID, key)}, executionID, state, ttl.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("finish idempotency key: %w", err)
	}
	return nil
}
