// Package catalog knows which connectors are installed: it reads each connector binary's
// manifest (`<binary> describe`), validates it against schemas/connector.schema.json, and
// answers what flow validation and the API need (actions, config schemas, ports, the
// connection types connectors define) without keeping plugin processes running.
package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/connectors/sdk/schemacheck"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/flowdoc"
)

const (
	describeTimeout = 15 * time.Second
	maxManifest     = 4 << 20
)

// Entry is one installed connector.
type Entry struct {
	Manifest sdk.Manifest
	Path     string
	configs  map[string]*jsonschema.Schema // action or trigger name -> compiled config schema
	raw      map[string][]string           // action or trigger name -> config fields marked raw
	// credentials are the connection types the connector defines, by full type name.
	credentials map[string]*connections.ConnectorType
}

// Catalog is the set of connectors found in a directory. It is safe for concurrent use; what
// it holds changes only by Reload, at once for every reader.
type Catalog struct {
	dir       string
	cur       atomic.Pointer[contents]
	reloading sync.Mutex // one Reload at a time
}

// contents is one reading of the directory, never modified.
type contents struct {
	entries map[string]*Entry
	skipped map[string]error
}

// Empty is a catalog with no connectors: flow validation then does not check connectors.
func Empty() *Catalog {
	c := &Catalog{}
	c.cur.Store(&contents{entries: map[string]*Entry{}, skipped: map[string]error{}})
	return c
}

// Load reads every executable in dir but hidden ones. A connector whose manifest cannot be read or is invalid
// is skipped and reported by Skipped; a missing dir gives an empty catalog.
func Load(ctx context.Context, dir string, log *slog.Logger) (*Catalog, error) {
	c := &Catalog{dir: dir}
	cs, err := load(ctx, dir, log)
	if err != nil {
		return nil, err
	}
	c.cur.Store(cs)
	return c, nil
}

// Reload reads the directory again (connectors installed, upgraded or removed since) and
// replaces what the catalog holds; on an error it keeps what it had. An Empty catalog has no
// directory and stays empty.
func (c *Catalog) Reload(ctx context.Context, log *slog.Logger) error {
	if c.dir == "" {
		return nil
	}
	c.reloading.Lock()
	defer c.reloading.Unlock()
	cs, err := load(ctx, c.dir, log)
	if err != nil {
		return err
	}
	c.cur.Store(cs)
	log.Info("connector catalog reloaded", "dir", c.dir, "connectors", len(cs.entries), "skipped", len(cs.skipped))
	return nil
}

func load(ctx context.Context, dir string, log *slog.Logger) (*contents, error) {
	c := &contents{entries: map[string]*Entry{}, skipped: map[string]error{}}
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		log.Warn("connectors directory does not exist; no connectors are installed", "dir", dir)
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read connectors directory: %w", err)
	}
	for _, de := range ents {
		path := filepath.Join(dir, de.Name())
		// Hidden files are not connectors, as for the host: an install's temporary file is one.
		if strings.HasPrefix(de.Name(), ".") || !isExecutable(path) {
			continue
		}
		e, err := describe(ctx, path)
		if err != nil {
			log.Error("connector skipped", "path", path, "err", err)
			c.skipped[de.Name()] = err
			continue
		}
		if prev, dup := c.entries[e.Manifest.Name]; dup {
			err := fmt.Errorf("connector name %q is already used by %s", e.Manifest.Name, prev.Path)
			log.Error("connector skipped", "path", path, "err", err)
			c.skipped[de.Name()] = err
			continue
		}
		c.entries[e.Manifest.Name] = e
	}
	return c, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// describe runs `<binary> describe` and validates what it prints.
func describe(ctx context.Context, path string) (*Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, describeTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "describe")
	var out bytes.Buffer
	var errb bytes.Buffer
	cmd.Stdout = &limitedWriter{w: &out, n: maxManifest}
	cmd.Stderr = &limitedWriter{w: &errb, n: 64 << 10}
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s describe: %w: %s", filepath.Base(path), err, strings.TrimSpace(errb.String()))
	}
	// The same check the plugin host applies when it launches the connector.
	m, err := host.ValidateManifest(filepath.Base(path), out.Bytes())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return newEntry(*m, path)
}

func newEntry(m sdk.Manifest, path string) (*Entry, error) {
	e := &Entry{Manifest: m, Path: path, configs: map[string]*jsonschema.Schema{}, raw: map[string][]string{},
		credentials: map[string]*connections.ConnectorType{}}
	add := func(kind, name string, raw json.RawMessage) error {
		if len(raw) == 0 {
			return nil
		}
		fields, err := sdk.RawFields(raw)
		if err != nil {
			return fmt.Errorf("%s %q: config schema: %w", kind, name, err)
		}
		if len(fields) > 0 {
			e.raw[name] = fields
		}
		// Compiled as the plugin host compiles it, so flows are judged as calls will be.
		s, err := schemacheck.Compile("flowd-connector:///"+m.Name+"/"+kind+"/"+name+"/config.json", raw)
		if err != nil {
			return fmt.Errorf("%s %q: config schema: %w", kind, name, err)
		}
		e.configs[name] = s
		return nil
	}
	for name, a := range m.Actions {
		if err := add("actions", name, a.ConfigSchema); err != nil {
			return nil, err
		}
	}
	for name, t := range m.Triggers {
		if err := add("triggers", name, t.ConfigSchema); err != nil {
			return nil, err
		}
	}
	// Formats are asserted for credentials: a connection's data is checked once, when it is
	// stored, and a malformed URL there would otherwise only surface in a failed step.
	creds := jsonschema.NewCompiler()
	creds.AssertFormat()
	for name, c := range m.Credentials {
		s, err := compile(creds, "flowd-connector:///"+m.Name+"/credentials/"+name+"/schema.json", c.Schema)
		if err != nil {
			return nil, fmt.Errorf("credential %q: schema: %w", name, err)
		}
		typ := sdk.CredentialType(m.Name, name)
		e.credentials[typ] = &connections.ConnectorType{Name: typ, Connector: m.Name, Schema: s, Secret: c.Secret}
	}
	return e, nil
}

// compile compiles one schema document of a manifest with comp, registered under url.
func compile(comp *jsonschema.Compiler, url string, raw json.RawMessage) (*jsonschema.Schema, error) {
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("not JSON: %w", err)
	}
	if err := comp.AddResource(url, doc); err != nil {
		return nil, err
	}
	return comp.Compile(url)
}

// Dir is the directory the catalog was loaded from.
func (c *Catalog) Dir() string { return c.dir }

// Len is the number of usable connectors.
func (c *Catalog) Len() int { return len(c.cur.Load().entries) }

// Manifests lists every connector's manifest, by name.
func (c *Catalog) Manifests() []sdk.Manifest {
	entries := c.cur.Load().entries
	out := make([]sdk.Manifest, 0, len(entries))
	for _, e := range entries {
		out = append(out, e.Manifest)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Get returns one connector.
func (c *Catalog) Get(name string) (*Entry, bool) {
	e, ok := c.cur.Load().entries[name]
	return e, ok
}

// ConnectionType returns the connector-defined connection type typ ("<connector>.<name>").
func (c *Catalog) ConnectionType(typ string) (*connections.ConnectorType, bool) {
	conn, _, ok := sdk.ParseCredentialType(typ)
	if !ok {
		return nil, false
	}
	e, ok := c.cur.Load().entries[conn]
	if !ok {
		return nil, false
	}
	t, ok := e.credentials[typ]
	return t, ok
}

// ConnectionTypes lists the connection types installed connectors define, sorted.
func (c *Catalog) ConnectionTypes() []string {
	var out []string
	for _, e := range c.cur.Load().entries {
		for typ := range e.credentials {
			out = append(out, typ)
		}
	}
	sort.Strings(out)
	return out
}

// Skipped names the binaries that were not loaded and why.
func (c *Catalog) Skipped() map[string]error { return c.cur.Load().skipped }

// ValidationOptions plugs the catalog into flow validation, as it is at each validation (a
// Reload is seen at once). An empty catalog checks nothing, so an API role deployed without
// connector binaries still accepts flows.
func (c *Catalog) ValidationOptions() flowdoc.Options {
	if c == nil {
		return flowdoc.Options{}
	}
	entries := func() map[string]*Entry { return c.cur.Load().entries }
	return flowdoc.Options{
		Lookup: func(conn, name string) (bool, bool) {
			all := entries()
			if len(all) == 0 {
				return true, true // nothing installed: nothing to check against
			}
			e, ok := all[conn]
			if !ok {
				return false, false
			}
			_, isAction := e.Manifest.Actions[name]
			_, isTrigger := e.Manifest.Triggers[name]
			return true, isAction || isTrigger
		},
		ConfigSchema: func(conn, name string) (*jsonschema.Schema, bool) {
			e, ok := entries()[conn]
			if !ok {
				return nil, false
			}
			s, ok := e.configs[name]
			return s, ok
		},
		RawFields: func(conn, name string) []string {
			if e, ok := entries()[conn]; ok {
				return e.raw[name]
			}
			return nil
		},
		ActionPorts: func(conn, name string) ([]string, bool) {
			e, ok := entries()[conn]
			if !ok {
				return nil, false
			}
			a, ok := e.Manifest.Actions[name]
			return a.Ports, ok
		},
	}
}

// limitedWriter stops a misbehaving binary from filling memory.
type limitedWriter struct {
	w io.Writer
	n int
}

func (l *limitedWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		return 0, errors.New("output too large")
	}
	l.n -= len(p)
	return l.w.Write(p)
}
