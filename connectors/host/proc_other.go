//go:build !linux

package host

import "syscall"

// sysProcAttr: without a parent-death signal, connectors rely on the SDK's parent watchdog.
func sysProcAttr() *syscall.SysProcAttr { return nil }
