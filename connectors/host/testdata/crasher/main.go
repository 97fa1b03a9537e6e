// Command crasher is the host's test connector: it echoes, crashes, sleeps and panics on demand.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/flowd/flowd/connectors/sdk"
)

type sleepConfig struct {
	MS int `json:"ms"`
}

// version is the manifest's; tests build a second one with -ldflags "-X main.version=...".
var version = "1.0.0"

// blockConfig names the files of the block action: it creates Started, then waits for Release.
type blockConfig struct {
	Started string `json:"started"`
	Release string `json:"release"`
}

// closeMarkerEnv names the file Close writes.
const closeMarkerEnv = "FLOWD_CONNECTOR_CLOSE_MARKER"

// retryConfig is what fail and busy say the upstream asked for.
type retryConfig struct {
	RetryAfterNs int64 `json:"retryAfterNs"`
}

func (c retryConfig) after() time.Duration { return time.Duration(c.RetryAfterNs) }

func main() {
	// Stdout belongs to the handshake: this must land on stderr, not break the host.
	fmt.Println("crasher: a stray print before Serve")
	sdk.Serve(sdk.Connector{
		Manifest: sdk.Manifest{Name: "crasher", Version: version, Description: "test connector"},
		Actions: map[string]sdk.Handler{
			"echo": sdk.Action(sdk.ActionSpec{Title: "Echo", Ports: []string{"copy"}},
				func(_ context.Context, call sdk.Call[map[string]any, json.RawMessage]) ([]sdk.Output, error) {
					if call.Config["print"] == true {
						fmt.Println("crasher: a stray print inside a handler")
					}
					outs := []sdk.Output{{Data: call.Input}}
					if port, _ := call.Config["port"].(string); port != "" {
						outs = append(outs, sdk.Output{Port: port, Data: call.Input})
					}
					return outs, nil
				}),
			"config": sdk.Action(sdk.ActionSpec{
				Title:        "Config",
				ConfigSchema: json.RawMessage(`{"type":"object","properties":{"script":{"type":"string","x-flowd-raw":true}}}`),
			}, func(_ context.Context, call sdk.Call[map[string]any, any]) ([]sdk.Output, error) {
				return []sdk.Output{{Data: call.Config}}, nil
			}),
			"crash": sdk.Action(sdk.ActionSpec{Title: "Crash"},
				func(context.Context, sdk.Call[any, any]) ([]sdk.Output, error) {
					slog.Info("crashing on purpose")
					os.Exit(3)
					return nil, nil
				}),
			"sleep": sdk.Action(sdk.ActionSpec{
				Title:        "Sleep",
				ConfigSchema: json.RawMessage(`{"type":"object","properties":{"ms":{"type":"integer","minimum":0}}}`),
			}, func(ctx context.Context, call sdk.Call[sleepConfig, any]) ([]sdk.Output, error) {
				// Ignores ctx on purpose: the SDK must answer at the deadline anyway.
				time.Sleep(time.Duration(call.Config.MS) * time.Millisecond)
				return []sdk.Output{{Data: "slept"}}, nil
			}),
			"panic": sdk.Action(sdk.ActionSpec{Title: "Panic"},
				func(context.Context, sdk.Call[any, any]) ([]sdk.Output, error) {
					panic("boom")
				}),
			"fail": sdk.Action(sdk.ActionSpec{Title: "Fail"},
				func(_ context.Context, call sdk.Call[retryConfig, any]) ([]sdk.Output, error) {
					return nil, sdk.RetryableAfter("upstream_busy", call.Config.after(), fmt.Errorf("try later"))
				}),
			// A call that stays in flight until the test lets it go, then says who served it.
			"block": sdk.Action(sdk.ActionSpec{Title: "Block"},
				func(ctx context.Context, call sdk.Call[blockConfig, any]) ([]sdk.Output, error) {
					if err := os.WriteFile(call.Config.Started, nil, 0o644); err != nil {
						return nil, err
					}
					t := time.NewTicker(10 * time.Millisecond)
					defer t.Stop()
					for {
						if _, err := os.Stat(call.Config.Release); err == nil {
							return []sdk.Output{{Data: map[string]any{"version": version, "pid": os.Getpid()}}}, nil
						}
						select {
						case <-ctx.Done():
							return nil, ctx.Err()
						case <-t.C:
						}
					}
				}),
			"pid": sdk.Action(sdk.ActionSpec{Title: "PID"},
				func(context.Context, sdk.Call[any, any]) ([]sdk.Output, error) {
					return []sdk.Output{{Data: os.Getpid()}}, nil
				}),
		},
		// Close leaves a marker where the test asks for one, to show it ran before the exit.
		Close: func(context.Context) error {
			if path := os.Getenv(closeMarkerEnv); path != "" {
				return os.WriteFile(path, []byte("closed"), 0o644)
			}
			return nil
		},
		Triggers: map[string]sdk.TriggerHandler{
			"busy": sdk.Poller(sdk.TriggerSpec{Title: "Busy"},
				func(_ context.Context, call sdk.PollCall[retryConfig]) (sdk.PollResult, error) {
					return sdk.PollResult{}, sdk.RetryableAfter("upstream_busy", call.Config.after(), fmt.Errorf("try later"))
				}),
			"count": sdk.Poller(sdk.TriggerSpec{Title: "Count"},
				func(_ context.Context, call sdk.PollCall[struct{ N int }]) (sdk.PollResult, error) {
					var items []any
					for i := range call.Config.N {
						items = append(items, map[string]any{"i": i, "after": call.Cursor})
					}
					return sdk.PollResult{Items: items, Cursor: fmt.Sprintf("c%d", call.Config.N)}, nil
				}),
		},
	})
}
