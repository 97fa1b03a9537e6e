// Command http is flowd's built-in http connector: its request action calls an HTTP API with
// method, URL, headers, query and body from the node's config and credentials from its
// connection; its poll trigger reads new items from a JSON list API, page by page, with a
// cursor. The runners start it as a plugin; `http describe` prints its manifest.
package main

import (
	"log/slog"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/sdk"
)

func main() {
	policy, err := egress.FromEnv()
	if err != nil {
		// Fail closed: a malformed allowlist allows nothing beyond the default. The runner
		// validates its flag, so this is someone setting the variable by hand.
		slog.Error("egress allowlist ignored", "err", err)
		policy = &egress.Policy{}
	}
	// One transport for the plugin's life: keep-alive connections are reused across calls.
	sdk.Serve(newConnector(policy, nil))
}
