package host

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// readPinFile reads `sha256sum` output: "<hex sha256>  <file>" per line ("*<file>" in binary
// mode too); the file's base name is the connector's name. Blank lines and # comments are skipped.
func readPinFile(path string) (map[string][]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("pin file: %w", err)
	}
	defer f.Close()
	pins := map[string][]byte{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		sum, file, ok := strings.Cut(line, " ")
		file = strings.TrimPrefix(strings.TrimSpace(file), "*")
		if !ok || file == "" {
			return nil, fmt.Errorf("pin file %s:%d: want \"<sha256>  <name>\"", path, n)
		}
		b, err := hex.DecodeString(sum)
		if err != nil || len(b) != 32 {
			return nil, fmt.Errorf("pin file %s:%d: %q is not a hex sha256", path, n, sum)
		}
		name := filepath.Base(file)
		if _, dup := pins[name]; dup {
			return nil, fmt.Errorf("pin file %s:%d: %s is pinned twice", path, n, name)
		}
		pins[name] = b
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("pin file %s: %w", path, err)
	}
	return pins, nil
}

// Pin is what a pin file line holds for one connector.
type Pin struct {
	Name   string
	Sum    []byte // sha256: of the file for a binary, the package digest for a script
	Covers string // the file or, for a script, the package folder the sum covers
}

// Line is the pin file line: "<hex sha256>  <name>".
func (p Pin) Line() string { return hex.EncodeToString(p.Sum) + "  " + p.Name }

// Pins computes the pin of every connector in dir (as discovery finds them), by name.
func Pins(ctx context.Context, dir string) ([]Pin, error) {
	paths, err := discover(dir)
	if err != nil {
		return nil, err
	}
	names := slices.Sorted(maps.Keys(paths))
	pins := make([]Pin, 0, len(names))
	for _, name := range names {
		sum, covers, err := Digest(ctx, paths[name])
		if err != nil {
			return nil, fmt.Errorf("connector %q: %w", name, err)
		}
		pins = append(pins, Pin{Name: name, Sum: sum, Covers: covers})
	}
	return pins, nil
}

// Digest is what pins the connector executable at path, and what it covers. A binary is pinned
// by the sha256 of its file (what `sha256sum` prints). A script (a file starting with "#!")
// runs code beside it that its own hash would not cover, so it is pinned by the PackageDigest
// of its package: the folder holding the script, symlinks followed.
func Digest(ctx context.Context, path string) (sum []byte, covers string, err error) {
	resolved, script, err := resolveExecutable(path)
	if err != nil {
		return nil, "", err
	}
	if script {
		pkg := filepath.Dir(resolved)
		sum, err := PackageDigest(ctx, pkg)
		return sum, pkg, err
	}
	sum, err = fileSHA256(resolved)
	return sum, resolved, err
}

// resolveExecutable follows the symlinks of path and says whether the file is a script.
func resolveExecutable(path string) (resolved string, script bool, err error) {
	if resolved, err = filepath.EvalSymlinks(path); err != nil {
		return "", false, err
	}
	f, err := os.Open(resolved)
	if err != nil {
		return "", false, err
	}
	defer f.Close()
	head := make([]byte, 2)
	n, _ := io.ReadFull(f, head)
	return resolved, n == 2 && string(head) == "#!", nil
}

// packageExcluded are names skipped at any depth of a package: interpreter caches, virtual
// environments and version control, which change without the connector's code changing.
var packageExcluded = map[string]bool{"__pycache__": true, ".venv": true, "venv": true, ".git": true}

// packageFile is one file of a script connector's package.
type packageFile struct {
	rel  string // slash-separated, relative to the package folder
	path string
	info fs.FileInfo // of the file itself, symlinks followed
}

// packageFiles lists the regular files beneath dir (symlinks to files followed) but the
// excluded ones and *.pyc, sorted by relative path. A symlink to a folder is an error: what it
// holds would otherwise escape the digest.
func packageFiles(ctx context.Context, dir string) ([]packageFile, error) {
	var files []packageFile
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if path == dir {
			return nil
		}
		if packageExcluded[d.Name()] {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() || strings.HasSuffix(d.Name(), ".pyc") {
			return nil
		}
		info, err := os.Stat(path) // follows a symlink
		if err != nil {
			return err
		}
		switch {
		case info.IsDir():
			return fmt.Errorf("package %s: %s is a symlink to a folder, which a package digest does not follow", dir, path)
		case !info.Mode().IsRegular():
			return nil // sockets, pipes, devices: not code
		}
		rel, err := filepath.Rel(dir, path)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if strings.ContainsAny(rel, "\n\r") {
			return fmt.Errorf("package %s: file name %q has a line break", dir, rel)
		}
		files = append(files, packageFile{rel: rel, path: path, info: info})
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(files, func(a, b packageFile) int { return strings.Compare(a.rel, b.rel) })
	return files, nil
}

// PackageDigest is the sha256 pinning a script connector's package dir: the sha256 of one line
// "<hex sha256 of the content> <x or -> <relative path>\n" per file of the package, sorted by
// relative path ('/'-separated), where x means the file has an executable bit. Beneath dir,
// every regular file counts (symlinks to files followed) except *.pyc and anything under
// __pycache__, .venv, venv or .git.
func PackageDigest(ctx context.Context, dir string) ([]byte, error) {
	files, err := packageFiles(ctx, dir)
	if err != nil {
		return nil, err
	}
	h := sha256.New()
	for _, f := range files {
		sum, err := fileSHA256(f.path)
		if err != nil {
			return nil, err
		}
		mode := "-"
		if f.info.Mode().Perm()&0o111 != 0 {
			mode = "x"
		}
		fmt.Fprintf(h, "%x %s %s\n", sum, mode, f.rel)
	}
	return h.Sum(nil), nil
}

func fileSHA256(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return h.Sum(nil), nil
}

// identity sums up what running the connector at path would run, without reading contents
// (the dev watcher computes it every second): the resolved file's path, inode, size, mtime and
// mode and, for a script, those of every file of its package. Any change to what runs changes
// it; a touch or a rewrite with equal content does too, which only costs a restart.
func identity(ctx context.Context, path string) [sha256.Size]byte {
	h := sha256.New()
	stamp := func(name string, fi fs.FileInfo) {
		fmt.Fprintf(h, "%s %s %d %d %s\n", name, fileID(fi), fi.Size(), fi.ModTime().UnixNano(), fi.Mode())
	}
	resolved, script, err := resolveExecutable(path)
	if err == nil {
		var fi fs.FileInfo
		if fi, err = os.Stat(resolved); err == nil {
			stamp(resolved, fi)
		}
	}
	if err == nil && script {
		var files []packageFile
		if files, err = packageFiles(ctx, filepath.Dir(resolved)); err == nil {
			for _, f := range files {
				stamp(f.rel, f.info)
			}
		}
	}
	if err != nil {
		// Unreadable now: the same error twice is no change; a fix is one.
		fmt.Fprintf(h, "error %v\n", err)
	}
	var id [sha256.Size]byte
	h.Sum(id[:0])
	return id
}

// IsScript reports whether the connector executable at path (symlinks followed) is a script,
// pinned by its package rather than by its own sha256.
func IsScript(path string) (bool, error) {
	_, script, err := resolveExecutable(path)
	return script, err
}
