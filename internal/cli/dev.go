package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/internal/devenv"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
)

func newDevCmd() *cobra.Command {
	var (
		dataDir string
		example string
		opt     apiOptions
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run every role in one process with an embedded broker and Redis (for development)",
		Long: `flowd dev runs the control plane with an embedded Kafka-protocol broker persisted under
--data-dir and a Redis: a redis-server child process when one is on PATH, otherwise an in-memory
Redis (data lost on exit). It is for trying flowd on one machine, not for production.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), cmd.OutOrStdout(), dataDir, example, opt)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", envOr("FLOWD_DATA_DIR", ".flowd"), "where the embedded broker and Redis keep their data")
	cmd.Flags().StringVar(&opt.addr, "addr", envOr("FLOWD_API_ADDR", "127.0.0.1:8080"), "listen address of the API")
	cmd.Flags().StringVar(&example, "example", "", "flow document (JSON or YAML) to load at start unless a flow of that name exists")
	cmd.Flags().StringVar(&opt.connectorsDir, "connectors-dir", envOr("FLOWD_CONNECTORS_DIR", "bin/connectors"), "directory of connector binaries")
	cmd.Flags().IntVar(&opt.bodyLimit, "body-limit", 1<<20, "largest request body in bytes")
	return cmd
}

func runDev(ctx context.Context, out io.Writer, dataDir, example string, opt apiOptions) error {
	log := slog.Default()
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	brokers, stopBroker, err := devenv.StartBroker(ctx, dataDir, log)
	if err != nil {
		return fmt.Errorf("embedded broker: %w", err)
	}
	defer stopBroker()
	redisURL, stopRedis, err := devenv.StartRedis(ctx, dataDir, log)
	if err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	defer stopRedis()

	in := &infra{brokers: strings.Join(brokers, ","), redisURL: redisURL, topicPrefix: kafkax.DefaultTopicPrefix, partitions: 3, keyPrefix: store.DefaultPrefix}
	opt.autoConfirm = true
	opt.adminToken = os.Getenv("FLOWD_ADMIN_TOKEN")
	printToken := opt.adminToken == ""
	if printToken {
		// flowd dev keeps its admin token in the data dir so every start can print a working curl.
		if opt.adminToken, err = devToken(dataDir); err != nil {
			return err
		}
	}
	if os.Getenv(secrets.EnvKey) == "" {
		// flowd dev keeps a generated secret key beside its data, so stored connections
		// stay readable across restarts.
		if opt.secretKeyFile, err = devSecretKey(dataDir); err != nil {
			return err
		}
	}
	opt.onReady = func(string) {
		base := "http://" + opt.addr
		var flowID string
		if example != "" {
			if flowID, err = loadExample(ctx, base, opt.adminToken, example); err != nil {
				log.Error("could not load the example flow", "file", example, "err", err)
			}
		}
		tok := "$FLOWD_ADMIN_TOKEN"
		if printToken {
			tok = opt.adminToken
			fmt.Fprintf(out, "\nflowd dev is running (data in %s, Kafka at %s, Redis at %s)\n", dataDir, in.brokers, redisURL)
			fmt.Fprintf(out, "Administrator token: %s\n", tok)
		} else {
			fmt.Fprintf(out, "\nflowd dev is running (data in %s); the administrator token is $FLOWD_ADMIN_TOKEN\n", dataDir)
		}
		fmt.Fprintf(out, "\nTry:\n  curl -sg -H 'Authorization: Bearer %s' '%s/api/v1/flows?page[size]=1'\n", tok, base)
		if flowID != "" {
			fmt.Fprintf(out, "  curl -s -X POST -H 'Authorization: Bearer %s' %s/api/v1/flows/%s/start\n", tok, base, flowID)
		}
		fmt.Fprintln(out, "\nPress Ctrl-C to stop.")
	}
	return serveAPI(ctx, in, opt)
}

func devSecretKey(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "secret.key")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.WriteFile(path, []byte(secrets.GenerateKey()+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return path, nil
}

func devToken(dataDir string) (string, error) {
	path := filepath.Join(dataDir, "admin-token")
	b, err := os.ReadFile(path)
	if err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	}
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("read %s: %w", path, err)
	}
	tok := identity.NewToken()
	if err := os.WriteFile(path, []byte(tok+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return tok, nil
}
