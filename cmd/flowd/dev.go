package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/controlplane"
	"github.com/flowd/flowd/ingest"
	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/devenv"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/tracing"
)

func newDevCmd() *cobra.Command {
	var (
		dataDir    string
		example    string
		opt        apiOptions
		connectors connectorPolicy
	)
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run every role in one process with an embedded broker and Redis (for development)",
		Long: `flowd dev runs the control plane with an embedded Kafka-protocol broker persisted under
--data-dir and a Redis: a redis-server child process when one is on PATH, otherwise an in-memory
Redis (data lost on exit). It is for trying flowd on one machine, not for production.

It watches --connectors-dir: a connector built, installed, upgraded or removed there (for a
script connector, any file of its folder changed) is picked up within about a second, without
a restart. New calls run the new code; calls in flight finish on the old process. SIGHUP
reloads at once.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			// Checked on the flag: a zero in options built without flags means the default.
			if err := checkAuditRetention(opt.auditRetention); err != nil {
				return err
			}
			return runDev(cmd.Context(), cmd.OutOrStdout(), dataDir, example, opt, connectors)
		},
	}
	cmd.Flags().StringVar(&dataDir, "data-dir", envOr("FLOWD_DATA_DIR", ".flowd"), "where the embedded broker and Redis keep their data (env FLOWD_DATA_DIR)")
	cmd.Flags().StringVar(&opt.addr, "addr", envOr("FLOWD_API_ADDR", "127.0.0.1:8080"), "listen address of the API (env FLOWD_API_ADDR)")
	cmd.Flags().StringVar(&example, "example", envOr("FLOWD_EXAMPLE", ""), "flow document (JSON or YAML) to load at start unless a flow of that name exists (env FLOWD_EXAMPLE)")
	cmd.Flags().StringVar(&opt.connectorsDir, "connectors-dir", envOr("FLOWD_CONNECTORS_DIR", "bin/connectors"), "directory of connector binaries (env FLOWD_CONNECTORS_DIR)")
	cmd.Flags().IntVar(&opt.bodyLimit, "body-limit", envInt("FLOWD_BODY_LIMIT", 1<<20), "largest request body in bytes (env FLOWD_BODY_LIMIT)")
	registerConsole(cmd, &opt.console)
	registerAuditRetention(cmd, &opt.auditRetention)
	// Loopback by default: the example flow calls the dev echo route on 127.0.0.1.
	connectors.register(cmd, "loopback")
	opt.notify.register(cmd, "loopback")
	return cmd
}

func runDev(ctx context.Context, out io.Writer, dataDir, example string, opt apiOptions, connectors connectorPolicy) error {
	log := slog.Default()
	if connectors.egressAllow != "" {
		log.Warn("flowd dev lets connectors reach these internal addresses (loopback by default, where Redis and the broker listen too); a runner allows none unless --egress-allow says so", "egress-allow", connectors.egressAllow)
	}
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
		if opt.secretKeyFile, err = devKeyFile(dataDir, "secret.key", secrets.GenerateKey); err != nil {
			return err
		}
	}
	in := &infra{brokers: strings.Join(brokers, ","), redisURL: redisURL, topicPrefix: kafkax.DefaultTopicPrefix, partitions: 3, keyPrefix: store.DefaultPrefix}
	if os.Getenv(busauth.EnvKey) == "" {
		if in.busKeyFile, err = devKeyFile(dataDir, "bus.key", busauth.Generate); err != nil {
			return err
		}
	}
	all, err := startAll(ctx, in, opt, routerOptions{createPartnerTopics: true}, connectors)
	if err != nil {
		return err
	}
	defer all.close()
	defer reloadOnHangup(ctx, log, func(ctx context.Context) error { return all.reloadConnectors(ctx, true) })()

	return listenAndServe(ctx, all.app, all.health, opt.addr, func() {
		base := "http://" + opt.addr
		tok := "$FLOWD_ADMIN_TOKEN"
		if printToken {
			tok = opt.adminToken
		}
		fmt.Fprintf(out, "\nflowd dev is running: api, ingest, router and a runner (data in %s, Kafka at %s, Redis at %s)\n", dataDir, in.brokers, redisURL)
		if printToken {
			fmt.Fprintf(out, "Administrator token: %s\n", tok)
		}
		if line := consoleLine(all.console, all.consoleBuilt, base); line != "" {
			fmt.Fprintln(out, line)
		}
		fmt.Fprintf(out, "\nList flows:\n  curl -sg %s '%s/api/v1/flows?page[size]=10'\n", curlAuth(tok), base)
		if example == "" {
			fmt.Fprintln(out, "\nPress Ctrl-C to stop.")
			return
		}
		flowID, err := loadExample(ctx, base, opt.adminToken, example)
		if err != nil {
			log.Error("could not load the example flow", "file", example, "err", err)
			return
		}
		fmt.Fprintf(out, "\nThe example flow %s is active. Send it a contact; it answers synchronously:\n", flowID)
		fmt.Fprintf(out, "  curl -s -X POST %s/hooks/%s -H 'Content-Type: application/json' -d '{\"firstName\":\"Ada\",\"lastName\":\"Lovelace\"}'\n", base, flowID)
		fmt.Fprintf(out, "\nThen look at its executions:\n  curl -sg %s '%s/api/v1/flows/%s/executions?page[size]=1'\n", curlAuth(tok), base, flowID)
		fmt.Fprintln(out, "\nPress Ctrl-C to stop.")
	})
}

// everything is every role of flowd in one process, sharing one connection set and one
// HTTP listener: /hooks and /webhooks go to ingest, the rest to the API.
type everything struct {
	c      *conn
	host   *host.Host
	cat    *catalog.Catalog
	app    *fiber.App
	ingest *ingest.Server
	roles  *running
	// health is the whole process's readiness, answered on the one listener.
	health *health.Checker
	// console is the web console the API serves (nil: none), and whether it is built.
	console      fs.FS
	consoleBuilt bool

	stopWatch func() // stops the connectors dir watcher
	// stopTracing flushes the spans of every role, once they have stopped.
	stopTracing func()

	reloading sync.Mutex // the watcher and SIGHUP reload one at a time
	catStale  bool       // the catalog's last reload failed: the next one does it again
}

func startAll(ctx context.Context, in *infra, opt apiOptions, ropt routerOptions, connectors connectorPolicy) (*everything, error) {
	if ropt.parkTimeout == 0 {
		ropt.parkTimeout = opt.deadLetters.retention // a parked step fails when its dead letter goes
	}
	env, err := connectors.env(in, slog.Default())
	if err != nil {
		return nil, err
	}
	stopTracing, err := tracing.Start(ctx, "dev", slog.Default())
	if err != nil {
		return nil, err
	}
	c, err := connect(ctx, in)
	if err != nil {
		stopTracing()
		return nil, err
	}
	e := &everything{c: c, stopTracing: stopTracing}
	ok := false
	defer func() {
		if !ok {
			c.close()
			stopTracing()
		}
	}()
	topics := []string{events.TopicName, envelope.TopicIngest, envelope.TopicResults, envelope.TopicDLQ, envelope.TopicHistory,
		envelope.TopicNotifications, envelope.PoolTopic(envelope.DefaultPool)}
	if err := kafkax.EnsureTopics(ctx, c.kcfg, topics...); err != nil {
		return nil, fmt.Errorf("create topics: %w", err)
	}
	if _, err := controlplane.EnsureAdmin(ctx, c.st, opt.adminToken); err != nil {
		return nil, err
	}
	keys, err := keyring(opt.secretKeyFile, true)
	if err != nil {
		return nil, err
	}
	e.cat, err = catalog.Load(ctx, opt.connectorsDir, c.log)
	if err != nil {
		return nil, err
	}
	if e.cat.Len() == 0 {
		c.log.Warn("no connectors found: run `make build` first", "dir", opt.connectorsDir)
	}
	e.host, err = host.New(host.Options{Dir: opt.connectorsDir, PinFile: connectors.pinFile, Env: env, Logger: c.log})
	if err != nil {
		return nil, err
	}
	dls, err := newDeadLetters(c, opt.deadLetters)
	if err != nil {
		return nil, err
	}
	e.health = health.New(c.probes()...)
	e.console, e.consoleBuilt = webConsole(opt.console)
	apiApp := controlplane.New(controlplane.Config{
		Store: c.st, Relay: c.relay, Log: c.log, BodyLimit: opt.bodyLimit, Catalog: e.cat, Secrets: keys,
		LifecycleWait: 10 * time.Second, DevEcho: true, ReservedTopic: c.kcfg.Reserved, DeadLetters: dls,
		Health: e.health, Console: e.console, AuditRetention: opt.auditRetention,
	})
	// The roles are built and run exactly as `flowd ingest`, `flowd router` and `flowd runner`
	// build and run them (roles.go), with their default settings.
	e.ingest, err = newIngest(c, keys, ingestOptions{bodyLimit: opt.bodyLimit}, e.health)
	if err != nil {
		return nil, err
	}
	rt, err := newRouter(c, in, ropt)
	if err != nil {
		return nil, err
	}
	rn, err := newRunner(c, in, e.host, keys, runnerOptions{})
	if err != nil {
		return nil, err
	}
	// Ready means: the ingest follows flow events, the router consumes and confirms lifecycle
	// changes, the runner takes work, dead letters are indexed. Only then does the listener open.
	nt, err := newNotifier(c, keys, opt.notify, c.log)
	if err != nil {
		return nil, err
	}
	e.roles, err = runRoles(ctx, c.log, namedRole{"ingest", e.ingest}, namedRole{"router", rt}, namedRole{"runner", rn},
		namedRole{"dead letters", dls}, namedRole{"notifier", nt})
	if err != nil {
		_ = e.host.Close()
		_ = e.ingest.Close()
		return nil, err
	}
	e.health.Add(health.Until("router consumers", rt.Ready()), health.Until("runner consumers", rn.Ready()))

	apiH, ingestH := apiApp.Handler(), e.ingest.App().Handler()
	// The one listener reads every body first, so its limit and its answers for a body over it
	// are the roles' own.
	// Its timeouts are the roles' own too: the inner apps' settings do not reach this listener.
	e.app = fiber.New(fiber.Config{AppName: "flowd dev", BodyLimit: opt.bodyLimit, DisableStartupMessage: true,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute,
		ErrorHandler: httpproblem.Handler{BodyLimit: opt.bodyLimit, Log: c.log}.Handle})
	e.app.Use(func(fc *fiber.Ctx) error {
		p := fc.Path()
		if strings.HasPrefix(p, "/hooks/") || strings.HasPrefix(p, "/webhooks/") {
			ingestH(fc.Context())
		} else {
			apiH(fc.Context())
		}
		return nil
	})
	watchCtx, stopWatch := context.WithCancel(context.WithoutCancel(ctx))
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		watchConnectors(watchCtx, c.log, devWatchInterval, func(ctx context.Context) error { return e.reloadConnectors(ctx, false) })
	}()
	e.stopWatch = func() { stopWatch(); <-watched }
	ok = true
	return e, nil
}

// reloadConnectors rereads the connectors dir: the host replaces what changed (calls in flight
// finish on the old processes) and the API's catalog follows when anything did, or when forced.
func (e *everything) reloadConnectors(ctx context.Context, force bool) error {
	e.reloading.Lock()
	defer e.reloading.Unlock()
	changes, err := e.host.Reload(ctx)
	if err != nil {
		return err
	}
	if changes.Empty() && !force && !e.catStale {
		return nil
	}
	err = e.cat.Reload(ctx, e.c.log)
	e.catStale = err != nil
	return err
}

// close stops the connectors watcher and the roles (they drain), then connectors, ingest and
// connections, and flushes the spans last.
func (e *everything) close() {
	e.stopWatch()
	e.roles.stop()
	_ = e.host.Close()
	_ = e.ingest.Close()
	e.c.close()
	e.stopTracing()
}

// devKeyFile returns the key file name in the data dir, writing a generated key there first if
// there is none, so what a key protects stays readable across restarts.
func devKeyFile(dataDir, name string, generate func() string) (string, error) {
	path := filepath.Join(dataDir, name)
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if err := os.WriteFile(path, []byte(generate()+"\n"), 0o600); err != nil {
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

// curlAuth is the Authorization option of the curls the banner prints, in double quotes so
// that a shell expands "$FLOWD_ADMIN_TOKEN" when the banner names the variable, not the token.
func curlAuth(tok string) string {
	return `-H "Authorization: Bearer ` + tok + `"`
}
