package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

// call sends a request to the pipeline's API with token and decodes the JSON answer.
func (p *pipeline) call(method, path, token, body string) (int, map[string]any) {
	p.t.Helper()
	req, _ := http.NewRequest(method, p.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	raw, _ := io.ReadAll(res.Body)
	var m map[string]any
	_ = json.Unmarshal(raw, &m)
	return res.StatusCode, m
}

// member creates a tenant and a user of it, and returns the tenant id and the user's token.
func (p *pipeline) member(name string) (string, string) {
	p.t.Helper()
	st, ten := p.post("/api/v1/tenants", `{"name":"`+testrig.Unique(name)+`"}`)
	if st != 201 {
		p.t.Fatalf("tenant: %d %v", st, ten)
	}
	tenant := ten["data"].(map[string]any)["id"].(string)
	st, u := p.post("/api/v1/users", `{"username":"`+testrig.Unique(name)+`","tenant":"`+tenant+`"}`)
	if st != 201 {
		p.t.Fatalf("user: %d %v", st, u)
	}
	st, tok := p.post("/api/v1/users/"+u["data"].(map[string]any)["id"].(string)+"/tokens", `{}`)
	if st != 201 {
		p.t.Fatalf("token: %d %v", st, tok)
	}
	return tenant, tok["data"].(map[string]any)["token"].(string)
}

// flowView polls GET /flows/{id} as token until its status is want, and returns the flow.
func (p *pipeline) flowView(id, token, want string) map[string]any {
	p.t.Helper()
	var last map[string]any
	for deadline := time.Now().Add(60 * time.Second); ; {
		st, m := p.get("/api/v1/flows/"+id, token)
		if d, ok := m["data"].(map[string]any); st == 200 && ok {
			last = d
			if d["status"] == want {
				return d
			}
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("flow %s never became %s: last %v", id, want, last)
		}
		time.Sleep(20 * time.Millisecond) // polling the API with a deadline
	}
}

// flowEvents reads every event of flowID published so far (the test topics have one
// partition, so this is all of them, in order).
func (p *pipeline) flowEvents(flowID string) []events.Event {
	p.t.Helper()
	ctx := context.Background()
	topic := p.kcfg.Topic(events.TopicName)
	conn, err := kafka.DialLeader(ctx, "tcp", p.kcfg.Brokers[0], topic, 0)
	if err != nil {
		p.t.Fatal(err)
	}
	end, err := conn.ReadLastOffset()
	_ = conn.Close()
	if err != nil {
		p.t.Fatal(err)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: p.kcfg.Brokers, Topic: topic, Partition: 0, MaxWait: 100 * time.Millisecond})
	defer func() { _ = r.Close() }()
	var out []events.Event
	for off := int64(0); off < end; off++ {
		m, err := r.FetchMessage(ctx)
		if err != nil {
			p.t.Fatal(err)
		}
		off = m.Offset
		var ev events.Event
		if json.Unmarshal(m.Value, &ev) == nil && ev.FlowID == flowID {
			out = append(out, ev)
		}
	}
	return out
}

// flowOn creates and starts, as token, a flow of tenant's that maps each record of a partner
// topic's "x" to "v".
func flowOn(t *testing.T, p *pipeline, token, topic string) string {
	t.Helper()
	st, m := p.call("POST", "/api/v1/flows", token, `{"name":"partner","graph":{"nodes":[
		{"id":"in","type":"trigger.kafka","config":{"topic":"`+topic+`"}},
		{"id":"t","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.x"}}}],
		"edges":[{"source":"in","target":"t"}]}}`)
	if st != 201 {
		t.Fatalf("create a partner flow: %d %v", st, m)
	}
	id := m["data"].(map[string]any)["id"].(string)
	if st, m := p.call("POST", "/api/v1/flows/"+id+"/start", token, ""); st != 200 && st != 202 {
		t.Fatalf("start a partner flow: %d %v", st, m)
	}
	return id
}

func countType(evs []events.Event, typ string) int {
	n := 0
	for _, ev := range evs {
		if ev.Type == typ {
			n++
		}
	}
	return n
}

// forceFlow stores a flow of tenant in status (announced with evType when set) without the
// API's validation, as a flow saved before a validation existed would be.
func (p *pipeline) forceFlow(tenant, status, evType string, nodes []flowdoc.Node, edges []flowdoc.Edge) string {
	p.t.Helper()
	now := time.Now().UTC()
	f := &flowdoc.Flow{ID: identity.NewID(), Name: "forced", Status: status, Revision: 1, Type: "webhook",
		Graph: flowdoc.Graph{Nodes: nodes, Edges: edges}, Owners: []flowdoc.Owner{{ID: tenant, Type: flowdoc.OwnerTenant}},
		CreatedAt: &now, UpdatedAt: &now}
	var evs []events.Event
	if evType != "" {
		evs = append(evs, events.Event{ID: identity.NewID(), Type: evType, FlowID: f.ID, Revision: 1, Status: status, Tenant: tenant, At: now})
	}
	if err := p.st.CreateFlow(context.Background(), f, evs...); err != nil {
		p.t.Fatal(err)
	}
	return f.ID
}

// A flow whose start cannot be applied fails alone: it is marked failed with a reason, and
// the flows of another tenant whose lifecycle events share its flowd.events partition start,
// run and stop as usual, before and after a restart. A flow whose partner topic does not exist
// yet runs and waits for it, holding nobody up either, and reads every record of the topic
// once it appears, though a restart came in between.
func TestOneFlowsFailureIsItsOwn(t *testing.T) {
	p := startPipelineWith(t, 1, connectorPolicy{egressAllow: "127.0.0.1/32"}) // one partition: every flow's events queue behind B's
	_, tokA := p.member("a")
	tenantB, tokB := p.member("b")

	// B's flow reads a partner topic that does not exist yet (auto-creation is off on the rig).
	missing := testrig.Unique("later")
	awaiting := flowOn(t, p, tokB, "partner."+missing)
	waiting := p.flowView(awaiting, tokB, flowdoc.StatusActive)
	for deadline := time.Now().Add(60 * time.Second); ; {
		if ts, _ := waiting["triggerStatus"].(map[string]any); ts["state"] == "waitingForTopic" && ts["topic"] == "partner."+missing &&
			strings.Contains(fmt.Sprint(ts["warning"]), "does not exist yet") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a flow waiting for its topic does not say so: %v", waiting)
		}
		time.Sleep(20 * time.Millisecond) // polling the API with a deadline
		waiting = p.flowView(awaiting, tokB, flowdoc.StatusActive)
	}
	// B's second flow was saved before validation refused its pool: its work topic cannot be
	// created. Its flow.starting event is on the partition too, ahead of A's.
	forced := p.forceFlow(tenantB, flowdoc.StatusStarting, events.FlowStarting,
		[]flowdoc.Node{{ID: "hook", Type: flowdoc.TypeWebhook}, {ID: "t", Type: flowdoc.TypeAction, Connector: "transform", Action: "map", Pool: "no such pool!"}},
		[]flowdoc.Edge{{Source: "hook", Target: "t"}})

	// A's webhook flow starts, runs and stops.
	st, m := p.call("POST", "/api/v1/flows", tokA, `{"name":"a-hook","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook"},
		{"id":"t","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.x"}}}],
		"edges":[{"source":"hook","target":"t"}]}}`)
	if st != 201 {
		t.Fatalf("create A's flow: %d %v", st, m)
	}
	flowA := m["data"].(map[string]any)["id"].(string)
	runA := func(x int) {
		t.Helper()
		if st, m := p.call("POST", "/api/v1/flows/"+flowA+"/start", tokA, ""); st != 200 || m["data"].(map[string]any)["status"] != "active" {
			t.Fatalf("start A's flow: %d %v", st, m)
		}
		st, body := p.post("/hooks/"+flowA, fmt.Sprintf(`{"x":%d}`, x))
		if st != 202 && st != 200 {
			t.Fatalf("A's webhook: %d %v", st, body)
		}
		ex, steps := p.finished(body["data"].(map[string]any)["executionId"].(string))
		var out map[string]any
		if by := stepsByNode(steps); ex.Status != envelope.StatusSucceeded || len(by["t"]) != 1 ||
			json.Unmarshal(by["t"][0].Output, &out) != nil || out["v"] != float64(x) {
			t.Fatalf("A's execution: %+v %+v", ex, steps)
		}
		if st, m := p.call("POST", "/api/v1/flows/"+flowA+"/stop", tokA, ""); st != 200 || m["data"].(map[string]any)["status"] != "inactive" {
			t.Fatalf("stop A's flow: %d %v", st, m)
		}
	}
	runA(1)

	failed := func(id, code string) {
		t.Helper()
		f := p.flowView(id, tokB, flowdoc.StatusFailed)
		reason, _ := f["statusReason"].(map[string]any)
		if reason["code"] != code || reason["message"] == "" {
			t.Fatalf("flow %s failed with %v, want code %s and a message", id, f["statusReason"], code)
		}
		// The outbox publishes the event after the store change: poll for it.
		for deadline := time.Now().Add(60 * time.Second); ; {
			evs := p.flowEvents(id)
			if n := countType(evs, events.FlowFailed); n > 1 {
				t.Fatalf("flow %s: failed announced %d times: %+v", id, n, evs)
			} else if n == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("flow %s: no flow.failed event: %+v", id, evs)
			}
			time.Sleep(50 * time.Millisecond) // polling the topic with a deadline
		}
	}
	failed(forced, flowdoc.ReasonTopicInvalid)
	if st, _ := p.get("/api/v1/flows/"+forced, tokA); st != 404 {
		t.Fatalf("A sees B's flow: %d", st)
	}

	// B's third flow was active before a restart but its work topic cannot be created: the
	// start-up reconcile marks it failed, once, and the periodic ones leave it so.
	forcedActive := p.forceFlow(tenantB, flowdoc.StatusActive, "",
		[]flowdoc.Node{{ID: "hook", Type: flowdoc.TypeWebhook}, {ID: "t", Type: flowdoc.TypeAction, Connector: "transform", Action: "map", Pool: "also bad!"}},
		[]flowdoc.Edge{{Source: "hook", Target: "t"}})
	p.stop()
	// The partner creates B's topic and produces to it while no router runs.
	if err := kafkax.EnsureTopics(context.Background(), kafkax.Config{Brokers: p.kcfg.Brokers, TopicPrefix: "partner.", Partitions: 2}, missing); err != nil {
		t.Fatal(err)
	}
	w := &kafka.Writer{Addr: kafka.TCP(p.kcfg.Brokers...), RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer func() { _ = w.Close() }()
	produce := func(keys ...string) {
		t.Helper()
		for _, k := range keys {
			// A topic just created may not have a leader yet: retried until it has.
			for deadline := time.Now().Add(30 * time.Second); ; {
				err := w.WriteMessages(context.Background(), kafka.Message{Topic: "partner." + missing, Key: []byte(k), Value: []byte(`{"x":"` + k + `"}`)})
				if err == nil {
					break
				}
				if !errors.Is(err, kafka.UnknownTopicOrPartition) && !errors.Is(err, kafka.LeaderNotAvailable) || time.Now().After(deadline) {
					t.Fatal(err)
				}
				time.Sleep(100 * time.Millisecond) // polling the broker with a deadline
			}
		}
	}
	produce("before-1", "before-2", "before-3")
	p.start()
	failed(forcedActive, flowdoc.ReasonTopicInvalid)
	failed(forced, flowdoc.ReasonTopicInvalid) // still failed, not announced again

	// After the restart nothing is stuck: another of B's starts fails, A's flow runs.
	failing := p.forceFlow(tenantB, flowdoc.StatusStarting, events.FlowStarting,
		[]flowdoc.Node{{ID: "hook", Type: flowdoc.TypeWebhook}, {ID: "t", Type: flowdoc.TypeAction, Connector: "transform", Action: "map", Pool: "bad again!"}},
		[]flowdoc.Edge{{Source: "hook", Target: "t"}})
	runA(2)
	failed(failing, flowdoc.ReasonTopicInvalid)
	// A failed flow is B's to stop; the reason goes with a stop.
	st, m = p.call("POST", "/api/v1/flows/"+failing+"/stop", tokB, "")
	if st != 200 || m["data"].(map[string]any)["status"] != "inactive" || m["data"].(map[string]any)["statusReason"] != nil {
		t.Fatalf("stop a failed flow: %d %v", st, m)
	}

	// B's flow reads its topic from the first record (produced before the restart), and what
	// comes after; each record once.
	produce("after-1")
	want := map[string]bool{"before-1": true, "before-2": true, "before-3": true, "after-1": true}
	for deadline := time.Now().Add(60 * time.Second); ; {
		exs, total, err := p.st.FlowExecutions(context.Background(), awaiting, envelope.StatusSucceeded, 0, 10)
		if err == nil && total == len(want) {
			seen := map[string]bool{}
			for _, ex := range exs {
				_, steps := p.finished(ex.ID)
				var out map[string]any
				if by := stepsByNode(steps); len(by["t"]) == 1 && json.Unmarshal(by["t"][0].Output, &out) == nil {
					seen[fmt.Sprint(out["v"])] = true
				}
			}
			if len(seen) != len(want) {
				t.Fatalf("B's executions read %v, want %v", seen, want)
			}
			break
		}
		if total > len(want) {
			t.Fatalf("B's flow ran %d executions for %d records", total, len(want))
		}
		if time.Now().After(deadline) {
			t.Fatalf("B's flow ran %d of %d executions (%v)", total, len(want), err)
		}
		time.Sleep(50 * time.Millisecond) // polling Redis with a deadline
	}
	if ts, _ := p.flowView(awaiting, tokB, flowdoc.StatusActive)["triggerStatus"].(map[string]any); ts["state"] == "waitingForTopic" {
		t.Fatalf("B's flow still says it waits: %v", ts)
	}
	// Every lifecycle event of A was applied, the ones queued behind B's failures included.
	for deadline := time.Now().Add(60 * time.Second); ; {
		evs := p.flowEvents(flowA)
		if countType(evs, events.FlowStarted) == 2 && countType(evs, events.FlowStopped) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A's lifecycle events: %+v", evs)
		}
		time.Sleep(50 * time.Millisecond) // polling the topic with a deadline
	}
}
