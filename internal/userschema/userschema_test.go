package userschema

import (
	"strings"
	"testing"
)

func TestCompileReportsWhereTheSchemaIsWrong(t *testing.T) {
	_, ps := Compile(map[string]any{"type": "object", "properties": map[string]any{"region": map[string]any{"type": "strnig"}}}, "/settingsSchema")
	if len(ps) == 0 || ps[0].Code != CodeInvalidSchema || !strings.HasPrefix(ps[0].Path, "/settingsSchema/properties/region/type") {
		t.Fatalf("problems %v", ps)
	}
	_, ps = Compile(map[string]any{"$ref": "https://example.com/schema.json"}, "/settingsSchema")
	if len(ps) != 1 || ps[0].Code != CodeInvalidSchema {
		t.Fatalf("a remote $ref: %v", ps)
	}
}

func TestCheckPointsIntoTheValue(t *testing.T) {
	s, ps := Compile(map[string]any{"type": "object", "required": []any{"region"},
		"properties": map[string]any{"region": map[string]any{"type": "string"}, "retries": map[string]any{"type": "integer"}}}, "")
	if ps != nil {
		t.Fatal(ps)
	}
	if ps := Check(s, map[string]any{"region": "eu", "retries": 3.0}, "/settings"); ps != nil {
		t.Fatalf("a conforming value: %v", ps)
	}
	ps = Check(s, map[string]any{"retries": "many"}, "/settings")
	var paths []string
	for _, p := range ps {
		paths = append(paths, p.Code+"@"+p.Path)
	}
	if strings.Join(paths, " ") != "required@/settings/region type@/settings/retries" {
		t.Fatalf("problems %v", paths)
	}
}
