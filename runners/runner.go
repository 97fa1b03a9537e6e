// Package runners executes the work items of one runner pool: it consumes flowd.steps.<pool>
// in the pool's consumer group, runs each step's connector action through the plugin host,
// produces the step's Result to flowd.results and only then commits the work item's offset.
//
// Delivery is at-least-once, made effectively-once for what flowd controls: a finished item is
// recorded in Redis (see internal/store/runs.go) so a redelivery re-produces the recorded
// Result instead of running the step again, and every attempt of a step hands the connector
// the same idempotency key, so a side effect repeated after a crash can be recognised by the
// system it lands in.
package runners

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"regexp"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/consume"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/store"
)

// Defaults of Config's zero values.
const (
	DefaultConcurrency  = 32
	DefaultBatchMax     = 16
	DefaultBatchWait    = 2 * time.Millisecond
	DefaultDrainTimeout = 20 * time.Second
	DefaultClaimTTL     = 30 * time.Second
	// DefaultMaxUncommitted bounds finished-but-uncommittable items (see Config.MaxUncommitted).
	DefaultMaxUncommitted = 1024
)

// Config configures a Runner; zero values take the defaults in brackets.
type Config struct {
	Kafka       kafkax.Config
	Pool        string   // runner pool ["default"]
	GroupID     string   // consumer group ["<topic prefix without its dot>-runner-<pool>", i.e. "flowd-runner-default"]
	Concurrency int      // work items running at once, across and within partitions [32]
	Host        Executor // the connector host (connectors/host)
	// Resolver resolves node connections. Without one, steps that name a connection fail with
	// connection_unavailable.
	Resolver *connections.Resolver
	Store    Store
	Log      *slog.Logger // [slog.Default()]

	BatchMax  int           // invocations per connector call [16]
	BatchWait time.Duration // the longest an invocation waits, while a call of its connector is in flight, to share the next call [2ms]

	// DrainTimeout bounds how long Run lets in-flight steps finish after its ctx ends; what is
	// unfinished then is not committed and will be redelivered [20s].
	DrainTimeout time.Duration
	// RedeliveryWindow is how long finished items are remembered for redeliveries
	// [store.DefaultRedeliveryWindow].
	RedeliveryWindow time.Duration
	// ClaimTTL bounds how long a crashed runner's claim on an item delays its redelivery; the
	// holder renews it every third of that [30s].
	ClaimTTL time.Duration
	// MaxUncommitted pauses fetching while this many fetched items cannot be committed yet
	// (running, or finished behind a slower item of their partition), which bounds what a
	// crash makes the group see again [1024].
	MaxUncommitted int
}

// validPool keeps a pool name within what a Kafka topic name allows.
var validPool = regexp.MustCompile(`^[A-Za-z0-9._-]{1,100}$`)

// Runner consumes one pool's work topic. Run it once.
type Runner struct {
	cfg      Config
	log      *slog.Logger
	topic    string // flowd.steps.<pool>
	results  string // flowd.results
	dlq      *kafkax.DeadLetters
	exec     Executor
	configs  *configCache
	started  atomic.Bool
	ready    chan struct{} // closed once Run consumes
	writer   kafkax.Writer
	revs     *revisions // stored flow revisions, the source of every node a step runs
	batchers *batchers
}

// New checks cfg and fills in defaults. Nothing connects until Run.
func New(cfg Config) (*Runner, error) {
	if len(cfg.Kafka.Brokers) == 0 {
		return nil, errors.New("runners: no Kafka brokers configured")
	}
	if cfg.Kafka.RecordKeys == nil {
		return nil, errors.New("runners: no record keys (" + busauth.EnvKey + ") to verify work items with")
	}
	if cfg.Host == nil {
		return nil, errors.New("runners: a connector host is required")
	}
	if cfg.Store == nil {
		return nil, errors.New("runners: a store is required")
	}
	if cfg.Pool == "" {
		cfg.Pool = envelope.DefaultPool
	}
	if !validPool.MatchString(cfg.Pool) {
		return nil, fmt.Errorf("runners: pool name %q: use letters, digits, '.', '_' and '-' (it names a Kafka topic)", cfg.Pool)
	}
	if cfg.GroupID == "" {
		cfg.GroupID = cfg.Kafka.Group("runner-" + cfg.Pool)
	}
	if cfg.Concurrency <= 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.BatchMax <= 0 {
		cfg.BatchMax = DefaultBatchMax
	}
	if cfg.BatchWait <= 0 {
		cfg.BatchWait = DefaultBatchWait
	}
	if cfg.DrainTimeout <= 0 {
		cfg.DrainTimeout = DefaultDrainTimeout
	}
	if cfg.RedeliveryWindow <= 0 {
		cfg.RedeliveryWindow = store.DefaultRedeliveryWindow
	}
	if cfg.ClaimTTL <= 0 {
		cfg.ClaimTTL = DefaultClaimTTL
	}
	if cfg.MaxUncommitted <= 0 {
		cfg.MaxUncommitted = max(DefaultMaxUncommitted, cfg.Concurrency)
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	return &Runner{
		cfg:     cfg,
		log:     cfg.Log.With("pool", cfg.Pool),
		topic:   cfg.Kafka.Topic(envelope.PoolTopic(cfg.Pool)),
		revs:    newRevisions(cfg.Store),
		results: cfg.Kafka.Topic(envelope.TopicResults),
		exec:    cfg.Host,
		configs: newConfigCache(4096),
		ready:   make(chan struct{}),
	}, nil
}

// useWriter makes w the writer of results and dead letters.
func (r *Runner) useWriter(w kafkax.Writer) {
	r.writer = w
	r.dlq = r.cfg.Kafka.NewDeadLetters(w, r.cfg.Kafka.Topic(envelope.TopicDLQ), r.log)
}

// GroupID is the consumer group the runner joins.
func (r *Runner) GroupID() string { return r.cfg.GroupID }

// Ready is closed once Run has created its topics and started consuming.
func (r *Runner) Ready() <-chan struct{} { return r.ready }

// Run consumes work until ctx ends, then stops fetching, lets in-flight steps finish within
// DrainTimeout, commits what finished and returns. It returns nil after such a shutdown and an
// error when it could not start.
func (r *Runner) Run(ctx context.Context) error {
	if r.started.Swap(true) {
		return errors.New("runners: Run called twice")
	}
	kcfg := r.cfg.Kafka
	if err := kafkax.EnsureTopics(ctx, kcfg, envelope.PoolTopic(r.cfg.Pool), envelope.TopicResults, envelope.TopicDLQ); err != nil {
		return fmt.Errorf("runners: %w", err)
	}

	// In-flight steps outlive ctx by up to DrainTimeout: workCtx is what finally stops them.
	workCtx, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()
	w := kafkax.NewProducer(kcfg)
	r.useWriter(w)
	defer func() {
		if err := w.Close(); err != nil {
			r.log.Warn("closing the Kafka producer", "err", err)
		}
	}()
	r.batchers = &batchers{exec: r.exec, max: r.cfg.BatchMax, wait: r.cfg.BatchWait, ctx: workCtx, m: map[string]*batcher{}}

	reader := kafka.NewReader(kcfg.GroupReader(kafka.ReaderConfig{
		GroupID:     r.cfg.GroupID,
		Topic:       r.topic,
		StartOffset: kafka.FirstOffset, // a new group must not skip work produced before it existed
		MinBytes:    1,
		MaxBytes:    10 << 20,
		// MaxWait only matters on an idle topic; a short one keeps shutdown and tests brisk.
		MaxWait:               500 * time.Millisecond,
		CommitInterval:        0, // consume.Run commits, and only what is finished
		WatchPartitionChanges: true,
		JoinGroupBackoff:      time.Second,
		ReadLagInterval:       -1,
		ErrorLogger: kafka.LoggerFunc(func(msg string, args ...any) {
			r.log.Warn("kafka consumer: " + fmt.Sprintf(msg, args...))
		}),
	}))
	defer func() {
		if err := reader.Close(); err != nil {
			r.log.Warn("closing the Kafka reader", "err", err)
		}
	}()

	r.log.Info("runner started", "topic", r.topic, "group", r.cfg.GroupID, "concurrency", r.cfg.Concurrency)
	close(r.ready)
	// The pool's runners also run its flows' poll triggers: they host the connectors.
	polling := make(chan struct{})
	if p, ok := r.cfg.Host.(Poller); ok {
		go func() {
			defer close(polling)
			r.poll(ctx, p, r.cfg.Store)
		}()
	} else {
		close(polling)
	}
	serving := make(chan struct{})
	go func() {
		defer close(serving)
		r.serve(ctx)
	}()
	consume.Run(ctx, consume.Config{
		Name: "work", Reader: reader, Handle: r.process, Log: r.log,
		Concurrency: r.cfg.Concurrency, MaxUncommitted: r.cfg.MaxUncommitted, DrainTimeout: r.cfg.DrainTimeout,
	})
	<-polling
	<-serving
	cancelWork()
	r.log.Info("runner stopped")
	return nil
}
