package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/ingest"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/tracing"
)

// ingestOptions configure the webhook role.
type ingestOptions struct {
	addr           string
	secretKeyFile  string
	bodyLimit      int
	idempotencyTTL time.Duration
	syncTimeout    time.Duration
	produceTimeout time.Duration
	cacheTTL       time.Duration
}

func newIngestCmd() *cobra.Command {
	var in infra
	var opt ingestOptions
	cmd := &cobra.Command{
		Use:   "ingest",
		Short: "Run the webhook front door: /hooks/{flowId} and /webhooks/{flowId} onto flowd.ingest",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return serveIngest(cmd.Context(), &in, opt)
		},
	}
	in.register(cmd)
	f := cmd.Flags()
	f.StringVar(&opt.addr, "addr", envOr("FLOWD_INGEST_ADDR", "127.0.0.1:8081"), "listen address (env FLOWD_INGEST_ADDR)")
	f.StringVar(&opt.secretKeyFile, "secret-key-file", envOr("FLOWD_SECRET_KEY_FILE", ""), "file holding the AES-256 key(s) that open webhook auth connections; or the keys themselves in FLOWD_SECRET_KEY (env FLOWD_SECRET_KEY_FILE)")
	f.IntVar(&opt.bodyLimit, "body-limit", envInt("FLOWD_BODY_LIMIT", ingest.DefaultBodyLimit), "largest request body in bytes (env FLOWD_BODY_LIMIT)")
	f.DurationVar(&opt.idempotencyTTL, "idempotency-ttl", envDuration("FLOWD_IDEMPOTENCY_TTL", ingest.DefaultIdempotencyTTL), "how long an Idempotency-Key is remembered (env FLOWD_IDEMPOTENCY_TTL)")
	f.DurationVar(&opt.syncTimeout, "sync-timeout", envDuration("FLOWD_SYNC_TIMEOUT", ingest.DefaultSyncTimeout), "default wait of synchronous webhooks (a flow's timeoutMs overrides it; max 2m; env FLOWD_SYNC_TIMEOUT)")
	f.DurationVar(&opt.produceTimeout, "produce-timeout", envDuration("FLOWD_PRODUCE_TIMEOUT", ingest.DefaultProduceTimeout), "longest wait for Kafka's acknowledgement before answering 503 (env FLOWD_PRODUCE_TIMEOUT)")
	f.DurationVar(&opt.cacheTTL, "flow-cache-ttl", envDuration("FLOWD_FLOW_CACHE_TTL", ingest.DefaultCacheTTL), "flow metadata is reloaded at least this often (events refresh it sooner; env FLOWD_FLOW_CACHE_TTL)")
	return cmd
}

// serveIngest runs the ingest role until ctx ends.
func serveIngest(ctx context.Context, in *infra, opt ingestOptions) error {
	stopTracing, err := tracing.Start(ctx, "ingest", slog.Default())
	if err != nil {
		return err
	}
	defer stopTracing() // last: the role's final spans are flushed once it has drained
	keys, err := keyring(opt.secretKeyFile, false)
	if err != nil {
		return err
	}
	c, err := connect(ctx, in)
	if err != nil {
		return err
	}
	defer c.close()
	if err := kafkax.EnsureTopics(ctx, c.kcfg, envelope.TopicIngest, events.TopicName); err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	srv, err := newIngest(c, keys, opt, health.New(c.probes()...))
	if err != nil {
		return err
	}
	defer func() { _ = srv.Close() }()
	roles, err := runRoles(ctx, c.log, namedRole{"ingest", srv})
	if err != nil && ctx.Err() != nil {
		return nil // asked to stop while starting: not a failure
	}
	if err != nil {
		return err
	}
	// The listener drains first, then the events watcher stops.
	defer roles.stop()
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	served := make(chan error, 1)
	go func() { served <- srv.ListenAndServe(sctx, opt.addr) }()
	select {
	case err := <-roles.failed():
		cancel()
		return errors.Join(err, <-served)
	case err := <-served:
		return err
	}
}
