package schemacheck

import (
	"slices"
	"testing"
)

func TestCompileDefaultsToDraft2020(t *testing.T) {
	// prefixItems exists only in 2020-12: without $schema it must apply.
	s, err := Compile("urn:test", []byte(`{"type":"array","prefixItems":[{"type":"string"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	ps, err := Validate(s, []byte(`[1]`), "/v")
	if err != nil || len(ps) != 1 || ps[0].Code != CodeType || ps[0].Path != "/v/0" || !slices.Equal(ps[0].Location, []string{"0"}) {
		t.Fatalf("got %+v, %v", ps, err)
	}
	if ps, err := Validate(s, []byte(`["a"]`), ""); err != nil || ps != nil {
		t.Fatalf("valid document: %+v, %v", ps, err)
	}
	if _, err := Validate(s, []byte(`[`), ""); err == nil {
		t.Fatal("a document that is not JSON must be an error")
	}
	for _, bad := range []string{`{`, `{"type":"nope"}`} {
		if _, err := Compile("urn:bad", []byte(bad)); err == nil {
			t.Errorf("schema %s compiled", bad)
		}
	}
}

func TestValidateSortsByPathAndEscapes(t *testing.T) {
	s, err := Compile("urn:test", []byte(`{"type":"object","required":["z","a/b"],"additionalProperties":false,"properties":{"z":{},"a/b":{}}}`))
	if err != nil {
		t.Fatal(err)
	}
	ps, err := Validate(s, []byte(`{"m~n":1}`), "/config")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range ps {
		got = append(got, p.Code+"@"+p.Path)
	}
	want := []string{"required@/config/a~1b", "additional_property@/config/m~0n", "required@/config/z"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}
