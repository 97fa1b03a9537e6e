package runners

import (
	"context"
	"time"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/identity"
)

// Pools records which pools have a live runner (internal/store/runnerpools.go), so that a flow
// with an action on a pool nobody serves is told so rather than waiting without a word.
type Pools interface {
	ServePool(ctx context.Context, pool, runner string, now, until time.Time) error
	LeavePool(ctx context.Context, pool, runner string) error
}

// membershipEvery is how often a runner renews its membership; one that dies lapses after
// three of these.
const membershipEvery = 10 * time.Second

// serve keeps this runner's membership of its pool until ctx ends, then ends it.
func (r *Runner) serve(ctx context.Context) {
	id := identity.NewID()
	renew := func() {
		now := time.Now()
		if err := r.cfg.Store.ServePool(ctx, r.cfg.Pool, id, now, now.Add(3*membershipEvery)); err != nil && ctx.Err() == nil {
			r.log.Warn("cannot renew the pool membership; flows may be told nobody serves it", "err", err)
		}
	}
	renew()
	backoff.Every(ctx, membershipEvery, renew)
	// A runner that stops leaves at once, so a start after it is warned; ctx has ended.
	leave, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := r.cfg.Store.LeavePool(leave, r.cfg.Pool, id); err != nil {
		r.log.Warn("cannot leave the pool", "err", err)
	}
}
