package kafkax

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/segmentio/kafka-go/protocol"
	produceapi "github.com/segmentio/kafka-go/protocol/produce"

	"github.com/flowd/flowd/internal/metrics"
)

// MaxRecordBytes is the largest record worth sending: the broker's default message.max.bytes.
const MaxRecordBytes = 1 << 20

// Limits of one produce request.
const (
	// maxPartitionBytes keeps each partition's record batch under the broker's default
	// message.max.bytes (1 MiB), which applies to a whole batch, not to one record.
	maxPartitionBytes = 1000000
	// maxRequestBytes bounds one request; what does not fit waits for the next one.
	maxRequestBytes = 16 << 20
	// recordOverhead approximates a record's framing in a batch (varints, attributes).
	recordOverhead = 32
	// produceTimeout bounds a record's retries when its caller's context has no earlier
	// deadline: a leader change (a dead broker fenced, a new leader elected) takes seconds, and
	// a record keeps being retried through it until then. It is also the broker's wait for
	// the in-sync replicas' acknowledgements.
	produceTimeout = 10 * time.Second
	metadataTTL    = 5 * time.Second
)

// Producer writes records to flowd's topics with acks=all.
//
// kafka.Writer sends one produce request per partition, and a single caller's records, keyed by
// execution, spread over every partition: one execution's few records cost the broker as many
// requests. Producer instead sends whatever its callers handed it while its previous request
// was in flight as one request per broker, so the request rate follows the load's rounds, not
// its records. Records with the same key go to the same partition (kafka.Hash, as
// kafka.Writer). WriteMessages returns once every record it was given is acknowledged, or with
// the first error; records of a call that failed may still have been written (as with any
// Kafka producer), which is why every consumer treats redeliveries as harmless.
type Producer struct {
	addr   net.Addr
	tr     *kafka.Transport
	client *kafka.Client
	bal    *kafka.Hash

	mu     sync.Mutex
	queue  []*outRecord
	wake   chan struct{}
	closed bool
	done   chan struct{}

	metaMu sync.Mutex
	meta   map[string]*topicMeta
}

type topicMeta struct {
	partitions []int
	leaders    map[int]int // partition -> broker id
	at         time.Time
}

// call is one WriteMessages waiting for its records.
type call struct {
	mu   sync.Mutex
	left int
	err  error
	done chan struct{}
}

func (c *call) settle(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil && c.err == nil {
		c.err = err
	}
	c.left--
	if c.left == 0 {
		close(c.done)
	}
}

type outRecord struct {
	msg       kafka.Message
	call      *call
	partition int // -1 until balanced
	size      int
	attempts  int
	deadline  time.Time
}

// NewProducer starts a producer on cfg's cluster; Close it when done.
func NewProducer(cfg Config) *Producer {
	tr := cfg.writerTransport()
	addr := kafka.TCP(cfg.Brokers...)
	p := &Producer{
		addr: addr, tr: tr, client: &kafka.Client{Addr: addr, Transport: tr}, bal: &kafka.Hash{},
		wake: make(chan struct{}, 1), done: make(chan struct{}), meta: map[string]*topicMeta{},
	}
	go p.run()
	return p
}

// ErrProducerClosed is returned by WriteMessages after Close.
var ErrProducerClosed = errors.New("kafkax: producer closed")

// WriteMessages writes msgs (each with its Topic set) and waits for the broker's
// acknowledgement of all of them, or for ctx to end.
func (p *Producer) WriteMessages(ctx context.Context, msgs ...kafka.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	start := time.Now()
	err := p.write(ctx, msgs)
	metrics.Produced(time.Since(start).Seconds(), err != nil)
	return err
}

func (p *Producer) write(ctx context.Context, msgs []kafka.Message) error {
	c := &call{left: len(msgs), done: make(chan struct{})}
	deadline := time.Now().Add(produceTimeout)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	recs := make([]*outRecord, len(msgs))
	for i, m := range msgs {
		if m.Topic == "" {
			return errors.New("kafkax: a record without a topic")
		}
		size := len(m.Key) + len(m.Value) + recordOverhead
		for _, h := range m.Headers {
			size += len(h.Key) + len(h.Value) + 2
		}
		recs[i] = &outRecord{msg: m, call: c, partition: -1, size: size, deadline: deadline}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrProducerClosed
	}
	p.queue = append(p.queue, recs...)
	p.mu.Unlock()
	p.kick()
	select {
	case <-c.done:
		if c.err != nil {
			// A record gives up at the caller's deadline, which may be a moment before its
			// context says so: the deadline is the reason, the last error the detail.
			if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
				return fmt.Errorf("kafkax: produce: %w (last error: %w)", context.DeadlineExceeded, c.err)
			}
		}
		return c.err
	case <-ctx.Done():
		return fmt.Errorf("kafkax: produce: %w", ctx.Err())
	}
}

func (p *Producer) kick() {
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Close sends what is queued, then stops. Later writes fail with ErrProducerClosed.
func (p *Producer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.done
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	p.kick()
	<-p.done
	return nil
}

// run is the one sender: each round takes the queue, sends it (one request per broker, in
// parallel) and settles what was acknowledged; records that failed retryably are queued again.
func (p *Producer) run() {
	defer close(p.done)
	for {
		p.mu.Lock()
		batch := p.queue
		p.queue = nil
		closed := p.closed
		p.mu.Unlock()
		if len(batch) == 0 {
			if closed {
				return
			}
			<-p.wake
			continue
		}
		retry := p.round(batch)
		if len(retry) > 0 {
			p.mu.Lock()
			p.queue = append(retry, p.queue...)
			p.mu.Unlock()
			// A short pause lets the metadata or the leader settle before the next attempt;
			// it holds up every caller, which is what a leader change does to them anyway.
			time.Sleep(min(100*time.Millisecond*time.Duration(retry[0].attempts), time.Second))
		}
	}
}

// round sends one batch and returns the records to try again.
func (p *Producer) round(batch []*outRecord) []*outRecord {
	ctx, cancel := context.WithTimeout(context.Background(), produceTimeout)
	defer cancel()
	var retry, later []*outRecord
	// broker -> topic/partition -> records, within the request limits.
	reqs := map[int]map[partKey][]*outRecord{}
	reqBytes := map[int]int{}
	partBytes := map[partKey]int{}
	for _, r := range batch {
		tm, err := p.topic(ctx, r.msg.Topic)
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			// Topics are created explicitly (EnsureTopics): a missing one will not appear.
			r.call.settle(fmt.Errorf("kafkax: produce to %s: %w", r.msg.Topic, err))
			continue
		}
		if err != nil {
			retry = append(retry, p.failed(r, err)...)
			continue
		}
		if r.partition < 0 || !slices.Contains(tm.partitions, r.partition) {
			r.partition = p.bal.Balance(r.msg, tm.partitions...)
		}
		leader, ok := tm.leaders[r.partition]
		if !ok {
			retry = append(retry, p.failed(r, kafka.LeaderNotAvailable)...)
			continue
		}
		k := partKey{r.msg.Topic, r.partition}
		// A record that does not fit behind others goes in a later request (alone if it must:
		// the broker then judges its size on its own).
		if (partBytes[k] > 0 && partBytes[k]+r.size > maxPartitionBytes) ||
			(reqBytes[leader] > 0 && reqBytes[leader]+r.size > maxRequestBytes) {
			later = append(later, r)
			continue
		}
		if reqs[leader] == nil {
			reqs[leader] = map[partKey][]*outRecord{}
		}
		reqs[leader][k] = append(reqs[leader][k], r)
		partBytes[k] += r.size
		reqBytes[leader] += r.size
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, parts := range reqs {
		wg.Go(func() {
			req := &produceapi.Request{Acks: int16(kafka.RequireAll), Timeout: int32(produceTimeout.Milliseconds())}
			byTopic := map[string]int{}
			now := time.Now()
			for k, recs := range parts {
				ti, ok := byTopic[k.topic]
				if !ok {
					ti = len(req.Topics)
					byTopic[k.topic] = ti
					req.Topics = append(req.Topics, produceapi.RequestTopic{Topic: k.topic})
				}
				prs := make([]protocol.Record, len(recs))
				for i, r := range recs {
					prs[i] = protocol.Record{
						Time: now, Key: protocol.NewBytes(r.msg.Key), Value: protocol.NewBytes(r.msg.Value),
						Headers: headers(r.msg.Headers),
					}
				}
				req.Topics[ti].Partitions = append(req.Topics[ti].Partitions, produceapi.RequestPartition{
					Partition: int32(k.partition),
					RecordSet: protocol.RecordSet{Version: 2, Records: protocol.NewRecordReader(prs...)},
				})
			}
			var again []*outRecord
			res, err := p.tr.RoundTrip(ctx, p.addr, req)
			if err != nil {
				p.forgetAll()
				for _, recs := range parts {
					for _, r := range recs {
						again = append(again, p.failed(r, err)...)
					}
				}
			} else {
				again = p.settle(parts, res)
			}
			mu.Lock()
			retry = append(retry, again...)
			mu.Unlock()
		})
	}
	wg.Wait()
	return append(retry, later...)
}

type partKey struct {
	topic     string
	partition int
}

// settle reads a produce response: acknowledged records complete their calls, failed ones are
// retried or fail their calls.
func (p *Producer) settle(parts map[partKey][]*outRecord, res protocol.Message) []*outRecord {
	r, ok := res.(*produceapi.Response)
	if !ok {
		err := fmt.Errorf("unexpected produce response %T", res)
		var again []*outRecord
		for _, recs := range parts {
			for _, rec := range recs {
				again = append(again, p.failed(rec, err)...)
			}
		}
		return again
	}
	var again []*outRecord
	for _, t := range r.Topics {
		for _, pr := range t.Partitions {
			k := partKey{t.Topic, int(pr.Partition)}
			recs, ok := parts[k]
			if !ok {
				continue
			}
			delete(parts, k)
			if pr.ErrorCode == 0 {
				for _, rec := range recs {
					rec.call.settle(nil)
				}
				continue
			}
			err := kafka.Error(pr.ErrorCode)
			if err == kafka.NotLeaderForPartition || err == kafka.LeaderNotAvailable || err == kafka.UnknownTopicOrPartition {
				p.forgetAll()
			}
			for _, rec := range recs {
				again = append(again, p.failed(rec, err)...)
			}
		}
	}
	// Partitions the response left out were not written.
	for _, recs := range parts {
		for _, rec := range recs {
			again = append(again, p.failed(rec, errors.New("no answer for the partition"))...)
		}
	}
	return again
}

// failed decides what becomes of a record whose write failed with err: another attempt
// (returned) while err is retryable and its deadline has not passed, else its call fails.
func (p *Producer) failed(r *outRecord, err error) []*outRecord {
	r.attempts++
	if retryable(err) && time.Now().Before(r.deadline) {
		return []*outRecord{r}
	}
	r.call.settle(fmt.Errorf("kafkax: produce to %s: %w", r.msg.Topic, err))
	return nil
}

func retryable(err error) bool {
	var ke kafka.Error
	if errors.As(err, &ke) {
		return ke.Temporary()
	}
	return !errors.Is(err, context.Canceled)
}

func headers(hs []kafka.Header) []protocol.Header {
	if len(hs) == 0 {
		return nil
	}
	out := make([]protocol.Header, len(hs))
	for i, h := range hs {
		out[i] = protocol.Header(h)
	}
	return out
}

// topic returns a topic's partitions and their leaders, from a cache refreshed every
// metadataTTL or after a failure.
func (p *Producer) topic(ctx context.Context, name string) (*topicMeta, error) {
	p.metaMu.Lock()
	tm := p.meta[name]
	p.metaMu.Unlock()
	if tm != nil && time.Since(tm.at) < metadataTTL {
		return tm, nil
	}
	md, err := p.client.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{name}})
	if err != nil {
		if tm != nil {
			return tm, nil // keep using what was known
		}
		return nil, err
	}
	for _, t := range md.Topics {
		if t.Name != name {
			continue
		}
		if t.Error != nil {
			return nil, t.Error
		}
		tm = &topicMeta{leaders: map[int]int{}, at: time.Now()}
		for _, part := range t.Partitions {
			tm.partitions = append(tm.partitions, part.ID)
			if part.Leader.Host != "" {
				tm.leaders[part.ID] = part.Leader.ID
			}
		}
		slices.Sort(tm.partitions)
		if len(tm.partitions) == 0 {
			return nil, kafka.UnknownTopicOrPartition
		}
		p.metaMu.Lock()
		p.meta[name] = tm
		p.metaMu.Unlock()
		return tm, nil
	}
	return nil, kafka.UnknownTopicOrPartition
}

// forgetAll drops the cached metadata, so the next round asks again.
func (p *Producer) forgetAll() {
	p.metaMu.Lock()
	clear(p.meta)
	p.metaMu.Unlock()
}
