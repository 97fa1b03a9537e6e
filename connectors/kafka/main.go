// Command kafka is the built-in kafka connector, launched by the flowd runners.
package main

import (
	"log/slog"

	"github.com/flowd/flowd/connectors/kafka/internal/kafka"
	"github.com/flowd/flowd/connectors/sdk"
)

func main() {
	opts, err := kafka.OptionsFromEnv()
	var p *kafka.Producer
	if err == nil {
		p, err = kafka.New(opts)
	}
	if err != nil {
		// Fail closed: the runner validates what it passes, so this is a hand-set variable;
		// the connector then reaches no broker at all rather than loosen its rules.
		slog.Error("kafka connector: allowlists ignored", "err", err)
		p, _ = kafka.New(kafka.Options{ReservedTopicPrefix: opts.ReservedTopicPrefix})
	}
	sdk.Serve(p.Connector()) // its Close closes p before the process exits
}
