// Package hosttest builds connector binaries for tests that run them through the host.
package hosttest

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// Build compiles each package into dir/<name> (pkgs maps connector name to an import path or a
// ./relative package directory, resolved from the calling test's package directory) and fails t
// when any build fails. Builds run concurrently; the Go build cache makes repeats cheap.
func Build(t testing.TB, dir string, pkgs map[string]string) {
	t.Helper()
	BuildFlags(t, dir, pkgs)
}

// BuildFlags is Build with more `go build` flags, such as "-ldflags=-X main.version=2.0.0".
func BuildFlags(t testing.TB, dir string, pkgs map[string]string, flags ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	type failure struct{ name, out string }
	var (
		mu       sync.Mutex
		failures []failure
		wg       sync.WaitGroup
	)
	for name, pkg := range pkgs {
		wg.Go(func() {
			args := append(append([]string{"build"}, flags...), "-o", filepath.Join(dir, name), pkg)
			cmd := exec.Command(goTool(), args...)
			if out, err := cmd.CombinedOutput(); err != nil {
				mu.Lock()
				failures = append(failures, failure{name, string(out) + err.Error()})
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for _, f := range failures {
		t.Errorf("build connector %s: %s", f.name, f.out)
	}
	if len(failures) > 0 {
		t.FailNow()
	}
}

// goTool is the go command: $GOROOT/bin/go when GOROOT is set, else the one on PATH.
func goTool() string {
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}
