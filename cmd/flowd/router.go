package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/tracing"
	"github.com/flowd/flowd/router"
)

// routerOptions configure the router role.
type routerOptions struct {
	group         string
	retention     time.Duration
	snapshotLimit int
	historySave   string
	maxCount      int
	budget        string
	stream        bool
	stepTimeout   time.Duration
	parkTimeout   time.Duration
	// createPartnerTopics: flowd dev creates partner topics as its embedded broker would.
	createPartnerTopics bool
	drain               time.Duration
	healthAddr          string
}

func newRouterCmd() *cobra.Command {
	var in infra
	var opt routerOptions
	cmd := &cobra.Command{
		Use:   "router",
		Short: "Run the router: flowd.ingest, partner topics and flowd.results in, work for the runner pools out",
		Long: `flowd router evaluates flows: it starts executions from flowd.ingest and from the partner
topics of active kafka-trigger flows, sends action steps to flowd.steps.<pool>, follows the results
on flowd.results, and keeps execution records in Redis. Run several for throughput: they share the
work through Kafka consumer groups. It also confirms flow starts and stops (run the api role with
--confirm-lifecycle=false when routers run).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runRouter(cmd.Context(), &in, opt)
		},
	}
	in.register(cmd)
	f := cmd.Flags()
	f.StringVar(&opt.group, "group", envOr("FLOWD_ROUTER_GROUP", ""), "Kafka consumer group of the routers (default <topic-prefix>-router, e.g. flowd-router; env FLOWD_ROUTER_GROUP)")
	f.DurationVar(&opt.retention, "retention", envDuration("FLOWD_EXECUTION_RETENTION", store.DefaultExecutionRetention), "how long ended executions are kept, unless their flow's history.maxAge says otherwise (env FLOWD_EXECUTION_RETENTION)")
	f.StringVar(&opt.historySave, "history-save", envOr("FLOWD_HISTORY_SAVE", store.SaveAll), "what a succeeded or filtered execution keeps, unless its flow's history.succeeded says otherwise: all, summary (no payloads) or none (env FLOWD_HISTORY_SAVE)")
	f.IntVar(&opt.maxCount, "history-max-count", envInt("FLOWD_HISTORY_MAX_COUNT", store.DefaultMaxCount), "succeeded and filtered executions kept per flow, unless its history.maxCount says otherwise; the oldest go first (-1: no bound; env FLOWD_HISTORY_MAX_COUNT)")
	f.BoolVar(&opt.stream, "history-stream", envBool("FLOWD_HISTORY_STREAM", false), "produce every ended execution, with the steps its policy keeps, to flowd.history for long-term storage elsewhere; it costs about as much CPU as the rest of a short execution (docs/history.md) (env FLOWD_HISTORY_STREAM=true)")
	f.StringVar(&opt.budget, "history-budget", envOr("FLOWD_HISTORY_BUDGET", "0"), "Redis memory for the executions of every flow together, e.g. 2GiB; beyond it the oldest succeeded executions are deleted first, failed ones last (0: no budget; env FLOWD_HISTORY_BUDGET)")
	f.IntVar(&opt.snapshotLimit, "snapshot-limit", envInt("FLOWD_SNAPSHOT_LIMIT", store.DefaultSnapshotLimit), "bytes of a step's input and output kept in its record (env FLOWD_SNAPSHOT_LIMIT)")
	f.DurationVar(&opt.stepTimeout, "step-timeout", envDuration("FLOWD_STEP_TIMEOUT", router.DefaultStepTimeout), "deadline of each work item (env FLOWD_STEP_TIMEOUT)")
	f.DurationVar(&opt.parkTimeout, "parked-step-timeout", envDuration("FLOWD_PARKED_STEP_TIMEOUT", router.DefaultParkTimeout),
		"how long a step parked on flowd.dlq (retry.exhausted: deadLetter) waits to be replayed or discarded before it fails; keep it within the api role's --dead-letter-retention (env FLOWD_PARKED_STEP_TIMEOUT)")
	f.DurationVar(&opt.drain, "drain-timeout", envDuration("FLOWD_DRAIN_TIMEOUT", router.DefaultDrainTimeout), "how long in-flight records may take to finish on shutdown (env FLOWD_DRAIN_TIMEOUT)")
	registerHealthAddr(cmd, &opt.healthAddr)
	return cmd
}

// runRouter runs the router and the outbox relay that publishes its lifecycle confirmations,
// until ctx ends.
func runRouter(ctx context.Context, in *infra, opt routerOptions) error {
	stopTracing, err := tracing.Start(ctx, "router", slog.Default())
	if err != nil {
		return err
	}
	defer stopTracing() // last: the role's final spans are flushed once it has drained
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
	rt, err := newRouter(c, in, opt)
	if err != nil {
		return err
	}
	chk.Add(append(c.probes(), health.Until("router consumers", rt.Ready()))...)
	return runUntilDone(ctx, c.log, namedRole{"router", rt})
}
