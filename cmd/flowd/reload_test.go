package main

import (
	"context"
	"log/slog"
	"os"
	"syscall"
	"testing"
	"time"
)

// TestReloadOnHangup: SIGHUP reloads (and does not end the process); after stop it reloads no more.
func TestReloadOnHangup(t *testing.T) {
	reloads := make(chan struct{}, 1)
	stop := reloadOnHangup(context.Background(), slog.New(slog.DiscardHandler), func(context.Context) error {
		reloads <- struct{}{}
		return nil
	})
	for range 2 {
		if err := syscall.Kill(os.Getpid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		select {
		case <-reloads:
		case <-time.After(30 * time.Second):
			t.Fatal("no reload 30s after SIGHUP")
		}
	}
	stop()
	select {
	case <-reloads:
		t.Fatal("reloaded after stop")
	default:
	}
}
