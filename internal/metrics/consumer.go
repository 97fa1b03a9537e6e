package metrics

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Consumer is one consumer's metrics: records processed and in flight, and its group's lag per
// partition. Lag is the partition's high-water mark, as the last fetch saw it, minus the offset
// the group committed; once every record is processed and committed it returns to 0.
type Consumer struct {
	off       bool // metrics off (SetEnabled): every method does nothing
	processed prometheus.Counter
	inFlight  prometheus.Gauge
	group     string // "" when the group carries a flow id that SetFlowLabel does not allow

	mu    sync.Mutex
	parts map[lagKey]*lagState
}

type lagKey struct {
	topic     string
	partition int
}

type lagState struct {
	hwm, committed int64
	gauge          prometheus.Gauge
}

// NewConsumer returns the metrics of the consumer named name (bounded: one of flowd's own
// consumers) reading in group. perFlow says the group and topic belong to one flow (a partner
// topic's): their lag is exported only when the flow label is on.
func NewConsumer(name, group string, perFlow bool) *Consumer {
	if off.Load() {
		return &Consumer{off: true}
	}
	if perFlow && !flowLabel.Load() {
		group = ""
	}
	return &Consumer{
		processed: recordsProcessed.WithLabelValues(name),
		inFlight:  recordsInFlight.WithLabelValues(name),
		group:     group,
		parts:     map[lagKey]*lagState{},
	}
}

// Fetched notes a fetched record: its partition's high-water mark, and that it is in flight.
func (c *Consumer) Fetched(topic string, partition int, offset, highWaterMark int64) {
	if c.off {
		return
	}
	c.inFlight.Inc()
	if c.group == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.part(topic, partition, offset)
	s.hwm = max(s.hwm, highWaterMark)
	s.gauge.Set(float64(max(s.hwm-s.committed, 0)))
}

// Processed notes a record finished (or given up at shutdown).
func (c *Consumer) Processed(finished bool) {
	if c.off {
		return
	}
	c.inFlight.Dec()
	if finished {
		c.processed.Inc()
	}
}

// Abandoned notes n fetched records dropped unprocessed at shutdown (delivered again).
func (c *Consumer) Abandoned(n int) {
	if !c.off {
		c.inFlight.Sub(float64(n))
	}
}

// Committed notes that the group committed offset (the last processed record's) on a partition.
func (c *Consumer) Committed(topic string, partition int, offset int64) {
	if c.off {
		return
	}
	if c.group == "" {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.part(topic, partition, offset)
	s.committed = max(s.committed, offset+1)
	s.gauge.Set(float64(max(s.hwm-s.committed, 0)))
}

// part is a partition's state; its first record's offset stands for what the group had
// committed before this process read it. Called with mu held.
func (c *Consumer) part(topic string, partition int, offset int64) *lagState {
	k := lagKey{topic, partition}
	s, ok := c.parts[k]
	if !ok {
		s = &lagState{committed: offset, hwm: offset, gauge: consumerLag.WithLabelValues(c.group, topic, strconv.Itoa(partition))}
		c.parts[k] = s
	}
	return s
}

// Close removes the consumer's lag series: another process reports its partitions from now on.
func (c *Consumer) Close() {
	if c.off {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for k := range c.parts {
		consumerLag.DeleteLabelValues(c.group, k.topic, strconv.Itoa(k.partition))
	}
	c.parts = map[lagKey]*lagState{}
}
