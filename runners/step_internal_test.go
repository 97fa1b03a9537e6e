package runners

import (
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/sdk"
	"github.com/flowd/flowd/internal/envelope"
)

// TestRecordErrorKeepsRetryAfter: the wait a connector was asked for reaches the step's record,
// in milliseconds, for the router to schedule the retry by.
func TestRecordErrorKeepsRetryAfter(t *testing.T) {
	cases := []struct {
		in   sdk.Error
		want envelope.Error
	}{
		{sdk.Error{Code: "http_429", Message: "slow down", Retryable: true, RetryAfter: 3 * time.Second},
			envelope.Error{Code: "http_429", Message: "slow down", Retryable: true, RetryAfterMs: 3000}},
		{sdk.Error{Code: "x", Message: "m", Retryable: true, RetryAfter: time.Microsecond},
			envelope.Error{Code: "x", Message: "m", Retryable: true, RetryAfterMs: 1}},
		{sdk.Error{Code: "bad", Message: "m"}, envelope.Error{Code: "bad", Message: "m"}},
	}
	for _, c := range cases {
		if got := recordError(&c.in); *got != c.want {
			t.Errorf("recordError(%#v) = %#v, want %#v", c.in, *got, c.want)
		}
	}
}
