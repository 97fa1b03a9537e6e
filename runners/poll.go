package runners

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
)

// Poller is a connector host that can poll triggers (connectors/host).
type Poller interface {
	Poll(ctx context.Context, name string, req sdk.PollRequest) (sdk.PollResult, error)
}

// Polls are the polls of the runner's pool (internal/store/polls.go).
type Polls interface {
	TakeDuePolls(ctx context.Context, pool string, now time.Time, lease time.Duration, n int) ([]store.DuePoll, time.Time, error)
	SeenPollItems(ctx context.Context, flowID string, ids []string) (map[string]bool, error)
	PolledItems(ctx context.Context, flowID, pool string, rev int, cursor string, ids []string, now, next time.Time) error
}

// Tunables of the poller.
const (
	pollBatch = 20
	// pollLease is how long a runner that took a due poll has before another may take it: a
	// runner that died mid-poll delays the poll by this much. A poll that takes longer may run
	// twice at once, which is harmless (items are recognised by id).
	pollLease = 20 * time.Second
	pollIdle  = time.Second
	// pollRetryFloor is the shortest wait before a failed poll is tried again.
	pollRetryFloor = 5 * time.Second
	// MaxPollItems bounds the items one poll may start: more are refused as the trigger's
	// error, since the cursor could not advance past part of them.
	MaxPollItems = 10000
)

// PollExecutionID is the execution an item of a flow's poll starts: derived from both, so an
// item produced twice (a poll repeated after a crash) starts one execution.
func PollExecutionID(flowID, itemID string) string {
	sum := sha256.Sum256([]byte(flowID + "\x00poll\x00" + itemID))
	return "p" + hex.EncodeToString(sum[:12])
}

// ItemID is how a polled item is recognised: its "id" when it is an object with a string or
// number id, else the digest of its JSON.
func ItemID(item json.RawMessage) string {
	var obj struct {
		ID json.RawMessage `json:"id"`
	}
	if json.Unmarshal(item, &obj) == nil && len(obj.ID) > 0 {
		var s string
		if json.Unmarshal(obj.ID, &s) == nil && s != "" {
			return s
		}
		var n json.Number
		if json.Unmarshal(obj.ID, &n) == nil {
			return n.String()
		}
	}
	sum := sha256.Sum256(item)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// poll runs the due polls of the runner's pool until ctx ends.
func (r *Runner) poll(ctx context.Context, p Poller, polls Polls) {
	backoff.UntilDue(ctx, nil, pollIdle, func() (time.Time, error) { return r.drainPolls(ctx, p, polls) }, func(err error, wait time.Duration) {
		r.log.Warn("poller: taking due polls failed; retrying", "err", err, "in", wait)
	})
}

func (r *Runner) drainPolls(ctx context.Context, p Poller, polls Polls) (time.Time, error) {
	due, next, err := polls.TakeDuePolls(ctx, r.cfg.Pool, time.Now(), pollLease, pollBatch)
	if err != nil {
		return time.Time{}, err
	}
	for _, d := range due {
		err := r.pollOnce(ctx, p, polls, d)
		if err == nil || ctx.Err() != nil {
			continue
		}
		// The cursor stays; the poll is tried again after its interval (at least
		// pollRetryFloor), or, when even that cannot be recorded, once its lease runs out.
		retry := pollRetryFloor
		if f, ferr := r.revs.get(ctx, d.FlowID, d.Revision); ferr == nil && f.Trigger() != nil {
			retry = max(retry, flowdoc.PollInterval(f.Trigger()))
		}
		r.log.Warn("poll failed; it is tried again later", "flow", d.FlowID, "revision", d.Revision, "in", retry, "err", err)
		now := time.Now().UTC()
		if err := polls.PolledItems(ctx, d.FlowID, r.cfg.Pool, d.Revision, d.Cursor, nil, now, now.Add(retry)); err != nil {
			r.log.Warn("poller: could not reschedule a failed poll", "flow", d.FlowID, "err", err)
		}
	}
	return next, nil
}

// pollOnce calls the flow's trigger with its cursor, produces an ingest record per item not
// produced before (acks=all), and only then remembers the items and saves the new cursor.
func (r *Runner) pollOnce(ctx context.Context, p Poller, polls Polls, d store.DuePoll) error {
	f, err := r.revs.get(ctx, d.FlowID, d.Revision)
	if err != nil {
		return fmt.Errorf("load flow %s revision %d: %w", d.FlowID, d.Revision, err)
	}
	t := f.Trigger()
	if t == nil || t.Type != flowdoc.TypePoll {
		return fmt.Errorf("flow %s revision %d has no poll trigger", d.FlowID, d.Revision)
	}
	req := sdk.PollRequest{Trigger: t.Trigger, Config: t.Config, Cursor: d.Cursor}
	if t.Connection != "" {
		conn, serr := r.resolve(ctx, &envelope.Work{Node: *t, Owners: f.Owners})
		if serr != nil {
			return fmt.Errorf("connection %s: %s", t.Connection, serr.Message)
		}
		req.Connection = conn
	}
	out, err := p.Poll(ctx, t.Connector, req)
	if err != nil {
		var se *sdk.Error
		if errors.As(err, &se) {
			return fmt.Errorf("trigger %s.%s: %s: %s", t.Connector, t.Trigger, se.Code, se.Message)
		}
		return fmt.Errorf("trigger %s.%s: %w", t.Connector, t.Trigger, err)
	}
	if len(out.Items) > MaxPollItems {
		return fmt.Errorf("trigger %s.%s returned %d items; at most %d per poll", t.Connector, t.Trigger, len(out.Items), MaxPollItems)
	}
	now := time.Now().UTC()
	ids := make([]string, len(out.Items))
	raws := make([]json.RawMessage, len(out.Items))
	for i, it := range out.Items {
		raw, err := json.Marshal(it)
		if err != nil {
			return fmt.Errorf("item %d of the poll cannot be encoded: %w", i, err)
		}
		raws[i], ids[i] = raw, ItemID(raw)
	}
	seen, err := polls.SeenPollItems(ctx, f.ID, ids)
	if err != nil {
		return err
	}
	msgs := make([]kafka.Message, 0, len(ids))
	var fresh []string
	dup := map[string]bool{}
	for i, id := range ids {
		if seen[id] || dup[id] {
			continue
		}
		dup[id] = true
		fresh = append(fresh, id)
		execID := PollExecutionID(f.ID, id)
		in := envelope.Ingest{ExecutionID: execID, FlowID: f.ID, Revision: f.Revision, Trigger: f.Kind(),
			ReceivedAt: now, Input: raws[i]}
		val, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode ingest record: %w", err)
		}
		m := kafka.Message{Topic: r.cfg.Kafka.Topic(envelope.TopicIngest), Key: []byte(execID), Value: val}
		r.cfg.Kafka.RecordKeys.Sign(&m)
		msgs = append(msgs, m)
	}
	if len(msgs) > 0 {
		if err := r.writer.WriteMessages(ctx, msgs...); err != nil {
			return fmt.Errorf("produce %d polled item(s): %w", len(msgs), err)
		}
	}
	next := now.Add(flowdoc.PollInterval(t))
	if err := polls.PolledItems(ctx, f.ID, r.cfg.Pool, f.Revision, out.Cursor, fresh, now, next); err != nil {
		return err
	}
	if len(fresh) > 0 || len(out.Items) > 0 {
		r.log.Info("polled", "flow", f.ID, "items", len(out.Items), "new", len(fresh), "cursor", strconv.Quote(clipCursor(out.Cursor)))
	}
	return nil
}

// clipCursor keeps log lines short; a cursor is the connector's and may be long.
func clipCursor(c string) string {
	if len(c) > 64 {
		return c[:64] + "…"
	}
	return c
}
