package devenv

import "syscall"

// childAttr makes the kernel SIGTERM the child when flowd dies, even by SIGKILL. Pdeathsig
// fires when the forking OS thread exits; Go only retires threads locked with LockOSThread,
// which the starting goroutine does not do.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
