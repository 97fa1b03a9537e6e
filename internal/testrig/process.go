package testrig

import (
	"net"
	"os/exec"
	"testing"
	"time"
)

// freeAddr is a loopback address with a port nothing listens on right now.
func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	return addr
}

// startServer starts cmd for the test, keeps its output, and kills it when the test ends
// (showing the output if the test failed). It returns once ready answers nil, failing the test
// if that takes longer than within.
func startServer(t testing.TB, name string, cmd *exec.Cmd, within time.Duration, ready func() error) *LogBuffer {
	t.Helper()
	logs := &LogBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("%s:\n%s", name, logs.String())
		}
	})
	for deadline := time.Now().Add(within); ; {
		err := ready()
		if err == nil {
			return logs
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not become ready: %v\n%s", name, err, logs.String())
		}
		time.Sleep(50 * time.Millisecond) // polling readiness with a deadline
	}
}

// listening is a readiness check: something accepts connections on addr.
func listening(addr string) func() error {
	return func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			_ = c.Close()
		}
		return err
	}
}
