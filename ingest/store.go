package ingest

import (
	"context"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
)

// What ingest needs of flowd's state, by domain; *store.Store provides each.

// Flows reads the flow a webhook starts.
type Flows interface {
	Flow(ctx context.Context, id string) (*flowdoc.Flow, error)
}

// Connections reads the connection holding a webhook's auth secret.
type Connections interface {
	Connection(ctx context.Context, id string) (*store.Connection, error)
}

// Idempotency remembers Idempotency-Key headers, so a retried request starts one execution.
type Idempotency interface {
	ClaimIdempotency(ctx context.Context, flowID, key, executionID string, lease time.Duration) (id, state string, claimed bool, err error)
	FinishIdempotency(ctx context.Context, flowID, key, executionID, state string, ttl time.Duration) error
}

// ReplyWaiter waits for the reply of a synchronous execution.
type ReplyWaiter interface {
	WaitReply(ctx context.Context, executionID string, timeout time.Duration) (*envelope.Reply, error)
}

// Store is every part of the state ingest uses; Ping backs its readiness.
type Store interface {
	Flows
	Connections
	Idempotency
	ReplyWaiter
	Ping(ctx context.Context) error
}

var _ Store = (*store.Store)(nil)
