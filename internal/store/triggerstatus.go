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

// A flow started before its partner topic existed reads that topic from its first record once
// it appears: everything on it was produced after the start. The router remembers that here
// until the group has offsets of its own, so a router restarting in between does not start the
// group at the topic's end instead.
//
//	P flow:{<fid>}:awaited   string   the partner topic the flow waits for

func (s *Store) awaitedKey(flowID string) string {
	return s.tagged("flow", keyID(flowID), "awaited")
}

// AwaitPartnerTopic records that flowID started before its partner topic existed.
func (s *Store) AwaitPartnerTopic(ctx context.Context, flowID, topic string) error {
	if err := s.rdb.Set(ctx, s.awaitedKey(flowID), topic, 0).Err(); err != nil {
		return fmt.Errorf("note that flow %s awaits topic %s: %w", flowID, topic, err)
	}
	return nil
}

// PartnerTopicAwaited reports whether flowID started before topic existed and has not read it yet.
func (s *Store) PartnerTopicAwaited(ctx context.Context, flowID, topic string) (bool, error) {
	got, err := s.rdb.Get(ctx, s.awaitedKey(flowID)).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("load whether flow %s awaits its topic: %w", flowID, err)
	}
	return got == topic, nil
}

// ForgetAwaitedTopic drops the note (the group has offsets now, or the flow stopped).
func (s *Store) ForgetAwaitedTopic(ctx context.Context, flowID string) error {
	if err := s.rdb.Del(ctx, s.awaitedKey(flowID)).Err(); err != nil {
		return fmt.Errorf("forget the awaited topic of flow %s: %w", flowID, err)
	}
	return nil
}
