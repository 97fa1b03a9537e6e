package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

func TestRunRecords(t *testing.T) { onEachRedis(t, testRunRecords) }

func testRunRecords(t *testing.T, b testrig.RedisBackend) {
	st, rdb, prefix := newExecStore(t, b)
	ctx := context.Background()
	k := store.RunKey{ExecutionID: "ex:1", Token: "node-a:0", Attempt: 1}

	if done, err := st.RunDone(ctx, k); err != nil || done {
		t.Fatalf("RunDone before finishing: %v %v, want false", done, err)
	}

	claim, ok, err := st.ClaimRun(ctx, k, time.Minute)
	if err != nil || !ok {
		t.Fatalf("ClaimRun: ok=%v err=%v", ok, err)
	}
	if _, ok, err := st.ClaimRun(ctx, k, time.Minute); err != nil || ok {
		t.Fatalf("second ClaimRun: ok=%v err=%v, want refused", ok, err)
	}
	// Escaping keeps ids with ':' apart: this key would collide with k if ids were joined raw.
	other := store.RunKey{ExecutionID: "ex", Token: "1:node-a:0", Attempt: 1}
	if _, ok, err := st.ClaimRun(ctx, other, time.Minute); err != nil || !ok {
		t.Fatalf("ClaimRun of a different key: ok=%v err=%v", ok, err)
	}
	if err := claim.Extend(ctx, 2*time.Minute); err != nil {
		t.Fatalf("Extend: %v", err)
	}

	if err := st.FinishRun(ctx, k, time.Hour, claim); err != nil {
		t.Fatal(err)
	}
	if done, err := st.RunDone(ctx, k); err != nil || !done {
		t.Fatalf("RunDone after finishing: %v %v", done, err)
	}
	if done, err := st.RunDone(ctx, store.RunKey{ExecutionID: k.ExecutionID, Token: k.Token, Attempt: 2}); err != nil || done {
		t.Fatalf("another attempt: done=%v %v", done, err)
	}
	if held, err := st.RunClaimed(ctx, k); err != nil || held {
		t.Fatalf("claim after finishing: held=%v err=%v, want released", held, err)
	}
	if err := claim.Extend(ctx, time.Minute); !errors.Is(err, store.ErrLockLost) {
		t.Fatalf("Extend after finishing: %v, want ErrLockLost", err)
	}

	// One small hash per execution, kept for the redelivery window.
	ttl := rdb.PTTL(ctx, prefix+"exec:{ex%3A1}:runs").Val()
	if ttl <= 59*time.Minute || ttl > time.Hour {
		t.Fatalf("run record TTL = %s, want about 1h (key layout as documented)", ttl)
	}
	k2 := store.RunKey{ExecutionID: "ex2", Token: "t", Attempt: 2}
	if err := st.FinishRun(ctx, k2, 0, nil); err != nil {
		t.Fatal(err)
	}
	if ttl := rdb.PTTL(ctx, prefix+"exec:{ex2}:runs").Val(); ttl < store.DefaultRedeliveryWindow-time.Minute || ttl > store.DefaultRedeliveryWindow {
		t.Fatalf("default TTL = %s", ttl)
	}
}

func TestRunClaimReleaseAndExpiry(t *testing.T) { onEachRedis(t, testRunClaimReleaseAndExpiry) }

func testRunClaimReleaseAndExpiry(t *testing.T, b testrig.RedisBackend) {
	st, _, _ := newExecStore(t, b)
	ctx := context.Background()
	k := store.RunKey{ExecutionID: "e", Token: "t", Attempt: 1}

	c, ok, err := st.ClaimRun(ctx, k, time.Minute)
	if err != nil || !ok {
		t.Fatalf("ClaimRun: %v %v", ok, err)
	}
	if err := c.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if held, _ := st.RunClaimed(ctx, k); held {
		t.Fatal("claim still held after Release")
	}

	// A claim nobody extends goes away by itself, and its old holder cannot take it back.
	c, ok, err = st.ClaimRun(ctx, k, 50*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("ClaimRun: %v %v", ok, err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		held, err := st.RunClaimed(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if !held {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("claim did not expire")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if _, ok, _ := st.ClaimRun(ctx, k, time.Minute); !ok {
		t.Fatal("expired claim could not be taken")
	}
	if err := c.Extend(ctx, time.Minute); !errors.Is(err, store.ErrLockLost) {
		t.Fatalf("Extend by the old holder: %v, want ErrLockLost", err)
	}
	if err := c.Release(ctx); err != nil {
		t.Fatalf("Release by the old holder: %v", err)
	}
	if held, _ := st.RunClaimed(ctx, k); !held {
		t.Fatal("the old holder released the new holder's claim")
	}
}

// BeginRun tells a runner in one round trip whether the activation is pending, and either
// claims the item, reports it claimed elsewhere, or knows it finished from its run record.
func TestBeginRun(t *testing.T) { onEachRedis(t, testBeginRun) }

func testBeginRun(t *testing.T, b testrig.RedisBackend) {
	st, _, _ := newExecStore(t, b)
	ctx := execTestCtx(t)
	k := store.RunKey{ExecutionID: "ex-b", Token: "A:0", Attempt: 1}

	got, err := st.BeginRun(ctx, k, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got.Execution != nil || got.Activation != nil || got.Done || got.Claim == nil {
		t.Fatalf("unknown execution: %+v, want only a claim", got)
	}
	if err := got.Claim.Release(ctx); err != nil {
		t.Fatal(err)
	}

	createExec(ctx, t, st, runningExec(k.ExecutionID, "f1", time.Now()))
	act := json.RawMessage(`{"nodeId":"A","input":{"n":1}}`)
	if _, err := st.AdvanceExecution(ctx, store.Transition{ExecutionID: k.ExecutionID, MessageID: "m2"}, func(*store.ExecState) (*store.ExecChange, error) {
		return &store.ExecChange{AddPending: map[string]json.RawMessage{k.Token: act}}, nil
	}); err != nil {
		t.Fatal(err)
	}
	first, err := st.BeginRun(ctx, k, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if first.Execution == nil || first.Execution.FlowID != "f1" || first.Activation == nil || first.Activation.NodeID != "A" || first.Claim == nil {
		t.Fatalf("pending activation: %+v, want execution f1, activation of A and a claim", first)
	}
	second, err := st.BeginRun(ctx, k, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if second.Claim != nil || second.Done || second.Activation == nil {
		t.Fatalf("while claimed: %+v, want no claim and not done", second)
	}
	if err := st.FinishRun(ctx, k, time.Hour, first.Claim); err != nil {
		t.Fatal(err)
	}
	third, err := st.BeginRun(ctx, k, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if third.Claim != nil || !third.Done {
		t.Fatalf("after the item finished: %+v, want done", third)
	}
}
