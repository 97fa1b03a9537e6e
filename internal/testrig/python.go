package testrig

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The Python example connector (connectors/examples/python/greeter) needs an interpreter with
// its requirements:
//   - FLOWD_TEST_PYTHON: an interpreter with greeter/requirements.txt installed (CI sets it);
//     without it .cache/py-greeter-<hash> or python3 is used, creating the venv if needed.
//   - FLOWD_REQUIRE_PYTHON=1: a missing Python fails the test instead of skipping it (CI).
const (
	envPython  = "FLOWD_TEST_PYTHON"
	envRequire = "FLOWD_REQUIRE_PYTHON"
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
	if p := os.Getenv(envPython); p != "" {
		if err := checkPython(p, greeterDir); err != nil {
			t.Fatalf("%s=%s: %v", envPython, p, err)
		}
		return p
	}
	reqs := filepath.Join(greeterDir, "requirements.txt")
	sum, err := fileHash(reqs)
	if err != nil {
		t.Fatal(err)
	}
	root := repoRoot()
	// Keyed by the requirements, so changing a pin builds a fresh venv.
	venv := filepath.Join(root, ".cache", "py-greeter-"+sum[:12])
	venvPython := filepath.Join(venv, "bin", "python")
	stamp := filepath.Join(venv, ".complete")
	if _, err := os.Stat(stamp); err == nil && checkPython(venvPython, greeterDir) == nil {
		return venvPython
	}
	system, err := exec.LookPath("python3")
	if err != nil {
		missing("python3 not found on PATH")
	}
	if checkPython(system, greeterDir) == nil {
		return system
	}

	t.Logf("creating %s with %s (pip install -r %s)", venv, system, reqs)
	if err := os.RemoveAll(venv); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	for _, args := range [][]string{
		{system, "-m", "venv", venv},
		{venvPython, "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r", reqs},
	} {
		if out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput(); err != nil {
			missing("%s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if err := checkPython(venvPython, greeterDir); err != nil {
		t.Fatalf("venv %s: %v", venv, err)
	}
	if err := os.WriteFile(stamp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	return venvPython
}

// checkPython imports what the greeter needs, stubs included (they check the grpcio version).
func checkPython(python, greeterDir string) error {
	script := "import sys; sys.path.insert(0, sys.argv[1]); " +
		"import grpc, grpc_health.v1.health, cryptography.x509, connector_pb2, connector_pb2_grpc"
	// -B: no __pycache__ in the source tree.
	out, err := exec.Command(python, "-B", "-c", script, greeterDir).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}

func fileHash(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
