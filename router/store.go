package router

import (
	"context"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/topicpolicy"
)

// What the router needs of flowd's state, by domain. *store.Store provides each; the router's
// decisions are unit-tested against in-memory fakes of them (fakes_internal_test.go).

// Flows is the part of the flow repository the router reads and confirms lifecycle changes in.
type Flows interface {
	Flow(ctx context.Context, id string) (*flowdoc.Flow, error)
	Revision(ctx context.Context, id string, n int) (*flowdoc.Flow, error)
	AllFlows(ctx context.Context) ([]flowdoc.Flow, error)
	UpdateFlow(ctx context.Context, id string, decide func(cur *flowdoc.Flow) (store.Mutation, error)) (*flowdoc.Flow, error)
}

// Executions is the execution bookkeeping: one atomic transition per consumed record.
type Executions interface {
	AdvanceExecution(ctx context.Context, t store.Transition, decide func(*store.ExecState) (*store.ExecChange, error)) (store.Advanced, error)
	MarkProduced(ctx context.Context, executionID, messageID string) error
	CountIgnored(ctx context.Context, flowID, recordID string, at time.Time, p store.ExecPolicy) (bool, error)
	// Execution and ExecutionSteps read an execution a retry retries.
	Execution(ctx context.Context, id string) (*envelope.Execution, error)
	ExecutionSteps(ctx context.Context, id string) ([]envelope.Step, error)
}

// TriggerStatuses keeps what the router reports about partner-topic triggers, and which flows
// started before their partner topic existed.
type TriggerStatuses interface {
	SetTriggerStatus(ctx context.Context, flowID string, report []byte, ttl time.Duration) error
	AwaitPartnerTopic(ctx context.Context, flowID, topic string) error
	PartnerTopicAwaited(ctx context.Context, flowID, topic string) (bool, error)
	ForgetAwaitedTopic(ctx context.Context, flowID string) error
}

// Store is every part of the state the router uses; the identity directory answers which
// partner topics a flow's tenant may read (topicpolicy).
type Store interface {
	Flows
	Executions
	Delays
	Schedules
	Polls
	TriggerStatuses
	topicpolicy.Directory
}

var _ Store = (*store.Store)(nil)
