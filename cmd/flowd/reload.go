package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// reloadOnHangup calls reload on every SIGHUP until the returned stop is called: the way to
// make a running role pick up connectors installed, upgraded or removed (`kill -HUP <pid>`).
// A failed reload is logged and changes nothing; the role keeps running.
func reloadOnHangup(ctx context.Context, log *slog.Logger, reload func(context.Context) error) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Info("SIGHUP: reloading connectors")
				if err := reload(ctx); err != nil {
					log.Error("connector reload failed: keeping the connectors as they were", "err", err)
				}
			}
		}
	})
	return func() {
		signal.Stop(hup)
		cancel()
		wg.Wait()
	}
}

// devWatchInterval is how often `flowd dev` looks at its connectors dir: a connector built or
// installed there is callable about this long after.
const devWatchInterval = time.Second

// watchConnectors calls reload every interval until ctx ends. reload looks for changes itself
// (Host.Reload compares what it finds with what runs, cheaply: no file is read), so a quiet
// directory costs a few stat calls a second. A failure is logged once until a reload succeeds.
func watchConnectors(ctx context.Context, log *slog.Logger, interval time.Duration, reload func(context.Context) error) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := reload(ctx)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil && !failing:
			log.Error("connectors dir: reload failed: keeping the connectors as they were", "err", err)
		case err == nil && failing:
			log.Info("connectors dir: reloading works again")
		}
		failing = err != nil
	}
}
