package ingest

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
)

// encodeRecord writes what json.Marshal writes, for inputs of every shape, and ids that try to
// look like the input field.
func TestEncodeRecordMatchesMarshal(t *testing.T) {
	at := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	for _, rec := range []envelope.Ingest{
		{ExecutionID: "e1", FlowID: "f1", Revision: 2, Trigger: "webhook", ReceivedAt: at, Input: json.RawMessage(`{"a":[1,2,{"b":null}],"c":"\\u00e9"}`)},
		{ExecutionID: `x","input":null,"y`, FlowID: "f", Trigger: "webhook", ReceivedAt: at, Input: json.RawMessage(`"s"`),
			Request: &envelope.HTTPRequest{Method: "POST", Headers: map[string]string{"k": `"input":null`}}, Sync: true},
		{ExecutionID: "e3", FlowID: "f", Trigger: "webhook", ReceivedAt: at, Input: json.RawMessage(`null`)},
		{ExecutionID: "e4", FlowID: "f", Trigger: "webhook", ReceivedAt: at},
	} {
		want, err := json.Marshal(&rec)
		if err != nil {
			t.Fatal(err)
		}
		got, err := encodeRecord(&rec)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("encodeRecord:\\n got %s\\nwant %s", got, want)
		}
	}
}
