package main

import (
	"context"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/kafkax"
)

// probes are the readiness conditions every role shares: Redis and Kafka reachable.
func (c *conn) probes() []health.Probe {
	return []health.Probe{
		{Name: "redis", Check: c.st.Ping},
		{Name: "kafka", Check: func(ctx context.Context) error { return kafkax.Ping(ctx, c.kcfg) }},
	}
}

// registerHealthAddr defines --health-addr for the roles without an HTTP listener of their own.
// Off by default, so several roles can run on one host without choosing ports.
func registerHealthAddr(cmd *cobra.Command, addr *string) {
	cmd.Flags().StringVar(addr, "health-addr", envOr("FLOWD_HEALTH_ADDR", ""),
		"serve /livez and /readyz on this address, e.g. :8082; off when empty (env FLOWD_HEALTH_ADDR)")
}
