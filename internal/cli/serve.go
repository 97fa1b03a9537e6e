package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/internal/api"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/outbox"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
)

// infra are the flags every production role shares.
type infra struct {
	brokers     string
	redisURL    string
	topicPrefix string
	partitions  int
	keyPrefix   string
}

func (in *infra) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&in.brokers, "kafka-brokers", envOr("FLOWD_KAFKA_BROKERS", "127.0.0.1:9092"), "comma-separated Kafka brokers (env FLOWD_KAFKA_BROKERS)")
	f.StringVar(&in.redisURL, "redis-url", envOr("FLOWD_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL (env FLOWD_REDIS_URL)")
	f.StringVar(&in.topicPrefix, "topic-prefix", envOr("FLOWD_TOPIC_PREFIX", kafkax.DefaultTopicPrefix), "prefix of flowd's Kafka topics (env FLOWD_TOPIC_PREFIX)")
	f.IntVar(&in.partitions, "partitions", kafkax.DefaultPartitions, "partitions of the topics flowd creates")
	f.StringVar(&in.keyPrefix, "redis-prefix", envOr("FLOWD_REDIS_PREFIX", store.DefaultPrefix), "prefix of flowd's Redis keys (env FLOWD_REDIS_PREFIX)")
}

func (in *infra) kafka() kafkax.Config {
	return kafkax.Config{Brokers: strings.Split(in.brokers, ","), TopicPrefix: in.topicPrefix, Partitions: in.partitions}
}

// apiOptions configure the control-plane role.
type apiOptions struct {
	addr          string
	connectorsDir string
	secretKeyFile string
	adminToken    string
	bodyLimit     int
	autoConfirm   bool
	// onReady runs once the API listens, with the admin token to print (empty if not new).
	onReady func(token string)
}

// serveAPI runs the control plane until ctx ends, then shuts down within a bounded drain.
func serveAPI(ctx context.Context, in *infra, opt apiOptions) error {
	log := slog.Default()
	ropt, err := redis.ParseURL(in.redisURL)
	if err != nil {
		return fmt.Errorf("--redis-url: %w", err)
	}
	rdb := redis.NewClient(ropt)
	defer func() { _ = rdb.Close() }()
	st := store.New(rdb, in.keyPrefix)
	if err := waitFor(ctx, "redis at "+ropt.Addr, st.Ping); err != nil {
		return err
	}
	kcfg := in.kafka()
	if err := waitFor(ctx, "kafka at "+in.brokers, func(ctx context.Context) error { return kafkax.Ping(ctx, kcfg) }); err != nil {
		return err
	}
	if err := kafkax.EnsureTopics(ctx, kcfg, events.TopicName); err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	w := kafkax.NewWriter(kcfg)
	defer func() { _ = w.Close() }()
	relay := outbox.New(st, events.NewKafkaPublisher(w, kcfg.Topic(events.TopicName)), log)
	token, err := api.EnsureAdmin(ctx, st, opt.adminToken)
	if err != nil {
		return err
	}
	cat, err := catalog.Load(ctx, opt.connectorsDir, log)
	if err != nil {
		return err
	}
	log.Info("connectors loaded", "dir", opt.connectorsDir, "count", cat.Len())
	keys, err := secrets.LoadKeyring(os.Getenv(secrets.EnvKey), opt.secretKeyFile)
	if errors.Is(err, secrets.ErrNoKey) {
		log.Warn("no secret key configured: connections cannot be stored; set " + secrets.EnvKey + " or --secret-key-file")
	} else if err != nil {
		return err
	}
	app := api.New(api.Config{Store: st, Relay: relay, Log: log, BodyLimit: opt.bodyLimit, AutoConfirm: opt.autoConfirm, Catalog: cat, Secrets: keys})

	relayCtx, stopRelay := context.WithCancel(context.WithoutCancel(ctx))
	relayDone := make(chan struct{})
	go func() { defer close(relayDone); relay.Run(relayCtx) }()

	// Bind before announcing readiness, so a taken port fails the start and the printed curl works.
	ln, err := net.Listen("tcp", opt.addr)
	if err != nil {
		stopRelay()
		return fmt.Errorf("listen on %s: %w", opt.addr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- app.Listener(ln) }()
	log.Info("api listening", "addr", ln.Addr().String())
	if opt.onReady != nil {
		opt.onReady(token)
	}
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down api")
		err = app.ShutdownWithTimeout(10 * time.Second)
	}
	// Publish what is still in the outbox before leaving, bounded.
	flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	stopRelay()
	<-relayDone
	if ferr := relay.Flush(flushCtx); ferr != nil {
		log.Warn("events left in the outbox; the next start publishes them", "err", ferr)
	}
	return err
}

// waitFor retries check until it succeeds or ctx ends, so roles can start before their
// dependencies do (as in compose or Kubernetes).
func waitFor(ctx context.Context, what string, check func(context.Context) error) error {
	delay := 200 * time.Millisecond
	for attempt := 0; ; attempt++ {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := check(cctx)
		cancel()
		if err == nil {
			return nil
		}
		if attempt == 0 || attempt%10 == 0 {
			slog.Warn("waiting for dependency", "what", what, "err", err)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s is not reachable: %w", what, errors.Join(ctx.Err(), err))
		case <-t.C:
		}
		delay = min(delay*2, 5*time.Second)
	}
}
