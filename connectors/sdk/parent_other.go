//go:build !linux

package sdk

import (
	"log/slog"
	"os"
	"time"
)

// dieWithParent polls: only Linux has a parent-death signal.
func dieWithParent(log *slog.Logger, exit func(code int)) {
	parent := expectedParent()
	if os.Getppid() != parent {
		log.Warn("parent process is gone: exiting", "parent", parent)
		exit(1)
	}
	go watchParent(log, parent, 500*time.Millisecond, exit)
}
