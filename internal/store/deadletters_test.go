package store_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

var dlPolicy = store.DeadLetterPolicy{Retention: 7 * 24 * time.Hour, MaxCount: 100}

func deadLetter(id, flow string, at time.Time) *store.DeadLetter {
	return &store.DeadLetter{ID: id, Reason: "flow revision not available", Topic: "flowd.ingest", Partition: 1, Offset: 7,
		Key: []byte("x-" + id), FlowID: flow, ExecutionID: "x-" + id, Authentic: flow != "", ValueBytes: 3, At: at,
		Headers: []store.Header{{Key: "trace", Value: []byte{0, 1, 0xff}}}, Value: []byte{'{', 0xfe, '}'}}
}

func dlIDs(dls []store.DeadLetter) string {
	out := make([]string, len(dls))
	for i, d := range dls {
		out[i] = d.ID
	}
	return strings.Join(out, ",")
}

func TestDeadLettersAreIndexedOnce(t *testing.T) { onEachRedis(t, testDeadLettersAreIndexedOnce) }

func testDeadLettersAreIndexedOnce(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)
	at := func(s int) time.Time { return now.Add(time.Duration(s-100) * time.Second) }
	for i, d := range []*store.DeadLetter{
		deadLetter("0-1", "f1", at(1)), deadLetter("1-1", "f2", at(2)), deadLetter("0-2", "", at(3)), deadLetter("2-1", "f1", at(4)),
	} {
		added, err := st.AddDeadLetter(ctx, d, dlPolicy, now)
		if err != nil || !added {
			t.Fatalf("add %d: %v %v", i, added, err)
		}
	}
	// Indexed again (a redelivered record) after a change of status: the status stays.
	if _, err := st.DiscardDeadLetter(ctx, "0-1", "u1", now); err != nil {
		t.Fatal(err)
	}
	if added, err := st.AddDeadLetter(ctx, deadLetter("0-1", "f1", at(1)), dlPolicy, now); err != nil || added {
		t.Fatalf("added again: %v %v", added, err)
	}
	got, err := st.DeadLetter(ctx, "0-1")
	if err != nil || got.Status != store.DeadLetterDiscarded || got.DiscardedBy != "u1" {
		t.Fatalf("after indexing again: %+v %v", got, err)
	}
	if string(got.Value) != "{\xfe}" || len(got.Headers) != 1 || string(got.Headers[0].Value) != "\x00\x01\xff" || string(got.Key) != "x-0-1" {
		t.Fatalf("value %q headers %v key %q", got.Value, got.Headers, got.Key)
	}

	since := now.Add(-dlPolicy.Retention)
	for _, tc := range []struct {
		q    store.DeadLetterQuery
		want string
	}{
		{store.DeadLetterQuery{All: true, Since: since}, "2-1,0-2,1-1,0-1"},
		{store.DeadLetterQuery{FlowIDs: []string{"f1"}, Since: since}, "2-1,0-1"},
		{store.DeadLetterQuery{FlowIDs: []string{"f2", "f1"}, Since: since}, "2-1,1-1,0-1"},
		{store.DeadLetterQuery{FlowIDs: []string{"f3"}, Since: since}, ""},
		{store.DeadLetterQuery{Since: since}, ""},
		{store.DeadLetterQuery{All: true, Since: at(3)}, "2-1,0-2"},
	} {
		dls, err := st.DeadLetters(ctx, tc.q)
		if err != nil || dlIDs(dls) != tc.want {
			t.Errorf("%+v: %s (%v), want %s", tc.q, dlIDs(dls), err, tc.want)
		}
		for _, d := range dls {
			if d.Value != nil || d.Headers != nil {
				t.Errorf("a list carries the value of %s", d.ID)
			}
		}
	}

	// Past the retention already: not kept.
	if added, err := st.AddDeadLetter(ctx, deadLetter("3-1", "f1", now.Add(-8*24*time.Hour)), dlPolicy, now); err != nil || added {
		t.Fatalf("an expired dead letter was added: %v %v", added, err)
	}
	if _, err := st.DeadLetter(ctx, "3-1"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("expired dead letter: %v", err)
	}
}

// Beyond the bound, the oldest dead letters go, from every index.
func TestDeadLettersAreBounded(t *testing.T) { onEachRedis(t, testDeadLettersAreBounded) }

func testDeadLettersAreBounded(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)
	pol := store.DeadLetterPolicy{Retention: time.Hour, MaxCount: 3}
	for i, flow := range []string{"f1", "f2", "f1", "f2", "f1"} {
		id := "0-" + string(rune('a'+i))
		if _, err := st.AddDeadLetter(ctx, deadLetter(id, flow, now.Add(time.Duration(i)*time.Second)), pol, now); err != nil {
			t.Fatal(err)
		}
	}
	all, err := st.DeadLetters(ctx, store.DeadLetterQuery{All: true, Since: now.Add(-time.Hour)})
	if err != nil || dlIDs(all) != "0-e,0-d,0-c" {
		t.Fatalf("kept %s (%v)", dlIDs(all), err)
	}
	f1, err := st.DeadLetters(ctx, store.DeadLetterQuery{FlowIDs: []string{"f1"}, Since: now.Add(-time.Hour)})
	if err != nil || dlIDs(f1) != "0-e,0-c" {
		t.Fatalf("f1 keeps %s (%v)", dlIDs(f1), err)
	}
	for _, id := range []string{"0-a", "0-b"} {
		if _, err := st.DeadLetter(ctx, id); !errors.Is(err, store.ErrNotFound) {
			t.Fatalf("%s: %v", id, err)
		}
	}
}

// A replay claims a dead letter once: the second claim is told it is in progress, then that
// it was replayed; a claimant that dies leaves the replay to be resumed once its lease ended.
func TestDeadLetterReplayIsClaimedOnce(t *testing.T) {
	onEachRedis(t, testDeadLetterReplayIsClaimedOnce)
}

func testDeadLetterReplayIsClaimedOnce(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, id := range []string{"0-1", "0-2", "0-3"} {
		if _, err := st.AddDeadLetter(ctx, deadLetter(id, "f1", now), dlPolicy, now); err != nil {
			t.Fatal(err)
		}
	}
	lease := 10 * time.Second

	dl, err := st.ClaimReplay(ctx, "0-1", "alice", now, lease)
	if err != nil || dl.Status != store.DeadLetterReplaying || dl.ReplayedBy != "alice" || string(dl.Value) != "{\xfe}" || len(dl.Headers) != 1 {
		t.Fatalf("claim: %+v %v", dl, err)
	}
	if _, err := st.ClaimReplay(ctx, "0-1", "bob", now.Add(time.Second), lease); !errors.Is(err, store.ErrReplaying) {
		t.Fatalf("second claim while the first runs: %v", err)
	}
	if stale, err := st.StaleReplays(ctx, now.Add(5*time.Second), 10); err != nil || len(stale) != 0 {
		t.Fatalf("stale within the lease: %v %v", stale, err)
	}
	dl, err = st.FinishReplay(ctx, "0-1", now.Add(time.Second))
	if err != nil || dl.Status != store.DeadLetterReplayed || dl.ReplayedAt == nil || dl.LeaseUntil != nil {
		t.Fatalf("finish: %+v %v", dl, err)
	}
	if _, err := st.FinishReplay(ctx, "0-1", now.Add(2*time.Second)); err != nil {
		t.Fatalf("finishing again: %v", err)
	}
	if _, err := st.ClaimReplay(ctx, "0-1", "bob", now.Add(2*time.Second), lease); !errors.Is(err, store.ErrReplayed) {
		t.Fatalf("claim after the replay: %v", err)
	}
	if _, err := st.DiscardDeadLetter(ctx, "0-1", "bob", now); !errors.Is(err, store.ErrReplayed) {
		t.Fatalf("discard after the replay: %v", err)
	}

	// 0-2's claimant dies: within its lease nobody resumes it, after it the sweep does.
	if _, err := st.ClaimReplay(ctx, "0-2", "alice", now, lease); err != nil {
		t.Fatal(err)
	}
	if _, err := st.ResumeReplay(ctx, "0-2", now.Add(5*time.Second), lease); !errors.Is(err, store.ErrReplaying) {
		t.Fatalf("resumed within the lease: %v", err)
	}
	stale, err := st.StaleReplays(ctx, now.Add(11*time.Second), 10)
	if err != nil || strings.Join(stale, ",") != "0-2" {
		t.Fatalf("stale after the lease: %v %v", stale, err)
	}
	dl, err = st.ResumeReplay(ctx, "0-2", now.Add(11*time.Second), lease)
	if err != nil || dl.Status != store.DeadLetterReplaying || dl.ReplayedBy != "alice" || string(dl.Value) != "{\xfe}" {
		t.Fatalf("resume: %+v %v", dl, err)
	}
	if _, err := st.ClaimReplay(ctx, "0-2", "bob", now.Add(12*time.Second), lease); !errors.Is(err, store.ErrReplaying) {
		t.Fatalf("claim during the resumed replay: %v", err)
	}
	if stale, _ := st.StaleReplays(ctx, now.Add(12*time.Second), 10); len(stale) != 0 {
		t.Fatalf("stale during the resumed replay: %v", stale)
	}
	if _, err := st.FinishReplay(ctx, "0-2", now.Add(12*time.Second)); err != nil {
		t.Fatal(err)
	}
	if stale, _ := st.StaleReplays(ctx, now.Add(time.Hour), 10); len(stale) != 0 {
		t.Fatalf("stale after every replay finished: %v", stale)
	}

	// Nobody asked to replay 0-3: resuming finds nothing to resume and leaves it open.
	if _, err := st.ResumeReplay(ctx, "0-3", now, lease); !errors.Is(err, store.ErrNoReplay) {
		t.Fatalf("resumed a replay nobody began: %v", err)
	}
	if dl, _ := st.DeadLetter(ctx, "0-3"); dl.Status != store.DeadLetterOpen {
		t.Fatalf("0-3 is %s", dl.Status)
	}
	if _, err := st.ClaimReplay(ctx, "9-9", "alice", now, lease); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("claim of a missing dead letter: %v", err)
	}
}

func TestDeadLetterDiscard(t *testing.T) { onEachRedis(t, testDeadLetterDiscard) }

func testDeadLetterDiscard(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)
	for _, id := range []string{"0-1", "0-2"} {
		if _, err := st.AddDeadLetter(ctx, deadLetter(id, "f1", now), dlPolicy, now); err != nil {
			t.Fatal(err)
		}
	}
	dl, err := st.DiscardDeadLetter(ctx, "0-1", "alice", now)
	if err != nil || dl.Status != store.DeadLetterDiscarded || dl.DiscardedBy != "alice" || dl.DiscardedAt == nil {
		t.Fatalf("discard: %+v %v", dl, err)
	}
	if dl, err := st.DiscardDeadLetter(ctx, "0-1", "bob", now.Add(time.Second)); err != nil || dl.DiscardedBy != "alice" {
		t.Fatalf("discard again: %+v %v", dl, err)
	}
	if _, err := st.ClaimReplay(ctx, "0-1", "bob", now, time.Minute); !errors.Is(err, store.ErrDiscarded) {
		t.Fatalf("replay of a discarded dead letter: %v", err)
	}
	if _, err := st.ClaimReplay(ctx, "0-2", "bob", now, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := st.DiscardDeadLetter(ctx, "0-2", "alice", now); !errors.Is(err, store.ErrReplaying) {
		t.Fatalf("discard during a replay: %v", err)
	}
	if _, err := st.DiscardDeadLetter(ctx, "9-9", "alice", now); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("discard of a missing dead letter: %v", err)
	}
}
