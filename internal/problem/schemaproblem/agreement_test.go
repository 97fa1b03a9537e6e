package schemaproblem

import (
	"slices"
	"testing"

	"github.com/flowd/flowd/connectors/sdk/schemacheck"
)

// The plugin host and sdk.Invoke report a connector config's problems through the SDK's
// schemacheck (the core may not depend on the SDK module, so this package cannot simply call
// it): both must give the same codes, paths and messages, or `flowd validate` and the API
// would point at other places than a refused call does.
func TestAgreesWithTheSDK(t *testing.T) {
	object := `{"type":"object","additionalProperties":false,"required":["a/b","n"],"properties":{
		"a/b":{"type":"string"},
		"n":{"type":"integer","minimum":1,"multipleOf":2},
		"s":{"type":"string","minLength":2,"pattern":"^x"},
		"e":{"enum":["x","y"]},
		"c":{"const":1},
		"d":{"type":"string","format":"date-time"},
		"l":{"type":"array","maxItems":1,"items":{"type":"object","required":["id"]}},
		"v":{"oneOf":[{"type":"string","minLength":3},{"type":"object","required":["kind"]}]}},
		"anyOf":[{"required":["s"]},{"required":["e"]}]}`
	for _, doc := range []string{
		`{}`, `[]`, `{"a/b":"","n":2,"x~y":1,"z":2,"s":"x"}`, `{"a/b":1,"n":-1,"e":"x"}`,
		`{"a/b":"","n":3,"s":"y","e":"z","c":2,"d":"yesterday","l":[{},{"id":1}]}`,
		`{"a/b":"","n":2,"v":{},"s":"xx"}`,
	} {
		ve := validationError(t, object, doc)
		ours := Leaves(ve, "/p")
		sdks := schemacheck.Problems(ve, "/p")
		if len(ours) != len(sdks) {
			t.Fatalf("%s: %d problems here, %d in the SDK:\n%v\n%v", doc, len(ours), len(sdks), ours, sdks)
		}
		for i, l := range ours {
			s := sdks[i]
			if l.Code != s.Code || l.Path != s.Path || l.Message != s.Message || !slices.Equal(l.Location, s.Location) {
				t.Errorf("%s: problem %d differs:\nhere %+v\nSDK  %+v", doc, i, l, s)
			}
		}
	}
}
