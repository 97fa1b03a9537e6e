// Command http is flowd's built-in http connector: its request action calls an HTTP API with
// method, URL, headers, query and body from the node's config and credentials from its
// connection. The runners start it as a plugin; `http describe` prints its manifest.
package main

import "github.com/flowd/flowd/connectors/sdk"

func main() {
	// One transport for the plugin's life: keep-alive connections are reused across calls.
	sdk.Serve(newConnector(newTransport()))
}
