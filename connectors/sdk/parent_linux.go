package sdk

import (
	"log/slog"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// dieWithParent asks the kernel to SIGKILL us when the parent dies, and checks that the parent
// did not die before we asked; watchParent covers what the signal misses.
func dieWithParent(log *slog.Logger, exit func(code int)) {
	parent := expectedParent()
	if err := unix.Prctl(unix.PR_SET_PDEATHSIG, uintptr(unix.SIGKILL), 0, 0, 0); err != nil {
		log.Warn("prctl PR_SET_PDEATHSIG failed: relying on the parent watchdog", "err", err)
	}
	if os.Getppid() != parent {
		log.Warn("parent process is gone: exiting", "parent", parent)
		exit(1)
	}
	go watchParent(log, parent, 500*time.Millisecond, exit)
}
