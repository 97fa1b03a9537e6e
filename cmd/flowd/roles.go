package main

import (
	"context"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/ingest"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/health"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/router"
	"github.com/flowd/flowd/runners"
)

// role is the life cycle every flowd role shares: Run until ctx ends (then drain), Ready once
// it takes work. The production commands and `flowd dev` build each role with the same newX
// function below and run it through runRoles, so dev runs exactly what production runs: a
// background part left out of dev once (ingest's flow events watcher) kept webhooks on a stale
// flow status for the whole cache TTL.
type role interface {
	Run(ctx context.Context) error
	Ready() <-chan struct{}
}

// namedRole is a role and the name its log lines carry.
type namedRole struct {
	name string
	role role
}

// newIngest builds the ingest role from the process's connections; it adds its readiness
// conditions to chk.
func newIngest(c *conn, keys *secrets.Keyring, opt ingestOptions, chk *health.Checker) (*ingest.Server, error) {
	return ingest.New(ingest.Config{
		Kafka: c.kcfg, Store: c.st, Secrets: keys, Log: c.log, Writer: c.w, Health: chk,
		BodyLimit: opt.bodyLimit, IdempotencyTTL: opt.idempotencyTTL, SyncTimeout: opt.syncTimeout,
		ProduceTimeout: opt.produceTimeout, CacheTTL: opt.cacheTTL,
	})
}

// newRouter builds the router role; its lifecycle confirmations kick c's outbox relay.
func newRouter(c *conn, in *infra, opt routerOptions) (*router.Router, error) {
	pol, err := opt.policy(in)
	if err != nil {
		return nil, err
	}
	return router.New(router.Config{
		Kafka: c.kcfg, Store: c.st, Log: c.log, GroupID: opt.group, Relay: c.relay, PartnerTopicsRestricted: in.partnerTopicsRestricted,
		Policy: pol, StepTimeout: opt.stepTimeout, ParkTimeout: opt.parkTimeout, CreatePartnerTopics: opt.createPartnerTopics, DrainTimeout: opt.drain, HistoryStream: opt.stream,
	})
}

// policy checks the router's history flags.
func (opt routerOptions) policy(in *infra) (store.ExecPolicy, error) {
	pol := store.ExecPolicy{
		Retention: opt.retention, SnapshotLimit: opt.snapshotLimit, MaxCount: opt.maxCount,
		Succeeded: opt.historySave, RedeliveryWindow: in.redeliveryWindow,
	}
	if pol.Succeeded != "" {
		if err := store.CheckSavePolicy(pol.Succeeded); err != nil {
			return pol, fmt.Errorf("--history-save: %w", err)
		}
	}
	if opt.budget != "" {
		n, err := parseBytes(opt.budget)
		if err != nil {
			return pol, fmt.Errorf("--history-budget: %w", err)
		}
		pol.Budget = n
	}
	return pol, nil
}

// parseBytes reads a size such as 512MiB, 2GiB, 1GB or 1048576.
func parseBytes(v string) (int64, error) {
	units := []struct {
		suffix string
		n      int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	num, mult := strings.TrimSpace(v), int64(1)
	for _, u := range units {
		if rest, ok := strings.CutSuffix(num, u.suffix); ok {
			num, mult = strings.TrimSpace(rest), u.n
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size such as 512MiB, 2GiB or 1048576", v)
	}
	return n * mult, nil
}

// newRunner builds a runner pool on connector host h.
func newRunner(c *conn, in *infra, h *host.Host, keys *secrets.Keyring, opt runnerOptions) (*runners.Runner, error) {
	return runners.New(runners.Config{
		Kafka: c.kcfg, Pool: opt.pool, GroupID: opt.groupID, Concurrency: opt.concurrency,
		Host: h, Resolver: connections.NewResolver(c.st, keys, nil, c.log), Store: c.st, Log: c.log,
		DrainTimeout: opt.drainTimeout, RedeliveryWindow: in.redeliveryWindow,
	})
}

// running is a set of roles started by runRoles.
type running struct {
	cancel context.CancelFunc
	done   chan struct{}
	errc   chan error // the first role that stopped on its own, with its error
}

// runRoles runs every role on a context of its own (ended by stop, so the caller decides when
// the roles drain, after its HTTP listener is shut down) and returns once all are Ready. A role
// that fails first, or ctx ending first, is an error; the roles started are stopped then.
func runRoles(ctx context.Context, log *slog.Logger, roles ...namedRole) (*running, error) {
	runCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &running{cancel: cancel, done: make(chan struct{}), errc: make(chan error, len(roles))}
	var wg sync.WaitGroup
	for _, nr := range roles {
		wg.Go(func() {
			err := nr.role.Run(runCtx)
			if runCtx.Err() != nil {
				return // stopped: a role's drain errors are its own to log
			}
			if err == nil {
				err = fmt.Errorf("%s stopped", nr.name)
			} else {
				err = fmt.Errorf("%s: %w", nr.name, err)
			}
			log.Error("role stopped", "role", nr.name, "err", err)
			r.errc <- err
		})
	}
	go func() { defer close(r.done); wg.Wait() }()
	for _, nr := range roles {
		select {
		case <-nr.role.Ready():
		case err := <-r.errc:
			r.stop()
			return nil, err
		case <-ctx.Done():
			r.stop()
			return nil, fmt.Errorf("%s not ready: %w", nr.name, ctx.Err())
		}
	}
	return r, nil
}

// failed delivers the error of a role that stopped on its own.
func (r *running) failed() <-chan error { return r.errc }

// stop ends every role and waits until they have drained.
func (r *running) stop() {
	r.cancel()
	<-r.done
}

// runUntilDone runs roles until ctx ends or one of them stops on its own (its error is
// returned), then stops them all and waits for their drain.
func runUntilDone(ctx context.Context, log *slog.Logger, roles ...namedRole) error {
	r, err := runRoles(ctx, log, roles...)
	if err != nil && ctx.Err() != nil {
		return nil // asked to stop while starting: not a failure
	}
	if err != nil {
		return err
	}
	defer r.stop()
	select {
	case <-ctx.Done():
		return nil
	case err := <-r.failed():
		return err
	}
}
