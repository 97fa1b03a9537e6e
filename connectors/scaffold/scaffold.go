// Package scaffold writes a new connector's project from the templates under templates/<lang>:
// a working connector with one action and one polling trigger, its manifest, a test and a
// README, ready to build, test and install (flowd connectors new).
package scaffold

import (
	"bytes"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"text/template"
)

//go:embed all:templates
var templates embed.FS

// Languages lists the languages a connector can be scaffolded in.
var Languages = []string{"go", "python"}

// validName keeps a connector's name usable as a file name, a Go module path element and, with
// dashes turned into underscores, a Python module.
var validName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)

// launcherName in a template's file name stands for the connector's name; a file named exactly
// so is the connector's executable.
const launcherName = "__name__"

// Options say what to write.
type Options struct {
	Name string // the connector's name: lowercase letters, digits and dashes
	Lang string // go or python
	Dir  string // where to write; must not exist or be empty
	// SDKDir is the SDK to build against, a flowd checkout's connectors/sdk: Go projects use
	// the module there (a replace in go.mod), Python ones pip install its python/ package.
	// Empty: the published SDK.
	SDKDir string
}

// publishedPythonSDK is what pip installs the Python SDK from without a checkout.
const publishedPythonSDK = "git+https://github.com/flowd/flowd#subdirectory=connectors/sdk/python"

// data is what templates see.
type data struct {
	Name   string // as given
	Module string // Name with dashes as underscores (a Python module name)
	SDKDir string
}

// Write renders the language's templates into o.Dir and returns the files written, relative
// to it.
func Write(o Options) ([]string, error) {
	if !validName.MatchString(o.Name) {
		return nil, fmt.Errorf("connector name %q: use lowercase letters, digits and dashes, starting with a letter", o.Name)
	}
	if !slices.Contains(Languages, o.Lang) {
		return nil, fmt.Errorf("language %q: choose one of %s", o.Lang, strings.Join(Languages, ", "))
	}
	if entries, err := os.ReadDir(o.Dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("%s exists and is not empty: choose another --dir", o.Dir)
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	d := data{Name: o.Name, Module: strings.ReplaceAll(o.Name, "-", "_"), SDKDir: o.SDKDir}
	if o.Lang == "python" {
		d.SDKDir = publishedPythonSDK
		if o.SDKDir != "" {
			d.SDKDir = filepath.Join(o.SDKDir, "python")
		}
	}
	root := path.Join("templates", o.Lang)
	var written []string
	err := fs.WalkDir(templates, root, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		rel := strings.TrimPrefix(p, root+"/")
		src, err := templates.ReadFile(p)
		if err != nil {
			return err
		}
		out, err := render(rel, string(src), d)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if path.Base(rel) == launcherName {
			mode = 0o755
		}
		rel, err = render(rel, rel, d) // a file's name may hold {{.Module}} too
		if err != nil {
			return err
		}
		rel = strings.ReplaceAll(rel, launcherName, o.Name)
		rel = strings.TrimSuffix(rel, ".tmpl") // keeps go tooling off templates of Go files
		dst := filepath.Join(o.Dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(dst, []byte(out), mode); err != nil {
			return err
		}
		written = append(written, rel)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("scaffold %s connector %s: %w", o.Lang, o.Name, err)
	}
	return written, nil
}

func render(name, text string, d data) (string, error) {
	t, err := template.New(name).Option("missingkey=error").Parse(text)
	if err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	var out bytes.Buffer
	if err := t.Execute(&out, d); err != nil {
		return "", fmt.Errorf("template %s: %w", name, err)
	}
	return out.String(), nil
}

// FindSDK looks for the SDK (connectors/sdk) of a flowd checkout at or above each of dirs, and
// returns "" when there is none.
func FindSDK(dirs ...string) string {
	rel := filepath.Join("connectors", "sdk")
	for _, d := range dirs {
		for d != "" {
			if _, err := os.Stat(filepath.Join(d, rel, "go.mod")); err == nil {
				return filepath.Join(d, rel)
			}
			parent := filepath.Dir(d)
			if parent == d {
				break
			}
			d = parent
		}
	}
	return ""
}
