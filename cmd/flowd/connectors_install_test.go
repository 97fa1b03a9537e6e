package main

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/flowd/flowd/connectors/host"
)

// TestConnectorsInstallAndPin: install replaces a running executable where writing over it
// fails with "text file busy", links a script, leaves no temporary file; pin prints what a pin
// file needs, a script pinned by its package.
func TestConnectorsInstallAndPin(t *testing.T) {
	dir := t.TempDir()
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Skip("no sleep on PATH")
	}
	if out, _, err := run("connectors", "install", sleep, "--name", "tool", "--connectors-dir", dir); err != nil || out != "copied "+filepath.Join(dir, "tool")+"\n" {
		t.Fatalf("install: %q %v", out, err)
	}
	running := exec.Command(filepath.Join(dir, "tool"), "60")
	if err := running.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = running.Process.Kill(); _ = running.Wait() })
	// What a plain cp does to a running binary:
	if _, err := os.OpenFile(filepath.Join(dir, "tool"), os.O_WRONLY|os.O_TRUNC, 0); !errors.Is(err, syscall.ETXTBSY) {
		t.Fatalf("writing over the running binary: %v, want ETXTBSY (the test shows nothing otherwise)", err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := run("connectors", "install", self, "--name", "tool", "--connectors-dir", dir); err != nil {
		t.Fatalf("install over the running binary: %v", err)
	}
	want, _ := os.ReadFile(self)
	if got, err := os.ReadFile(filepath.Join(dir, "tool")); err != nil || string(got) != string(want) {
		t.Fatalf("installed file differs from its source (%v)", err)
	}

	pkg := t.TempDir()
	for name, content := range map[string]string{"run": "#!/bin/sh\nexec python3 \"$(dirname \"$0\")/code.py\"\n", "code.py": "print(1)\n"} {
		if err := os.WriteFile(filepath.Join(pkg, name), []byte(content), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	out, _, err := run("connectors", "install", filepath.Join(pkg, "run"), "--name", "script", "--connectors-dir", dir)
	if err != nil || !strings.HasPrefix(out, "linked ") {
		t.Fatalf("install a script: %q %v", out, err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "script")); err != nil || target != filepath.Join(pkg, "run") {
		t.Fatalf("script link: %q %v", target, err)
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 2 {
		t.Fatalf("connectors dir holds %v: want tool and script, no temporary file", entries)
	}

	for _, bad := range [][]string{{filepath.Join(pkg, "missing")}, {filepath.Join(pkg, "code.py"), "--name", ".hidden"}, {pkg}} {
		if _, _, err := run(append([]string{"connectors", "install", "--connectors-dir", dir}, bad...)...); err == nil {
			t.Errorf("install %v succeeded", bad)
		}
	}

	out, _, err = run("connectors", "pin", "--connectors-dir", dir)
	if err != nil {
		t.Fatal(err)
	}
	pkgSum, err := host.PackageDigest(context.Background(), pkg)
	if err != nil {
		t.Fatal(err)
	}
	if w := fmt.Sprintf("%x  script\n%x  tool\n", pkgSum, sha256.Sum256(want)); out != w {
		t.Fatalf("pin printed\n%s\nwant\n%s", out, w)
	}
	if _, _, err := run("connectors", "pin", "--connectors-dir", filepath.Join(dir, "none")); err == nil {
		t.Fatal("pin of a missing dir succeeded")
	}
}
