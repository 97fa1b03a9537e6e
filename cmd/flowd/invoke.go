package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/sdk"
)

// newInvokeCmd runs one action through the plugin host, exactly as a runner would, so
// connector authors can try an action without a flow.
func newInvokeCmd(dir *string) *cobra.Command {
	var (
		config, input, connection, pinFile string
		timeout                            time.Duration
	)
	cmd := &cobra.Command{
		Use:   "invoke NAME ACTION",
		Short: "Run one connector action through the plugin host and print its result",
		Example: `  flowd connectors invoke http request --config '{"url":"http://127.0.0.1:8080/healthz"}'
  flowd connectors invoke transform map --config '{"fields":{"total":"input.a + input.b"}}' --input '{"a":1,"b":2}'
  flowd connectors invoke http request --config '{"url":"https://api.example/me"}' --connection '{"type":"bearer","data":{"token":"..."}}'`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			inv := sdk.Invocation{
				ID: "1", Action: args[1], ExecutionID: "cli", NodeID: "cli", Attempt: 1,
				IdempotencyKey: "cli-" + time.Now().UTC().Format("20060102T150405.000000000"),
				Deadline:       time.Now().Add(timeout),
			}
			if err := decodeFlag("--config", config, &inv.Config); err != nil {
				return err
			}
			if err := decodeFlag("--input", input, &inv.Input); err != nil {
				return err
			}
			if connection != "" {
				inv.Connection = &sdk.Connection{}
				if err := decodeFlag("--connection", connection, inv.Connection); err != nil {
					return err
				}
			}
			h, err := host.New(host.Options{Dir: *dir, PinFile: pinFile, CallTimeout: timeout, Logger: slog.Default()})
			if err != nil {
				return err
			}
			defer func() { _ = h.Close() }()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+5*time.Second)
			defer cancel()
			res, err := h.Execute(ctx, args[0], []sdk.Invocation{inv})
			if err != nil {
				return err
			}
			if len(res) != 1 {
				return fmt.Errorf("connector returned %d results for one invocation", len(res))
			}
			raw, err := json.Marshal(res[0])
			if err != nil {
				return err
			}
			if err := printIndented(cmd.OutOrStdout(), raw); err != nil {
				return err
			}
			if e := res[0].Error; e != nil {
				kind := "permanent"
				if e.Retryable {
					kind = "retryable"
				}
				return fmt.Errorf("%s failed (%s): %s", args[1], kind, e.Error())
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&config, "config", envOr("FLOWD_INVOKE_CONFIG", "{}"), "action config as JSON (env FLOWD_INVOKE_CONFIG)")
	cmd.Flags().StringVar(&input, "input", envOr("FLOWD_INVOKE_INPUT", "null"), "input item as JSON (env FLOWD_INVOKE_INPUT)")
	cmd.Flags().StringVar(&connection, "connection", envOr("FLOWD_INVOKE_CONNECTION", ""), `resolved connection as JSON, e.g. {"type":"basic","data":{"username":"u","password":"p"}} (env FLOWD_INVOKE_CONNECTION)`)
	cmd.Flags().StringVar(&pinFile, "pin-file", envOr("FLOWD_CONNECTORS_PIN_FILE", ""), "sha256sum-style file pinning connector binaries (env FLOWD_CONNECTORS_PIN_FILE)")
	cmd.Flags().DurationVar(&timeout, "timeout", envDuration("FLOWD_INVOKE_TIMEOUT", 30*time.Second), "deadline of the call (env FLOWD_INVOKE_TIMEOUT)")
	return cmd
}

func decodeFlag(name, raw string, v any) error {
	if err := json.Unmarshal([]byte(raw), v); err != nil {
		return fmt.Errorf("%s is not valid JSON: %w", name, err)
	}
	return nil
}
