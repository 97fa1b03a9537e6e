package metrics

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestErrorCodesAreBounded(t *testing.T) {
	b := &bounded{seen: map[string]bool{}}
	for i := range maxValues {
		if got := b.value(fmt.Sprint("code_", i)); got != fmt.Sprint("code_", i) {
			t.Fatalf("value %d: %q", i, got)
		}
	}
	if got := b.value("one_too_many"); got != "other" {
		t.Fatalf("past the bound: %q, want other", got)
	}
	if got := b.value("code_7"); got != "code_7" {
		t.Fatalf("a value seen before: %q", got)
	}
	if got := b.value(strings.Repeat("x", 65)); got != "other" {
		t.Fatalf("a long value: %q", got)
	}
}

// Lag is the high-water mark the fetches saw minus what the group committed: it grows with
// fetched records and returns to 0 once the last one is committed.
func TestConsumerLagReturnsToZero(t *testing.T) {
	c := NewConsumer("test-lag", "g-lag", false)
	defer c.Close()
	lag := consumerLag.WithLabelValues("g-lag", "t", "2")
	c.Fetched("t", 2, 10, 15) // records 10..14 on the partition, the group at 10
	if got := testutil.ToFloat64(lag); got != 5 {
		t.Fatalf("lag after the first fetch = %v, want 5", got)
	}
	c.Fetched("t", 2, 11, 15)
	c.Committed("t", 2, 11) // 10 and 11 done
	if got := testutil.ToFloat64(lag); got != 3 {
		t.Fatalf("lag after committing 11 = %v, want 3", got)
	}
	c.Committed("t", 2, 14)
	if got := testutil.ToFloat64(lag); got != 0 {
		t.Fatalf("lag after committing the last record = %v, want 0", got)
	}
	if got := testutil.ToFloat64(recordsInFlight.WithLabelValues("test-lag")); got != 2 {
		t.Fatalf("in flight = %v, want 2", got)
	}
	c.Processed(true)
	c.Abandoned(1)
	if got := testutil.ToFloat64(recordsInFlight.WithLabelValues("test-lag")); got != 0 {
		t.Fatalf("in flight = %v, want 0", got)
	}
	if got := testutil.ToFloat64(recordsProcessed.WithLabelValues("test-lag")); got != 1 {
		t.Fatalf("processed = %v, want 1", got)
	}
}

// A partner topic's group carries a flow id: its lag is exported only with the flow label on.
func TestPerFlowLagNeedsTheFlowLabel(t *testing.T) {
	before := testutil.CollectAndCount(consumerLag)
	c := NewConsumer("partner", "g-flow-1", true)
	c.Fetched("p", 0, 0, 3)
	if got := testutil.CollectAndCount(consumerLag); got != before {
		t.Fatalf("lag series with the flow label off: %d, want %d", got, before)
	}
	c.Close()
	SetFlowLabel(true)
	defer SetFlowLabel(false)
	c = NewConsumer("partner", "g-flow-1", true)
	defer c.Close()
	c.Fetched("p", 0, 0, 3)
	if got := testutil.ToFloat64(consumerLag.WithLabelValues("g-flow-1", "p", "0")); got != 3 {
		t.Fatalf("lag with the flow label on = %v, want 3", got)
	}
}

func TestExecutionsCarryTheFlowOnlyWhenAllowed(t *testing.T) {
	ExecutionEnded("flow-a", "succeeded")
	if got := testutil.ToFloat64(executionsEnded.WithLabelValues("succeeded", "flow-a")); got != 0 {
		t.Fatalf("a flow label with the flag off: %v", got)
	}
	SetFlowLabel(true)
	defer SetFlowLabel(false)
	ExecutionEnded("flow-a", "succeeded")
	if got := testutil.ToFloat64(executionsEnded.WithLabelValues("succeeded", "flow-a")); got != 1 {
		t.Fatalf("flow label with the flag on: %v, want 1", got)
	}
}

func TestOffRecordsNothing(t *testing.T) {
	SetEnabled(false)
	defer SetEnabled(true)
	before := testutil.ToFloat64(executionsEnded.WithLabelValues("failed", ""))
	ExecutionEnded("f", "failed")
	StepFinished("c-off", "a", 1, "boom")
	c := NewConsumer("off-consumer", "g-off", false)
	c.Fetched("t", 0, 0, 9)
	c.Close()
	if got := testutil.ToFloat64(executionsEnded.WithLabelValues("failed", "")); got != before {
		t.Fatalf("executions ended with metrics off: %v, want %v", got, before)
	}
	if got := testutil.ToFloat64(stepErrors.WithLabelValues("c-off", "a", "boom")); got != 0 {
		t.Fatalf("step errors with metrics off: %v", got)
	}
	if got := testutil.ToFloat64(consumerLag.WithLabelValues("g-off", "t", "0")); got != 0 {
		t.Fatalf("lag with metrics off: %v", got)
	}
}
