package store_test

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

func newExecStore(t *testing.T, b testrig.RedisBackend) (*store.Store, redis.UniversalClient, string) {
	t.Helper()
	rdb := b.Client(t)
	prefix := testrig.Unique("t") + ":"
	return store.New(rdb, prefix), rdb, prefix
}

// onEachRedis runs a store test on the single redis-server and on the Redis Cluster.
func onEachRedis(t *testing.T, test func(*testing.T, testrig.RedisBackend)) {
	for _, b := range testrig.RedisBackends {
		t.Run(b.Name, func(t *testing.T) { test(t, b) })
	}
}

func execTestCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func runningExec(id, flow string, at time.Time) *envelope.Execution {
	return &envelope.Execution{ID: id, FlowID: flow, Revision: 1, Trigger: "webhook", Status: envelope.StatusRunning, ReceivedAt: at, StartedAt: at}
}

func finishedExec(e *envelope.Execution, status string, at time.Time) *envelope.Execution {
	c := *e
	c.Status, c.FinishedAt = status, &at
	return &c
}

// create starts an execution through AdvanceExecution, as the router does for an Ingest.
func createExec(ctx context.Context, t *testing.T, st *store.Store, e *envelope.Execution) {
	t.Helper()
	_, err := st.AdvanceExecution(ctx, store.Transition{ExecutionID: e.ID, MessageID: "ingest"}, func(*store.ExecState) (*store.ExecChange, error) {
		return &store.ExecChange{Execution: e, State: json.RawMessage(`{}`)}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAdvanceExecutionAppliesAMessageOnce(t *testing.T) {
	onEachRedis(t, testAdvanceExecutionAppliesAMessageOnce)
}

func testAdvanceExecutionAppliesAMessageOnce(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)
	e := runningExec("x1", "f1", now)
	work := store.Record{Topic: "flowd.steps.default", Key: []byte("x1"), Value: []byte(`{"token":"r/1"}`)}

	calls := 0
	first := func(cur *store.ExecState) (*store.ExecChange, error) {
		calls++
		if cur.Execution != nil || cur.State != nil || len(cur.Outputs) != 0 {
			return nil, errors.New("a new execution must look empty")
		}
		return &store.ExecChange{
			Execution:  e,
			State:      json.RawMessage(`{"n":1}`),
			Outputs:    map[string]json.RawMessage{"t": json.RawMessage(`{"in":1}`)},
			AddPending: map[string]json.RawMessage{"r/1": json.RawMessage(`{"node":"A"}`)},
			Steps: []envelope.Step{
				{ExecutionID: "x1", NodeID: "t", Token: "r/0", Status: envelope.StepSucceeded, StartedAt: now},
				{ExecutionID: "x1", NodeID: "A", Token: "r/1", Status: envelope.StepRunning, StartedAt: now.Add(time.Millisecond)},
			},
			Records: []store.Record{work},
		}, nil
	}
	res, err := st.AdvanceExecution(ctx, store.Transition{ExecutionID: "x1", MessageID: "ingest"}, first)
	if err != nil || res.Replayed || res.Ended || len(res.Records) != 1 {
		t.Fatalf("first apply: %+v, %v", res, err)
	}

	// Redelivered: not applied again, the stored records come back.
	res, err = st.AdvanceExecution(ctx, store.Transition{ExecutionID: "x1", MessageID: "ingest"}, first)
	if err != nil || !res.Replayed || calls != 1 || len(res.Records) != 1 || string(res.Records[0].Value) != string(work.Value) || string(res.Records[0].Key) != "x1" {
		t.Fatalf("replay: %+v, %v (decide called %d times)", res, err, calls)
	}
	// Once produced, a redelivery has nothing left to produce.
	if err := st.MarkProduced(ctx, "x1", "ingest"); err != nil {
		t.Fatal(err)
	}
	res, err = st.AdvanceExecution(ctx, store.Transition{ExecutionID: "x1", MessageID: "ingest"}, first)
	if err != nil || !res.Replayed || len(res.Records) != 0 || calls != 1 {
		t.Fatalf("replay after produce: %+v, %v", res, err)
	}

	// The result of A sees the state, outputs and its pending activation, and ends the execution.
	end := finishedExec(e, envelope.StatusSucceeded, now.Add(time.Second))
	res, err = st.AdvanceExecution(ctx, store.Transition{ExecutionID: "x1", MessageID: "result:r/1", Token: "r/1"}, func(cur *store.ExecState) (*store.ExecChange, error) {
		if string(cur.State) != `{"n":1}` || string(cur.Outputs["t"]) != `{"in":1}` || string(cur.Pending) != `{"node":"A"}` || cur.Execution.Status != envelope.StatusRunning {
			return nil, errors.New("unexpected view: " + string(cur.State) + string(cur.Pending))
		}
		return &store.ExecChange{
			Execution: end, State: json.RawMessage(`{"n":2}`), DonePending: []string{"r/1"},
			Steps: []envelope.Step{{ExecutionID: "x1", NodeID: "A", Token: "r/1", Status: envelope.StepSucceeded, StartedAt: now.Add(time.Millisecond), Output: json.RawMessage(`"ok"`)}},
		}, nil
	})
	if err != nil || !res.Ended {
		t.Fatalf("ending transition: %+v, %v", res, err)
	}
	// Another message after the end does not end it again (nor count it twice).
	res, err = st.AdvanceExecution(ctx, store.Transition{ExecutionID: "x1", MessageID: "late"}, func(cur *store.ExecState) (*store.ExecChange, error) {
		if cur.Pending != nil {
			return nil, errors.New("pending activation still there")
		}
		return &store.ExecChange{Execution: cur.Execution}, nil
	})
	if err != nil || res.Ended {
		t.Fatalf("late transition: %+v, %v", res, err)
	}

	got, err := st.Execution(ctx, "x1")
	if err != nil || got.Status != envelope.StatusSucceeded || got.FinishedAt == nil {
		t.Fatalf("execution %+v, %v", got, err)
	}
	steps, err := st.ExecutionSteps(ctx, "x1")
	if err != nil || len(steps) != 2 || steps[0].NodeID != "t" || steps[1].NodeID != "A" || steps[1].Status != envelope.StepSucceeded {
		t.Fatalf("steps %+v, %v", steps, err)
	}
	stats, err := st.FlowStats(ctx, "f1", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil || len(stats) != 1 || stats[0].Success != 1 || stats[0].Error != 0 {
		t.Fatalf("stats %+v, %v", stats, err)
	}
	if _, err := st.Execution(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("unknown execution: %v", err)
	}
	if _, err := st.ExecutionSteps(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("steps of an unknown execution: %v", err)
	}
}

// The flow's indexes and counters live in another hash slot than the execution, so they are
// brought in line in a second step. A crash between the two loses that step; the redelivery
// that follows (the message was never committed) repeats it, and counts the end only once.
func TestRedeliveryRepairsTheFlowIndex(t *testing.T) {
	onEachRedis(t, testRedeliveryRepairsTheFlowIndex)
}

func testRedeliveryRepairsTheFlowIndex(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, rdb, prefix := newExecStore(t, b)
	now := time.Now().UTC().Truncate(time.Millisecond)
	e := runningExec("x1", "f1", now)
	createExec(ctx, t, st, e)
	end := finishedExec(e, envelope.StatusFailed, now.Add(time.Second))
	endMsg := store.Transition{ExecutionID: "x1", MessageID: "result:r/1"}
	decide := func(*store.ExecState) (*store.ExecChange, error) { return &store.ExecChange{Execution: end}, nil }
	if res, err := st.AdvanceExecution(ctx, endMsg, decide); err != nil || !res.Ended {
		t.Fatalf("end: %+v %v", res, err)
	}
	// As if the process died after the execution's change and before its flow's.
	for _, key := range []string{"flow:{f1}:execs", "flow:{f1}:execs:failed", "flow:{f1}:execs:running", "flow:{f1}:counted", "flow:{f1}:counts", "flow:{f1}:stats:" + end.FinishedAt.Format("20060102")} {
		if err := rdb.Del(ctx, prefix+key).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := rdb.ZAdd(ctx, prefix+"flow:{f1}:execs:running", redis.Z{Score: 1, Member: "x1"}).Err(); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if res, err := st.AdvanceExecution(ctx, endMsg, decide); err != nil || !res.Replayed {
			t.Fatalf("redelivery: %+v %v", res, err)
		}
	}
	for status, want := range map[string]int{"": 1, envelope.StatusFailed: 1, envelope.StatusRunning: 0} {
		if _, total, err := st.FlowExecutions(ctx, "f1", status, 0, 10); err != nil || total != want {
			t.Fatalf("index %q after redelivery: %d %v, want %d", status, total, err, want)
		}
	}
	stats, err := st.FlowStats(ctx, "f1", now.Add(-time.Hour), now.Add(time.Hour))
	if err != nil || len(stats) != 1 || stats[0].Error != 1 {
		t.Fatalf("stats after two redeliveries: %+v %v, want one error", stats, err)
	}
	if c, err := st.Counts(ctx, "f1"); err != nil || c.Error != 1 || c.Success != 0 {
		t.Fatalf("counts after two redeliveries: %+v %v, want one error", c, err)
	}
	// A redelivered ingest syncs the index with the record as it is now: the ended execution
	// does not go back to the running index.
	if _, err := st.AdvanceExecution(ctx, store.Transition{ExecutionID: "x1", MessageID: "ingest"}, decide); err != nil {
		t.Fatal(err)
	}
	if _, total, _ := st.FlowExecutions(ctx, "f1", envelope.StatusRunning, 0, 10); total != 0 {
		t.Fatalf("running index after a redelivered ingest: %d", total)
	}
}

// Concurrent messages for one execution are serialised: no update is lost and each is
// applied once.
func TestAdvanceExecutionSerialisesConcurrentMessages(t *testing.T) {
	onEachRedis(t, testAdvanceExecutionSerialisesConcurrentMessages)
}

func testAdvanceExecutionSerialisesConcurrentMessages(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	createExec(ctx, t, st, runningExec("x2", "f1", time.Now()))
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := range n {
		for range 2 { // every message twice, concurrently: a redelivery racing the original
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := st.AdvanceExecution(ctx, store.Transition{ExecutionID: "x2", MessageID: "m" + strconv.Itoa(i)}, func(cur *store.ExecState) (*store.ExecChange, error) {
					var s struct{ N int }
					_ = json.Unmarshal(cur.State, &s)
					s.N++
					b, _ := json.Marshal(s)
					return &store.ExecChange{State: b}, nil
				})
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	var final string
	_, err := st.AdvanceExecution(ctx, store.Transition{ExecutionID: "x2", MessageID: "read"}, func(cur *store.ExecState) (*store.ExecChange, error) {
		final = string(cur.State)
		return nil, nil
	})
	if err != nil || final != `{"N":20}` {
		t.Fatalf("state after %d messages each delivered twice: %s, %v", n, final, err)
	}
}

func TestStepSnapshotsAreTruncated(t *testing.T) { onEachRedis(t, testStepSnapshotsAreTruncated) }

func testStepSnapshotsAreTruncated(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	big := `{"s":"` + strings.Repeat("é", 100) + `"}`
	_, err := st.AdvanceExecution(ctx, store.Transition{ExecutionID: "x3", MessageID: "ingest", Policy: store.ExecPolicy{SnapshotLimit: 51}},
		func(*store.ExecState) (*store.ExecChange, error) {
			return &store.ExecChange{Execution: runningExec("x3", "f1", time.Now()), Steps: []envelope.Step{
				{NodeID: "A", Token: "r/a", Input: json.RawMessage(big), Output: json.RawMessage(`{"small":true}`)},
			}}, nil
		})
	if err != nil {
		t.Fatal(err)
	}
	steps, err := st.ExecutionSteps(ctx, "x3")
	if err != nil || len(steps) != 1 {
		t.Fatalf("%+v %v", steps, err)
	}
	s := steps[0]
	var head string
	if err := json.Unmarshal(s.Input, &head); err != nil || !s.Truncated || len(head) > 51 || !strings.HasPrefix(big, head) || len(head) < 48 {
		t.Fatalf("truncated input %q (truncated=%v, %v)", s.Input, s.Truncated, err)
	}
	if string(s.Output) != `{"small":true}` {
		t.Fatalf("small output changed: %s", s.Output)
	}
}

func TestFlowExecutionsPagingStatusAndRetention(t *testing.T) {
	onEachRedis(t, testFlowExecutionsPagingStatusAndRetention)
}

func testFlowExecutionsPagingStatusAndRetention(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, rdb, prefix := newExecStore(t, b)
	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	// An execution older than the retention is trimmed by the next write.
	createExec(ctx, t, st, runningExec("old", "f1", base.Add(-8*24*time.Hour)))
	for i := range 5 {
		createExec(ctx, t, st, runningExec("e"+strconv.Itoa(i), "f1", base.Add(time.Duration(i)*time.Minute)))
	}
	createExec(ctx, t, st, runningExec("other", "f2", base))
	for _, id := range []string{"e1", "e3"} {
		e, err := st.Execution(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		_, err = st.AdvanceExecution(ctx, store.Transition{ExecutionID: id, MessageID: "end"}, func(*store.ExecState) (*store.ExecChange, error) {
			return &store.ExecChange{Execution: finishedExec(e, envelope.StatusFailed, base.Add(2*time.Hour))}, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}

	ids := func(list []envelope.Execution) string {
		var s []string
		for _, e := range list {
			s = append(s, e.ID)
		}
		return strings.Join(s, ",")
	}
	list, total, err := st.FlowExecutions(ctx, "f1", "", 0, 3)
	if err != nil || total != 5 || ids(list) != "e4,e3,e2" {
		t.Fatalf("page 1: %s total %d, %v", ids(list), total, err)
	}
	list, total, err = st.FlowExecutions(ctx, "f1", "", 3, 3)
	if err != nil || total != 5 || ids(list) != "e1,e0" {
		t.Fatalf("page 2: %s total %d, %v", ids(list), total, err)
	}
	list, total, err = st.FlowExecutions(ctx, "f1", envelope.StatusFailed, 0, 10)
	if err != nil || total != 2 || ids(list) != "e3,e1" {
		t.Fatalf("failed: %s total %d, %v", ids(list), total, err)
	}
	list, total, err = st.FlowExecutions(ctx, "f1", envelope.StatusRunning, 0, 10)
	if err != nil || total != 3 || ids(list) != "e4,e2,e0" {
		t.Fatalf("running: %s total %d, %v", ids(list), total, err)
	}

	// A record that expired leaves the index when it is next listed.
	if err := rdb.Del(ctx, prefix+"exec:{e2}").Err(); err != nil {
		t.Fatal(err)
	}
	list, total, err = st.FlowExecutions(ctx, "f1", "", 0, 10)
	if err != nil || total != 4 || ids(list) != "e4,e3,e1,e0" {
		t.Fatalf("after expiry: %s total %d, %v", ids(list), total, err)
	}
	if _, total, _ = st.FlowExecutions(ctx, "f1", envelope.StatusRunning, 0, 10); total != 2 {
		t.Fatalf("running after expiry: total %d", total)
	}

	stats, err := st.FlowStats(ctx, "f1", base, base.Add(3*time.Hour))
	if err != nil || len(stats) != 1 || stats[0].Error != 2 || !stats[0].Minute.Equal(base.Add(2*time.Hour).Truncate(time.Minute)) {
		t.Fatalf("stats %+v, %v", stats, err)
	}
	if stats, _ := st.FlowStats(ctx, "f1", base.Add(3*time.Hour), base.Add(4*time.Hour)); len(stats) != 0 {
		t.Fatalf("stats outside the range: %+v", stats)
	}
}

func TestCountIgnoredOncePerRecord(t *testing.T) { onEachRedis(t, testCountIgnoredOncePerRecord) }

func testCountIgnoredOncePerRecord(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	now := time.Now()
	for i := range 3 {
		counted, err := st.CountIgnored(ctx, "f1", "topic/0/7", now, store.ExecPolicy{})
		if err != nil || counted != (i == 0) {
			t.Fatalf("call %d: counted=%v, %v", i, counted, err)
		}
	}
	if _, err := st.CountIgnored(ctx, "f1", "topic/0/8", now, store.ExecPolicy{}); err != nil {
		t.Fatal(err)
	}
	stats, err := st.FlowStats(ctx, "f1", now.Add(-time.Minute), now.Add(time.Minute))
	if err != nil || len(stats) != 1 || stats[0].Ignored != 2 {
		t.Fatalf("stats %+v, %v", stats, err)
	}
}

func TestReplies(t *testing.T) { onEachRedis(t, testReplies) }

func testReplies(t *testing.T, b testrig.RedisBackend) {
	ctx := execTestCtx(t)
	st, _, _ := newExecStore(t, b)
	if err := st.PushReply(ctx, "x9", envelope.Reply{Status: 201, Body: json.RawMessage(`{"ok":true}`)}, time.Minute); err != nil {
		t.Fatal(err)
	}
	r, err := st.WaitReply(ctx, "x9", 5*time.Second)
	if err != nil || r.Status != 201 || string(r.Body) != `{"ok":true}` {
		t.Fatalf("reply %+v, %v", r, err)
	}
	// A reply pushed while the caller waits is handed over at once.
	done := make(chan error, 1)
	go func() {
		r, err := st.WaitReply(ctx, "x10", 20*time.Second)
		if err == nil && r.Status != 200 {
			err = errors.New("wrong reply")
		}
		done <- err
	}()
	if err := st.PushReply(ctx, "x10", envelope.Reply{Status: 200, Body: json.RawMessage(`1`)}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	_, err = st.WaitReply(ctx, "nobody", time.Second)
	if !errors.Is(err, store.ErrNoReply) || !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("no reply: %v", err)
	}
	// Waits under a second (a sync flow's timeoutMs: 250) take BLPOP's fractional timeout
	// (go-redis's BLPop rounds them up to a second).
	if err := st.PushReply(ctx, "x11", envelope.Reply{Status: 202}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if r, err := st.WaitReply(ctx, "x11", 250*time.Millisecond); err != nil || r.Status != 202 {
		t.Fatalf("sub-second wait for a reply: %+v, %v", r, err)
	}
	if _, err := st.WaitReply(ctx, "nobody", 250*time.Millisecond); !errors.Is(err, store.ErrNoReply) {
		t.Fatalf("sub-second wait without a reply: %v", err)
	}
}
