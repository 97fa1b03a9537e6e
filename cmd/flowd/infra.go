package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/metrics"
	"github.com/flowd/flowd/internal/outbox"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
)

// conn is what every role needs: Redis, the Kafka settings, the process's one writer and the
// event outbox relay.
type conn struct {
	log   *slog.Logger
	rdb   redis.UniversalClient
	st    *store.Store
	kcfg  kafkax.Config
	w     *kafkax.Producer
	relay *outbox.Relay

	stopRelay func()
	relayDone chan struct{}
}

// connect waits for Redis and Kafka (roles may start before their dependencies), then starts
// the outbox relay.
func connect(ctx context.Context, in *infra) (*conn, error) {
	log := slog.Default()
	if err := startPprof(ctx, in.pprofAddr); err != nil {
		return nil, err
	}
	metrics.SetEnabled(in.metrics == nil || *in.metrics)
	metrics.SetFlowLabel(in.metricsFlowLabel)
	if err := store.CheckPrefix(in.keyPrefix); err != nil {
		return nil, fmt.Errorf("--redis-prefix: %w", err)
	}
	kcfg := in.kafka()
	if err := kcfg.Validate(); err != nil {
		return nil, fmt.Errorf("kafka settings: %w", err)
	}
	if err := kcfg.CheckGroupTimeouts(); err != nil {
		return nil, err
	}
	if kcfg.TLS.InsecureSkipVerify {
		log.Warn("kafka broker certificates are not verified (--kafka-tls-insecure-skip-verify): test clusters only")
	}
	var err error
	if kcfg.RecordKeys, err = busKeys(in.busKeyFile); err != nil {
		return nil, err
	}
	rdb, where, err := in.redisClient()
	if err != nil {
		return nil, err
	}
	c := &conn{log: log, rdb: rdb, kcfg: kcfg}
	c.st = store.New(c.rdb, in.keyPrefix)
	if err := waitFor(ctx, where, c.st.Ping); err != nil {
		_ = c.rdb.Close()
		return nil, err
	}
	renamed, err := c.st.UpgradeLayout(ctx)
	if err != nil {
		_ = c.rdb.Close()
		return nil, fmt.Errorf("upgrade the redis key layout: %w", err)
	}
	if renamed > 0 {
		log.Info("redis keys renamed to the current key layout", "keys", renamed)
	}
	if err := waitFor(ctx, "kafka at "+in.brokers, func(ctx context.Context) error { return kafkax.Ping(ctx, c.kcfg) }); err != nil {
		_ = c.rdb.Close()
		return nil, err
	}
	// The replication of the topics this role creates, said once at start-up.
	kcfg, d, err := kafkax.ResolveDurability(ctx, c.kcfg)
	if err != nil {
		_ = c.rdb.Close()
		return nil, fmt.Errorf("kafka replication: %w", err)
	}
	c.kcfg = kcfg
	kafkax.LogDurability(ctx, log, d)
	c.w = kafkax.NewProducer(c.kcfg)
	c.relay = outbox.New(c.st, events.NewKafkaPublisher(c.w, c.kcfg), log)
	relayCtx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c.stopRelay, c.relayDone = stop, make(chan struct{})
	go func() { defer close(c.relayDone); c.relay.Run(relayCtx) }()
	return c, nil
}

// close publishes what is left in the outbox (bounded), then closes the writer and Redis.
func (c *conn) close() {
	c.stopRelay()
	<-c.relayDone
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.relay.Flush(ctx); err != nil {
		c.log.Warn("events left in the outbox; the next start publishes them", "err", err)
	}
	_ = c.w.Close()
	_ = c.rdb.Close()
}

// busKeys loads the keys that sign and verify records on flowd's topics: without them no role
// can tell its peers' records from anyone else's, so every role refuses to start.
func busKeys(file string) (*busauth.Keyring, error) {
	keys, err := busauth.Load(os.Getenv(busauth.EnvKey), file)
	if errors.Is(err, secrets.ErrNoKey) {
		return nil, fmt.Errorf("the bus key is needed: set %s or --bus-key-file to the same key on every role (generate one with `openssl rand -base64 32`)", busauth.EnvKey)
	}
	if err != nil {
		return nil, fmt.Errorf("bus key: %w", err)
	}
	return keys, nil
}

// keyring loads the connection secret key; required says whether a missing key is an error.
func keyring(file string, required bool) (*secrets.Keyring, error) {
	keys, err := secrets.LoadKeyring(os.Getenv(secrets.EnvKey), file)
	switch {
	case errors.Is(err, secrets.ErrNoKey) && required:
		return nil, fmt.Errorf("the connection secret key is needed: set %s or --secret-key-file", secrets.EnvKey)
	case errors.Is(err, secrets.ErrNoKey):
		slog.Warn("no secret key configured: connections cannot be stored; set " + secrets.EnvKey + " or --secret-key-file")
		return nil, nil
	case err != nil:
		return nil, err
	}
	return keys, nil
}
