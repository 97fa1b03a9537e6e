package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"
	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/controlplane"
	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/metrics"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/tracing"
)

// infra are the flags every production role shares.
type infra struct {
	brokers  string
	redisURL string
	// redisCluster: redisURL names the seed nodes of a Redis Cluster.
	redisCluster bool
	topicPrefix  string
	partitions   int
	// Replication of the topics flowd creates (kafkax.Durability); 0 is the default.
	replicationFactor, minInsyncReplicas int
	requireReplication                   bool
	keyPrefix                            string
	pprofAddr                            string
	// metrics is --metrics (metrics.SetEnabled); nil, as in an infra not made by register
	// (flowd dev, tests), means on.
	metrics          *bool
	metricsFlowLabel bool // metrics.SetFlowLabel
	busKeyFile       string
	// Consumer group membership: how fast a dead member's partitions move to the others.
	kafkaSessionTimeout, kafkaHeartbeat, kafkaRebalanceTimeout time.Duration
	// redeliveryWindow: how long ended executions' bookkeeping outlives them (store.ExecPolicy).
	redeliveryWindow time.Duration
	// partnerTopicsRestricted: tenants without a partner-topic list use no partner topic.
	partnerTopicsRestricted bool

	// Kafka authentication and encryption (kafkax.SASL, kafkax.TLS).
	kafkaSASL kafkax.SASL
	kafkaTLS  kafkax.TLS

	// Redis credentials beyond the URL, so no password needs to sit in a command line.
	redisUsername     string
	redisPassword     string // from the environment only
	redisPasswordFile string
	redisTLSCAFile    string
}

// Environment variables that carry secrets. They have no flag (a flag's value shows in `ps`
// and its default in --help); the *_FILE flags are the alternative.
const (
	envKafkaSASLPassword = "FLOWD_KAFKA_SASL_PASSWORD"
	envRedisPassword     = "FLOWD_REDIS_PASSWORD"
)

func (in *infra) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&in.brokers, "kafka-brokers", envOr("FLOWD_KAFKA_BROKERS", "127.0.0.1:9092"), "comma-separated Kafka brokers (env FLOWD_KAFKA_BROKERS)")
	f.StringVar(&in.redisURL, "redis-url", envOr("FLOWD_REDIS_URL", "redis://127.0.0.1:6379/0"), "Redis URL; with --redis-cluster, redis://host1:6379?addr=host2:6379&addr=host3:6379 (env FLOWD_REDIS_URL)")
	f.BoolVar(&in.redisCluster, "redis-cluster", envBool("FLOWD_REDIS_CLUSTER", false), "Redis is a Redis Cluster; --redis-url names its seed nodes (env FLOWD_REDIS_CLUSTER=true)")
	f.StringVar(&in.topicPrefix, "topic-prefix", envOr("FLOWD_TOPIC_PREFIX", kafkax.DefaultTopicPrefix), "prefix of flowd's Kafka topics (env FLOWD_TOPIC_PREFIX)")
	f.IntVar(&in.partitions, "partitions", envInt("FLOWD_PARTITIONS", kafkax.DefaultPartitions), "partitions of the topics flowd creates (env FLOWD_PARTITIONS)")
	f.IntVar(&in.replicationFactor, "kafka-replication-factor", envInt("FLOWD_KAFKA_REPLICATION_FACTOR", 0),
		"replicas of each partition of the topics flowd creates; 0: 3, or the broker count on a smaller cluster, said at start-up (env FLOWD_KAFKA_REPLICATION_FACTOR)")
	f.IntVar(&in.minInsyncReplicas, "kafka-min-insync-replicas", envInt("FLOWD_KAFKA_MIN_INSYNC_REPLICAS", 0),
		"min.insync.replicas of the topics flowd creates: an acknowledged record is on at least this many brokers; 0: 2, or 1 with a replication factor under 3 (env FLOWD_KAFKA_MIN_INSYNC_REPLICAS)")
	f.BoolVar(&in.requireReplication, "kafka-require-replication", envBool("FLOWD_KAFKA_REQUIRE_REPLICATION", false),
		"refuse to start when flowd's existing topics are replicated less than configured, instead of warning (env FLOWD_KAFKA_REQUIRE_REPLICATION=true)")
	f.StringVar(&in.keyPrefix, "redis-prefix", envOr("FLOWD_REDIS_PREFIX", store.DefaultPrefix), "prefix of flowd's Redis keys (env FLOWD_REDIS_PREFIX)")
	f.DurationVar(&in.kafkaSessionTimeout, "kafka-session-timeout", envDuration("FLOWD_KAFKA_SESSION_TIMEOUT", kafkax.DefaultSessionTimeout),
		"a consumer that sends no heartbeat for this long loses its partitions to the others (env FLOWD_KAFKA_SESSION_TIMEOUT; at least the broker's group.min.session.timeout.ms)")
	f.DurationVar(&in.kafkaHeartbeat, "kafka-heartbeat-interval", envDuration("FLOWD_KAFKA_HEARTBEAT_INTERVAL", kafkax.DefaultHeartbeatInterval),
		"how often consumers tell the group they are alive; at most a third of the session timeout (env FLOWD_KAFKA_HEARTBEAT_INTERVAL)")
	f.DurationVar(&in.kafkaRebalanceTimeout, "kafka-rebalance-timeout", envDuration("FLOWD_KAFKA_REBALANCE_TIMEOUT", kafkax.DefaultRebalanceTimeout),
		"how long live consumers may take to rejoin a rebalance (env FLOWD_KAFKA_REBALANCE_TIMEOUT)")
	f.DurationVar(&in.redeliveryWindow, "redelivery-window", envDuration("FLOWD_REDELIVERY_WINDOW", store.DefaultRedeliveryWindow),
		"how long the router's message markers and the runners' run records outlive an execution; a record redelivered later than that after its execution ended runs again (env FLOWD_REDELIVERY_WINDOW; the same on every role)")
	f.StringVar(&in.busKeyFile, "bus-key-file", envOr("FLOWD_BUS_KEY_FILE", ""), "file holding the key(s) that sign and verify records on flowd's topics; every role needs the same; or the keys themselves in "+busauth.EnvKey+" (env FLOWD_BUS_KEY_FILE)")
	f.BoolVar(&in.partnerTopicsRestricted, "partner-topics-restricted", envBool("FLOWD_PARTNER_TOPICS_RESTRICTED", false), "tenants may use only the partner topics an administrator listed for them (PATCH /api/v1/tenants/{id}); without it, a tenant with no list may use any topic outside flowd's own (env FLOWD_PARTNER_TOPICS_RESTRICTED=true)")
	in.metrics = f.Bool("metrics", envBool("FLOWD_METRICS", true), "record flowd's Prometheus metrics (served at /metrics); false leaves only the Go and process metrics (env FLOWD_METRICS=false)")
	f.BoolVar(&in.metricsFlowLabel, "metrics-flow-label", envBool("FLOWD_METRICS_FLOW_LABEL", false), "label the execution metrics with the flow id: one series per flow, and partner topics' consumer lag; off keeps the series bounded (env FLOWD_METRICS_FLOW_LABEL=true)")
	f.StringVar(&in.pprofAddr, "pprof-addr", envOr("FLOWD_PPROF_ADDR", ""), "serve net/http/pprof on this separate address, e.g. 127.0.0.1:6060; off when empty (env FLOWD_PPROF_ADDR)")

	f.StringVar(&in.kafkaSASL.Mechanism, "kafka-sasl-mechanism", envOr("FLOWD_KAFKA_SASL_MECHANISM", ""), "authenticate to Kafka with SASL: SCRAM-SHA-512, SCRAM-SHA-256 or PLAIN; off when empty (env FLOWD_KAFKA_SASL_MECHANISM)")
	f.StringVar(&in.kafkaSASL.Username, "kafka-sasl-username", envOr("FLOWD_KAFKA_SASL_USERNAME", ""), "Kafka SASL username (env FLOWD_KAFKA_SASL_USERNAME)")
	f.StringVar(&in.kafkaSASL.PasswordFile, "kafka-sasl-password-file", envOr("FLOWD_KAFKA_SASL_PASSWORD_FILE", ""), "file holding the Kafka SASL password (env FLOWD_KAFKA_SASL_PASSWORD_FILE; or the password itself in env "+envKafkaSASLPassword+")")
	in.kafkaSASL.Password = os.Getenv(envKafkaSASLPassword)
	f.BoolVar(&in.kafkaTLS.Enabled, "kafka-tls", envBool("FLOWD_KAFKA_TLS", false), "connect to Kafka over TLS (env FLOWD_KAFKA_TLS=true)")
	f.StringVar(&in.kafkaTLS.CAFile, "kafka-tls-ca-file", envOr("FLOWD_KAFKA_TLS_CA_FILE", ""), "PEM CA bundle to verify the brokers with instead of the system roots (env FLOWD_KAFKA_TLS_CA_FILE)")
	f.StringVar(&in.kafkaTLS.CertFile, "kafka-tls-cert-file", envOr("FLOWD_KAFKA_TLS_CERT_FILE", ""), "PEM client certificate for mutual TLS (env FLOWD_KAFKA_TLS_CERT_FILE)")
	f.StringVar(&in.kafkaTLS.KeyFile, "kafka-tls-key-file", envOr("FLOWD_KAFKA_TLS_KEY_FILE", ""), "PEM key of the client certificate (env FLOWD_KAFKA_TLS_KEY_FILE)")
	f.StringVar(&in.kafkaTLS.ServerName, "kafka-tls-server-name", envOr("FLOWD_KAFKA_TLS_SERVER_NAME", ""), "name to verify in the broker certificates, when it differs from the broker address (env FLOWD_KAFKA_TLS_SERVER_NAME)")
	f.BoolVar(&in.kafkaTLS.InsecureSkipVerify, "kafka-tls-insecure-skip-verify", envBool("FLOWD_KAFKA_TLS_INSECURE_SKIP_VERIFY", false), "accept any broker certificate: test clusters only (env FLOWD_KAFKA_TLS_INSECURE_SKIP_VERIFY=true)")

	f.StringVar(&in.redisUsername, "redis-username", envOr("FLOWD_REDIS_USERNAME", ""), "Redis ACL user, overriding the URL's (env FLOWD_REDIS_USERNAME)")
	f.StringVar(&in.redisPasswordFile, "redis-password-file", envOr("FLOWD_REDIS_PASSWORD_FILE", ""), "file holding the Redis password, overriding the URL's (env FLOWD_REDIS_PASSWORD_FILE; or the password itself in env "+envRedisPassword+")")
	in.redisPassword = os.Getenv(envRedisPassword)
	f.StringVar(&in.redisTLSCAFile, "redis-tls-ca-file", envOr("FLOWD_REDIS_TLS_CA_FILE", ""), "PEM CA bundle to verify a rediss:// server with instead of the system roots (env FLOWD_REDIS_TLS_CA_FILE)")
}

func (in *infra) kafka() kafkax.Config {
	return kafkax.Config{
		Brokers: strings.Split(in.brokers, ","), TopicPrefix: in.topicPrefix, Partitions: in.partitions,
		ReplicationFactor: in.replicationFactor, MinInsyncReplicas: in.minInsyncReplicas, RequireReplication: in.requireReplication,
		SASL: in.kafkaSASL, TLS: in.kafkaTLS,
		SessionTimeout: in.kafkaSessionTimeout, HeartbeatInterval: in.kafkaHeartbeat, RebalanceTimeout: in.kafkaRebalanceTimeout,
	}
}

// redisOptions parses --redis-url and applies the credentials and TLS given beside it. Its
// errors never quote the URL: it may hold a password.
func (in *infra) redisOptions() (*redis.Options, error) {
	opt, err := redis.ParseURL(in.redisURL)
	if err != nil {
		return nil, redisURLError(err)
	}
	if err := in.redisAuth(&opt.Protocol, &opt.Username, &opt.Password, opt.TLSConfig); err != nil {
		return nil, err
	}
	return opt, nil
}

// redisClient connects to a single Redis or, with --redis-cluster, to a Redis Cluster whose
// seed nodes the URL names (redis://host1:6379?addr=host2:6379&addr=host3:6379). where says
// where, for logs.
func (in *infra) redisClient() (rdb redis.UniversalClient, where string, err error) {
	if !in.redisCluster {
		opt, err := in.redisOptions()
		if err != nil {
			return nil, "", err
		}
		c := redis.NewClient(opt)
		if metrics.Enabled() {
			c.AddHook(metrics.RedisHook{})
		}
		return c, "redis at " + opt.Addr, nil
	}
	opt, err := redis.ParseClusterURL(in.redisURL)
	if err != nil {
		return nil, "", redisURLError(err)
	}
	if err := in.redisAuth(&opt.Protocol, &opt.Username, &opt.Password, opt.TLSConfig); err != nil {
		return nil, "", err
	}
	c := redis.NewClusterClient(opt)
	if metrics.Enabled() {
		c.AddHook(metrics.RedisHook{})
	}
	return c, "redis cluster at " + strings.Join(opt.Addrs, ","), nil
}

func redisURLError(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err // url.Error quotes the whole URL
	}
	return fmt.Errorf("--redis-url: %w", err)
}

// redisAuth applies the protocol default, the credentials and the CA given beside the URL to
// a client's options (a single node's or a cluster's, which have the same fields).
func (in *infra) redisAuth(protocol *int, username, password *string, tlsConfig *tls.Config) error {
	if *protocol == 0 {
		// RESP2 unless the URL asks otherwise (?protocol=3): flowd uses no RESP3 feature, and
		// go-redis checks every RESP3 connection for push notifications before each command,
		// which under load cost the router about a tenth of its CPU.
		*protocol = 2
	}
	if in.redisUsername != "" {
		*username = in.redisUsername
	}
	switch {
	case in.redisPasswordFile != "" && in.redisPassword != "":
		return fmt.Errorf("both --redis-password-file and %s are set: use one", envRedisPassword)
	case in.redisPasswordFile != "":
		b, err := os.ReadFile(in.redisPasswordFile)
		if err != nil {
			return fmt.Errorf("--redis-password-file: %w", err)
		}
		// Secret files usually end in a newline that is not part of the password.
		*password = strings.TrimRight(string(b), "\r\n")
	case in.redisPassword != "":
		*password = in.redisPassword
	}
	if in.redisTLSCAFile != "" {
		if tlsConfig == nil {
			return errors.New("--redis-tls-ca-file needs a rediss:// URL")
		}
		pem, err := os.ReadFile(in.redisTLSCAFile)
		if err != nil {
			return fmt.Errorf("--redis-tls-ca-file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("--redis-tls-ca-file %s holds no PEM certificate", in.redisTLSCAFile)
		}
		tlsConfig.RootCAs = pool
	}
	return nil
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
	console       bool // serve the web console at /
	deadLetters   deadLetterOptions
	notify        notifyOptions
	// auditRetention is how long audit log entries are kept.
	auditRetention time.Duration
	// onReady runs once the API listens, with the admin token to print (empty if not new).
	onReady func(token string)
}

// serveAPI runs the control plane until ctx ends, then shuts down within a bounded drain.
func serveAPI(ctx context.Context, in *infra, opt apiOptions) error {
	stopTracing, err := tracing.Start(ctx, "api", slog.Default())
	if err != nil {
		return err
	}
	defer stopTracing() // last: the role's final spans are flushed once it has drained
	c, err := connect(ctx, in)
	if err != nil {
		return err
	}
	defer c.close()
	if err := kafkax.EnsureTopics(ctx, c.kcfg, events.TopicName); err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	token, err := controlplane.EnsureAdmin(ctx, c.st, opt.adminToken)
	if err != nil {
		return err
	}
	cat, err := catalog.Load(ctx, opt.connectorsDir, c.log)
	if err != nil {
		return err
	}
	c.log.Info("connectors loaded", "dir", opt.connectorsDir, "count", cat.Len())
	defer reloadOnHangup(ctx, c.log, func(ctx context.Context) error { return cat.Reload(ctx, c.log) })()
	keys, err := keyring(opt.secretKeyFile, false)
	if err != nil {
		return err
	}
	dls, err := newDeadLetters(c, opt.deadLetters)
	if err != nil {
		return err
	}
	nt, err := newNotifier(c, keys, opt.notify, c.log)
	if err != nil {
		return err
	}
	// The dead-letter indexer and the failure notifier run beside the API, stopped after the
	// listener is shut down.
	roles, err := runRoles(ctx, c.log, namedRole{"dead letters", dls}, namedRole{"notifier", nt})
	if err != nil {
		return err
	}
	defer roles.stop()
	chk := health.New(c.probes()...)
	consoleFS, consoleBuilt := webConsole(opt.console)
	app := controlplane.New(controlplane.Config{
		Store: c.st, Relay: c.relay, Log: c.log, BodyLimit: opt.bodyLimit, Catalog: cat, Secrets: keys,
		AutoConfirm: opt.autoConfirm, LifecycleWait: opt.lifecycleWait, DevEcho: opt.devEcho, ReservedTopic: c.kcfg.Reserved,
		PartnerTopicsRestricted: in.partnerTopicsRestricted, DeadLetters: dls, Health: chk, Console: consoleFS,
		AuditRetention: opt.auditRetention,
	})
	return listenAndServe(ctx, app, chk, opt.addr, func() {
		switch {
		case consoleFS == nil:
		case consoleBuilt:
			c.log.Info("web console", "url", "http://"+opt.addr+"/")
		default:
			c.log.Info("web console not built into this binary: run make build; / answers 503 until then")
		}
		if opt.onReady != nil {
			opt.onReady(token)
		}
	})
}

// listenAndServe binds addr before calling ready, so a taken port fails the start and a
// printed curl works, then serves until ctx ends and drains within a bound: chk (mounted on
// app) turns not ready at once while the requests in flight finish.
func listenAndServe(ctx context.Context, app *fiber.App, chk *health.Checker, addr string, ready func()) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- app.Listener(httpproblem.Listener(ln)) }()
	slog.Info("listening", "addr", ln.Addr().String())
	if ready != nil {
		ready()
	}
	select {
	case err = <-errc:
		return err
	case <-ctx.Done():
		return app.ShutdownWithTimeout(chk.DrainFor(10 * time.Second))
	}
}

// waitFor retries check until it succeeds or ctx ends, so roles can start before their
// dependencies do (as in compose or Kubernetes).
func waitFor(ctx context.Context, what string, check func(context.Context) error) error {
	b := backoff.New(200*time.Millisecond, 5*time.Second)
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
		if !b.Wait(ctx) {
			return fmt.Errorf("%s is not reachable: %w", what, errors.Join(ctx.Err(), err))
		}
	}
}
