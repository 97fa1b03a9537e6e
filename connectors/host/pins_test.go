package host

import (
	"crypto/sha256"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeTree creates files (slash-separated relative path -> content; a name ending in * is
// executable) under dir in the given order.
func writeTree(t *testing.T, dir string, order []string, files map[string]string) {
	t.Helper()
	for _, name := range order {
		mode := os.FileMode(0o644)
		path := name
		if p, ok := strings.CutSuffix(name, "*"); ok {
			path, mode = p, 0o755
		}
		full := filepath.Join(dir, filepath.FromSlash(path))
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(files[name]), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(full, mode); err != nil { // WriteFile's mode is subject to the umask
			t.Fatal(err)
		}
	}
}

func digest(t *testing.T, dir string) string {
	t.Helper()
	sum, err := PackageDigest(ctxT(t), dir)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sum)
}

func TestPackageDigest(t *testing.T) {
	files := map[string]string{
		"launcher*":              "#!/usr/bin/env python3\n",
		"mod.py":                 "print('hi')\n",
		"a.txt":                  "a",
		"a/b.py":                 "b",
		"lib/util.py":            "u",
		"__pycache__/mod.pyc":    "cache",
		"lib/__pycache__/x.pyc":  "cache",
		"lib/stale.pyc":          "cache",
		".venv/bin/python*":      "venv",
		"venv/lib/site.py":       "venv",
		".git/HEAD":              "ref",
		"lib/.git":               "gitdir: elsewhere",
		"notes/__pycache__/y.py": "excluded with its folder",
	}
	names := slices.Sorted(maps.Keys(files))
	one, two := t.TempDir(), t.TempDir()
	writeTree(t, one, names, files)
	slices.Reverse(names)
	writeTree(t, two, names, files) // created in the other order
	d := digest(t, one)
	if got := digest(t, two); got != d {
		t.Fatalf("same files created in another order: %s, want %s", got, d)
	}

	// The definition, spelled out: one line per counted file, sorted by path.
	line := func(key string) string {
		path, mode := key, "-"
		if p, ok := strings.CutSuffix(key, "*"); ok {
			path, mode = p, "x"
		}
		return fmt.Sprintf("%x %s %s\n", sha256.Sum256([]byte(files[key])), mode, path)
	}
	want := sha256.Sum256([]byte(line("a.txt") + line("a/b.py") + line("launcher*") + line("lib/util.py") + line("mod.py")))
	if d != fmt.Sprintf("%x", want) {
		t.Fatalf("digest %s, want %x", d, want)
	}

	// Excluded files change nothing.
	writeTree(t, one, []string{"__pycache__/new.pyc", ".venv/x", ".git/config", "other.pyc"}, map[string]string{})
	if got := digest(t, one); got != d {
		t.Fatal("an excluded file changed the digest")
	}
	// Content, the executable bit, a file's name and a new file each do.
	for what, change := range map[string]func(dir string) error{
		"content":  func(dir string) error { return os.WriteFile(filepath.Join(dir, "lib", "util.py"), []byte("v"), 0o644) },
		"exec bit": func(dir string) error { return os.Chmod(filepath.Join(dir, "mod.py"), 0o744) },
		"rename":   func(dir string) error { return os.Rename(filepath.Join(dir, "a.txt"), filepath.Join(dir, "b.txt")) },
		"new file": func(dir string) error { return os.WriteFile(filepath.Join(dir, "lib", "more.py"), nil, 0o644) },
		"file moved": func(dir string) error {
			return os.Rename(filepath.Join(dir, "a", "b.py"), filepath.Join(dir, "lib", "b.py"))
		},
	} {
		dir := t.TempDir()
		writeTree(t, dir, names, files)
		if err := change(dir); err != nil {
			t.Fatal(err)
		}
		if got := digest(t, dir); got == d {
			t.Errorf("%s: digest unchanged", what)
		}
	}

	// A symlinked file counts with its target's content; a symlinked folder is refused.
	linked := t.TempDir()
	writeTree(t, linked, names, files)
	target := filepath.Join(t.TempDir(), "util.py")
	writeFile(t, target, "u")
	if err := os.Remove(filepath.Join(linked, "lib", "util.py")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(linked, "lib", "util.py")); err != nil {
		t.Fatal(err)
	}
	if got := digest(t, linked); got != d {
		t.Fatalf("a symlink to an equal file: %s, want %s", got, d)
	}
	if err := os.Symlink(t.TempDir(), filepath.Join(linked, "shared")); err != nil {
		t.Fatal(err)
	}
	if _, err := PackageDigest(ctxT(t), linked); err == nil || !strings.Contains(err.Error(), "symlink to a folder") {
		t.Fatalf("symlinked folder: %v", err)
	}
}

// TestDigest: a binary is pinned by its sha256 (sha256sum's), a script by its package's digest,
// its package being the folder of the script it resolves to.
func TestDigest(t *testing.T) {
	bin := filepath.Join(crasherDir(t), "crasher")
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum, covers, err := Digest(ctxT(t), bin)
	if err != nil || fmt.Sprintf("%x", sum) != fmt.Sprintf("%x", sha256.Sum256(data)) || covers != bin {
		t.Fatalf("binary: %x %s %v, want sha256 %x of %s", sum, covers, err, sha256.Sum256(data), bin)
	}

	pkg := t.TempDir()
	writeTree(t, pkg, []string{"run*", "code.py"}, map[string]string{"run*": "#!/bin/sh\nexec python3 code.py\n", "code.py": "pass\n"})
	dir := t.TempDir()
	if err := os.Symlink(filepath.Join(pkg, "run"), filepath.Join(dir, "tool")); err != nil {
		t.Fatal(err)
	}
	resolvedPkg, err := filepath.EvalSymlinks(pkg)
	if err != nil {
		t.Fatal(err)
	}
	sum, covers, err = Digest(ctxT(t), filepath.Join(dir, "tool"))
	if err != nil || covers != resolvedPkg || fmt.Sprintf("%x", sum) != digest(t, pkg) {
		t.Fatalf("script: %x %s %v, want the digest of package %s", sum, covers, err, resolvedPkg)
	}
	pins, err := Pins(ctxT(t), dir)
	if err != nil || len(pins) != 1 || pins[0].Line() != fmt.Sprintf("%x  tool", sum) {
		t.Fatalf("Pins: %+v %v", pins, err)
	}
}
