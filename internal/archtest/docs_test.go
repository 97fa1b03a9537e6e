package archtest

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// docs/architecture.md leads a reader through the code by file and folder names; each one it
// names must exist, or the walk-through has drifted from the code.
func TestArchitectureDocNamesExistingFiles(t *testing.T) {
	root := filepath.Join("..", "..")
	raw, err := os.ReadFile(filepath.Join(root, "docs", "architecture.md"))
	if err != nil {
		t.Fatal(err)
	}
	// Backticked paths with a slash: `router/execute.go`, `internal/consume`, `cmd/flowd/`.
	re := regexp.MustCompile("`((?:cmd|controlplane|ingest|router|runners|connectors|schemas|deployments|internal|docs)/[A-Za-z0-9_./-]*)`")
	found := 0
	for _, m := range re.FindAllStringSubmatch(string(raw), -1) {
		p := strings.TrimSuffix(m[1], "/")
		found++
		if _, err := os.Stat(filepath.Join(root, p)); err != nil {
			t.Errorf("docs/architecture.md names %s, which does not exist", m[1])
		}
	}
	if found < 30 {
		t.Fatalf("found only %d paths in docs/architecture.md; the pattern no longer matches the doc", found)
	}
}
