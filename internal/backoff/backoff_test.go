package backoff

import (
	"context"
	"testing"
	"time"
)

const ms = time.Millisecond

func TestPolicyDelay(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    Policy
		want []time.Duration // for n = 1, 2, ...
	}{
		{"doubles to the cap", Policy{Initial: 100 * ms, Max: time.Second},
			[]time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second}},
		{"multiplier", Policy{Initial: time.Second, Max: 10 * time.Second, Multiplier: 3},
			[]time.Duration{time.Second, 3 * time.Second, 9 * time.Second, 10 * time.Second}},
		{"multiplier below 1 doubles", Policy{Initial: ms, Max: time.Second, Multiplier: 0.5},
			[]time.Duration{ms, 2 * ms, 4 * ms}},
		{"multiplier 1 is constant", Policy{Initial: 5 * ms, Max: time.Second, Multiplier: 1},
			[]time.Duration{5 * ms, 5 * ms, 5 * ms}},
		{"initial above the cap", Policy{Initial: time.Minute, Max: time.Second},
			[]time.Duration{time.Second, time.Second}},
		{"no cap", Policy{Initial: time.Second},
			[]time.Duration{time.Second, 2 * time.Second, 4 * time.Second}},
		{"no initial", Policy{Max: time.Second}, []time.Duration{0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for i, want := range tc.want {
				if got := tc.p.Delay(i + 1); got != want {
					t.Errorf("Delay(%d) = %v, want %v", i+1, got, want)
				}
			}
		})
	}
}

func TestPolicyDelayEdges(t *testing.T) {
	p := Policy{Initial: 100 * ms, Max: 5 * time.Second}
	if got := p.Delay(0); got != 100*ms {
		t.Errorf("Delay(0) = %v, want the first wait", got)
	}
	if got := p.Delay(1 << 20); got != 5*time.Second { // 2^(n-1) overflows to +Inf
		t.Errorf("Delay(huge) = %v, want the cap", got)
	}
	if got := (Policy{Initial: time.Second}).Delay(1 << 20); got <= 0 {
		t.Errorf("uncapped Delay(huge) = %v, want a positive wait", got)
	}
}

func TestPolicyJitter(t *testing.T) {
	p := Policy{Initial: time.Second, Max: 4 * time.Second, Jitter: 0.1}
	seen := map[time.Duration]bool{}
	for range 200 {
		d := p.Delay(1)
		if d < 900*ms || d > 1100*ms {
			t.Fatalf("Delay(1) = %v, outside ±10%% of 1s", d)
		}
		seen[d] = true
		if d := p.Delay(3); d < 3600*ms || d > 4*time.Second {
			t.Fatalf("Delay(3) = %v, outside [3.6s, the 4s cap]", d)
		}
	}
	if len(seen) < 2 {
		t.Error("jitter never varied the wait")
	}
}

func TestBackoffSequence(t *testing.T) {
	b := New(100*ms, 500*ms)
	for _, want := range []time.Duration{100 * ms, 200 * ms, 400 * ms, 500 * ms, 500 * ms} {
		if p := b.Peek(); p != want {
			t.Fatalf("Peek() = %v, want %v", p, want)
		}
		if got := b.Next(); got != want {
			t.Fatalf("Next() = %v, want %v", got, want)
		}
	}
	b.Reset()
	if got := b.Next(); got != 100*ms {
		t.Fatalf("after Reset, Next() = %v, want 100ms", got)
	}
}

func TestBackoffPeekAgreesWithNextUnderJitter(t *testing.T) {
	b := &Backoff{Policy: Policy{Initial: time.Second, Max: time.Minute, Jitter: 0.5}}
	for range 20 {
		p := b.Peek()
		if b.Peek() != p {
			t.Fatal("Peek drew a second delay")
		}
		if n := b.Next(); n != p {
			t.Fatalf("Next() = %v after Peek() = %v", n, p)
		}
	}
}

func TestBackoffWait(t *testing.T) {
	b := New(time.Microsecond, 2*time.Microsecond)
	for range 3 {
		if !b.Wait(context.Background()) {
			t.Fatal("Wait gave up without ctx ending")
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	slow := New(time.Hour, time.Hour)
	if slow.Wait(ctx) {
		t.Fatal("Wait reported a full wait after ctx ended")
	}
	if got := slow.Peek(); got != time.Hour {
		t.Fatalf("Peek() = %v after an abandoned wait, want the capped next delay", got)
	}
}

func TestSleep(t *testing.T) {
	if !Sleep(context.Background(), time.Microsecond) {
		t.Fatal("Sleep gave up without ctx ending")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep reported a full wait after ctx ended")
	}
}

func TestEveryCallsUntilTheContextEnds(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	calls := 0
	Every(ctx, time.Microsecond, func() {
		calls++
		if calls == 3 {
			cancel()
		}
	})
	if calls != 3 {
		t.Fatalf("%d calls, want 3 (then the context ended)", calls)
	}
}
