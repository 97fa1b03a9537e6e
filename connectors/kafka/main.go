// Command kafka is the built-in kafka connector, launched by the flowd runners.
package main

import (
	"github.com/flowd/flowd/connectors/kafka/internal/kafka"
	"github.com/flowd/flowd/connectors/sdk"
)

func main() {
	// Writes are synchronous (acks=all before a call returns), so nothing is buffered when the
	// host stops the plugin; Producer.Close would only release connections the exit frees
	// anyway. sdk.Serve exits the process itself and offers no shutdown hook yet.
	sdk.Serve(kafka.New().Connector())
}
