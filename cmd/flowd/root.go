// Command flowd is the single binary of the flowd integration-flow platform and its composition
// root: every role (ingest, router, runner, api, dev) is built and wired here from its flags,
// and the command line's client commands (flows, connections, validate...) live beside them.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

func main() {
	os.Exit(Main(os.Args[1:]))
}

// Main runs the command line and returns the process exit code.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot(os.Stdout, os.Stderr)
	root.SetArgs(args)
	if err := root.ExecuteContext(ctx); err != nil {
		// One readable line, as people expect from a CLI.
		fmt.Fprintln(os.Stderr, "flowd: "+strings.ReplaceAll(err.Error(), "\n", " "))
		var ee exitError
		if errors.As(err, &ee) {
			return int(ee)
		}
		return 1
	}
	return 0
}

type exitError int

func (e exitError) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

func newRoot(stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:           "flowd",
		Short:         "flowd runs integration flows: webhooks and Kafka topics in, multi-step flows out",
		SilenceUsage:  true,
		SilenceErrors: true,
		Version:       Version,
	}
	root.SetOut(stdout)
	root.SetErr(stderr)
	var level string
	root.PersistentFlags().StringVar(&level, "log-level", envOr("FLOWD_LOG_LEVEL", "info"), "log level: debug, info, warn, error (env FLOWD_LOG_LEVEL)")
	root.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if err := checkFlagEnv(cmd); err != nil {
			return err
		}
		var l slog.Level
		if err := l.UnmarshalText([]byte(level)); err != nil {
			return fmt.Errorf("--log-level: %w", err)
		}
		slog.SetDefault(slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: l})))
		return nil
	}
	root.AddCommand(newDevCmd(), newAPICmd(), newFlowsCmd(), newValidateCmd(), newApplyCmd(), newExportCmd(), newConnectorsCmd(), newRunnerCmd(), newRouterCmd(), newIngestCmd())
	return root
}
