package kafkax_test

import (
	"errors"
	"slices"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

// A dead letter carries its original whole: Original gives back the record as it was
// consumed, whose own signature still verifies, while the dead letter verifies on its topic.
func TestDeadLetterKeepsTheOriginalVerifiable(t *testing.T) {
	t.Parallel()
	cfg := kafkax.Config{RecordKeys: testrig.RecordKeys()}
	orig := kafka.Message{Topic: "flowd.ingest", Partition: 4, Offset: 17, Key: []byte("x1"), Value: []byte(`{"executionId":"x1"}`),
		Headers: []kafka.Header{{Key: "trace", Value: []byte("abc")}}}
	cfg.RecordKeys.Sign(&orig)
	signature := orig.Headers[len(orig.Headers)-1]

	dl := cfg.DeadLetter("flowd.dlq", orig, "flow x1 revision 1: flow revision not available")
	if err := cfg.RecordKeys.Verify(dl); err != nil {
		t.Fatalf("the dead letter does not verify on its topic: %v", err)
	}
	got, reason, ok := kafkax.Original(dl)
	if !ok || reason != "flow x1 revision 1: flow revision not available" {
		t.Fatalf("Original: ok=%v reason=%q", ok, reason)
	}
	if got.Topic != orig.Topic || got.Partition != 4 || got.Offset != 17 || string(got.Key) != "x1" || string(got.Value) != string(orig.Value) {
		t.Fatalf("original read back as %+v", got)
	}
	want := []kafka.Header{{Key: "trace", Value: []byte("abc")}, signature}
	if !slices.EqualFunc(got.Headers, want, func(a, b kafka.Header) bool { return a.Key == b.Key && string(a.Value) == string(b.Value) }) {
		t.Fatalf("original headers %v, want %v", got.Headers, want)
	}
	if err := cfg.RecordKeys.Verify(got); err != nil {
		t.Fatalf("the original read back does not verify: %v", err)
	}
}

// An original that was never signed (why the router dead-lettered it) stays unverifiable:
// reading it back from its dead letter must not lend it the dead letter's signature.
func TestDeadLetterOfAnUnsignedRecordStaysUnsigned(t *testing.T) {
	t.Parallel()
	cfg := kafkax.Config{RecordKeys: testrig.RecordKeys()}
	forged := kafka.Message{Topic: "flowd.ingest", Key: []byte("x2"), Value: []byte(`{"executionId":"x2"}`)}
	dl := cfg.DeadLetter("flowd.dlq", forged, "record authentication failed: record is not signed")
	got, _, ok := kafkax.Original(dl)
	if !ok {
		t.Fatal("Original: not a dead letter")
	}
	if err := cfg.RecordKeys.Verify(got); !errors.Is(err, busauth.ErrUnsigned) {
		t.Fatalf("the forged original verifies as %v, want unsigned", err)
	}
	if _, _, ok := kafkax.Original(forged); ok {
		t.Fatal("a record without the dead-letter headers was read as a dead letter")
	}
}
