package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/controlplane"
)

func newAPICmd() *cobra.Command {
	var in infra
	var opt apiOptions
	cmd := &cobra.Command{
		Use:   "api",
		Short: "Run the control plane: flow repository, identity and tokens (/api/v1)",
		Long: `flowd api serves /api/v1 and the web console at / (unless --console=false). It validates
flows against the manifests of the connectors in --connectors-dir, which it rereads on SIGHUP
(kill -HUP <pid>) after connectors are installed, upgraded or removed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			opt.adminToken = envOr("FLOWD_ADMIN_TOKEN", "")
			opt.onReady = func(token string) {
				if token != "" {
					fmt.Fprintf(cmd.OutOrStdout(), "Administrator token (shown once, store it now): %s\n", token)
				}
			}
			// Checked on the flag: a zero in options built without flags means the default.
			if err := checkAuditRetention(opt.auditRetention); err != nil {
				return err
			}
			return serveAPI(cmd.Context(), &in, opt)
		},
	}
	in.register(cmd)
	cmd.Flags().StringVar(&opt.addr, "addr", envOr("FLOWD_API_ADDR", "127.0.0.1:8080"), "listen address (env FLOWD_API_ADDR)")
	cmd.Flags().StringVar(&opt.connectorsDir, "connectors-dir", envOr("FLOWD_CONNECTORS_DIR", "bin/connectors"), "directory of connector binaries (env FLOWD_CONNECTORS_DIR)")
	cmd.Flags().StringVar(&opt.secretKeyFile, "secret-key-file", envOr("FLOWD_SECRET_KEY_FILE", ""), "file holding the AES-256 key(s) for connection secrets; or the keys themselves in FLOWD_SECRET_KEY (env FLOWD_SECRET_KEY_FILE)")
	cmd.Flags().IntVar(&opt.bodyLimit, "body-limit", envInt("FLOWD_BODY_LIMIT", controlplane.DefaultBodyLimit), "largest request body in bytes (env FLOWD_BODY_LIMIT)")
	cmd.Flags().BoolVar(&opt.autoConfirm, "confirm-lifecycle", envBool("FLOWD_CONFIRM_LIFECYCLE", false), "confirm flow start/stop in the api role itself (only for deployments without a router) (env FLOWD_CONFIRM_LIFECYCLE=true)")
	cmd.Flags().DurationVar(&opt.lifecycleWait, "lifecycle-wait", envDuration("FLOWD_LIFECYCLE_WAIT", 10*time.Second), "how long start/stop wait for the router's confirmation before answering 202 (env FLOWD_LIFECYCLE_WAIT)")
	registerConsole(cmd, &opt.console)
	registerAuditRetention(cmd, &opt.auditRetention)
	opt.deadLetters.register(cmd)
	opt.notify.register(cmd, "")
	return cmd
}
