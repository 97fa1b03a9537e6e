package scaffold

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestWritePython(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "crm-sync")
	files, err := Write(Options{Name: "crm-sync", Lang: "python", Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"crm-sync", "crm_sync.py", "test_crm_sync.py", "README.md"} {
		if !slices.Contains(files, want) {
			t.Errorf("files %v lack %s", files, want)
		}
	}
	fi, err := os.Stat(filepath.Join(dir, "crm-sync"))
	if err != nil || fi.Mode().Perm()&0o111 == 0 {
		t.Fatalf("the launcher is not executable: %v %v", fi, err)
	}
	// Without a checkout, pip installs the published SDK; nothing is left unrendered.
	readme, _ := os.ReadFile(filepath.Join(dir, "README.md"))
	mod, _ := os.ReadFile(filepath.Join(dir, "crm_sync.py"))
	if !strings.Contains(string(readme), publishedPythonSDK) || strings.Contains(string(readme)+string(mod), "{{") ||
		!strings.Contains(string(mod), `"name": "crm-sync"`) {
		t.Fatalf("rendered README %q / module %q", readme, mod)
	}
}

func TestWriteRefuses(t *testing.T) {
	full := t.TempDir()
	if err := os.WriteFile(filepath.Join(full, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, o := range []Options{
		{Name: "Bad_Name", Lang: "go", Dir: filepath.Join(t.TempDir(), "a")},
		{Name: "ok", Lang: "rust", Dir: filepath.Join(t.TempDir(), "b")},
		{Name: "ok", Lang: "go", Dir: full},
	} {
		if _, err := Write(o); err == nil {
			t.Errorf("%+v: written", o)
		}
	}
}

func TestGoProjectUsesTheCheckoutsSDK(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "p")
	if _, err := Write(Options{Name: "echoer", Lang: "go", Dir: dir, SDKDir: "/src/flowd/connectors/sdk"}); err != nil {
		t.Fatal(err)
	}
	mod, _ := os.ReadFile(filepath.Join(dir, "go.mod"))
	if !strings.Contains(string(mod), "replace github.com/flowd/flowd/connectors/sdk => /src/flowd/connectors/sdk") {
		t.Fatalf("go.mod %s", mod)
	}
	if _, err := os.Stat(filepath.Join(dir, "main.go")); err != nil {
		t.Fatalf("main.go: %v", err)
	}
	if root := FindSDK(dir, "../.."); root == "" || !strings.HasSuffix(root, filepath.Join("connectors", "sdk")) {
		t.Fatalf("FindSDK from the repository: %q", root)
	}
}
