package main

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/internal/notify"
	"github.com/flowd/flowd/internal/secrets"
)

// notifyOptions configure the failure notifier that the api role and flowd dev run.
type notifyOptions struct {
	smtpAddr, smtpFrom, smtpUsername string
	egressAllow                      string
}

// register adds the notifier's flags; egressDefault is what webhooks may reach by default.
func (o *notifyOptions) register(cmd *cobra.Command, egressDefault string) {
	f := cmd.Flags()
	f.StringVar(&o.smtpAddr, "smtp-addr", envOr("FLOWD_SMTP_ADDR", ""), "SMTP server (host:port) for failure e-mails; none: e-mails are not sent (env FLOWD_SMTP_ADDR)")
	f.StringVar(&o.smtpFrom, "smtp-from", envOr("FLOWD_SMTP_FROM", "flowd@localhost"), "sender of failure e-mails (env FLOWD_SMTP_FROM)")
	f.StringVar(&o.smtpUsername, "smtp-username", envOr("FLOWD_SMTP_USERNAME", ""), "SMTP user, with FLOWD_SMTP_PASSWORD (env FLOWD_SMTP_USERNAME)")
	f.StringVar(&o.egressAllow, "notify-egress-allow", envOr("FLOWD_NOTIFY_EGRESS_ALLOW", egressDefault),
		"internal addresses notification webhooks may reach, as for connectors (e.g. 10.0.0.0/8); public ones always (env FLOWD_NOTIFY_EGRESS_ALLOW)")
}

// newNotifier builds the failure notifier on the process's connections.
func newNotifier(c *conn, keys *secrets.Keyring, o notifyOptions, log *slog.Logger) (*notify.Notifier, error) {
	pol, err := egress.Parse(o.egressAllow)
	if err != nil {
		return nil, err
	}
	return notify.New(notify.Config{
		Kafka: c.kcfg, Store: c.st, Secrets: keys, Egress: pol, Log: log,
		SMTPAddr: o.smtpAddr, SMTPFrom: o.smtpFrom, SMTPUsername: o.smtpUsername, SMTPPassword: os.Getenv("FLOWD_SMTP_PASSWORD"),
	}), nil
}
