// Package deadletters keeps the dead letters of flowd's topics where operators can find them
// and act on them. The router and the runners copy a record they can never process to
// flowd.dlq (kafkax.DeadLetters); the indexer here consumes that topic in its own consumer
// group and stores each dead letter in Redis (internal/store), by flow and by time, for a
// retention and up to a number; the control plane lists, shows, replays and discards them
// through the Service.
//
// Delivery: at least once, and idempotent. A dead letter's offset is committed only once it is
// stored; storing it again after a redelivery changes nothing (its id is its place on the
// topic). A replay re-produces the original record to its original topic, signed anew. It is
// claimed in Redis before the record is produced and marked replayed once Kafka acknowledged
// it, so a second replay is refused instead of producing. A replay whose process died in
// between (or whose produce failed) is finished by the sweep once its lease ran out, which may
// produce the record a second time: ingest records, work items and results carry their
// execution and the router and the runners deduplicate by it, so that is harmless.
//
// Only records a flowd role wrote are replayed (their original signature verified when they
// were indexed): replaying signs them anew, which must never lend flowd's authority to a
// record someone else put on a topic. Such records, and those naming no flow, are shown to
// administrators only.
package deadletters

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/consume"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/store"
)

// Defaults of Config.
const (
	DefaultRetention      = 7 * 24 * time.Hour
	DefaultMaxCount       = 10000
	DefaultMaxValueBytes  = 256 << 10
	DefaultLease          = time.Minute
	DefaultProduceTimeout = 15 * time.Second
	// MaxReplay bounds how many dead letters one call of ReplayMany replays.
	MaxReplay = 1000
	// maxReason bounds the reason kept of a dead letter.
	maxReason = 2048
)

// HeaderReplayOf names, on a replayed record, the dead letter it replays.
const HeaderReplayOf = "flowd-replay-of"

// Errors of Replay besides the store's (store.ErrReplayed, store.ErrReplaying,
// store.ErrDiscarded, store.ErrNotFound).
var (
	// ErrNotReplayable wraps why a dead letter cannot be replayed (NotReplayable).
	ErrNotReplayable = errors.New("dead letter cannot be replayed")
	// ErrPending means the replay is claimed but its record was not acknowledged yet: the
	// sweep produces it once the lease ran out.
	ErrPending = errors.New("replay not acknowledged yet; it is retried")
)

// Store is what dead letters need of Redis; *store.Store provides it.
type Store interface {
	AddDeadLetter(ctx context.Context, dl *store.DeadLetter, pol store.DeadLetterPolicy, now time.Time) (bool, error)
	DeadLetter(ctx context.Context, id string) (*store.DeadLetter, error)
	DeadLetters(ctx context.Context, q store.DeadLetterQuery) ([]store.DeadLetter, error)
	ClaimReplay(ctx context.Context, id, by string, now time.Time, lease time.Duration) (*store.DeadLetter, error)
	ResumeReplay(ctx context.Context, id string, now time.Time, lease time.Duration) (*store.DeadLetter, error)
	FinishReplay(ctx context.Context, id string, now time.Time) (*store.DeadLetter, error)
	StaleReplays(ctx context.Context, now time.Time, n int) ([]string, error)
	DiscardDeadLetter(ctx context.Context, id, by string, now time.Time) (*store.DeadLetter, error)
}

var _ Store = (*store.Store)(nil)

// Config configures the Service; zero values take the defaults.
type Config struct {
	Kafka  kafkax.Config // RecordKeys verify dead letters and sign replays
	Store  Store
	Writer kafkax.Writer // produces replays (acks=all: kafkax.Producer)
	Log    *slog.Logger
	// GroupID is the indexer's consumer group [Kafka.Group("deadletters")].
	GroupID string
	// Retention is how long a dead letter is kept [7 days]; MaxCount how many at most [10,000],
	// the oldest going first.
	Retention time.Duration
	MaxCount  int
	// MaxValueBytes bounds the original value kept [256 KiB]; a longer one is kept truncated
	// and cannot be replayed.
	MaxValueBytes int
	// Lease is how long a replay may take before the sweep takes it over [1 minute]; it must be
	// longer than ProduceTimeout [15 s].
	Lease          time.Duration
	ProduceTimeout time.Duration
	// Concurrency bounds dead letters being indexed at once [8].
	Concurrency int
	Now         func() time.Time
}

// Service indexes dead letters (Run) and lets the control plane act on them.
type Service struct {
	cfg     Config
	log     *slog.Logger
	topic   string
	ready   chan struct{}
	running atomic.Bool
}

// New checks cfg and builds the Service; Run starts its indexer and sweep.
func New(cfg Config) (*Service, error) {
	switch {
	case cfg.Store == nil:
		return nil, errors.New("deadletters: no store")
	case cfg.Writer == nil:
		return nil, errors.New("deadletters: no kafka writer")
	case cfg.Kafka.RecordKeys == nil:
		return nil, errors.New("deadletters: no record keys (" + busauth.EnvKey + ")")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.GroupID == "" {
		cfg.GroupID = cfg.Kafka.Group("deadletters")
	}
	if cfg.Retention <= 0 {
		cfg.Retention = DefaultRetention
	}
	if cfg.MaxCount <= 0 {
		cfg.MaxCount = DefaultMaxCount
	}
	if cfg.MaxValueBytes <= 0 {
		cfg.MaxValueBytes = DefaultMaxValueBytes
	}
	if cfg.ProduceTimeout <= 0 {
		cfg.ProduceTimeout = DefaultProduceTimeout
	}
	if cfg.Lease <= 0 {
		cfg.Lease = max(DefaultLease, 2*cfg.ProduceTimeout)
	}
	if cfg.Lease <= cfg.ProduceTimeout {
		return nil, fmt.Errorf("deadletters: the replay lease %s must be longer than the produce timeout %s", cfg.Lease, cfg.ProduceTimeout)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = 8
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Service{cfg: cfg, log: cfg.Log.With("role", "deadletters"), topic: cfg.Kafka.Topic(envelope.TopicDLQ), ready: make(chan struct{})}, nil
}

func (s *Service) now() time.Time { return s.cfg.Now().UTC() }

func (s *Service) policy() store.DeadLetterPolicy {
	return store.DeadLetterPolicy{Retention: s.cfg.Retention, MaxCount: s.cfg.MaxCount}
}

// Ready is closed once Run consumes the dead-letter topic.
func (s *Service) Ready() <-chan struct{} { return s.ready }

// Run indexes the dead-letter topic and finishes interrupted replays until ctx ends, then lets
// the dead letters being indexed finish and commits them.
func (s *Service) Run(ctx context.Context) error {
	if !s.running.CompareAndSwap(false, true) {
		return errors.New("deadletters: Run called twice")
	}
	if err := kafkax.EnsureTopics(ctx, s.cfg.Kafka, envelope.TopicDLQ); err != nil {
		return fmt.Errorf("deadletters: create topics: %w", err)
	}
	reader := kafka.NewReader(s.cfg.Kafka.GroupReader(kafka.ReaderConfig{
		GroupID:     s.cfg.GroupID,
		GroupTopics: []string{s.topic},
		StartOffset: kafka.FirstOffset,
		MaxWait:     500 * time.Millisecond,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			s.log.Warn("kafka consumer: " + fmt.Sprintf(msg, args...))
		}),
	}))
	var wg sync.WaitGroup
	wg.Go(func() { s.sweep(ctx) })
	close(s.ready)
	s.log.Info("indexing dead letters", "topic", s.topic, "group", s.cfg.GroupID, "retention", s.cfg.Retention, "max", s.cfg.MaxCount)
	consume.Run(ctx, consume.Config{
		Name: "dead letters", Reader: reader, Log: s.log, Concurrency: s.cfg.Concurrency, Ordered: true,
		Handle: func(stop, work context.Context, m kafka.Message) bool {
			b := backoff.New(100*time.Millisecond, 5*time.Second)
			for {
				err := s.index(work, m)
				if err == nil {
					return true
				}
				if work.Err() != nil {
					return false
				}
				s.log.Error("indexing a dead letter failed, will retry", "partition", m.Partition, "offset", m.Offset, "err", err)
				if !b.Wait(stop) {
					return false
				}
			}
		},
	})
	if err := reader.Close(); err != nil {
		s.log.Warn("closing kafka reader", "err", err)
	}
	wg.Wait()
	return nil
}

// ID is the id of the dead letter at partition/offset of the dead-letter topic.
func ID(partition int, offset int64) string {
	return strconv.Itoa(partition) + "-" + strconv.FormatInt(offset, 10)
}

// index stores the dead letter m (a record of the dead-letter topic).
func (s *Service) index(ctx context.Context, m kafka.Message) error {
	if err := s.cfg.Kafka.RecordKeys.Verify(m); err != nil {
		// Not written by a flowd role: nothing to show an operator as flowd's, nothing to replay.
		s.log.Warn("record on the dead-letter topic not written by a flowd role: not indexed",
			"partition", m.Partition, "offset", m.Offset, "err", err)
		return nil
	}
	orig, reason, ok := kafkax.Original(m)
	if !ok {
		s.log.Warn("record on the dead-letter topic without its origin: indexed for administrators, not replayable",
			"partition", m.Partition, "offset", m.Offset)
	}
	dl := &store.DeadLetter{
		ID: ID(m.Partition, m.Offset), Reason: clip(reason, maxReason),
		Topic: orig.Topic, Partition: orig.Partition, Offset: orig.Offset, Key: orig.Key,
		ValueBytes: len(orig.Value), At: m.Time.UTC(),
		Authentic: ok && s.cfg.Kafka.RecordKeys.Verify(orig) == nil,
	}
	if dl.At.IsZero() {
		dl.At = s.now()
	}
	// Ingest records, work items and results all name their flow and execution. Only a
	// record a flowd role wrote is believed: the flow decides who sees the dead letter.
	var names struct {
		FlowID      string `json:"flowId"`
		ExecutionID string `json:"executionId"`
	}
	if json.Unmarshal(orig.Value, &names) == nil {
		dl.ExecutionID = clip(names.ExecutionID, 256)
		if dl.Authentic {
			dl.FlowID = names.FlowID
		}
	}
	for _, h := range orig.Headers {
		if h.Key != busauth.HeaderName { // a replay is signed anew
			dl.Headers = append(dl.Headers, store.Header{Key: h.Key, Value: h.Value})
		}
		if h.Key == envelope.HeaderParked && dl.Authentic {
			var pk envelope.Parked
			if json.Unmarshal(h.Value, &pk) == nil && pk.ExecutionID == names.ExecutionID && pk.FlowID == names.FlowID {
				dl.Parked = &pk
			}
		}
	}
	dl.Value = orig.Value
	if len(dl.Value) > s.cfg.MaxValueBytes {
		dl.Value, dl.Truncated = dl.Value[:s.cfg.MaxValueBytes], true
	}
	added, err := s.cfg.Store.AddDeadLetter(ctx, dl, s.policy(), s.now())
	if err != nil {
		return err
	}
	if added {
		s.log.Info("dead letter indexed", "id", dl.ID, "topic", dl.Topic, "flow", dl.FlowID, "execution", dl.ExecutionID, "reason", dl.Reason)
	}
	return nil
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}

// NotReplayable says why dl cannot be replayed, or "" when it can.
func (s *Service) NotReplayable(dl *store.DeadLetter) string {
	switch {
	case dl.Topic == "":
		return "the dead letter does not say where its record came from"
	case !s.replayableTopic(dl.Topic):
		return fmt.Sprintf("records of %s are not replayed: only flowd's ingest, work and result topics are", dl.Topic)
	case !dl.Authentic:
		return "the record was not written by a flowd role: replaying would sign it as flowd's"
	case dl.Truncated:
		return fmt.Sprintf("the record's value (%d bytes) was kept only in part", dl.ValueBytes)
	}
	return ""
}

func (s *Service) replayableTopic(topic string) bool {
	k := s.cfg.Kafka
	return topic == k.Topic(envelope.TopicIngest) || topic == k.Topic(envelope.TopicResults) ||
		(strings.HasPrefix(topic, k.Topic(envelope.TopicStepsPrefix)) && len(topic) > len(k.Topic(envelope.TopicStepsPrefix)))
}

// Filter narrows a list of dead letters; empty fields match everything.
type Filter struct {
	ExecutionID string
	Reason      string // a part of the reason, in any case
	Topic       string // the original topic, by its full name or without the topic prefix
	Status      string
}

func (s *Service) matches(dl *store.DeadLetter, f Filter) bool {
	return (f.Status == "" || dl.Status == f.Status) && (f.ExecutionID == "" || dl.ExecutionID == f.ExecutionID) &&
		(f.Topic == "" || dl.Topic == f.Topic || dl.Topic == s.cfg.Kafka.Topic(f.Topic)) &&
		(f.Reason == "" || strings.Contains(strings.ToLower(dl.Reason), strings.ToLower(f.Reason)))
}

// List returns the dead letters in scope that f matches, newest first, without their headers
// and values. scope.Since is set to the retention.
func (s *Service) List(ctx context.Context, scope store.DeadLetterQuery, f Filter) ([]store.DeadLetter, error) {
	scope.Since = s.now().Add(-s.cfg.Retention)
	all, err := s.cfg.Store.DeadLetters(ctx, scope)
	if err != nil {
		return nil, err
	}
	out := all[:0]
	for i := range all {
		if s.matches(&all[i], f) {
			out = append(out, all[i])
		}
	}
	return out, nil
}

// Get loads one dead letter with its headers and value.
func (s *Service) Get(ctx context.Context, id string) (*store.DeadLetter, error) {
	return s.cfg.Store.DeadLetter(ctx, id)
}

// Discard marks a dead letter discarded by by (see store.DiscardDeadLetter). Discarding a
// parked step's dead letter fails the step: its failure goes to the results topic, where the
// router applies it as the step's last attempt (its error port, else the execution fails). An
// error wrapping ErrPending says Kafka did not acknowledge that failure: the dead letter is
// discarded, and discarding it again produces the failure again (the router applies it once).
func (s *Service) Discard(ctx context.Context, id, by string) (*store.DeadLetter, error) {
	dl, err := s.cfg.Store.DiscardDeadLetter(ctx, id, by, s.now())
	if err != nil || dl.Parked == nil {
		return dl, err
	}
	res := dl.Parked.Failed(&envelope.Error{Code: envelope.CodeDeadLetterDiscarded,
		Message: fmt.Sprintf("the step's dead letter %s was discarded (%s)", id, dl.Reason)}, s.now())
	val, err := json.Marshal(res)
	if err != nil {
		return dl, fmt.Errorf("encode the failure of the parked step: %w", err)
	}
	m := kafka.Message{Topic: s.cfg.Kafka.Topic(envelope.TopicResults), Key: []byte(res.ExecutionID), Value: val}
	s.cfg.Kafka.RecordKeys.Sign(&m)
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ProduceTimeout)
	defer cancel()
	if err := s.cfg.Writer.WriteMessages(ctx, m); err != nil {
		return dl, fmt.Errorf("%w: failing the parked step: %w", ErrPending, err)
	}
	s.log.Info("dead letter of a parked step discarded: the step fails", "id", id, "flow", dl.FlowID, "execution", dl.ExecutionID, "node", dl.Parked.NodeID, "by", by)
	return dl, nil
}

// Replay re-produces the dead letter's original record to its original topic, signed anew,
// and returns the dead letter replayed. A dead letter replayed or being replayed is not
// produced again: store.ErrReplayed or store.ErrReplaying say so. ErrPending returns the dead
// letter claimed whose record Kafka did not acknowledge in time: the sweep retries it.
func (s *Service) Replay(ctx context.Context, id, by string) (*store.DeadLetter, error) {
	dl, err := s.cfg.Store.DeadLetter(ctx, id)
	if err != nil {
		return nil, err
	}
	if why := s.NotReplayable(dl); why != "" {
		return dl, fmt.Errorf("%w: %s", ErrNotReplayable, why)
	}
	dl, err = s.cfg.Store.ClaimReplay(ctx, id, by, s.now(), s.cfg.Lease)
	if err != nil {
		return dl, err
	}
	done, err := s.produce(ctx, dl)
	if err != nil {
		return dl, err
	}
	return done[0], nil
}

// Report counts what ReplayMany did.
type Report struct {
	Replayed        int      `json:"replayed"`
	AlreadyReplayed int      `json:"alreadyReplayed"`
	InProgress      int      `json:"inProgress"`
	Discarded       int      `json:"discarded"`
	NotReplayable   int      `json:"notReplayable"`
	Gone            int      `json:"gone"`    // expired since they were listed
	Pending         int      `json:"pending"` // claimed, not acknowledged yet: retried by the sweep
	ReplayedIDs     []string `json:"replayedIds"`
}

// ReplayMany replays dls (at most MaxReplay of them, listed by List), each as Replay does,
// their records produced together in their order.
func (s *Service) ReplayMany(ctx context.Context, dls []store.DeadLetter, by string) (Report, error) {
	rep := Report{ReplayedIDs: []string{}}
	if len(dls) > MaxReplay {
		return rep, fmt.Errorf("deadletters: %d dead letters to replay, at most %d at once", len(dls), MaxReplay)
	}
	now := s.now()
	var claimed []*store.DeadLetter
	for i := range dls {
		if s.NotReplayable(&dls[i]) != "" {
			rep.NotReplayable++
			continue
		}
		dl, err := s.cfg.Store.ClaimReplay(ctx, dls[i].ID, by, now, s.cfg.Lease)
		switch {
		case err == nil:
			claimed = append(claimed, dl)
		case errors.Is(err, store.ErrReplayed):
			rep.AlreadyReplayed++
		case errors.Is(err, store.ErrReplaying):
			rep.InProgress++
		case errors.Is(err, store.ErrDiscarded):
			rep.Discarded++
		case errors.Is(err, store.ErrNotFound):
			rep.Gone++
		default:
			// What was claimed is produced by the sweep once its lease ran out.
			rep.Pending = len(claimed)
			return rep, err
		}
	}
	if len(claimed) == 0 {
		return rep, nil
	}
	done, err := s.produce(ctx, claimed...)
	for _, dl := range done {
		rep.ReplayedIDs = append(rep.ReplayedIDs, dl.ID)
	}
	rep.Replayed, rep.Pending = len(done), len(claimed)-len(done)
	if errors.Is(err, ErrPending) {
		s.log.Warn("replays not acknowledged yet; the sweep retries them", "pending", rep.Pending, "err", err)
		err = nil
	}
	return rep, err
}

// record is the original record of dl as it is replayed.
func (s *Service) record(dl *store.DeadLetter) kafka.Message {
	m := kafka.Message{Topic: dl.Topic, Key: dl.Key, Value: dl.Value, Headers: make([]kafka.Header, 0, len(dl.Headers)+2)}
	for _, h := range dl.Headers {
		if h.Key != HeaderReplayOf {
			m.Headers = append(m.Headers, kafka.Header{Key: h.Key, Value: h.Value})
		}
	}
	m.Headers = append(m.Headers, kafka.Header{Key: HeaderReplayOf, Value: []byte(dl.ID)})
	s.cfg.Kafka.RecordKeys.Sign(&m)
	return m
}

// produce writes the claimed dead letters' records, then marks them replayed, and returns
// those marked. It outlives a caller that goes away (an HTTP client hanging up), within
// ProduceTimeout. An error wrapping ErrPending leaves the others to the sweep.
func (s *Service) produce(ctx context.Context, dls ...*store.DeadLetter) ([]*store.DeadLetter, error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ProduceTimeout)
	defer cancel()
	msgs := make([]kafka.Message, len(dls))
	for i, dl := range dls {
		msgs[i] = s.record(dl)
	}
	if err := s.cfg.Writer.WriteMessages(ctx, msgs...); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPending, err)
	}
	now := s.now()
	done := make([]*store.DeadLetter, 0, len(dls))
	for _, dl := range dls {
		fin, err := s.cfg.Store.FinishReplay(ctx, dl.ID, now)
		if err != nil {
			return done, fmt.Errorf("%w: %w", ErrPending, err)
		}
		done = append(done, fin)
		s.log.Info("dead letter replayed", "id", dl.ID, "topic", dl.Topic, "flow", dl.FlowID, "execution", dl.ExecutionID, "by", dl.ReplayedBy)
	}
	return done, nil
}

// sweep finishes replays whose lease ran out, every half lease, until ctx ends.
func (s *Service) sweep(ctx context.Context) {
	backoff.Every(ctx, s.cfg.Lease/2, func() {
		if err := s.resumeStale(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("finishing interrupted replays failed; retrying later", "err", err)
		}
	})
}

// resumeStale takes over the replays whose lease ran out and produces their records again,
// a bounded number of them per call.
func (s *Service) resumeStale(ctx context.Context) error {
	for range 10 {
		now := s.now()
		ids, err := s.cfg.Store.StaleReplays(ctx, now, 100)
		if err != nil || len(ids) == 0 {
			return err
		}
		var taken []*store.DeadLetter
		for _, id := range ids {
			dl, err := s.cfg.Store.ResumeReplay(ctx, id, now, s.cfg.Lease)
			switch {
			case err == nil:
				taken = append(taken, dl)
				s.log.Info("resuming an interrupted replay", "id", id, "by", dl.ReplayedBy)
			case errors.Is(err, store.ErrReplaying), errors.Is(err, store.ErrReplayed), errors.Is(err, store.ErrDiscarded),
				errors.Is(err, store.ErrNotFound), errors.Is(err, store.ErrNoReplay):
				// Finished, taken over or never claimed: its hint is gone or set right now.
			default:
				return err
			}
		}
		if len(taken) > 0 {
			if _, err := s.produce(ctx, taken...); err != nil {
				return err
			}
		}
	}
	return nil
}
