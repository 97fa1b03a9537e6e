package router

import (
	"context"
	"log/slog"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/consume"
)

// handler processes one record completely: its state change committed and its output
// produced. An error means "try again" (Redis or Kafka unavailable); records that can never
// succeed are dealt with inside (the DLQ), so one bad record does not stall its partition.
type handler func(ctx context.Context, m kafka.Message) error

// consumeWith runs the shared consume loop on reader: records of one execution (one key on one
// partition) in order, everything else at once, each retried until it succeeds or the router
// stops; offsets committed only once their record is processed. partner says reader is one
// flow's partner-topic reader (its name and group carry the flow's id).
func (r *Router) consumeWith(ctx context.Context, name string, partner bool, reader *kafka.Reader, handle handler) {
	metricsName := ""
	if partner {
		metricsName = "partner"
	}
	consume.Run(ctx, consume.Config{
		Name: name, MetricsName: metricsName, PerFlow: partner, Reader: reader, Log: r.log, Ordered: true,
		Concurrency: r.cfg.Concurrency, DrainTimeout: r.cfg.DrainTimeout,
		Handle: func(stop, work context.Context, m kafka.Message) bool {
			return retrying(stop, work, r.log, name, m, handle)
		},
	})
	if err := reader.Close(); err != nil {
		r.log.Warn("closing kafka reader", "consumer", name, "err", err)
	}
}

// retrying calls handle until it succeeds (true), or stop ends while it waits (false: the
// record is left for redelivery).
func retrying(stop, work context.Context, log *slog.Logger, name string, m kafka.Message, handle handler) bool {
	b := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		err := handle(work, m)
		if err == nil {
			return true
		}
		if work.Err() != nil {
			return false
		}
		log.Error("processing failed, will retry", "consumer", name, "topic", m.Topic,
			"partition", m.Partition, "offset", m.Offset, "err", err)
		if !b.Wait(stop) {
			return false
		}
	}
}
