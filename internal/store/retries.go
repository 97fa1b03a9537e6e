package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/events"
)

// RetryExecution records that failed execution id is retried and asks the router to run the
// retry (an execution.retry event through the outbox). The retry's id is fixed by the first
// call: asking again returns it with again set and asks the router once more, which starts
// the retry at most once (its start is a transition like any other), so a request whose
// answer was lost is safely repeated. revision 0 runs the revision the execution ran.
func (s *Store) RetryExecution(ctx context.Context, id string, revision int, ev events.Event, ttl time.Duration) (retryID string, again bool, err error) {
	sum := sha256.Sum256([]byte("retry\x00" + id))
	want := "r" + hex.EncodeToString(sum[:12])
	if ttl <= 0 {
		ttl = DefaultExecutionRetention
	}
	key := s.execKeysOf(id).exec + ":retried"
	ok, err := s.rdb.SetNX(ctx, key, want, ttl).Result()
	if err != nil {
		return "", false, fmt.Errorf("mark %s retried: %w", id, err)
	}
	retryID = want
	if !ok {
		retryID, err = s.rdb.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			retryID = want // expired in between: the same id anyway
		} else if err != nil {
			return "", false, fmt.Errorf("read retry of %s: %w", id, err)
		}
	}
	ev.Type, ev.ExecutionID, ev.RetryID, ev.Revision = events.ExecutionRetry, id, retryID, revision
	if _, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		s.enqueue(ctx, p, []events.Event{ev})
		return nil
	}); err != nil {
		return "", false, fmt.Errorf("ask for the retry of %s: %w", id, err)
	}
	return retryID, !ok, nil
}

// RetryOf returns the id of the retry of execution id, "" when it was not retried.
func (s *Store) RetryOf(ctx context.Context, id string) (string, error) {
	v, err := s.rdb.Get(ctx, s.execKeysOf(id).exec+":retried").Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read retry of %s: %w", id, err)
	}
	return v, nil
}
