package testrig

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Python example connector (connectors/examples/python/greeter) needs an interpreter with
// its requirements and the Python SDK (connectors/sdk/python) installed:
//   - FLOWD_TEST_PYTHON: such an interpreter (CI sets it); without it .cache/py-greeter-<hash> or
//     python3 is used, creating the venv if needed.
//   - FLOWD_REQUIRE_PYTHON=1: a missing Python fails the test instead of skipping it (CI).
const (
	envPython  = "FLOWD_TEST_PYTHON"
	envRequire = "FLOWD_REQUIRE_PYTHON"
)

// pySDKDir is the Python SDK's source, relative to the repository root; pySDKPackage is its
// package, the directory pip installs.
const (
	pySDKDir     = "connectors/sdk/python"
	pySDKPackage = "flowd_connector"
)

// GreeterPython returns an interpreter able to run the greeter, or skips the test (fails it under
// FLOWD_REQUIRE_PYTHON=1) when there is none.
func GreeterPython(t testing.TB, greeterDir string) string {
	t.Helper()
	missing := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if os.Getenv(envRequire) == "1" {
			t.Fatalf("%s (%s=1)", msg, envRequire)
		}
		t.Skipf("%s: skipping the Python example connector test (set %s=1 to make this a failure)", msg, envRequire)
	}
	root := repoRoot()
	sdk := filepath.Join(root, pySDKDir)
	if p := os.Getenv(envPython); p != "" {
		if err := checkPython(p, sdk); err != nil {
			t.Fatalf("%s=%s: %v", envPython, p, err)
		}
		return p
	}
	reqs := filepath.Join(greeterDir, "requirements.txt")
	// Keyed by the requirements and the SDK (pip copies the package into the venv), so changing
	// a pin or the SDK builds a fresh venv.
	sum, err := filesHash(reqs, filepath.Join(sdk, "pyproject.toml"), filepath.Join(sdk, pySDKPackage))
	if err != nil {
		t.Fatal(err)
	}
	venv := filepath.Join(root, ".cache", "py-greeter-"+sum[:12])
	venvPython := filepath.Join(venv, "bin", "python")
	stamp := filepath.Join(venv, ".complete")
	if _, err := os.Stat(stamp); err == nil && checkPython(venvPython, sdk) == nil {
		return venvPython
	}
	system, err := exec.LookPath("python3")
	if err != nil {
		missing("python3 not found on PATH")
	}
	if checkPython(system, sdk) == nil {
		return system
	}

	// pip builds a local package in its directory (build/, *.egg-info): build a copy instead,
	// so the source tree stays clean and no stale build output gets installed.
	src := t.TempDir()
	for _, name := range []string{"pyproject.toml", "README.md", pySDKPackage} {
		if err := copyTree(filepath.Join(sdk, name), filepath.Join(src, name)); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("creating %s with %s (pip install -r %s %s)", venv, system, reqs, sdk)
	if err := os.RemoveAll(venv); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{system, "-m", "venv", venv},
		{venvPython, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", reqs, src},
	} {
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			missing("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if err := checkPython(venvPython, sdk); err != nil {
		t.Fatalf("venv %s: %v", venv, err)
	}
	if err := os.WriteFile(stamp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return venvPython
}

// checkPython imports what the greeter needs, the SDK's stubs included (they check the grpcio
// version), and checks that the flowd_connector it imports is the one in sdkDir: an older install
// would test old code.
func checkPython(python, sdkDir string) error {
	script := "import grpc, grpc_health.v1.health, cryptography.x509, flowd_connector.connector_pb2_grpc, os; " +
		"print(os.path.dirname(flowd_connector.__file__))"
	// Imported as the connector will import it: -E, no PYTHON* variables (the host passes none to
	// connectors); -P, not from the working directory. -B: no __pycache__ beside it.
	out, err := exec.Command(python, "-E", "-P", "-B", "-c", script).Output()
	if err != nil {
		var (
			exit   *exec.ExitError
			stderr []byte
		)
		if errors.As(err, &exit) {
			stderr = exit.Stderr
		}
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(stderr)))
	}
	installed := strings.TrimSpace(string(out))
	want, err := filesHash(filepath.Join(sdkDir, pySDKPackage))
	if err != nil {
		return err
	}
	got, err := filesHash(installed)
	if err != nil {
		return err
	}
	if got != want {
		return fmt.Errorf("%s imports flowd_connector from %s, which differs from %s: pip install %s", python, installed, filepath.Join(sdkDir, pySDKPackage), sdkDir)
	}
	return nil
}

// filesHash hashes the files at paths by their path below the one given and their content; in a
// directory, walked in lexical order, only the Python sources count, which is what pip installs of
// a package.
func filesHash(paths ...string) (string, error) {
	h := sha256.New()
	for _, p := range paths {
		err := filepath.WalkDir(p, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() {
				if d.Name() == "__pycache__" {
					return filepath.SkipDir
				}
				return nil
			}
			if path != p && filepath.Ext(path) != ".py" {
				return nil
			}
			rel, err := filepath.Rel(p, path)
			if err != nil {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			fmt.Fprintf(h, "%s\x00%d\x00", rel, len(data))
			h.Write(data)
			return nil
		})
		if err != nil {
			return "", err
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// copyTree copies the file or directory src to dst, without bytecode caches.
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			if d.Name() == "__pycache__" {
				return filepath.SkipDir
			}
			return os.MkdirAll(target, 0o755)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, 0o644)
	})
}
