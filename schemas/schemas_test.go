package schemas

import (
	"encoding/json"
	"io/fs"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

func TestEverySchemaCompiles(t *testing.T) {
	t.Parallel()
	names, err := fs.Glob(FS, schemaFiles)
	if err != nil || len(names) == 0 {
		t.Fatalf("no embedded schemas: %v", err)
	}
	for _, name := range names {
		data, _ := FS.ReadFile(name)
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if doc["$schema"] != "https://json-schema.org/draft/2020-12/schema" {
			t.Errorf("%s: $schema is %v, want draft 2020-12", name, doc["$schema"])
		}
		if id, _ := doc["$id"].(string); !strings.HasPrefix(id, BaseURL) {
			t.Errorf("%s: $id %q does not start with %s", name, id, BaseURL)
		}
		s1, err := Compiled(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		s2, _ := Compiled(name)
		if s1 != s2 {
			t.Errorf("%s: compiled twice", name)
		}
	}
}

func TestCompiledUnknown(t *testing.T) {
	t.Parallel()
	if _, err := Compiled("nope.schema.json"); err == nil {
		t.Fatal("expected an error for a schema that is not embedded")
	}
}

func TestFlowSchemaSmoke(t *testing.T) {
	t.Parallel()
	s, err := Compiled("flow.schema.json")
	if err != nil {
		t.Fatal(err)
	}
	valid := `{"name":"x","graph":{"nodes":[{"id":"in","type":"trigger.webhook"}]},
		"id":"f1","status":"active","revision":3,"type":"webhook",
		"createdAt":"2024-01-02T03:04:05Z","updatedAt":"2024-01-02T03:04:05.5+01:00",
		"payload":{"inputParameters":{"firstName":"string","address":{"zip":"integer"}},
		           "outputParameters":{"type":"object","properties":{"id":{"type":"number"}}}}}`
	invalid := map[string]string{
		"typo":          `{"name":"x","grpah":{},"graph":{"nodes":[{"id":"a","type":"if"}]}}`,
		"bad date":      `{"name":"x","createdAt":"yesterday","graph":{"nodes":[{"id":"a","type":"if"}]}}`,
		"bad status":    `{"name":"x","status":"running","graph":{"nodes":[{"id":"a","type":"if"}]}}`,
		"revision type": `{"name":"x","revision":"3","graph":{"nodes":[{"id":"a","type":"if"}]}}`,
		"action":        `{"name":"x","graph":{"nodes":[{"id":"a","type":"action"}]}}`,
		"simple form":   `{"name":"x","graph":{"nodes":[{"id":"a","type":"if"}]},"payload":{"inputParameters":{"a":"strnig"}}}`,
		"json schema":   `{"name":"x","graph":{"nodes":[{"id":"a","type":"if"}]},"payload":{"inputParameters":{"type":"object","properties":{"a":{"type":"strnig"}}}}}`,
		"no nodes":      `{"name":"x","graph":{"nodes":[]}}`,
		"pool":          `{"name":"x","graph":{"nodes":[{"id":"a","type":"if","pool":"Big_Pool"}]}}`,
		"backoff":       `{"name":"x","graph":{"nodes":[{"id":"a","type":"if","retry":{"backoff":"1 second"}}]}}`,
	}
	check := func(doc string) error {
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(doc))
		if err != nil {
			t.Fatal(err)
		}
		return s.Validate(inst)
	}
	if err := check(valid); err != nil {
		t.Fatalf("valid document rejected: %v", err)
	}
	for name, doc := range invalid {
		if err := check(doc); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
