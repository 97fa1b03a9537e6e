package kafkax

import (
	"strconv"

	"github.com/segmentio/kafka-go"
)

// Headers a dead letter carries besides the original record's own.
const (
	HeaderDLQReason    = "flowd-dlq-reason"
	HeaderDLQTopic     = "flowd-dlq-topic"
	HeaderDLQPartition = "flowd-dlq-partition"
	HeaderDLQOffset    = "flowd-dlq-offset"
)

// DeadLetter returns the copy of m that goes to the dead-letter topic (its full name): the
// original key, value and headers, with why and where it came from, signed as every record on
// flowd's topics is.
func (c Config) DeadLetter(topic string, m kafka.Message, reason string) kafka.Message {
	headers := append(make([]kafka.Header, 0, len(m.Headers)+4), m.Headers...)
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
