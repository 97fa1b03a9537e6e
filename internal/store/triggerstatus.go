package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// A flow's trigger status is what the router last found out about the source it consumes (for
// trigger.kafka: the partner topic's replication). It is the router's report, an opaque JSON
// document the API shows beside the flow, and it expires when no router renews it (the flow
// stopped, or no router runs).
//
//	P flow:{<fid>}:trigger   string   the report (JSON), with a TTL

func (s *Store) triggerStatusKey(flowID string) string {
	return s.tagged("flow", keyID(flowID), "trigger")
}

// SetTriggerStatus stores the router's report on a flow's trigger for ttl.
func (s *Store) SetTriggerStatus(ctx context.Context, flowID string, report []byte, ttl time.Duration) error {
	if err := s.rdb.Set(ctx, s.triggerStatusKey(flowID), report, ttl).Err(); err != nil {
		return fmt.Errorf("save the trigger status of %s: %w", flowID, err)
	}
	return nil
}

// TriggerStatus returns the last report on a flow's trigger, or nil when there is none.
func (s *Store) TriggerStatus(ctx context.Context, flowID string) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.triggerStatusKey(flowID)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("load the trigger status of %s: %w", flowID, err)
	}
	return b, nil
}
