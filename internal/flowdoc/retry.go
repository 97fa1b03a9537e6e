package flowdoc

import (
	"slices"
	"time"

	"github.com/flowd/flowd/internal/backoff"
)

// Bounds of the durations of retry policies and step timeouts.
const (
	MinRetryInterval = time.Millisecond
	MaxRetryInterval = 24 * time.Hour
	MinStepTimeout   = 100 * time.Millisecond
	MaxStepTimeout   = 24 * time.Hour
	// MaxRetryAfter caps how long a connector's Retry-After may hold a step back.
	MaxRetryAfter = time.Hour
)

// RetryPolicy is how an action node's retryable failures are tried again: the router's
// default, under the flow's retry, under the node's.
type RetryPolicy struct {
	MaxAttempts int            // attempts in all, counting the first
	Backoff     backoff.Policy // the wait before each retry
	On          []string       // retry only these codes; empty: every retryable error
	// DeadLetter parks a step whose retries ran out on flowd.dlq instead of failing it.
	DeadLetter bool
}

// DefaultRetry is the router's policy for flows and nodes that set none.
var DefaultRetry = RetryPolicy{MaxAttempts: 3, Backoff: backoff.Policy{
	Initial: time.Second, Max: 30 * time.Second, Multiplier: 2, Jitter: 0.1}}

// RetryOf is node n's policy in flow f, over def. Values that do not parse keep the lower
// layer's (validation reports them when the flow is saved).
func RetryOf(def RetryPolicy, f *Flow, n *Node) RetryPolicy {
	p := def
	if f != nil {
		p = f.Retry.over(p)
	}
	if n != nil {
		p = n.Retry.over(p)
	}
	return p
}

func (r *Retry) over(p RetryPolicy) RetryPolicy {
	if r == nil {
		return p
	}
	if r.MaxAttempts > 0 {
		p.MaxAttempts = r.MaxAttempts
	}
	if d, ok := retryDuration(r.InitialInterval, r.Backoff); ok {
		p.Backoff.Initial = d
	}
	if d, ok := retryDuration(r.MaxInterval, r.MaxBackoff); ok {
		p.Backoff.Max = d
	}
	if r.Multiplier >= 1 {
		p.Backoff.Multiplier = r.Multiplier
	}
	if r.Jitter != nil && *r.Jitter >= 0 && *r.Jitter <= 1 {
		p.Backoff.Jitter = *r.Jitter
	}
	if r.On != nil {
		p.On = r.On
	}
	switch r.Exhausted {
	case ExhaustedFail:
		p.DeadLetter = false
	case ExhaustedDeadLetter:
		p.DeadLetter = true
	}
	return p
}

// retryDuration is the first of the given values set (the current name, then the former).
func retryDuration(vals ...string) (time.Duration, bool) {
	for _, v := range vals {
		if v == "" {
			continue
		}
		d, err := time.ParseDuration(v)
		return d, err == nil && d >= MinRetryInterval && d <= MaxRetryInterval
	}
	return 0, false
}

// Retries reports whether a failure with this code and retryability, on this attempt
// (1 for the first), is tried again.
func (p RetryPolicy) Retries(code string, retryable bool, attempt int) bool {
	if !retryable || attempt >= p.MaxAttempts {
		return false
	}
	return len(p.On) == 0 || slices.Contains(p.On, code)
}

// Parks reports whether a failure on this attempt is parked as a dead letter: the policy
// says so, and the failure is one it retries but the attempts ran out.
func (p RetryPolicy) Parks(code string, retryable bool, attempt int) bool {
	return p.DeadLetter && retryable && attempt >= p.MaxAttempts && (len(p.On) == 0 || slices.Contains(p.On, code))
}

// Delay is the wait before the attempt after attempt: the policy's backoff, or the
// connector's Retry-After when that is longer (capped at MaxRetryAfter).
func (p RetryPolicy) Delay(attempt int, retryAfter time.Duration) time.Duration {
	return max(p.Backoff.Delay(attempt), min(retryAfter, MaxRetryAfter))
}

// StepTimeout is the deadline of each attempt of n: its own timeout, else def.
func StepTimeout(def time.Duration, n *Node) time.Duration {
	if n == nil || n.Timeout == "" {
		return def
	}
	if d, err := time.ParseDuration(n.Timeout); err == nil && d >= MinStepTimeout && d <= MaxStepTimeout {
		return d
	}
	return def
}
