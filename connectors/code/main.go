// Command code is the built-in code (JavaScript) connector, launched by the flowd runners.
package main

import (
	"github.com/flowd/flowd/connectors/code/internal/code"
	"github.com/flowd/flowd/connectors/sdk"
)

func main() { sdk.Serve(code.Connector()) }
