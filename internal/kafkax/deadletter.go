package kafkax

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/busauth"
)

// Headers a dead letter carries besides the original record's own.
const (
	HeaderDLQReason    = "flowd-dlq-reason"
	HeaderDLQTopic     = "flowd-dlq-topic"
	HeaderDLQPartition = "flowd-dlq-partition"
	HeaderDLQOffset    = "flowd-dlq-offset"
	// HeaderDLQAuth keeps the original record's signature (busauth.HeaderName, which the dead
	// letter's own signature takes), so whoever reads the dead letter can tell whether the
	// original was written by a flowd role (Original).
	HeaderDLQAuth = "flowd-dlq-auth"
)

// DeadLetter returns the copy of m that goes to the dead-letter topic (its full name): the
// original key, value and headers (its signature renamed HeaderDLQAuth), with why and where it
// came from, signed as every record on flowd's topics is.
func (c Config) DeadLetter(topic string, m kafka.Message, reason string) kafka.Message {
	headers := make([]kafka.Header, 0, len(m.Headers)+4)
	for _, h := range m.Headers {
		if h.Key == busauth.HeaderName {
			h.Key = HeaderDLQAuth
		}
		headers = append(headers, h)
	}
	headers = append(headers,
		kafka.Header{Key: HeaderDLQReason, Value: []byte(reason)},
		kafka.Header{Key: HeaderDLQTopic, Value: []byte(m.Topic)},
		kafka.Header{Key: HeaderDLQPartition, Value: []byte(strconv.Itoa(m.Partition))},
		kafka.Header{Key: HeaderDLQOffset, Value: []byte(strconv.FormatInt(m.Offset, 10))},
	)
	msg := kafka.Message{Topic: topic, Key: m.Key, Value: m.Value, Headers: headers}
	c.RecordKeys.Sign(&msg)
	return msg
}

// Original reads a record of the dead-letter topic (DeadLetter's copy): why the original could
// not be processed, and the original record as it was consumed: its topic, partition, offset,
// key, value and headers, its own signature back in place, so RecordKeys.Verify tells whether
// a flowd role wrote it. ok is false when m lacks the headers DeadLetter adds.
func Original(m kafka.Message) (orig kafka.Message, reason string, ok bool) {
	orig = kafka.Message{Key: m.Key, Value: m.Value, Time: m.Time}
	var found int
	for _, h := range m.Headers {
		switch h.Key {
		case busauth.HeaderName: // the dead letter's own signature
		case HeaderDLQReason:
			reason = string(h.Value)
			found++
		case HeaderDLQTopic:
			orig.Topic = string(h.Value)
			found++
		case HeaderDLQPartition:
			n, err := strconv.Atoi(string(h.Value))
			if err == nil {
				orig.Partition = n
				found++
			}
		case HeaderDLQOffset:
			n, err := strconv.ParseInt(string(h.Value), 10, 64)
			if err == nil {
				orig.Offset = n
				found++
			}
		case HeaderDLQAuth:
			orig.Headers = append(orig.Headers, kafka.Header{Key: busauth.HeaderName, Value: h.Value})
		default:
			orig.Headers = append(orig.Headers, h)
		}
	}
	return orig, reason, found == 4
}

// Writer produces records; *Producer is the one roles use, and role logic is tested with fakes.
type Writer interface {
	WriteMessages(ctx context.Context, msgs ...kafka.Message) error
}

// DeadLetters sends records that can never be processed to the dead-letter topic: what every
// consumer of flowd's topics does with such a record, in one place.
type DeadLetters struct {
	cfg   Config
	w     Writer
	topic string
	log   *slog.Logger
}

// NewDeadLetters sends through w to topic (its full name).
func (c Config) NewDeadLetters(w Writer, topic string, log *slog.Logger) *DeadLetters {
	return &DeadLetters{cfg: c, w: w, topic: topic, log: log}
}

// Send logs why m cannot be processed and produces its copy (DeadLetter), retrying with
// backoff until the broker acknowledges it or ctx ends: the caller commits m only after Send
// returned nil, so no record is dropped without a trace.
func (d *DeadLetters) Send(ctx context.Context, m kafka.Message, reason string) error {
	d.log.Warn("record sent to the dead-letter topic", "topic", m.Topic, "partition", m.Partition,
		"offset", m.Offset, "reason", reason)
	msg := d.cfg.DeadLetter(d.topic, m, reason)
	b := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		err := d.w.WriteMessages(ctx, msg)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("produce dead letter: %w", ctx.Err())
		}
		d.log.Warn("producing to the dead-letter topic failed; retrying", "partition", m.Partition,
			"offset", m.Offset, "err", err, "in", b.Peek())
		if !b.Wait(ctx) {
			return fmt.Errorf("produce dead letter: %w", ctx.Err())
		}
	}
}
