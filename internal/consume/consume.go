// Package consume is the one consume loop of flowd's roles: it fetches from a consumer-group
// reader, processes many records at once (in order only among records with the same key),
// and commits each partition's highest offset below which every fetched record is finished,
// one commit request per interval for all partitions.
//
// Processing concurrently is what lets the rest of a role batch its round trips: a router or
// runner with many records in flight hands the producer (kafkax.Producer) and Redis many
// requests at once, which they send together. Ordering by key keeps what must stay ordered
// (the records of one execution) ordered, and nothing else.
package consume

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/metrics"
)

// Handler processes one record and reports whether it is finished, i.e. its offset may be
// committed. It returns false only when it gave the record up at shutdown (stop ended): the
// record is then left uncommitted and delivered again. stop ends waiting (backoffs, retries);
// work ends everything, DrainTimeout after stop.
type Handler func(stop, work context.Context, m kafka.Message) bool

// Config configures Run; zero values take the defaults in brackets.
type Config struct {
	Name string // for logs, and the consumer label of its metrics unless MetricsName is set
	// MetricsName is the consumer label of its metrics when Name is not bounded (it names a flow).
	MetricsName string
	// PerFlow says the reader's group and topic belong to one flow: their lag is exported only
	// with the metrics' flow label on (metrics.SetFlowLabel).
	PerFlow bool
	Reader  *kafka.Reader
	Handle  Handler
	Log     *slog.Logger // [slog.Default()]
	// Concurrency bounds records being processed at once [64].
	Concurrency int
	// MaxUncommitted pauses fetching while this many fetched records cannot be committed yet
	// (running, waiting behind their key, or finished behind a slower record of their
	// partition), which bounds what a crash makes the group see again [1024].
	MaxUncommitted int
	// Ordered processes records with the same key on the same partition one after another, in
	// offset order (the order Kafka keeps).
	Ordered bool
	// DrainTimeout bounds how long records being processed may take to finish once ctx ends
	// [10s].
	DrainTimeout time.Duration
	// CommitInterval spaces commits [50ms].
	CommitInterval time.Duration
}

// Defaults of Config.
const (
	DefaultConcurrency    = 64
	DefaultMaxUncommitted = 1024
	DefaultDrainTimeout   = 10 * time.Second
	DefaultCommitInterval = 50 * time.Millisecond
)

func (c *Config) defaults() {
	if c.Log == nil {
		c.Log = slog.Default()
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.MaxUncommitted <= 0 {
		c.MaxUncommitted = max(DefaultMaxUncommitted, c.Concurrency)
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = DefaultDrainTimeout
	}
	if c.CommitInterval <= 0 {
		c.CommitInterval = DefaultCommitInterval
	}
}

// Run consumes until ctx ends, then stops fetching, lets the records being processed finish
// within DrainTimeout (records waiting behind their key are not started), commits what
// finished and returns. The caller closes the reader afterwards. The reader must not commit
// by itself on an interval (CommitInterval 0): Run commits.
func Run(ctx context.Context, cfg Config) {
	cfg.defaults()
	log := cfg.Log.With("consumer", cfg.Name)
	work, cancelWork := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelWork()

	name := cfg.Name
	if cfg.MetricsName != "" {
		name = cfg.MetricsName
	}
	mets := metrics.NewConsumer(name, cfg.Reader.Config().GroupID, cfg.PerFlow)
	defer mets.Close()
	tracker := newOffsetTracker()
	com := newCommitter(cfg.Reader, log, cfg.CommitInterval, mets)
	commitCtx, stopCommits := context.WithCancel(context.WithoutCancel(ctx))
	commitDone := make(chan struct{})
	go func() { defer close(commitDone); com.run(commitCtx) }()

	lanes := &lanes{busy: map[string][]kafka.Message{}}
	sem := make(chan struct{}, cfg.Concurrency)
	var wg sync.WaitGroup
	finish := func(m kafka.Message) {
		if off, ok := tracker.done(m.Topic, m.Partition, m.Offset); ok {
			com.add(m.Topic, m.Partition, off)
		}
	}
	// worker processes m, then whatever queued behind its key, on one slot.
	worker := func(m kafka.Message) {
		defer func() { <-sem }()
		for first := true; ; first = false {
			if !first && ctx.Err() != nil {
				mets.Processed(false)
				mets.Abandoned(lanes.abandon(laneOf(m)))
				return // queued behind its lane and not started: delivered again
			}
			ok := cfg.Handle(ctx, work, m)
			mets.Processed(ok)
			if !ok {
				if cfg.Ordered {
					mets.Abandoned(lanes.abandon(laneOf(m)))
				}
				return
			}
			finish(m)
			if !cfg.Ordered {
				return
			}
			next, ok := lanes.next(laneOf(m))
			if !ok {
				return
			}
			m = next
		}
	}

	fetchBackoff := backoff.New(100*time.Millisecond, 5*time.Second)
	for tracker.waitBelow(ctx, cfg.MaxUncommitted) {
		// A slot first, then the record: nothing fetched waits unstarted for a slot at
		// shutdown, holding back the commits of its partition's finished records.
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		m, err := cfg.Reader.FetchMessage(ctx)
		if err != nil {
			<-sem
			if ctx.Err() != nil {
				break
			}
			metrics.KafkaError("fetch")
			log.Warn("kafka fetch failed; retrying", "err", err, "in", fetchBackoff.Peek())
			if !fetchBackoff.Wait(ctx) {
				break
			}
			continue
		}
		fetchBackoff.Reset()
		if !tracker.start(m.Topic, m.Partition, m.Offset) {
			<-sem // fetched again after a rebalance while this process still runs or ran it
			continue
		}
		mets.Fetched(m.Topic, m.Partition, m.Offset, m.HighWaterMark)
		if cfg.Ordered && !lanes.enter(m) {
			<-sem // queued behind its lane's running record, which runs it on its own slot
			continue
		}
		wg.Go(func() { worker(m) })
	}

	drained := make(chan struct{})
	go func() { wg.Wait(); close(drained) }()
	t := time.NewTimer(cfg.DrainTimeout)
	select {
	case <-drained:
		t.Stop()
	case <-t.C:
		log.Warn("records still in flight at the drain bound; they will be delivered again", "uncommitted", tracker.inFlight(), "drain", cfg.DrainTimeout)
		cancelWork()
		<-drained
	}
	stopCommits()
	<-commitDone
	finalCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
	defer cancel()
	if err := com.flush(finalCtx); err != nil {
		log.Warn("final offset commit failed; finished records will be delivered again", "err", err)
	}
}

// laneOf names the records that must run in order: same partition, same key.
func laneOf(m kafka.Message) string {
	return m.Topic + "\x00" + strconv.Itoa(m.Partition) + "\x00" + string(m.Key)
}

// lanes serialises records by lane: the first record of a lane runs, later ones queue behind it.
type lanes struct {
	mu   sync.Mutex
	busy map[string][]kafka.Message // key -> records waiting behind the running one
}

// enter reports whether m may run now; otherwise it is queued behind its key.
func (l *lanes) enter(m kafka.Message) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := laneOf(m)
	if q, ok := l.busy[k]; ok {
		l.busy[k] = append(q, m)
		return false
	}
	l.busy[k] = nil
	return true
}

// next hands over the key's next queued record, or frees the key.
func (l *lanes) next(k string) (kafka.Message, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	q := l.busy[k]
	if len(q) == 0 {
		delete(l.busy, k)
		return kafka.Message{}, false
	}
	m := q[0]
	if len(q) == 1 {
		l.busy[k] = nil
	} else {
		l.busy[k] = q[1:]
	}
	return m, true
}

// abandon drops the key's queue at shutdown: its records stay uncommitted. It returns how many
// it dropped.
func (l *lanes) abandon(k string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.busy[k])
	delete(l.busy, k)
	return n
}

// committer commits the offsets the tracker releases, off the handlers' goroutines: one
// request per interval carries every partition's progress, and a slow or failing commit never
// holds up work.
type committer struct {
	reader   *kafka.Reader
	log      *slog.Logger
	interval time.Duration
	kick     chan struct{}
	mets     *metrics.Consumer

	mu    sync.Mutex
	ready map[partitionKey]int64 // highest committable offset per partition, not yet committed
}

func newCommitter(reader *kafka.Reader, log *slog.Logger, interval time.Duration, mets *metrics.Consumer) *committer {
	return &committer{reader: reader, log: log, interval: interval, kick: make(chan struct{}, 1), mets: mets, ready: map[partitionKey]int64{}}
}

func (c *committer) add(topic string, partition int, offset int64) {
	c.mu.Lock()
	k := partitionKey{topic, partition}
	if cur, ok := c.ready[k]; !ok || offset > cur {
		c.ready[k] = offset
	}
	c.mu.Unlock()
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *committer) run(ctx context.Context) {
	b := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		}
		// Gather an interval's progress into one request.
		if !backoff.Sleep(ctx, c.interval) {
			return
		}
		for {
			err := c.flush(ctx)
			if err == nil || ctx.Err() != nil {
				break
			}
			metrics.KafkaError("commit")
			c.log.Warn("committing offsets failed; retrying", "err", err, "in", b.Peek())
			if !b.Wait(ctx) {
				return
			}
		}
		b.Reset()
	}
}

// flush commits everything ready. Offsets stay ready until a commit of them succeeds.
func (c *committer) flush(ctx context.Context) error {
	c.mu.Lock()
	msgs := make([]kafka.Message, 0, len(c.ready))
	for k, off := range c.ready {
		msgs = append(msgs, kafka.Message{Topic: k.topic, Partition: k.partition, Offset: off})
	}
	c.mu.Unlock()
	if len(msgs) == 0 {
		return nil
	}
	if err := c.reader.CommitMessages(ctx, msgs...); err != nil {
		return fmt.Errorf("commit offsets: %w", err)
	}
	c.mu.Lock()
	for _, m := range msgs {
		c.mets.Committed(m.Topic, m.Partition, m.Offset)
		k := partitionKey{m.Topic, m.Partition}
		if c.ready[k] == m.Offset {
			delete(c.ready, k)
		}
	}
	c.mu.Unlock()
	return nil
}
