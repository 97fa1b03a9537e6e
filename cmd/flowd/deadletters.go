package main

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/internal/deadletters"
)

// deadLetterOptions configure the dead-letter indexer that the api role and flowd dev run.
type deadLetterOptions struct {
	retention time.Duration
	maxCount  int
}

func (o *deadLetterOptions) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.DurationVar(&o.retention, "dead-letter-retention", envDuration("FLOWD_DEAD_LETTER_RETENTION", deadletters.DefaultRetention),
		"how long dead letters are kept for listing and replay (env FLOWD_DEAD_LETTER_RETENTION)")
	f.IntVar(&o.maxCount, "dead-letter-max", envInt("FLOWD_DEAD_LETTER_MAX", deadletters.DefaultMaxCount),
		"how many dead letters are kept at most; the oldest go first (env FLOWD_DEAD_LETTER_MAX)")
}

// newDeadLetters builds the dead-letter indexer and replayer on the process's connections;
// zero options take the defaults.
func newDeadLetters(c *conn, opt deadLetterOptions) (*deadletters.Service, error) {
	if opt.retention < 0 || opt.maxCount < 0 {
		return nil, errors.New("--dead-letter-retention and --dead-letter-max must not be negative")
	}
	return deadletters.New(deadletters.Config{
		Kafka: c.kcfg, Store: c.st, Writer: c.w, Log: c.log, Retention: opt.retention, MaxCount: opt.maxCount,
	})
}
