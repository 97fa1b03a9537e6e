// Command transform is the built-in transform connector, launched by the flowd runners.
package main

import (
	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/connectors/transform/internal/transform"
)

func main() { sdk.Serve(transform.Connector()) }
