package router

import (
	"context"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
)

// Polls keeps the polls of trigger.poll flows, which the runners of their pool run
// (internal/store/polls.go, runners/poll.go).
type Polls interface {
	EnsurePoll(ctx context.Context, flowID, pool string, rev int, next time.Time) (bool, error)
	DropPoll(ctx context.Context, flowID string, forget bool) error
}

// ensurePoll sets f's poll up in its pool's due set when f runs on a poll trigger (idempotent:
// every router reconciling f calls it), due at once; and drops it otherwise.
func (r *Router) ensurePoll(ctx context.Context, f *flowdoc.Flow) error {
	t := f.Trigger()
	if !flowdoc.Runs(f.Status) || t == nil || t.Type != flowdoc.TypePoll {
		return r.cfg.Store.DropPoll(ctx, f.ID, false)
	}
	pool := envelope.PoolName(t.Pool)
	changed, err := r.cfg.Store.EnsurePoll(ctx, f.ID, pool, f.Revision, r.now())
	if err != nil {
		return err
	}
	if changed {
		r.log.Info("poll set up", "flow", f.ID, "revision", f.Revision, "connector", t.Connector, "trigger", t.Trigger,
			"pool", pool, "interval", flowdoc.PollInterval(t))
	}
	return nil
}
