// Package schemas holds flowd's JSON Schemas (draft 2020-12), embedded so validation never
// reads the file system or the network, and so the same files can be published for users.
package schemas

import (
	"bytes"
	"embed"
	"fmt"
	"io/fs"
	"sync"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// FS holds every schema file of this directory, and the OpenAPI document.
//
//go:embed *.json
var FS embed.FS

// schemaFiles are the JSON Schemas among FS (the OpenAPI document is not one).
const schemaFiles = "*.schema.json"

// OpenAPIFile is the OpenAPI 3.1 document of flowd's whole HTTP surface. Its schemas $ref
// the JSON Schemas here by their $id (BaseURL + file name) rather than copying them.
const OpenAPIFile = "openapi.json"

// OpenAPI returns the OpenAPI document, as published.
func OpenAPI() []byte {
	b, err := FS.ReadFile(OpenAPIFile)
	if err != nil {
		panic("schemas: " + OpenAPIFile + " is not embedded: " + err.Error()) // a build defect
	}
	return b
}

// BaseURL is where schemas without their own $id are registered, so they can $ref each other
// by file name.
const BaseURL = "https://flowd.dev/schemas/"

var (
	mu       sync.Mutex
	compiler *jsonschema.Compiler
	urls     map[string]string // file name -> URL it is registered under
	initErr  error
	compiled = map[string]*jsonschema.Schema{}
)

// Compiled returns the compiled schema of the embedded file name (e.g. "flow.schema.json").
// Each schema is compiled once; the result is safe for concurrent use.
func Compiled(name string) (*jsonschema.Schema, error) {
	mu.Lock()
	defer mu.Unlock()
	if s, ok := compiled[name]; ok {
		return s, nil
	}
	if compiler == nil && initErr == nil {
		compiler, urls, initErr = newCompiler()
	}
	if initErr != nil {
		return nil, initErr
	}
	url, ok := urls[name]
	if !ok {
		return nil, fmt.Errorf("schemas: no embedded schema %q", name)
	}
	s, err := compiler.Compile(url)
	if err != nil {
		return nil, fmt.Errorf("schemas: compile %s: %w", name, err)
	}
	compiled[name] = s
	return s, nil
}

// newCompiler registers every embedded file with one compiler, so cross-file $refs resolve.
func newCompiler() (*jsonschema.Compiler, map[string]string, error) {
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft2020)
	// Formats (date-time, ...) are asserted: a malformed timestamp is an error, not a note.
	c.AssertFormat()
	c.UseLoader(embeddedOnly{})
	names, err := fs.Glob(FS, schemaFiles)
	if err != nil {
		return nil, nil, err
	}
	urls := make(map[string]string, len(names))
	for _, name := range names {
		data, err := FS.ReadFile(name)
		if err != nil {
			return nil, nil, err
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			return nil, nil, fmt.Errorf("schemas: parse %s: %w", name, err)
		}
		url := BaseURL + name
		if m, ok := doc.(map[string]any); ok {
			if id, ok := m["$id"].(string); ok && id != "" {
				url = id
			}
		}
		if err := c.AddResource(url, doc); err != nil {
			return nil, nil, fmt.Errorf("schemas: add %s: %w", name, err)
		}
		urls[name] = url
	}
	return c, urls, nil
}

// embeddedOnly refuses every URL that is not an embedded file or a standard metaschema
// (those are resolved before the loader is asked).
type embeddedOnly struct{}

func (embeddedOnly) Load(url string) (any, error) {
	return nil, fmt.Errorf("schema %s is not embedded in flowd", url)
}
