// Package notify tells people when executions fail. The router produces a failure of a flow
// with notifications to flowd.notifications with the change that fails the execution; the
// notifier consumes them and, per flow, sends the first failure of a window at once and the
// ones that follow in one digest when the window ends, so an outage sends a digest, not ten
// thousand mails. A notification is a webhook (a POST of the summary, signed with HMAC-SHA256
// by a connection's secret) and/or a plain-text mail over SMTP.
//
// Delivery is best-effort and bounded: a webhook or mail that fails is tried a few times, then
// logged. A failure record is committed once it was sent or kept for its digest.
package notify

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/smtp"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/connections"
	"github.com/flowd/flowd/internal/consume"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
)

// Headers of a webhook notification.
const (
	HeaderSignature = "X-Flowd-Signature" // sha256=<hex HMAC-SHA256 of the body>
	HeaderEvent     = "X-Flowd-Event"     // execution.failed or execution.failed.digest
)

// Store is what the notifier needs of flowd's state (*store.Store provides it).
type Store interface {
	Flow(ctx context.Context, id string) (*flowdoc.Flow, error)
	Connection(ctx context.Context, id string) (*store.Connection, error)
	NotifyGate(ctx context.Context, flowID string, window time.Duration) (bool, error)
	NotifyDefer(ctx context.Context, flowID string, summary []byte, due time.Time) error
	NotifyDue(ctx context.Context, now time.Time) ([]string, error)
	NotifyTake(ctx context.Context, flowID string) ([][]byte, int64, bool, error)
}

var _ Store = (*store.Store)(nil)

// Config configures a Notifier.
type Config struct {
	Kafka kafkax.Config
	Store Store
	// Secrets opens webhook signing secrets; without it, webhooks naming a connection fail.
	Secrets *secrets.Keyring
	// SMTPAddr is the mail server (host:port); without it, e-mail notifications are skipped
	// with a warning. SMTPFrom is the sender; SMTPUsername/SMTPPassword authenticate (PLAIN).
	SMTPAddr, SMTPFrom, SMTPUsername, SMTPPassword string
	// Egress is what webhook targets may be: by default no loopback, private or link-local
	// address (tenants name the URL).
	Egress *egress.Policy
	Log    *slog.Logger
	Now    func() time.Time
}

// Notifier sends failure notifications. Run it once.
type Notifier struct {
	cfg   Config
	http  *http.Client
	log   *slog.Logger
	ready chan struct{}
}

// New builds a Notifier.
func New(cfg Config) *Notifier {
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.SMTPFrom == "" {
		cfg.SMTPFrom = "flowd@localhost"
	}
	d := &egress.Dialer{Policy: cfg.Egress}
	return &Notifier{cfg: cfg, log: cfg.Log.With("role", "notifier"), ready: make(chan struct{}), http: &http.Client{
		Timeout:   10 * time.Second,
		Transport: &http.Transport{DialContext: d.DialContext, Proxy: nil},
	}}
}

// Ready is closed once Run consumes.
func (n *Notifier) Ready() <-chan struct{} { return n.ready }

// Run consumes failures and sends due digests until ctx ends.
func (n *Notifier) Run(ctx context.Context) error {
	if err := kafkax.EnsureTopics(ctx, n.cfg.Kafka, envelope.TopicNotifications); err != nil {
		return fmt.Errorf("notify: create topic: %w", err)
	}
	reader := kafka.NewReader(n.cfg.Kafka.GroupReader(kafka.ReaderConfig{
		GroupID: n.cfg.Kafka.Group("notifier"), Topic: n.cfg.Kafka.Topic(envelope.TopicNotifications),
		StartOffset: kafka.FirstOffset, MaxWait: 500 * time.Millisecond,
	}))
	defer func() { _ = reader.Close() }()
	done := make(chan struct{})
	go func() { defer close(done); n.digests(ctx) }()
	close(n.ready)
	consume.Run(ctx, consume.Config{Name: "notifications", Reader: reader, Handle: n.handle, Log: n.log, Ordered: true})
	<-done
	return nil
}

// summary is one failure as a notification shows it.
type summary struct {
	envelope.Failure
	FlowName string `json:"flowName"`
}

// message is a webhook notification's body.
type message struct {
	Event    string    `json:"event"`
	FlowID   string    `json:"flowId"`
	FlowName string    `json:"flowName"`
	Count    int64     `json:"count"` // failures this message reports
	Failures []summary `json:"failures"`
	SentAt   time.Time `json:"sentAt"`
}

func (n *Notifier) handle(stop, _ context.Context, m kafka.Message) bool {
	if err := n.cfg.Kafka.RecordKeys.Verify(m); err != nil {
		n.log.Warn("notification record not written by a flowd role: dropped", "err", err)
		return true
	}
	var fl envelope.Failure
	if err := json.Unmarshal(m.Value, &fl); err != nil || fl.FlowID == "" {
		n.log.Warn("undecodable notification record: dropped", "offset", m.Offset)
		return true
	}
	b := backoff.New(100*time.Millisecond, 5*time.Second)
	for {
		err := n.notify(stop, fl)
		if err == nil {
			return true
		}
		n.log.Warn("notification state unavailable; retrying", "flow", fl.FlowID, "err", err)
		if !b.Wait(stop) {
			return false
		}
	}
}

// notify sends fl at once when the flow's window is closed, or keeps it for the digest.
func (n *Notifier) notify(ctx context.Context, fl envelope.Failure) error {
	// What to do comes from the stored flow, never from the record.
	f, err := n.cfg.Store.Flow(ctx, fl.FlowID)
	if errors.Is(err, store.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if f.Notifications == nil {
		return nil
	}
	window := f.Notifications.DigestWindow()
	first, err := n.cfg.Store.NotifyGate(ctx, f.ID, window)
	if err != nil {
		return err
	}
	s := summary{Failure: fl, FlowName: f.Name}
	if !first {
		return n.cfg.Store.NotifyDefer(ctx, f.ID, mustJSON(s), n.cfg.Now().Add(window))
	}
	n.send(ctx, f, message{Event: "execution.failed", FlowID: f.ID, FlowName: f.Name, Count: 1, Failures: []summary{s}})
	return nil
}

// digests sends the digests that are due, every second.
func (n *Notifier) digests(ctx context.Context) {
	backoff.Every(ctx, time.Second, func() {
		ids, err := n.cfg.Store.NotifyDue(ctx, n.cfg.Now())
		if err != nil {
			n.log.Warn("due digests unavailable", "err", err)
			return
		}
		for _, id := range ids {
			n.digest(ctx, id)
		}
	})
}

func (n *Notifier) digest(ctx context.Context, flowID string) {
	kept, count, ok, err := n.cfg.Store.NotifyTake(ctx, flowID)
	if err != nil || !ok || count == 0 {
		if err != nil {
			n.log.Warn("taking a digest failed", "flow", flowID, "err", err)
		}
		return
	}
	f, err := n.cfg.Store.Flow(ctx, flowID)
	if err != nil || f.Notifications == nil {
		return
	}
	msg := message{Event: "execution.failed.digest", FlowID: f.ID, FlowName: f.Name, Count: count}
	for _, raw := range kept {
		var s summary
		if json.Unmarshal(raw, &s) == nil {
			msg.Failures = append(msg.Failures, s)
		}
	}
	// The digest opens the next window: a lasting outage sends one digest per window.
	if _, err := n.cfg.Store.NotifyGate(ctx, f.ID, f.Notifications.DigestWindow()); err != nil {
		n.log.Warn("opening the next notification window failed", "flow", f.ID, "err", err)
	}
	n.send(ctx, f, msg)
}

// send delivers msg by every means the flow names, each tried three times.
func (n *Notifier) send(ctx context.Context, f *flowdoc.Flow, msg message) {
	msg.SentAt = n.cfg.Now().UTC()
	if w := f.Notifications.Webhook; w != nil {
		n.try(ctx, "webhook", f.ID, func() error { return n.webhook(ctx, f, w, msg) })
	}
	if e := f.Notifications.Email; e != nil {
		n.try(ctx, "e-mail", f.ID, func() error { return n.mail(e, msg) })
	}
}

func (n *Notifier) try(ctx context.Context, what, flowID string, fn func() error) {
	b := backoff.New(200*time.Millisecond, 2*time.Second)
	for attempt := 1; ; attempt++ {
		err := fn()
		if err == nil {
			n.log.Info("failure notification sent", "via", what, "flow", flowID)
			return
		}
		if attempt == 3 || !b.Wait(ctx) {
			n.log.Warn("failure notification not sent", "via", what, "flow", flowID, "err", err)
			return
		}
	}
}

func (n *Notifier) webhook(ctx context.Context, f *flowdoc.Flow, w *flowdoc.WebhookNotification, msg message) error {
	body := mustJSON(msg)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderEvent, msg.Event)
	if w.Connection != "" {
		key, err := n.signingKey(ctx, f, w.Connection)
		if err != nil {
			return err
		}
		req.Header.Set(HeaderSignature, Sign(key, body))
	}
	resp, err := n.http.Do(req)
	if err != nil {
		return err
	}
	_ = resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook answered %s", resp.Status)
	}
	return nil
}

// Sign is the X-Flowd-Signature of body under key.
func Sign(key, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// signingKey opens the secret of the flow's signing connection, if its owners may use it.
func (n *Notifier) signingKey(ctx context.Context, f *flowdoc.Flow, id string) ([]byte, error) {
	if n.cfg.Secrets == nil {
		return nil, errors.New("no secret key to open the webhook's signing connection")
	}
	c, err := n.cfg.Store.Connection(ctx, id)
	if err != nil || !connections.CanUse(c, f.Owners) {
		return nil, fmt.Errorf("signing connection %s does not exist or the flow's owners may not use it", id)
	}
	field := map[string]string{connections.TypeAPIKey: "key", connections.TypeBearer: "token"}[c.Type]
	if field == "" {
		return nil, fmt.Errorf("signing connection %s is a %s connection; use api_key or bearer", id, c.Type)
	}
	return connections.Open(n.cfg.Secrets, c, field)
}

func (n *Notifier) mail(e *flowdoc.EmailNotification, msg message) error {
	if n.cfg.SMTPAddr == "" {
		return errors.New("no SMTP server configured (--smtp-addr)")
	}
	var auth smtp.Auth
	if n.cfg.SMTPUsername != "" {
		host, _, _ := strings.Cut(n.cfg.SMTPAddr, ":")
		auth = smtp.PlainAuth("", n.cfg.SMTPUsername, n.cfg.SMTPPassword, host)
	}
	return smtp.SendMail(n.cfg.SMTPAddr, auth, n.cfg.SMTPFrom, e.To, []byte(mailText(n.cfg.SMTPFrom, e.To, msg)))
}

// mailText is the plain-text mail of msg.
func mailText(from string, to []string, msg message) string {
	// A flow's name is tenant input: no line break of it may start a header of its own.
	name := strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, msg.FlowName)
	subject := fmt.Sprintf("[flowd] %s: execution failed", name)
	if msg.Count > 1 || msg.Event != "execution.failed" {
		subject = fmt.Sprintf("[flowd] %s: %d executions failed", name, msg.Count)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: %s\r\nDate: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		from, strings.Join(to, ", "), subject, msg.SentAt.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Flow %s (%s): %d failed execution(s).\r\n\r\n", name, msg.FlowID, msg.Count)
	for _, s := range msg.Failures {
		code, text := "", ""
		if s.Error != nil {
			code, text = s.Error.Code, s.Error.Message
		}
		fmt.Fprintf(&b, "%s  execution %s  %s: %s\r\n", s.FailedAt.UTC().Format(time.RFC3339), s.ExecutionID, code, text)
	}
	if int(msg.Count) > len(msg.Failures) {
		fmt.Fprintf(&b, "... and %d more.\r\n", int(msg.Count)-len(msg.Failures))
	}
	return b.String()
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("notify: encode %T: %v", v, err))
	}
	return b
}
