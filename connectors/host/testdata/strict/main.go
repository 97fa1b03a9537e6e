// Command strict is a test connector whose action and trigger have strict schemas (required
// fields, no others allowed). Its handlers count their runs, and the calls action reports the
// count, so a test can prove that a refused call never reached them.
package main

import (
	"context"
	"encoding/json"
	"sync/atomic"

	"github.com/flowd/flowd/connectors/sdk"
)

var handled atomic.Int64

type createConfig struct {
	Name     string `json:"name"`
	Template string `json:"template"`
}

func main() {
	sdk.Serve(sdk.Connector{
		Manifest: sdk.Manifest{Name: "strict", Version: "1.0.0", Description: "test connector with strict schemas"},
		Actions: map[string]sdk.Handler{
			"create": sdk.Action(sdk.ActionSpec{
				Title: "Create",
				ConfigSchema: json.RawMessage(`{"type":"object","required":["name"],"additionalProperties":false,"properties":{
					"name":{"type":"string","minLength":1},
					"template":{"type":"string","x-flowd-raw":true}}}`),
				InputSchema: json.RawMessage(`{"type":"object","required":["id"]}`),
			}, func(_ context.Context, call sdk.Call[createConfig, map[string]any]) ([]sdk.Output, error) {
				handled.Add(1)
				return []sdk.Output{{Data: map[string]any{"handled": call.Config.Name, "template": call.Config.Template}}}, nil
			}),
			"calls": sdk.Action(sdk.ActionSpec{Title: "Calls"},
				func(context.Context, sdk.Call[any, any]) ([]sdk.Output, error) {
					return []sdk.Output{{Data: handled.Load()}}, nil
				}),
		},
		Triggers: map[string]sdk.TriggerHandler{
			"list": sdk.Poller(sdk.TriggerSpec{
				Title:        "List",
				ConfigSchema: json.RawMessage(`{"type":"object","required":["source"],"additionalProperties":false,"properties":{"source":{"type":"string"}}}`),
			}, func(_ context.Context, call sdk.PollCall[struct{ Source string }]) (sdk.PollResult, error) {
				handled.Add(1)
				return sdk.PollResult{Items: []any{call.Config.Source}, Cursor: "1"}, nil
			}),
		},
	})
}
