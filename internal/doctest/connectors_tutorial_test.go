// Package doctest runs the commands the docs tell readers to type, so the docs cannot drift
// from the product.
package doctest

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tutorialBlocks returns, in order, the shell blocks of a Markdown file whose info string is
// "sh tutorial": the commands a reader of the tutorial types.
func tutorialBlocks(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var cur *strings.Builder
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case cur == nil && strings.TrimSpace(line) == "```sh tutorial":
			cur = &strings.Builder{}
		case cur != nil && strings.TrimSpace(line) == "```":
			blocks = append(blocks, cur.String())
			cur = nil
		case cur != nil:
			cur.WriteString(line + "\n")
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("%s: an unterminated tutorial block", path)
	}
	return blocks
}

// The connector tutorial (docs/connectors.md) is run as its reader would run it, command by
// command, in an empty directory with flowd on PATH: the docs cannot drift from the product.
func TestConnectorTutorialRuns(t *testing.T) {
	blocks := tutorialBlocks(t, "../../docs/connectors.md")
	if len(blocks) < 3 {
		t.Fatalf("docs/connectors.md has %d tutorial blocks", len(blocks))
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "flowd"), "github.com/flowd/flowd/cmd/flowd")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build flowd: %v\n%s", err, out)
	}
	work := t.TempDir()
	// Background processes a block starts (flowd dev) end with the script.
	script := "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n" + strings.Join(blocks, "\n")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-c", script)
	cmd.Dir = work
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	goBin := filepath.Join(strings.TrimSpace(string(goroot)), "bin")
	cmd.Env = append(os.Environ(),
		"PATH="+bin+string(os.PathListSeparator)+goBin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"FLOWD_SDK_DIR="+filepath.Join(root, "connectors", "sdk"),
	)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the tutorial fails: %v\n%s", err, out)
	}
	t.Logf("tutorial output:\n%s", out)
}
