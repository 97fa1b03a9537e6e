package host

import "syscall"

// sysProcAttr makes the kernel SIGKILL a connector when the host dies, even by SIGKILL. The
// signal follows the forking OS thread, which Go only retires after a LockOSThread goroutine
// exits; the SDK's own parent watchdog covers that case, and a spurious kill is a crash the
// supervisor recovers from.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
