package kafkax_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

// Many concurrent callers, two topics, every partition: every record lands exactly once, on
// the partition kafka.Hash gives its key, with its headers.
func TestProducerWritesEveryRecordOnceOnItsKeysPartition(t *testing.T) {
	brokers := testrig.Kafka(t)
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cfg := kafkax.Config{Brokers: brokers, TopicPrefix: testrig.Unique("p") + ".", Partitions: 3}
	if err := kafkax.EnsureTopics(ctx, cfg, "a", "b"); err != nil {
		t.Fatal(err)
	}
	p := kafkax.NewProducer(cfg)
	const callers, perCall = 40, 25
	var wg sync.WaitGroup
	errs := make(chan error, callers)
	for c := range callers {
		wg.Go(func() {
			msgs := make([]kafka.Message, perCall)
			for i := range msgs {
				id := fmt.Sprintf("%d-%d", c, i)
				topic := cfg.Topic("a")
				if i%2 == 1 {
					topic = cfg.Topic("b")
				}
				msgs[i] = kafka.Message{Topic: topic, Key: []byte("key-" + id), Value: []byte(id),
					Headers: []kafka.Header{{Key: "h", Value: []byte(id)}}}
			}
			errs <- p.WriteMessages(ctx, msgs...)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("WriteMessages: %v", err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.WriteMessages(ctx, kafka.Message{Topic: cfg.Topic("a"), Value: []byte("x")}); !errors.Is(err, kafkax.ErrProducerClosed) {
		t.Fatalf("write after Close: %v, want ErrProducerClosed", err)
	}

	seen := map[string]int{}
	hash := &kafka.Hash{}
	for _, topic := range []string{cfg.Topic("a"), cfg.Topic("b")} {
		for part := range 3 {
			conn, err := kafka.DialLeader(ctx, "tcp", brokers[0], topic, part)
			if err != nil {
				t.Fatal(err)
			}
			last, err := conn.ReadLastOffset()
			if err != nil {
				t.Fatal(err)
			}
			for off := int64(0); off < last; {
				if _, err := conn.Seek(off, kafka.SeekAbsolute); err != nil {
					t.Fatal(err)
				}
				m, err := conn.ReadMessage(1 << 20)
				if err != nil {
					t.Fatal(err)
				}
				off = m.Offset + 1
				id := string(m.Value)
				seen[topic+"/"+id]++
				if want := hash.Balance(kafka.Message{Key: m.Key}, 0, 1, 2); want != part {
					t.Errorf("record %s on partition %d, kafka.Hash says %d", id, part, want)
				}
				if len(m.Headers) != 1 || !bytes.Equal(m.Headers[0].Value, m.Value) {
					t.Errorf("record %s headers %v", id, m.Headers)
				}
			}
			_ = conn.Close()
		}
	}
	if len(seen) != callers*perCall {
		t.Fatalf("%d distinct records read, want %d", len(seen), callers*perCall)
	}
	for id, n := range seen {
		if n != 1 {
			t.Errorf("record %s written %d times", id, n)
		}
	}
}

// A record the broker refuses fails its own call with MessageSizeTooLarge, and only that call:
// the records written beside it in the same round land.
func TestProducerOversizedRecordFailsOnlyItsCall(t *testing.T) {
	brokers := testrig.Kafka(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	cfg := kafkax.Config{Brokers: brokers, TopicPrefix: testrig.Unique("p") + ".", Partitions: 1}
	if err := kafkax.EnsureTopics(ctx, cfg, "a"); err != nil {
		t.Fatal(err)
	}
	p := kafkax.NewProducer(cfg)
	defer func() { _ = p.Close() }()
	var wg sync.WaitGroup
	var bigErr error
	smallErrs := make([]error, 10)
	wg.Go(func() {
		bigErr = p.WriteMessages(ctx, kafka.Message{Topic: cfg.Topic("a"), Value: bytes.Repeat([]byte("x"), 2<<20)})
	})
	for i := range smallErrs {
		wg.Go(func() {
			smallErrs[i] = p.WriteMessages(ctx, kafka.Message{Topic: cfg.Topic("a"), Value: []byte(strconv.Itoa(i))})
		})
	}
	wg.Wait()
	if !errors.Is(bigErr, kafka.MessageSizeTooLarge) {
		t.Errorf("oversized record: %v, want MessageSizeTooLarge", bigErr)
	}
	for i, err := range smallErrs {
		if err != nil {
			t.Errorf("small record %d: %v", i, err)
		}
	}
	// A topic that does not exist fails at once rather than after the retries.
	err := p.WriteMessages(ctx, kafka.Message{Topic: cfg.Topic("missing"), Value: []byte("x")})
	if !errors.Is(err, kafka.UnknownTopicOrPartition) {
		t.Errorf("missing topic: %v, want UnknownTopicOrPartition", err)
	}
}

// The caller's context bounds the wait.
func TestProducerHonoursContext(t *testing.T) {
	p := kafkax.NewProducer(kafkax.Config{Brokers: []string{"127.0.0.1:1"}})
	defer func() { _ = p.Close() }()
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	if err := p.WriteMessages(ctx, kafka.Message{Topic: "x", Value: []byte("v")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("unreachable broker: %v, want the context's deadline", err)
	}
}
