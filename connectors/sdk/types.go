// Package sdk is how a flowd connector is written in Go: declare a manifest, write typed
// handlers, call Serve. The connector then runs as an out-of-process plugin of the flowd
// runners (hashicorp/go-plugin over gRPC) and prints its manifest with `<binary> describe`.
package sdk

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// ProtocolVersion is the plugin protocol this SDK speaks (go-plugin VersionedPlugins key).
const ProtocolVersion = 1

// Manifest describes a connector: what it can do and what it needs.
type Manifest struct {
	Name        string                 `json:"name"`
	Version     string                 `json:"version"`
	Description string                 `json:"description,omitempty"`
	Actions     map[string]ActionSpec  `json:"actions,omitempty"`
	Triggers    map[string]TriggerSpec `json:"triggers,omitempty"`
	// CredentialTypes are the built-in connection types the connector accepts: basic,
	// api_key, bearer, oauth2.
	CredentialTypes []string `json:"credentialTypes,omitempty"`
	// Credentials are connection types the connector defines itself, by name. Users create
	// them as type CredentialType(Name, name), e.g. "crm.apiToken"; only this connector's
	// nodes may use them.
	Credentials map[string]CredentialSpec `json:"credentials,omitempty"`
}

// CredentialSpec is a connection type a connector defines: the fields a user fills in, as a
// JSON Schema 2020-12 object schema, and which of them are secret. Secret fields must be
// string properties of the schema; flowd encrypts them at rest and masks them in responses.
type CredentialSpec struct {
	Title       string          `json:"title"`
	Description string          `json:"description,omitempty"`
	Schema      json.RawMessage `json:"schema"`
	Secret      []string        `json:"secret,omitempty"`
}

// CredentialType is the connection type name of a connector-defined credential: the
// connector's name, a dot, the credential's name. Built-in types hold no dot, so the two
// never collide.
func CredentialType(connector, name string) string { return connector + "." + name }

// ParseCredentialType splits a connection type made by CredentialType; ok is false for
// built-in types and malformed names.
func ParseCredentialType(typ string) (connector, name string, ok bool) {
	connector, name, ok = strings.Cut(typ, ".")
	if !ok || connector == "" || name == "" || strings.Contains(name, ".") {
		return "", "", false
	}
	return connector, name, true
}

// ActionSpec describes one action. Schemas are JSON Schema 2020-12 documents.
type ActionSpec struct {
	Title        string          `json:"title"`
	Description  string          `json:"description,omitempty"`
	ConfigSchema json.RawMessage `json:"configSchema,omitempty"`
	InputSchema  json.RawMessage `json:"inputSchema,omitempty"`
	OutputSchema json.RawMessage `json:"outputSchema,omitempty"`
	// Ports are the outputs an action may emit on besides the default ("") one, e.g. success, error.
	Ports []string `json:"ports,omitempty"`
}

// TriggerSpec describes a polling trigger.
type TriggerSpec struct {
	Title        string          `json:"title"`
	Description  string          `json:"description,omitempty"`
	ConfigSchema json.RawMessage `json:"configSchema,omitempty"`
	OutputSchema json.RawMessage `json:"outputSchema,omitempty"`
}

// Connection is a resolved credential, handed to the connector only for the duration of a call.
// Data holds the type's fields, e.g. basic: username, password; api_key: header, key;
// bearer: token; oauth2: accessToken, tokenType. For a type the connector defines
// (Manifest.Credentials, Type "<connector>.<name>") Data holds every field the user stored,
// secrets decrypted.
type Connection struct {
	Type string         `json:"type"`
	Data map[string]any `json:"data"`
}

// Invocation is one step execution as the connector sees it.
type Invocation struct {
	ID             string         `json:"id"` // unique within a batch; results are matched by it
	Action         string         `json:"action"`
	Config         map[string]any `json:"config"`            // templates already rendered
	Input          any            `json:"input"`             // the item the step runs on
	Context        map[string]any `json:"context,omitempty"` // steps, flow, settings, execution: for expressions
	Connection     *Connection    `json:"connection,omitempty"`
	ExecutionID    string         `json:"executionId"`
	NodeID         string         `json:"nodeId"`
	Attempt        int            `json:"attempt"`
	IdempotencyKey string         `json:"idempotencyKey"`
	Deadline       time.Time      `json:"deadline"`
}

// Output is one item a step emits, on a port ("" is the default output).
type Output struct {
	Port string `json:"port,omitempty"`
	Data any    `json:"data"`
}

// Result is the outcome of one Invocation.
type Result struct {
	ID      string   `json:"id"`
	Outputs []Output `json:"outputs,omitempty"`
	Error   *Error   `json:"error,omitempty"`
}

// Error is a failed invocation. Retryable errors are retried by the runner per the node's
// retry policy; others fail the step (or go to its error port).
type Error struct {
	Code      string
	Message   string
	Retryable bool
	// RetryAfter is how long the system the connector called asked it to wait before trying
	// again (an HTTP Retry-After, a rate limit's reset); 0 when there is no such hint. It
	// travels in whole milliseconds (rounded up) and matters only when Retryable.
	RetryAfter time.Duration
	// Problems lists what was wrong with the call's config or input, each with its JSON
	// pointer, when a schema check refused it (invalid_config, invalid_input). The host and
	// Invoke fill it in; the plugin protocol carries only code, message and retry fields.
	Problems []Problem
}

// errorJSON is Error's JSON form: RetryAfter as retryAfterMs, like the records carry it.
type errorJSON struct {
	Code         string    `json:"code,omitempty"`
	Message      string    `json:"message"`
	Retryable    bool      `json:"retryable"`
	RetryAfterMs int64     `json:"retryAfterMs,omitempty"`
	Problems     []Problem `json:"problems,omitempty"`
}

// MarshalJSON writes RetryAfter as retryAfterMs.
func (e Error) MarshalJSON() ([]byte, error) {
	return json.Marshal(errorJSON{Code: e.Code, Message: e.Message, Retryable: e.Retryable, RetryAfterMs: RetryAfterMs(e.RetryAfter), Problems: e.Problems})
}

// UnmarshalJSON reads retryAfterMs into RetryAfter.
func (e *Error) UnmarshalJSON(data []byte) error {
	var j errorJSON
	if err := json.Unmarshal(data, &j); err != nil {
		return err
	}
	*e = Error{Code: j.Code, Message: j.Message, Retryable: j.Retryable, RetryAfter: RetryAfterFromMs(j.RetryAfterMs), Problems: j.Problems}
	return nil
}

// RetryAfterMs is a RetryAfter as it travels: whole milliseconds, rounded up so that a hint
// never vanishes; 0 for none.
func RetryAfterMs(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	ms := int64(d / time.Millisecond)
	if d%time.Millisecond != 0 {
		ms++
	}
	return ms
}

// RetryAfterFromMs reads a travelling RetryAfter back: 0 for none (ms <= 0), at most the
// longest time.Duration.
func RetryAfterFromMs(ms int64) time.Duration {
	switch {
	case ms <= 0:
		return 0
	case ms > int64(math.MaxInt64/time.Millisecond):
		return math.MaxInt64
	}
	return time.Duration(ms) * time.Millisecond
}

func (e *Error) Error() string {
	if e.Code != "" {
		return e.Code + ": " + e.Message
	}
	return e.Message
}

// Retryable marks err as worth retrying (timeouts, 429, 5xx, a crashed plugin).
func Retryable(code string, err error) error {
	return &Error{Code: code, Message: err.Error(), Retryable: true}
}

// RetryableAfter is Retryable with the wait the called system asked for (429 or 503 with
// Retry-After, a rate limit's reset time).
func RetryableAfter(code string, after time.Duration, err error) error {
	return &Error{Code: code, Message: err.Error(), Retryable: true, RetryAfter: max(after, 0)}
}

// Permanent marks err as final: retrying will not help (bad config, 4xx).
func Permanent(code string, err error) error {
	return &Error{Code: code, Message: err.Error()}
}

// Errorf builds a permanent error.
func Errorf(code, format string, args ...any) error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// AsError converts any error to an *Error; plain errors are permanent.
func AsError(err error) *Error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: "error", Message: err.Error()}
}

// PollRequest asks a polling trigger for new items since Cursor.
type PollRequest struct {
	Trigger    string         `json:"trigger"`
	Config     map[string]any `json:"config"`
	Cursor     string         `json:"cursor"`
	Connection *Connection    `json:"connection,omitempty"`
}

// PollResult carries new items and the cursor to resume from.
type PollResult struct {
	Items  []any  `json:"items"`
	Cursor string `json:"cursor"`
}
