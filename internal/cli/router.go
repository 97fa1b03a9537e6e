package cli

import (
	"context"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/router"
)

// routerOptions configure the router role.
type routerOptions struct {
	group         string
	retention     time.Duration
	snapshotLimit int
	stepTimeout   time.Duration
	drain         time.Duration
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
	f.DurationVar(&opt.retention, "retention", store.DefaultExecutionRetention, "how long execution records are kept")
	f.IntVar(&opt.snapshotLimit, "snapshot-limit", store.DefaultSnapshotLimit, "bytes of a step's input and output kept in its record")
	f.DurationVar(&opt.stepTimeout, "step-timeout", router.DefaultStepTimeout, "deadline of each work item")
	f.DurationVar(&opt.drain, "drain-timeout", router.DefaultDrainTimeout, "how long in-flight records may take to finish on shutdown")
	return cmd
}

// runRouter runs the router and the outbox relay that publishes its lifecycle confirmations,
// until ctx ends.
func runRouter(ctx context.Context, in *infra, opt routerOptions) error {
	c, err := connect(ctx, in)
	if err != nil {
		return err
	}
	defer c.close()
	rt, err := newRouter(c, in, opt)
	if err != nil {
		return err
	}
	return runUntilDone(ctx, c.log, namedRole{"router", rt})
}
