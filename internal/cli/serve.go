package cli

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/internal/api"
	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/store"
)

// infra are the flags every production role shares.
type infra struct {
	brokers     string
	redisURL    string
	topicPrefix string
	partitions  int
	keyPrefix   string
	pprofAddr   string
	busKeyFile  string
	// partnerTopicsRestricted: tenants without a partner-topic list use no partner topic.
	partnerTopicsRestricted bool
}

func (in *infra) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&in.brokers, "kafka-brokers", envOr("FLOWD_KAFKA_BROKERS", "127.0.0.1:9092"), "comma-separated Kafka brokers (env FLOWD_KAFKA_BROKERS)")
	f.StringVar(&in.redisURL, "redis-url", envOr("FLOWD_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL (env FLOWD_REDIS_URL)")
	f.StringVar(&in.topicPrefix, "topic-prefix", envOr("FLOWD_TOPIC_PREFIX", kafkax.DefaultTopicPrefix), "prefix of flowd's Kafka topics (env FLOWD_TOPIC_PREFIX)")
	f.IntVar(&in.partitions, "partitions", kafkax.DefaultPartitions, "partitions of the topics flowd creates")
	f.StringVar(&in.keyPrefix, "redis-prefix", envOr("FLOWD_REDIS_PREFIX", store.DefaultPrefix), "prefix of flowd's Redis keys (env FLOWD_REDIS_PREFIX)")
	f.StringVar(&in.busKeyFile, "bus-key-file", envOr("FLOWD_BUS_KEY_FILE", ""), "file holding the key(s) that sign and verify records on flowd's topics; every role needs the same (or set "+busauth.EnvKey+")")
	f.BoolVar(&in.partnerTopicsRestricted, "partner-topics-restricted", envOr("FLOWD_PARTNER_TOPICS_RESTRICTED", "") == "true", "tenants may use only the partner topics an administrator listed for them (PATCH /api/v1/tenants/{id}); without it, a tenant with no list may use any topic outside flowd's own (env FLOWD_PARTNER_TOPICS_RESTRICTED=true)")
	f.StringVar(&in.pprofAddr, "pprof-addr", envOr("FLOWD_PPROF_ADDR", ""), "serve net/http/pprof on this separate address, e.g. 127.0.0.1:6060; off when empty (env FLOWD_PPROF_ADDR)")
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
	lifecycleWait time.Duration
	devEcho       bool
	// onReady runs once the API listens, with the admin token to print (empty if not new).
	onReady func(token string)
}

// serveAPI runs the control plane until ctx ends, then shuts down within a bounded drain.
func serveAPI(ctx context.Context, in *infra, opt apiOptions) error {
	c, err := connect(ctx, in)
	if err != nil {
		return err
	}
	defer c.close()
	if err := kafkax.EnsureTopics(ctx, c.kcfg, events.TopicName); err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	token, err := api.EnsureAdmin(ctx, c.st, opt.adminToken)
	if err != nil {
		return err
	}
	cat, err := catalog.Load(ctx, opt.connectorsDir, c.log)
	if err != nil {
		return err
	}
	c.log.Info("connectors loaded", "dir", opt.connectorsDir, "count", cat.Len())
	keys, err := keyring(opt.secretKeyFile, false)
	if err != nil {
		return err
	}
	app := api.New(api.Config{
		Store: c.st, Relay: c.relay, Log: c.log, BodyLimit: opt.bodyLimit, Catalog: cat, Secrets: keys,
		AutoConfirm: opt.autoConfirm, LifecycleWait: opt.lifecycleWait, DevEcho: opt.devEcho, ReservedTopic: c.kcfg.Reserved,
		PartnerTopicsRestricted: in.partnerTopicsRestricted,
	})
	return listenAndServe(ctx, app, opt.addr, func() {
		if opt.onReady != nil {
			opt.onReady(token)
		}
	})
}

// listenAndServe binds addr before calling ready, so a taken port fails the start and a
// printed curl works, then serves until ctx ends and drains within a bound.
func listenAndServe(ctx context.Context, app *fiber.App, addr string, ready func()) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- app.Listener(ln) }()
	slog.Info("listening", "addr", ln.Addr().String())
	if ready != nil {
		ready()
	}
	select {
	case err = <-errc:
		return err
	case <-ctx.Done():
		return app.ShutdownWithTimeout(10 * time.Second)
	}
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
