//go:build !linux

package devenv

import "syscall"

// childAttr: no parent-death signal outside Linux; stop must be called.
func childAttr() *syscall.SysProcAttr { return nil }
