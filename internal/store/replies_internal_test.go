package store

import (
	"testing"
	"time"
)

func TestBLPOPSecondsKeepsMilliseconds(t *testing.T) {
	for d, want := range map[time.Duration]string{
		250 * time.Millisecond: "0.250", time.Millisecond: "0.001", 0: "0.001", 999 * time.Millisecond: "0.999",
	} {
		if got := blpopSeconds(d); got != want {
			t.Errorf("blpopSeconds(%s) = %s, want %s", d, got, want)
		}
	}
}
