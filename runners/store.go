package runners

import (
	"context"
	"time"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
)

// What a runner needs of flowd's state. *store.Store provides it; the claim logic is
// unit-tested against an in-memory fake (fakes_internal_test.go).

// Revisions reads stored flow revisions: the source of every node a step runs.
type Revisions interface {
	Revision(ctx context.Context, id string, n int) (*flowdoc.Flow, error)
}

// Runs records and claims work items, so a redelivery neither runs a finished step again nor
// runs one another runner is running (internal/store/runs.go).
type Runs interface {
	BeginRun(ctx context.Context, k store.RunKey, ttl time.Duration) (*store.RunStart, error)
	FinishRun(ctx context.Context, k store.RunKey, window time.Duration, claim store.RunClaim) error
}

// Store is every part of the state a runner uses.
type Store interface {
	Revisions
	Runs
	Polls
	Pools
}

var _ Store = (*store.Store)(nil)
