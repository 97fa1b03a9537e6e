package main

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A Go connector written by `flowd connectors new` builds against the repository's SDK, passes
// its own tests, and runs its action through the plugin host.
func TestScaffoldedGoConnectorBuildsAndRuns(t *testing.T) {
	work := t.TempDir()
	project := filepath.Join(work, "echoer")
	out, _, err := run("connectors", "new", "echoer", "--lang", "go", "--dir", project, "--sdk-dir", "../../connectors/sdk")
	if err != nil || !strings.Contains(out, "main.go") || !strings.Contains(out, "connector_test.go") {
		t.Fatalf("new: %v %q", err, out)
	}
	goTool := filepath.Join(runtimeGOROOT(t), "bin", "go")
	connectors := filepath.Join(work, "connectors")
	for _, args := range [][]string{{"mod", "tidy"}, {"vet", "./..."}, {"test", "-count=1", "./..."}, {"build", "-o", filepath.Join(connectors, "echoer"), "."}} {
		cmd := exec.Command(goTool, args...)
		cmd.Dir = project
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	if out, err := exec.Command(filepath.Join(runtimeGOROOT(t), "bin", "gofmt"), "-l", project).CombinedOutput(); err != nil || len(out) > 0 {
		t.Fatalf("the scaffold is not gofmt-clean: %v %s", err, out)
	}
	out, _, err = run("connectors", "invoke", "echoer", "echo", "--connectors-dir", connectors, "--config", `{"prefix":"Hello, "}`, "--input", `{"text":"Ada"}`)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Outputs []struct {
			Data map[string]any `json:"data"`
		} `json:"outputs"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil || len(res.Outputs) != 1 || res.Outputs[0].Data["message"] != "Hello, Ada" {
		t.Fatalf("invoke: %v %q", err, out)
	}
	// Writing into a project that exists is refused, and so is a name that cannot be one.
	if _, _, err := run("connectors", "new", "echoer", "--dir", project); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("into an existing project: %v", err)
	}
	if _, _, err := run("connectors", "new", "Echo_er", "--dir", filepath.Join(work, "x")); err == nil || !strings.Contains(err.Error(), "lowercase") {
		t.Fatalf("a bad name: %v", err)
	}
	if _, err := os.Stat(filepath.Join(work, "x")); err == nil {
		t.Fatal("a refused scaffold wrote files")
	}
}

// runtimeGOROOT is the Go installation running the tests, so the scaffold builds with it.
func runtimeGOROOT(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	return strings.TrimSpace(string(out))
}
