package audit_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/audit"
)

func TestFilterMatch(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	e := audit.Entry{Time: at, Actor: audit.Actor{ID: "u1", Username: "ada"}, Action: audit.FlowUpdate,
		Target: audit.Target{Type: audit.TargetFlow, ID: "f1", Name: "orders"}}
	for _, tc := range []struct {
		name string
		f    audit.Filter
		want bool
	}{
		{"nothing", audit.Filter{}, true},
		{"action", audit.Filter{Action: "flow.update"}, true},
		{"other action", audit.Filter{Action: "flow.create"}, false},
		{"family", audit.Filter{Action: "flow"}, true},
		{"not a family prefix", audit.Filter{Action: "flo"}, false},
		{"other family", audit.Filter{Action: "connection"}, false},
		{"actor", audit.Filter{Actor: "u1"}, true},
		{"actor by username", audit.Filter{Actor: "ada"}, false},
		{"target type", audit.Filter{TargetType: "flow"}, true},
		{"other target type", audit.Filter{TargetType: "connection"}, false},
		{"target id", audit.Filter{TargetID: "f1"}, true},
		{"target name", audit.Filter{TargetID: "orders"}, false},
		{"from, inclusive", audit.Filter{From: at}, true},
		{"from later", audit.Filter{From: at.Add(time.Millisecond)}, false},
		{"to, inclusive", audit.Filter{To: at}, true},
		{"to earlier", audit.Filter{To: at.Add(-time.Millisecond)}, false},
		{"all at once", audit.Filter{Action: "flow", Actor: "u1", TargetType: "flow", TargetID: "f1", From: at.Add(-time.Hour), To: at.Add(time.Hour)}, true},
		{"all but one", audit.Filter{Action: "flow", Actor: "u2", TargetType: "flow", TargetID: "f1"}, false},
	} {
		if got := tc.f.Match(&e); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// An entry always says whose tenant it is ("" included) and leaves out what an action has not.
func TestEntryJSON(t *testing.T) {
	e := audit.Entry{ID: "a1", Time: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC), Actor: audit.Actor{ID: "u1", Username: "ada"},
		Action: audit.TokenDelete, Target: audit.Target{Type: audit.TargetToken, ID: "k1"}}
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"id":"a1","time":"2025-03-01T12:00:00Z","actor":{"id":"u1","username":"ada"},"tenant":"","action":"token.delete","target":{"type":"token","id":"k1"}}`
	if string(b) != want {
		t.Fatalf("%s\nwant %s", b, want)
	}
}
