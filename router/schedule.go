package router

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

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/schedule"
	"github.com/flowd/flowd/internal/store"
)

// Schedules keeps the schedules of trigger.schedule flows (internal/store/schedules.go).
type Schedules interface {
	EnsureSchedule(ctx context.Context, flowID string, rev int, next, now time.Time) (bool, error)
	DropSchedule(ctx context.Context, flowID string) error
	TakeDueSchedules(ctx context.Context, now time.Time, lease time.Duration, n int) ([]store.DueSchedule, time.Time, error)
	FiredSchedule(ctx context.Context, flowID string, rev int, last, next time.Time) error
}

// Tunables of the scheduler.
const (
	scheduleBatch = 100
	// scheduleLease is how long a router that took a due schedule has to fire it before
	// another may: short, so a router that died holding one delays its ticks by seconds.
	scheduleLease = 5 * time.Second
	// scheduleIdle bounds the sleep between looks: schedules another router set up are seen
	// within it.
	scheduleIdle = time.Second
)

// ScheduledExecutionID is the execution a tick of a flow's schedule starts: derived from both,
// so a tick fired twice (by two routers, or again after a crash) starts one execution.
func ScheduledExecutionID(flowID string, tick time.Time) string {
	sum := sha256.Sum256([]byte(flowID + "\x00schedule\x00" + strconv.FormatInt(tick.UnixMilli(), 10)))
	return "s" + hex.EncodeToString(sum[:12])
}

// ensureSchedule sets f's schedule up in Redis when f runs on a schedule (idempotent: every
// router reconciling f calls it), and drops it otherwise.
func (r *Router) ensureSchedule(ctx context.Context, f *flowdoc.Flow) error {
	t := f.Trigger()
	if !flowdoc.Runs(f.Status) || t == nil || t.Type != flowdoc.TypeSchedule {
		return r.cfg.Store.DropSchedule(ctx, f.ID)
	}
	spec, err := schedule.Parse(t.Config)
	if err != nil {
		// Validation refuses such flows; one stored before must not run half set up.
		_ = r.cfg.Store.DropSchedule(ctx, f.ID)
		return faultf(flowdoc.ReasonTriggerInvalid, err, "trigger %s: %s", t.ID, err.Error())
	}
	now := r.now()
	changed, err := r.cfg.Store.EnsureSchedule(ctx, f.ID, f.Revision, spec.Next(now), now)
	if err != nil {
		return err
	}
	if changed {
		r.log.Info("schedule set up", "flow", f.ID, "revision", f.Revision, "cron", spec.Cron, "timezone", spec.Location.String(), "next", spec.Next(now))
		r.schedules.kick()
	}
	return nil
}

// scheduler fires due schedules. Every router runs one; see internal/store/schedules.go for
// how they share the work.
type scheduler struct {
	r    *Router
	wake chan struct{}
}

func newScheduler(r *Router) *scheduler {
	return &scheduler{r: r, wake: make(chan struct{}, 1)}
}

func (s *scheduler) kick() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// run fires due schedules until ctx ends.
func (s *scheduler) run(ctx context.Context) {
	backoff.UntilDue(ctx, s.wake, scheduleIdle, func() (time.Time, error) { return s.drain(ctx) }, func(err error, wait time.Duration) {
		s.r.log.Warn("scheduler: firing due schedules failed; retrying", "err", err, "in", wait)
	})
}

// drain fires every schedule due now and returns when the earliest one left is due.
func (s *scheduler) drain(ctx context.Context) (time.Time, error) {
	for {
		due, next, err := s.r.cfg.Store.TakeDueSchedules(ctx, s.r.now(), scheduleLease, scheduleBatch)
		if err != nil || len(due) == 0 {
			return next, err
		}
		var errs []error
		for _, d := range due {
			if err := s.fire(ctx, d); err != nil {
				// Left leased: taken again once the lease runs out.
				errs = append(errs, fmt.Errorf("flow %s: %w", d.FlowID, err))
			}
		}
		if len(errs) > 0 || len(due) < scheduleBatch {
			return next, errors.Join(errs...)
		}
	}
}

// fire starts the executions of d's due ticks (by its missed policy), then records them. The
// flow is read as stored: a schedule whose flow stopped, or moved to another revision, is
// reconciled instead of fired.
func (s *scheduler) fire(ctx context.Context, d store.DueSchedule) error {
	r := s.r
	f, err := r.cfg.Store.Flow(ctx, d.FlowID)
	if errors.Is(err, store.ErrNotFound) {
		return r.cfg.Store.DropSchedule(ctx, d.FlowID)
	}
	if err != nil {
		return err
	}
	if f.Revision != d.Revision || !flowdoc.Runs(f.Status) {
		return r.ensureSchedule(ctx, f)
	}
	t := f.Trigger()
	if t == nil || t.Type != flowdoc.TypeSchedule {
		return r.cfg.Store.DropSchedule(ctx, f.ID)
	}
	spec, err := schedule.Parse(t.Config)
	if err != nil {
		return r.ensureSchedule(ctx, f) // drops it and says why
	}
	now := r.now()
	ticks, next := spec.Due(d.Last, now)
	if len(ticks) > 0 {
		msgs := make([]kafka.Message, len(ticks))
		for i, tick := range ticks {
			msgs[i] = r.tickRecord(f, spec, tick)
		}
		if err := r.write(ctx, msgs); err != nil {
			return fmt.Errorf("produce %d tick(s): %w", len(ticks), err)
		}
		r.log.Debug("schedule fired", "flow", f.ID, "ticks", len(ticks), "last", ticks[len(ticks)-1])
	}
	last := time.Time{}
	if len(ticks) > 0 {
		last = ticks[len(ticks)-1]
	}
	return r.cfg.Store.FiredSchedule(ctx, f.ID, f.Revision, last, next)
}

// tickRecord is the ingest record that starts the execution of one tick: its input is the
// scheduled time and the config's input.
func (r *Router) tickRecord(f *flowdoc.Flow, spec *schedule.Spec, tick time.Time) kafka.Message {
	at := tick.UTC()
	input := mustJSON(struct {
		ScheduledAt time.Time       `json:"scheduledAt"`
		Input       json.RawMessage `json:"input"`
	}{at, spec.Input})
	id := ScheduledExecutionID(f.ID, at)
	in := envelope.Ingest{ExecutionID: id, FlowID: f.ID, Revision: f.Revision, Trigger: f.Kind(),
		ReceivedAt: at, ScheduledAt: &at, Input: input}
	return r.message(store.Record{Topic: r.cfg.Kafka.Topic(envelope.TopicIngest), Key: []byte(id), Value: mustJSON(in)})
}
