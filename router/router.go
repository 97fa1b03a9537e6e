// Package router is the only flowd role that knows the graph. It consumes flowd.ingest, the
// partner topics of active kafka-trigger flows and flowd.results; evaluates edges and control
// nodes (router/graph); produces work items to flowd.steps.<pool>; keeps execution bookkeeping
// in Redis (store.AdvanceExecution) and detects completion; and confirms flow starts and stops
// once its partner-topic subscriptions follow them.
//
// Every consumed record is processed as: one Redis transaction (state change + a marker that
// stores the records to produce) → produce (acks=all) → commit the offset. A crash anywhere in
// between leads to a redelivery that finds the marker and only re-produces what may be missing.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/store"
)

// Defaults of Config.
const (
	DefaultStepTimeout       = 5 * time.Minute
	DefaultParkTimeout       = 7 * 24 * time.Hour
	DefaultCacheSize         = 1024
	DefaultDrainTimeout      = 10 * time.Second
	DefaultReconcileInterval = 30 * time.Second
	// DefaultMaxRecordBytes stays under kafka-go's and the broker's default 1 MiB limits.
	DefaultMaxRecordBytes = 1000000
)

// Kicker is the outbox relay, asked to publish at once after a lifecycle confirmation.
type Kicker interface{ Kick() }

// Config configures a router.
type Config struct {
	Kafka kafkax.Config
	Store Store
	Log   *slog.Logger
	// GroupID is the consumer group of flowd.ingest and flowd.results (default "flowd-router").
	// Partner topics are consumed in GroupID-<flowId>, lifecycle events in GroupID-lifecycle.
	GroupID string
	// Policy is what is kept of executions, for how long and how much of a payload; a flow's
	// history settings override its Retention, MaxCount and Succeeded.
	Policy store.ExecPolicy
	// StepTimeout sets each work item's deadline (default 5 minutes); a node's timeout
	// overrides it.
	StepTimeout time.Duration
	// Retry is the retry policy of action nodes whose flow and node set none (default
	// flowdoc.DefaultRetry).
	Retry flowdoc.RetryPolicy
	// CreatePartnerTopics creates a partner topic that does not exist when its flow starts,
	// instead of failing the start (flowd dev, whose embedded broker is a developer's).
	CreatePartnerTopics bool
	// ParkTimeout is how long a step parked on the dead-letter topic (retry.exhausted:
	// deadLetter) waits to be replayed or discarded before it fails (default 7 days, the
	// dead letters' default retention).
	ParkTimeout time.Duration
	// CacheSize bounds the compiled flow revisions kept in memory (default 1024).
	CacheSize int
	// Concurrency bounds the records each consumer processes at once (default
	// consume.DefaultConcurrency); records of one execution are processed in order.
	Concurrency int
	// DrainTimeout bounds how long in-flight records may take on shutdown (default 10 s).
	DrainTimeout time.Duration
	// ReconcileInterval is how often every flow's subscription is checked (default 30 s).
	ReconcileInterval time.Duration
	// MaxRecordBytes is the largest work item produced; an execution whose next work item is
	// larger fails with record_too_large (default 1,000,000).
	MaxRecordBytes int
	// HistoryStream produces every ended execution to flowd.history. It is off unless set:
	// the record costs about as much as the rest of a short execution (docs/performance.md).
	HistoryStream bool
	// PartnerTopicsRestricted holds tenants without a partner-topic list of their own to no
	// partner topic at all (see topicpolicy).
	PartnerTopicsRestricted bool
	// Relay, when set, is kicked after a lifecycle change is committed to the outbox.
	Relay Kicker
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Router routes executions through their flows.
type Router struct {
	cfg          Config
	log          *slog.Logger
	w            kafkax.Writer
	dlq          *kafkax.DeadLetters
	graphs       *graphs
	partners     *partners
	delays       *delayQueue
	schedules    *scheduler
	topicIngest  string
	topicResults string
	ready        chan struct{}
	running      atomic.Bool

	poolsMu sync.Mutex
	pools   map[string]bool // work topics known to exist
}

// New checks cfg and builds a router; Run starts it.
func New(cfg Config) (*Router, error) {
	if cfg.Store == nil {
		return nil, errors.New("router: no store")
	}
	if len(cfg.Kafka.Brokers) == 0 {
		return nil, errors.New("router: no kafka brokers")
	}
	if cfg.Kafka.RecordKeys == nil {
		return nil, errors.New("router: no record keys (" + busauth.EnvKey + ")")
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.GroupID == "" {
		cfg.GroupID = cfg.Kafka.Group("router")
	}
	if cfg.StepTimeout <= 0 {
		cfg.StepTimeout = DefaultStepTimeout
	}
	if cfg.Retry.MaxAttempts <= 0 {
		cfg.Retry = flowdoc.DefaultRetry
	}
	if cfg.ParkTimeout <= 0 {
		cfg.ParkTimeout = DefaultParkTimeout
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = DefaultCacheSize
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.ReconcileInterval <= 0 {
		cfg.ReconcileInterval = DefaultReconcileInterval
	}
	if cfg.MaxRecordBytes <= 0 {
		cfg.MaxRecordBytes = DefaultMaxRecordBytes
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	r := &Router{
		cfg:          cfg,
		log:          cfg.Log.With("role", "router"),
		graphs:       newGraphs(cfg.Store, cfg.CacheSize),
		topicIngest:  cfg.Kafka.Topic(envelope.TopicIngest),
		topicResults: cfg.Kafka.Topic(envelope.TopicResults),
		ready:        make(chan struct{}),
		pools:        map[string]bool{},
	}
	r.partners = &partners{r: r, subs: map[string]*subscription{}, reported: map[string]time.Time{}}
	r.delays = newDelayQueue(r)
	r.schedules = newScheduler(r)
	return r, nil
}

// useWriter makes w the writer of every record the router produces.
func (r *Router) useWriter(w kafkax.Writer) {
	r.w = w
	r.dlq = r.cfg.Kafka.NewDeadLetters(w, r.cfg.Kafka.Topic(envelope.TopicDLQ), r.log)
}

func (r *Router) now() time.Time { return r.cfg.Now().UTC() }

// Ready is closed once Run has created its topics, subscribed to the partner topics of the
// flows active at start-up and started consuming.
func (r *Router) Ready() <-chan struct{} { return r.ready }

// Run routes until ctx ends, then lets in-flight records finish (bounded by DrainTimeout),
// commits them, and closes its readers and its writer.
func (r *Router) Run(ctx context.Context) error {
	if !r.running.CompareAndSwap(false, true) {
		return errors.New("router: Run called twice")
	}
	if err := kafkax.EnsureTopics(ctx, r.cfg.Kafka, envelope.TopicIngest, envelope.TopicResults,
		envelope.TopicDLQ, envelope.TopicHistory, envelope.TopicNotifications, events.TopicName, envelope.PoolTopic("")); err != nil {
		return fmt.Errorf("router: create topics: %w", err)
	}
	r.pools[envelope.PoolTopic("")] = true
	w := kafkax.NewProducer(r.cfg.Kafka)
	r.useWriter(w)
	defer func() {
		if err := w.Close(); err != nil {
			r.log.Warn("closing kafka writer", "err", err)
		}
	}()
	r.partners.base = ctx
	defer r.partners.closeAll()
	if err := r.reconcileAll(ctx); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		r.log.Warn("start-up reconcile incomplete; retrying periodically", "err", err)
	}

	var wg sync.WaitGroup
	spawn := func(fn func()) {
		wg.Add(1)
		go func() { defer wg.Done(); fn() }()
	}
	mainReader := kafka.NewReader(r.cfg.Kafka.GroupReader(kafka.ReaderConfig{
		GroupID:     r.cfg.GroupID,
		GroupTopics: []string{r.topicIngest, r.topicResults},
		StartOffset: kafka.FirstOffset,
		MaxWait:     500 * time.Millisecond,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			r.log.Warn("kafka consumer: " + fmt.Sprintf(msg, args...))
		}),
	}))
	spawn(func() { r.consumeWith(ctx, "ingest+results", false, mainReader, r.handleMain) })
	spawn(func() {
		r.forever(ctx, "flow events (broadcast)", func(ctx context.Context) error {
			return events.Consume(ctx, r.cfg.Kafka, "", r.onEvent)
		})
	})
	spawn(func() {
		r.forever(ctx, "flow lifecycle", func(ctx context.Context) error {
			return events.Consume(ctx, r.cfg.Kafka, r.cfg.GroupID+"-lifecycle", r.confirm)
		})
	})
	spawn(func() { r.reconcileEvery(ctx) })
	spawn(func() { r.delays.run(ctx) })
	spawn(func() { r.schedules.run(ctx) })
	close(r.ready)
	r.log.Info("router running", "group", r.cfg.GroupID, "ingest", r.topicIngest, "results", r.topicResults)
	<-ctx.Done()
	wg.Wait()
	r.log.Info("router stopped")
	return nil
}

// forever runs fn until ctx ends, restarting it with a backoff when it fails.
func (r *Router) forever(ctx context.Context, what string, fn func(context.Context) error) {
	b := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		err := fn(ctx)
		if ctx.Err() != nil {
			return
		}
		r.log.Warn("consumer stopped; restarting", "consumer", what, "err", err)
		if !b.Wait(ctx) {
			return
		}
	}
}

func (r *Router) reconcileEvery(ctx context.Context) {
	backoff.Every(ctx, r.cfg.ReconcileInterval, func() {
		if err := r.reconcileAll(ctx); err != nil && ctx.Err() == nil {
			r.log.Warn("periodic reconcile incomplete", "err", err)
		}
	})
}

// policy is the execution policy of a flow: the router's, with the flow's history settings
// over it. They were validated when the flow was saved; a value that is not valid all the
// same keeps the router's.
func (r *Router) policy(f *flowdoc.Flow) store.ExecPolicy {
	return policyOf(r.cfg.Policy, f).WithDefaults()
}

func policyOf(base store.ExecPolicy, f *flowdoc.Flow) store.ExecPolicy {
	h := f.History
	if h == nil {
		return base
	}
	if store.CheckSavePolicy(h.Succeeded) == nil {
		base.Succeeded = h.Succeeded
	}
	if h.MaxCount > 0 {
		base.MaxCount = h.MaxCount
	}
	if d, err := time.ParseDuration(h.MaxAge); err == nil && d > 0 {
		base.Retention = d
	}
	return base
}
