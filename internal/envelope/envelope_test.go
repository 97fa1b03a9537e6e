package envelope_test

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/schemas"
)

// The records the roles write match the published schema, and the schema refuses records
// that miss what consumers rely on.
func TestRecordsMatchThePublishedSchema(t *testing.T) {
	t.Parallel()
	if _, err := schemas.Compiled("envelopes.schema.json"); err != nil {
		t.Fatal(err)
	}
	def := func(name string) *jsonschema.Schema {
		c := jsonschema.NewCompiler()
		raw, err := schemas.FS.ReadFile("envelopes.schema.json")
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddResource("envelopes.json", doc); err != nil {
			t.Fatal(err)
		}
		s, err := c.Compile("envelopes.json#/$defs/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	now := time.Now().UTC()
	records := map[string]any{
		"ingest": envelope.Ingest{ExecutionID: "01J", FlowID: "f", Revision: 1, Trigger: envelope.TriggerWebhook, ReceivedAt: now,
			Input: json.RawMessage(`{"a":1}`), Request: &envelope.HTTPRequest{Method: "POST", Query: map[string][]string{"q": {"1"}}}},
		"work": envelope.Work{ExecutionID: "01J", FlowID: "f", Revision: 1, Token: "r/1", Attempt: 1,
			Node:   flowdoc.Node{ID: "a", Type: flowdoc.TypeAction, Connector: "http", Action: "request"},
			Owners: []flowdoc.Owner{{ID: "u", Type: "user"}}, Input: json.RawMessage(`null`), IdempotencyKey: "k", Deadline: now},
		"result": envelope.Result{ExecutionID: "01J", FlowID: "f", Revision: 1, NodeID: "a", Token: "r/1", Attempt: 1,
			Outputs: []envelope.Output{{Port: "success", Data: json.RawMessage(`{}`)}}, Error: &envelope.Error{Message: "x"}, StartedAt: now, FinishedAt: now},
		"history": envelope.History{Save: "all",
			Execution: envelope.Execution{ID: "01J", FlowID: "f", Revision: 1, Trigger: "webhook", Status: envelope.StatusFailed,
				Error: &envelope.Error{Code: "c", Message: "x"}, ReceivedAt: now, StartedAt: now, FinishedAt: &now, DurationMs: 3},
			Steps: []envelope.Step{{ExecutionID: "01J", NodeID: "a", Token: "r/1", Type: "action", Status: envelope.StepFailed, Attempt: 2,
				Input: json.RawMessage(`{"a":1}`), Error: &envelope.Error{Message: "x"}, StartedAt: now, FinishedAt: &now}}},
	}
	// What each record cannot do without.
	required := map[string]string{"ingest": "executionId", "work": "executionId", "result": "executionId", "history": "execution"}
	for name, rec := range records {
		raw, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		inst, _ := jsonschema.UnmarshalJSON(bytes.NewReader(raw))
		if err := def(name).Validate(inst); err != nil {
			t.Errorf("%s record %s: %v", name, raw, err)
		}
		var m map[string]any
		_ = json.Unmarshal(raw, &m)
		delete(m, required[name])
		if err := def(name).Validate(m); err == nil {
			t.Errorf("%s without %s passed the schema", name, required[name])
		}
	}
}
