package main

import (
	"errors"
	"time"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/internal/audit"
)

// registerAuditRetention adds --audit-retention to a command that serves the API.
func registerAuditRetention(cmd *cobra.Command, d *time.Duration) {
	cmd.Flags().DurationVar(d, "audit-retention", envDuration("FLOWD_AUDIT_RETENTION", audit.DefaultRetention),
		"how long audit log entries are kept, e.g. 2160h (90 days) (env FLOWD_AUDIT_RETENTION)")
}

// checkAuditRetention refuses a retention that would keep nothing.
func checkAuditRetention(d time.Duration) error {
	if d <= 0 {
		return errors.New("--audit-retention must be positive, e.g. 2160h")
	}
	return nil
}
