package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/tracing"
	"github.com/flowd/flowd/runners"
)

// runnerOptions configure the runner role.
type runnerOptions struct {
	pool          string
	groupID       string
	concurrency   int
	connectorsDir string
	secretKeyFile string
	drainTimeout  time.Duration
	connectors    connectorPolicy
	healthAddr    string
}

// connectorPolicy is what connectors may reach, passed to them in their environment, and which
// may start at all.
type connectorPolicy struct {
	egressAllow  string // addresses and hosts beyond the public internet
	kafkaBrokers string // brokers the kafka connector may produce to
	pinFile      string // only the connectors it pins start (host.Options.PinFile)
}

func (p *connectorPolicy) register(cmd *cobra.Command, egressDefault string) {
	f := cmd.Flags()
	f.StringVar(&p.egressAllow, "egress-allow", envOr("FLOWD_EGRESS_ALLOW", egressDefault),
		"comma-separated CIDRs, addresses, host names (each optionally :port, *.domain for subdomains) or 'loopback' "+
			"that connectors may reach although loopback, private, link-local or otherwise internal (env FLOWD_EGRESS_ALLOW)")
	f.StringVar(&p.kafkaBrokers, "kafka-connector-brokers", envOr("FLOWD_KAFKA_CONNECTOR_BROKERS", ""),
		"comma-separated host:port brokers the kafka connector may produce to; none when empty (env FLOWD_KAFKA_CONNECTOR_BROKERS)")
	f.StringVar(&p.pinFile, "pin-file", envOr("FLOWD_CONNECTORS_PIN_FILE", ""),
		"pin file, as flowd connectors pin prints it: only listed connectors that match start; reread on reload (env FLOWD_CONNECTORS_PIN_FILE)")
}

// env validates the policy and returns it as the connectors' environment, with flowd's topic
// prefix, which the kafka connector refuses to write.
func (p connectorPolicy) env(in *infra, log *slog.Logger) ([]string, error) {
	pol, err := egress.Parse(p.egressAllow)
	if err != nil {
		return nil, fmt.Errorf("--egress-allow: %w", err)
	}
	var brokers []string
	for b := range strings.SplitSeq(p.kafkaBrokers, ",") {
		if b = strings.TrimSpace(b); b == "" {
			continue
		}
		if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
			return nil, fmt.Errorf("--kafka-connector-brokers: %q is not host:port", b)
		}
		brokers = append(brokers, b)
		if slices.Contains(in.kafka().Brokers, b) {
			log.Warn("the kafka connector may reach flowd's own cluster; flowd's topics stay refused", "broker", b)
		}
	}
	allow := ""
	if !pol.Empty() {
		allow = pol.String()
	}
	log.Info("connector egress policy", "allowed beyond the public internet", pol.String(),
		"kafka connector brokers", strings.Join(brokers, ","), "reserved topic prefix", in.kafka().Topic(""))
	// Set even when empty: the runner's flags, not a stray variable in its environment, decide.
	return []string{
		egress.EnvAllow + "=" + allow,
		egress.EnvKafkaBrokersAllow + "=" + strings.Join(brokers, ","),
		egress.EnvReservedTopicPrefix + "=" + in.kafka().Topic(""),
	}, nil
}

func newRunnerCmd() *cobra.Command {
	var in infra
	var opt runnerOptions
	cmd := &cobra.Command{
		Use:   "runner",
		Short: "Run a runner pool: execute the steps on flowd.steps.<pool> through the connectors",
		Long: `flowd runner consumes the steps of one pool and runs them through the connectors in
--connectors-dir. On SIGHUP it rereads that directory and the pin file: new connectors become
callable, removed ones unknown, and upgraded ones start anew for new steps while the steps in
flight finish on the old process (see docs/connectors.md).`,
		Example: `  flowd runner --pool default --concurrency 32 --connectors-dir bin/connectors
  FLOWD_SECRET_KEY=... flowd runner --pool heavy --kafka-brokers kafka:9092 --redis-url redis://redis:6379/0
  kill -HUP <pid>   # after installing or upgrading connectors`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Main already stops on SIGTERM; this keeps the command graceful wherever it is run from.
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serveRunner(ctx, &in, opt)
		},
	}
	in.register(cmd)
	f := cmd.Flags()
	f.StringVar(&opt.pool, "pool", envOr("FLOWD_POOL", envelope.DefaultPool), "runner pool to serve: consumes <topic-prefix>steps.<pool> (env FLOWD_POOL)")
	f.StringVar(&opt.groupID, "group-id", envOr("FLOWD_RUNNER_GROUP", ""), "consumer group (default <topic-prefix>runner-<pool>, e.g. flowd-runner-default; env FLOWD_RUNNER_GROUP)")
	f.IntVar(&opt.concurrency, "concurrency", envInt("FLOWD_CONCURRENCY", runners.DefaultConcurrency), "steps run at once by this process (env FLOWD_CONCURRENCY)")
	f.StringVar(&opt.connectorsDir, "connectors-dir", envOr("FLOWD_CONNECTORS_DIR", "bin/connectors"), "directory of connector binaries (env FLOWD_CONNECTORS_DIR)")
	f.StringVar(&opt.secretKeyFile, "secret-key-file", envOr("FLOWD_SECRET_KEY_FILE", ""), "file holding the AES-256 key(s) for connection secrets; or the keys themselves in FLOWD_SECRET_KEY (env FLOWD_SECRET_KEY_FILE)")
	f.DurationVar(&opt.drainTimeout, "drain-timeout", envDuration("FLOWD_DRAIN_TIMEOUT", runners.DefaultDrainTimeout), "on shutdown, how long running steps may finish before they are left for redelivery (env FLOWD_DRAIN_TIMEOUT)")
	opt.connectors.register(cmd, "")
	registerHealthAddr(cmd, &opt.healthAddr)
	return cmd
}

// serveRunner runs a runner pool until ctx ends, then drains within the configured bound.
func serveRunner(ctx context.Context, in *infra, opt runnerOptions) error {
	stopTracing, err := tracing.Start(ctx, "runner", slog.Default())
	if err != nil {
		return err
	}
	defer stopTracing() // last: the role's final spans are flushed once it has drained
	// A runner without the key would fail every step that uses a connection.
	keys, err := keyring(opt.secretKeyFile, true)
	if err != nil {
		return err
	}
	// Checked before connecting: a bad flag fails the start at once.
	env, err := opt.connectors.env(in, slog.Default())
	if err != nil {
		return err
	}
	// The probes answer from the start: live while waiting for Redis and Kafka, not ready.
	chk := health.New()
	stopHealth, err := health.Serve(ctx, opt.healthAddr, chk)
	if err != nil {
		return err
	}
	defer stopHealth()
	c, err := connect(ctx, in)
	if err != nil {
		return err
	}
	defer c.close()
	h, err := host.New(host.Options{Dir: opt.connectorsDir, PinFile: opt.connectors.pinFile, Env: env, Logger: c.log})
	if err != nil {
		return err
	}
	// The host goes last: steps still draining need their connector processes.
	defer func() { _ = h.Close() }()
	defer reloadOnHangup(ctx, c.log, func(ctx context.Context) error { _, err := h.Reload(ctx); return err })()
	c.log.Info("connectors found", "dir", opt.connectorsDir, "connectors", h.List())
	r, err := newRunner(c, in, h, keys, opt)
	if err != nil {
		return err
	}
	// Ready once the runner consumes: its connectors start on their first step, not per probe.
	chk.Add(append(c.probes(), health.Until("runner consumers", r.Ready()))...)
	return runUntilDone(ctx, c.log, namedRole{"runner", r})
}
