package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/kafkax"
)

// limitConfig is one way of producing with kafka-go: goroutines each calling WriteMessages
// with chunk messages at a time, through a Writer batching up to batchSize records.
type limitConfig struct {
	Goroutines   int     `json:"goroutines"`
	Chunk        int     `json:"messagesPerCall"`
	BatchSize    int     `json:"batchSize"`
	BatchTimeout string  `json:"batchTimeout"`
	Partitions   int     `json:"partitions"`
	RecordsPerS  int     `json:"recordsPerSec"`
	MiBPerS      float64 `json:"mibPerSec"`
}

// limitCandidates are tried in turn; the best is the limit. They cover the two ways of
// batching kafka-go offers: many goroutines with one record each (the Writer's own batching,
// as a web server uses it) and fewer goroutines handing it ready-made batches.
var limitCandidates = []limitConfig{
	{Goroutines: 256, Chunk: 1, BatchSize: 1000, BatchTimeout: "2ms"},
	{Goroutines: 8, Chunk: 200, BatchSize: 900, BatchTimeout: "1ms"},
	{Goroutines: 16, Chunk: 500, BatchSize: 900, BatchTimeout: "1ms"},
	{Goroutines: 6, Chunk: 900, BatchSize: 900, BatchTimeout: "1ms"},
}

// runLimit measures each candidate for d against its own topic and returns them all; the
// fastest is the limit.
func runLimit(ctx context.Context, brokers []string, prefix string, partitions int, payload []byte, d time.Duration) ([]limitConfig, error) {
	cfg := kafkax.Config{Brokers: brokers, TopicPrefix: prefix, Partitions: partitions}
	if err := kafkax.EnsureTopics(ctx, cfg, "limit"); err != nil {
		return nil, err
	}
	topic := cfg.Topic("limit")
	var out []limitConfig
	for _, c := range limitCandidates {
		c.Partitions = partitions
		n, err := produceFor(ctx, brokers, topic, c, payload, d)
		if err != nil {
			return nil, err
		}
		c.RecordsPerS = int(float64(n) / d.Seconds())
		c.MiBPerS = round1(float64(n) * float64(len(payload)) / d.Seconds() / (1 << 20))
		logf("limit: %d goroutines x %d records per call, batch %d/%s: %d records/s (%.1f MiB/s)",
			c.Goroutines, c.Chunk, c.BatchSize, c.BatchTimeout, c.RecordsPerS, c.MiBPerS)
		out = append(out, c)
	}
	return out, nil
}

// produceFor writes payload records for d (after a one-second warm-up) and returns how many
// the broker acknowledged in d.
func produceFor(ctx context.Context, brokers []string, topic string, c limitConfig, payload []byte, d time.Duration) (int64, error) {
	bt, err := time.ParseDuration(c.BatchTimeout)
	if err != nil {
		return 0, err
	}
	tr := kafkax.Config{Brokers: brokers}.Transport()
	tr.ClientID, tr.MetadataTTL = "flowd-bench", 10*time.Second
	defer tr.CloseIdleConnections()
	w := &kafka.Writer{
		Addr:         kafka.TCP(brokers...),
		Topic:        topic,
		Balancer:     &kafka.RoundRobin{},
		RequiredAcks: kafka.RequireAll,
		BatchSize:    c.BatchSize,
		// BatchBytes stays at kafka-go's 1 MiB default: the broker refuses larger batches.
		BatchTimeout: bt,
		WriteTimeout: 10 * time.Second,
		ReadTimeout:  10 * time.Second,
		Transport:    tr,
	}
	defer func() { _ = w.Close() }()

	const warmup = time.Second
	start := time.Now()
	measureFrom, end := start.Add(warmup), start.Add(warmup+d)
	var counted atomic.Int64
	var firstErr error
	var errOnce sync.Once
	var wg sync.WaitGroup
	for range c.Goroutines {
		wg.Go(func() {
			msgs := make([]kafka.Message, c.Chunk)
			for i := range msgs {
				msgs[i] = kafka.Message{Value: payload}
			}
			for {
				now := time.Now()
				if now.After(end) || ctx.Err() != nil {
					return
				}
				wctx, cancel := context.WithDeadline(ctx, end.Add(10*time.Second))
				err := w.WriteMessages(wctx, msgs...)
				cancel()
				if err != nil {
					errOnce.Do(func() { firstErr = err })
					return
				}
				if done := time.Now(); done.After(measureFrom) && !done.After(end) {
					counted.Add(int64(c.Chunk))
				}
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		msg := firstErr.Error()
		if len(msg) > 300 {
			msg = msg[:300] + "…"
		}
		return 0, fmt.Errorf("limit: produce: %s", msg)
	}
	return counted.Load(), nil
}
