// Package events carries flow lifecycle events on the flowd.events topic. Every role consumes
// them, mostly to invalidate caches; they are keyed by flow id so one flow's events stay in order.
package events

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/consume"
	"github.com/flowd/flowd/internal/kafkax"
)

// TopicName is the unprefixed topic; the full name is kafkax.Config.Topic(TopicName).
const TopicName = "events"

// HeaderType is the record header that repeats Event.Type, so consumers can filter unparsed.
const HeaderType = "type"

// Event types.
const (
	FlowCreated  = "flow.created"
	FlowUpdated  = "flow.updated"
	FlowDeleted  = "flow.deleted"
	FlowStarting = "flow.starting"
	FlowStarted  = "flow.started"
	FlowStopping = "flow.stopping"
	FlowStopped  = "flow.stopped"
	// FlowFailed: a router could not run the flow and marked it failed (Reason says why).
	FlowFailed = "flow.failed"
	// ExecutionRetry asks the router to run failed execution ExecutionID again as RetryID,
	// from its failed steps (Revision: the flow revision to run, 0 for the one it ran).
	ExecutionRetry = "execution.retry"
)

// Event is one lifecycle event, JSON-encoded as the record value.
type Event struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	FlowID   string `json:"flowId"`
	Revision int    `json:"revision,omitempty"`
	Status   string `json:"status,omitempty"`
	Actor    string `json:"actor,omitempty"`
	Tenant   string `json:"tenant,omitempty"`
	Reason   string `json:"reason,omitempty"` // flow.failed: the status reason's code
	// ExecutionID and RetryID: execution.retry's failed execution and the one that retries it.
	ExecutionID string    `json:"executionId,omitempty"`
	RetryID     string    `json:"retryId,omitempty"`
	At          time.Time `json:"at"`
}

// Publisher publishes events; it returns once they are durable.
type Publisher interface {
	Publish(ctx context.Context, evs ...Event) error
}

// KafkaPublisher publishes to a Kafka topic through a kafkax.Producer.
type KafkaPublisher struct {
	w     *kafkax.Producer
	topic string
	keys  *busauth.Keyring
}

var _ Publisher = (*KafkaPublisher)(nil)

// NewKafkaPublisher publishes to cfg.Topic(TopicName) through w, signing every event with
// cfg.RecordKeys. w writes with acks=all, so a published event is durable.
func NewKafkaPublisher(w *kafkax.Producer, cfg kafkax.Config) *KafkaPublisher {
	return &KafkaPublisher{w: w, topic: cfg.Topic(TopicName), keys: cfg.RecordKeys}
}

// Publish writes evs in order, filling an empty ID and At, and returns after the broker
// acknowledged all of them. The caller's events are not modified.
func (p *KafkaPublisher) Publish(ctx context.Context, evs ...Event) error {
	if len(evs) == 0 {
		return nil
	}
	if p.keys == nil {
		return errors.New("events: no record keys to sign events with")
	}
	msgs := make([]kafka.Message, len(evs))
	now := time.Now().UTC()
	for i, ev := range evs {
		if ev.Type == "" {
			return fmt.Errorf("events: event %d has no type", i)
		}
		if ev.ID == "" {
			id, err := newID()
			if err != nil {
				return err
			}
			ev.ID = id
		}
		if ev.At.IsZero() {
			ev.At = now
		}
		val, err := json.Marshal(ev)
		if err != nil {
			return fmt.Errorf("events: encode %s: %w", ev.Type, err)
		}
		msgs[i] = kafka.Message{
			Topic:   p.topic,
			Key:     []byte(ev.FlowID),
			Value:   val,
			Headers: []kafka.Header{{Key: HeaderType, Value: []byte(ev.Type)}},
			Time:    ev.At,
		}
		p.keys.Sign(&msgs[i])
	}
	if err := p.w.WriteMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("events: publish %d event(s) to %s: %w", len(msgs), p.topic, err)
	}
	return nil
}

func newID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("events: event id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// Handler handles one event. An error stops Consume and leaves the event uncommitted, so it
// is delivered again after a restart: handlers must be idempotent.
type Handler func(context.Context, Event) error

// Consume reads cfg.Topic(TopicName) and calls fn for each event, one at a time, until ctx
// ends (then it returns nil) or fn fails (then it returns fn's error).
//
// With a groupID the group shares the partitions and an event is committed only after fn
// returned nil (at-least-once); a new group starts at the oldest event. With groupID == ""
// every caller sees every event from the moment Consume resolved the partition ends onwards,
// with nothing committed: the broadcast that cache invalidation needs in every process.
// Undecodable records are logged and skipped: retrying cannot fix them.
func Consume(ctx context.Context, cfg kafkax.Config, groupID string, fn Handler) error {
	if len(cfg.Brokers) == 0 {
		return errors.New("events: no brokers configured")
	}
	if cfg.RecordKeys == nil {
		return errors.New("events: no record keys to verify events with")
	}
	if groupID == "" {
		return consumeBroadcast(ctx, cfg, nil, fn)
	}
	r := kafka.NewReader(cfg.GroupReader(kafka.ReaderConfig{
		GroupID:     groupID,
		Topic:       cfg.Topic(TopicName),
		StartOffset: kafka.FirstOffset,
		MaxWait:     time.Second,
	}))
	defer r.Close()
	// One event at a time, in order; a failed handler stops the loop with its event
	// uncommitted.
	runCtx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	consume.Run(runCtx, consume.Config{
		Name: "events " + groupID, Reader: r, Concurrency: 1, Ordered: true,
		Handle: func(_, work context.Context, m kafka.Message) bool {
			if err := handle(work, cfg.RecordKeys, m, fn); err != nil {
				stop(err)
				return false
			}
			return true
		},
	})
	if err := context.Cause(runCtx); err != nil && ctx.Err() == nil {
		return err
	}
	return nil
}

func handle(ctx context.Context, keys *busauth.Keyring, m kafka.Message, fn Handler) error {
	if err := keys.Verify(m); err != nil {
		// Not published by a flowd role: acting on it would let anyone start, stop or evict
		// flows in every role's cache.
		slog.WarnContext(ctx, "skipping unauthenticated event", "topic", m.Topic,
			"partition", m.Partition, "offset", m.Offset, "err", err)
		return nil
	}
	var ev Event
	if err := json.Unmarshal(m.Value, &ev); err != nil {
		slog.WarnContext(ctx, "skipping undecodable event", "topic", m.Topic,
			"partition", m.Partition, "offset", m.Offset, "err", err)
		return nil
	}
	if err := fn(ctx, ev); err != nil {
		return fmt.Errorf("events: handle %s %s (%s/%d@%d): %w",
			ev.Type, ev.ID, m.Topic, m.Partition, m.Offset, err)
	}
	return nil
}

// ConsumeBroadcast is Consume without a group (every caller sees every event). ready, when not
// nil, is called once the partition ends are resolved: every event published after that call
// reaches fn, which is what a role needs before it says it is ready.
func ConsumeBroadcast(ctx context.Context, cfg kafkax.Config, ready func(), fn Handler) error {
	if len(cfg.Brokers) == 0 {
		return errors.New("events: no brokers configured")
	}
	if cfg.RecordKeys == nil {
		return errors.New("events: no record keys to verify events with")
	}
	return consumeBroadcast(ctx, cfg, ready, fn)
}

// consumeBroadcast reads every partition from its current end without a group. A kafka-go
// Reader without GroupID reads exactly one partition, hence one reader per partition.
func consumeBroadcast(ctx context.Context, cfg kafkax.Config, ready func(), fn Handler) error {
	topic := cfg.Topic(TopicName)
	ends, err := endOffsetsRetrying(ctx, cfg, topic)
	if ctx.Err() != nil {
		return nil // stopped while starting
	}
	if err != nil {
		return err
	}
	if ready != nil {
		ready()
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	msgs := make(chan kafka.Message)
	errc := make(chan error, len(ends))
	for part, off := range ends {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := kafka.NewReader(kafka.ReaderConfig{
				Brokers:   cfg.Brokers,
				Dialer:    cfg.Dialer(),
				Topic:     topic,
				Partition: part,
				MaxWait:   time.Second,
			})
			defer r.Close()
			if err := r.SetOffset(off); err != nil {
				errc <- fmt.Errorf("events: seek %s/%d: %w", topic, part, err)
				return
			}
			for {
				m, err := r.FetchMessage(ctx)
				if err != nil {
					if ctx.Err() == nil {
						errc <- fmt.Errorf("events: fetch %s/%d: %w", topic, part, err)
					}
					return
				}
				select {
				case msgs <- m:
				case <-ctx.Done():
					return
				}
			}
		}()
	}

	// fn runs on this goroutine only: handlers need not be safe for concurrent use.
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-errc:
			return err
		case m := <-msgs:
			if err := handle(ctx, cfg.RecordKeys, m, fn); err != nil {
				return err
			}
		}
	}
}

// endOffsets resolves the current end of every partition now rather than lazily in each
// reader, so an event published after Consume started is not skipped.
// endOffsetsRetrying retries what a broker answers while a partition's leadership settles
// (right after the topic was created, or during a leader change) for up to ten seconds.
func endOffsetsRetrying(ctx context.Context, cfg kafkax.Config, topic string) (map[int]int64, error) {
	b := backoff.New(100*time.Millisecond, time.Second)
	deadline := time.Now().Add(10 * time.Second)
	for {
		ends, err := endOffsets(ctx, cfg, topic)
		transient := errors.Is(err, kafka.NotLeaderForPartition) || errors.Is(err, kafka.LeaderNotAvailable) ||
			errors.Is(err, kafka.UnknownTopicOrPartition)
		if err == nil || !transient || time.Now().Add(b.Peek()).After(deadline) {
			return ends, err
		}
		if !b.Wait(ctx) {
			return nil, ctx.Err()
		}
	}
}

func endOffsets(ctx context.Context, cfg kafkax.Config, topic string) (map[int]int64, error) {
	tr := cfg.Transport()
	tr.MetadataTopics = []string{topic}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return nil, fmt.Errorf("events: metadata %s: %w", topic, err)
	}
	if len(md.Topics) != 1 || md.Topics[0].Error != nil || len(md.Topics[0].Partitions) == 0 {
		return nil, fmt.Errorf("events: topic %s not usable (create it with kafkax.EnsureTopics): %w",
			topic, kafka.UnknownTopicOrPartition)
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	for _, p := range md.Topics[0].Partitions {
		req.Topics[topic] = append(req.Topics[topic], kafka.LastOffsetOf(p.ID))
	}
	res, err := c.ListOffsets(ctx, req)
	if err != nil {
		return nil, fmt.Errorf("events: end offsets of %s: %w", topic, err)
	}
	ends := make(map[int]int64, len(res.Topics[topic]))
	for _, po := range res.Topics[topic] {
		if po.Error != nil {
			return nil, fmt.Errorf("events: end offset of %s/%d: %w", topic, po.Partition, po.Error)
		}
		ends[po.Partition] = po.LastOffset
	}
	return ends, nil
}
