// Package envelope holds the shapes that cross role boundaries: the records on flowd.ingest,
// flowd.steps.<pool> and flowd.results, and the execution records kept in Redis. Every role
// agrees on them; their JSON Schemas are published in schemas/.
package envelope

import (
	"encoding/json"
	"time"

	"github.com/flowd/flowd/internal/flowdoc"
)

// Topic names, unprefixed (kafkax.Config.Topic adds the prefix).
const (
	TopicIngest  = "ingest"
	TopicResults = "results"
	TopicDLQ     = "dlq"
	TopicHistory = "history"
	// TopicNotifications carries the failures of flows that notify someone (Failure, keyed by
	// flow id), produced with the change that fails the execution.
	TopicNotifications = "notifications"
	// TopicStepsPrefix + pool is a runner pool's work topic, e.g. "steps.default".
	TopicStepsPrefix = "steps."
	// DefaultPool runs nodes that name no pool.
	DefaultPool = "default"
)

// Trigger kinds.
const (
	TriggerWebhook  = "webhook"
	TriggerKafka    = "kafka"
	TriggerSchedule = "schedule"
	TriggerPoll     = "poll"
)

// Ingest is one trigger event on flowd.ingest, keyed by execution id. The execution id is chosen by
// whoever accepted the event, so a retried produce is recognised as the same execution.
type Ingest struct {
	ExecutionID string          `json:"executionId"`
	FlowID      string          `json:"flowId"`
	Revision    int             `json:"revision"` // the flow revision the execution runs
	Trigger     string          `json:"trigger"`
	ReceivedAt  time.Time       `json:"receivedAt"`
	Input       json.RawMessage `json:"input"`
	Request     *HTTPRequest    `json:"request,omitempty"`
	Source      *KafkaSource    `json:"source,omitempty"`
	// Sync means a caller waits for the flow's respond node (or its end).
	Sync bool `json:"sync,omitempty"`
	// RetryOf names the failed execution this one retries: the steps that succeeded there
	// are not run again, their recorded outputs are used.
	RetryOf string `json:"retryOf,omitempty"`
	// ScheduledAt is the tick of a trigger.schedule flow this execution runs for.
	ScheduledAt *time.Time `json:"scheduledAt,omitempty"`
}

// HTTPRequest is what a webhook trigger saw besides the body.
type HTTPRequest struct {
	Method  string              `json:"method"`
	Path    string              `json:"path,omitempty"` // suffix after /hooks/{flowId}
	Query   map[string][]string `json:"query,omitempty"`
	Headers map[string]string   `json:"headers,omitempty"`
}

// KafkaSource is where a partner-topic record came from.
type KafkaSource struct {
	Topic     string            `json:"topic"`
	Partition int               `json:"partition"`
	Offset    int64             `json:"offset"`
	Key       string            `json:"key,omitempty"`
	Headers   map[string]string `json:"headers,omitempty"`
}

// Work is one step to run on flowd.steps.<pool>, keyed by execution id. It carries the step's
// input and context; Node and Owners repeat the stored revision's for operators reading the
// topic, but a runner takes both from the stored revision and runs the step only while its
// token is pending (runners/trust.go), then resolves the connection's secrets itself.
type Work struct {
	ExecutionID string          `json:"executionId"`
	FlowID      string          `json:"flowId"`
	Revision    int             `json:"revision"`
	Token       string          `json:"token"` // this activation of the node (unique per execution)
	Attempt     int             `json:"attempt"`
	Node        flowdoc.Node    `json:"node"`
	Owners      []flowdoc.Owner `json:"owners"` // who may use the node's connection
	Input       json.RawMessage `json:"input"`
	// Context is what expressions see besides input: steps, flow, settings, execution.
	Context        map[string]json.RawMessage `json:"context,omitempty"`
	IdempotencyKey string                     `json:"idempotencyKey"` // stable across attempts and redeliveries
	Deadline       time.Time                  `json:"deadline"`
	// TimeoutMs, on a work item without a Deadline (one parked as a dead letter, run whenever
	// it is replayed), is its deadline from when a runner takes it.
	TimeoutMs int64 `json:"timeoutMs,omitempty"`
}

// HeaderParked marks the work item of a step parked on flowd.dlq because its retries ran out
// (a flow's retry.exhausted: deadLetter). Its value is the Parked step, so the dead letter can
// be discarded (failing the step) even when its value was kept only in part.
const HeaderParked = "flowd-parked"

// Parked names the activation and the attempt a parked work item would run.
type Parked struct {
	ExecutionID string `json:"executionId"`
	FlowID      string `json:"flowId"`
	Revision    int    `json:"revision"`
	NodeID      string `json:"nodeId"`
	Token       string `json:"token"`
	Attempt     int    `json:"attempt"`
}

// Codes of the failure that ends a parked step without running it again.
const (
	CodeDeadLetterDiscarded = "dead_letter_discarded"
	CodeDeadLetterExpired   = "dead_letter_expired"
)

// Failed is the result that fails the parked step p with e.
func (p Parked) Failed(e *Error, at time.Time) Result {
	return Result{ExecutionID: p.ExecutionID, FlowID: p.FlowID, Revision: p.Revision, NodeID: p.NodeID,
		Token: p.Token, Attempt: p.Attempt, Error: e, StartedAt: at, FinishedAt: at}
}

// Activation is a node activation the router sent to a runner and awaits the result of, kept
// in Redis by token until the result arrives. Runners check a work item against it: a work
// item is run only while the router is waiting for exactly that node's activation.
type Activation struct {
	NodeID       string          `json:"nodeId"`
	Input        json.RawMessage `json:"input"`
	DispatchedAt time.Time       `json:"dispatchedAt"`
	// Attempts are the attempts that failed and are being retried, oldest first.
	Attempts []Attempt `json:"attempts,omitempty"`
}

// Attempt is one failed attempt of a step that was tried again.
type Attempt struct {
	Attempt    int       `json:"attempt"`
	Error      *Error    `json:"error"`
	StartedAt  time.Time `json:"startedAt"`
	FinishedAt time.Time `json:"finishedAt"`
}

// Output is one item a step emitted.
type Output struct {
	Port string          `json:"port,omitempty"`
	Data json.RawMessage `json:"data"`
}

// Error is why a step or an execution failed, as the records and the execution history carry
// it. Connectors report theirs through the SDK; the runner converts at that boundary, so a
// change to the plugin protocol never changes a record.
type Error struct {
	Code      string `json:"code,omitempty"`
	Message   string `json:"message"`
	Retryable bool   `json:"retryable"`
	// RetryAfterMs is how long the connector asked to wait before trying again (Retry-After).
	RetryAfterMs int64 `json:"retryAfterMs,omitempty"`
}

func (e *Error) Error() string {
	if e.Code != "" {
		return e.Code + ": " + e.Message
	}
	return e.Message
}

// Result is a step's outcome on flowd.results, keyed by execution id.
type Result struct {
	ExecutionID string    `json:"executionId"`
	FlowID      string    `json:"flowId"`
	Revision    int       `json:"revision"`
	NodeID      string    `json:"nodeId"`
	Token       string    `json:"token"`
	Attempt     int       `json:"attempt"`
	Outputs     []Output  `json:"outputs,omitempty"`
	Error       *Error    `json:"error,omitempty"`
	StartedAt   time.Time `json:"startedAt"`
	FinishedAt  time.Time `json:"finishedAt"`
}

// Execution statuses.
const (
	StatusRunning   = "running"
	StatusSucceeded = "succeeded"
	StatusFailed    = "failed"
	StatusFiltered  = "filtered"
)

// TerminalStatuses are the statuses an execution ends with.
var TerminalStatuses = []string{StatusSucceeded, StatusFailed, StatusFiltered}

// Terminal tells whether an execution with status has ended.
func Terminal(status string) bool {
	return status == StatusSucceeded || status == StatusFailed || status == StatusFiltered
}

// Execution is one run of a flow, as kept in Redis and shown by the API.
type Execution struct {
	ID         string     `json:"id"`
	FlowID     string     `json:"flowId"`
	Revision   int        `json:"revision"`
	Trigger    string     `json:"trigger"`
	Status     string     `json:"status"`
	Error      *Error     `json:"error,omitempty"`
	ReceivedAt time.Time  `json:"receivedAt"`
	StartedAt  time.Time  `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	DurationMs int64      `json:"durationMs,omitempty"`
	// RetryOf is the failed execution this one retries (the first of a chain of retries):
	// its steps' idempotency keys are that execution's, so a partner sees a retried call as
	// the same call.
	RetryOf string `json:"retryOf,omitempty"`
	// ScheduledAt is the tick this execution runs for, when a schedule started it.
	ScheduledAt *time.Time `json:"scheduledAt,omitempty"`
	// Source is the partner record that started it, when a partner topic did.
	Source *KafkaSource `json:"source,omitempty"`
}

// Step statuses.
const (
	StepRunning   = "running"
	StepSucceeded = "succeeded"
	StepFailed    = "failed"
	StepSkipped   = "skipped"
	StepRetrying  = "retrying" // failed, and waits for its next attempt (RetryAt)
	// StepDeadLettered: its retries ran out and it waits on flowd.dlq to be replayed or discarded.
	StepDeadLettered = "deadLettered"
)

// Step is one node activation within an execution. Input and Output are snapshots, truncated
// at a configured size (Truncated says so).
type Step struct {
	ExecutionID string          `json:"executionId"`
	NodeID      string          `json:"nodeId"`
	Token       string          `json:"token"`
	Type        string          `json:"type"`
	Status      string          `json:"status"`
	Attempt     int             `json:"attempt"`
	Port        string          `json:"port,omitempty"`
	Input       json.RawMessage `json:"input,omitempty"`
	Output      json.RawMessage `json:"output,omitempty"`
	Truncated   bool            `json:"truncated,omitempty"`
	// Items is how many items the step emitted when more than one: Output is then their array.
	Items int `json:"items,omitempty"`
	// Replayed says the step was not run: a retry took its output from the execution it retries.
	Replayed bool   `json:"replayed,omitempty"`
	Error    *Error `json:"error,omitempty"`
	// Attempts are the earlier attempts that failed and were retried, oldest first; Attempt
	// and Error are the latest one's.
	Attempts   []Attempt  `json:"attempts,omitempty"`
	StartedAt  time.Time  `json:"startedAt"`
	FinishedAt *time.Time `json:"finishedAt,omitempty"`
	DurationMs int64      `json:"durationMs,omitempty"`
	// RetryAt is when the next attempt of a step waiting to be retried is due.
	RetryAt *time.Time `json:"retryAt,omitempty"`
}

// Failure is what flowd.notifications carries: an execution of a flow with notifications
// failed.
type Failure struct {
	FlowID      string    `json:"flowId"`
	ExecutionID string    `json:"executionId"`
	Revision    int       `json:"revision"`
	Error       *Error    `json:"error,omitempty"`
	FailedAt    time.Time `json:"failedAt"`
}

// History is what flowd.history carries for each ended execution (key: its id): the record
// and the steps its flow's save policy keeps (all: with payloads; summary: without; none: no
// steps). It is produced with the change that ends the execution; a consumer that may see a
// record twice (after a router crash) keeps the last one per execution id.
type History struct {
	Execution Execution `json:"execution"`
	Save      string    `json:"save"`
	Steps     []Step    `json:"steps,omitempty"`
}

// Reply is the answer a synchronous webhook returns, written by the router when the flow
// reaches its respond node (or ends) and read by the ingest instance holding the request.
type Reply struct {
	Status  int               `json:"status"`
	Headers map[string]string `json:"headers,omitempty"`
	Body    json.RawMessage   `json:"body"`
}

// PoolName is the pool a node's pool field names: DefaultPool when it names none.
func PoolName(pool string) string {
	if pool == "" {
		return DefaultPool
	}
	return pool
}

// PoolTopic is the unprefixed work topic of a pool.
func PoolTopic(pool string) string { return TopicStepsPrefix + PoolName(pool) }
