package main

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

// tenant is one tenant's user with an API token, as an outsider would have: nothing else.
type tenant struct {
	p     *pipeline
	id    string
	token string
}

func (p *pipeline) tenant(name string) *tenant {
	p.t.Helper()
	id, token := p.member(name)
	return &tenant{p: p, id: id, token: token}
}

func (tn *tenant) do(method, path, body string) (int, map[string]any) {
	tn.p.t.Helper()
	return tn.p.call(method, path, tn.token, body)
}

// problemAt reports whether an error body names code at path.
func problemAt(body map[string]any, code, path string) bool {
	errs, _ := body["errors"].([]any)
	for _, e := range errs {
		m, _ := e.(map[string]any)
		if m["code"] == code && m["path"] == path {
			return true
		}
	}
	return false
}

// counter is an HTTP server a tenant controls, counting what reaches it.
func counter(t *testing.T) (*httptest.Server, *atomic.Int64) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		n.Add(1)
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{}`)
	}))
	t.Cleanup(srv.Close)
	return srv, &n
}

// The attacks of a second tenant, B, holding only its own API token, on tenant A's data and
// credentials through flowd's own topics: each is refused.
func TestTenantCannotUseTheBus(t *testing.T) {
	// No egress beyond the public internet, as in production.
	p := startPipelineWith(t, 2, connectorPolicy{})
	a, b := p.tenant("acme"), p.tenant("mallory")
	prefix := p.kcfg.TopicPrefix
	internal := []string{envelope.TopicIngest, envelope.PoolTopic(""), envelope.TopicResults, "events", envelope.TopicDLQ}

	// A's private connection and A's HMAC-signed webhook flow.
	password := "pw-" + testrig.Unique("")
	st, conn := a.do("POST", "/api/v1/connections", `{"name":"billing","type":"basic","data":{"username":"ada","password":"`+password+`"}}`)
	if st != 201 {
		t.Fatalf("A's connection: %d %v", st, conn)
	}
	connID := conn["data"].(map[string]any)["id"].(string)
	st, fa := a.do("POST", "/api/v1/flows", `{"name":"signed","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook","config":{"auth":{"type":"hmac","connection":"`+connID+`"}}},
		{"id":"t","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.x"}}}],
		"edges":[{"source":"hook","target":"t"}]}}`)
	if st != 201 {
		t.Fatalf("A's flow: %d %v", st, fa)
	}
	flowA := fa["data"].(map[string]any)["id"].(string)
	if st, m := a.do("POST", "/api/v1/flows/"+flowA+"/start", ""); st != 200 {
		t.Fatalf("start A's flow: %d %v", st, m)
	}

	t.Run("1 B cannot subscribe a flow to flowd's topics", func(t *testing.T) {
		for _, name := range append(internal, "__consumer_offsets") {
			topic := name
			if !strings.HasPrefix(name, "__") {
				topic = prefix + name
			}
			st, m := b.do("POST", "/api/v1/flows", `{"name":"spy","graph":{"nodes":[{"id":"k","type":"trigger.kafka","config":{"topic":"`+topic+`"}}],"edges":[]}}`)
			if st != 400 || !problemAt(m, "topic_reserved", "/graph/nodes/0/config/topic") {
				t.Fatalf("trigger on %s: %d %v, want 400 topic_reserved at /graph/nodes/0/config/topic", topic, st, m)
			}
		}
		// The detour: saved on a scratch topic, then patched to the internal one.
		st, m := b.do("POST", "/api/v1/flows", `{"name":"spy","graph":{"nodes":[{"id":"k","type":"trigger.kafka","config":{"topic":"scratch"}}],"edges":[]}}`)
		if st != 201 {
			t.Fatalf("scratch flow: %d %v", st, m)
		}
		id := m["data"].(map[string]any)["id"].(string)
		st, m = b.do("PATCH", "/api/v1/flows/"+id, `{"graph":{"nodes":[{"id":"k","type":"trigger.kafka","config":{"topic":"`+prefix+envelope.TopicIngest+`"}}],"edges":[]}}`)
		if st != 400 || !problemAt(m, "topic_reserved", "/graph/nodes/0/config/topic") {
			t.Fatalf("patch to the ingest topic: %d %v", st, m)
		}
	})

	t.Run("1b an administrator restricts B to its own partner topics", func(t *testing.T) {
		if st, m := b.do("PATCH", "/api/v1/tenants/"+b.id, `{"partnerTopics":["*"]}`); st != 403 {
			t.Fatalf("B widening its own list: %d %v", st, m)
		}
		req := func(body string) (int, map[string]any) {
			return p.call("PATCH", "/api/v1/tenants/"+b.id, p.token, body)
		}
		if st, m := req(`{"partnerTopics":["` + prefix + `*"]}`); st != 400 || !problemAt(m, "topic_reserved", "/partnerTopics/0") {
			t.Fatalf("allowing flowd's topics: %d %v", st, m)
		}
		if st, m := req(`{"partnerTopics":["mallory.*"]}`); st != 200 {
			t.Fatalf("set B's list: %d %v", st, m)
		}
		kafkaFlow := func(topic string) string {
			return `{"name":"p","graph":{"nodes":[{"id":"k","type":"trigger.kafka","config":{"topic":"` + topic + `"}}],"edges":[]}}`
		}
		if st, m := b.do("POST", "/api/v1/flows", kafkaFlow("acme.orders")); st != 400 || !problemAt(m, "topic_not_allowed", "/graph/nodes/0/config/topic") {
			t.Fatalf("A's partner topic: %d %v", st, m)
		}
		if st, m := b.do("POST", "/api/v1/flows", kafkaFlow("mallory.orders")); st != 201 {
			t.Fatalf("B's own partner topic: %d %v", st, m)
		}
		// A stays unrestricted: no list, and the deployment does not restrict unlisted tenants.
		if st, m := a.do("POST", "/api/v1/flows", kafkaFlow("acme.orders")); st != 201 {
			t.Fatalf("A's partner topic for A: %d %v", st, m)
		}
	})

	t.Run("2 B cannot hand A's connection to its own URL", func(t *testing.T) {
		thief, hits := counter(t)
		// Through the kafka connector: refused when the flow is saved.
		st, m := b.do("POST", "/api/v1/flows", `{"name":"forge","graph":{"nodes":[
			{"id":"hook","type":"trigger.webhook"},
			{"id":"k","type":"action","connector":"kafka","action":"produce","config":{"topic":"`+prefix+envelope.PoolTopic("")+`"}}],
			"edges":[{"source":"hook","target":"k"}]}}`)
		if st != 400 || !problemAt(m, "topic_reserved", "/graph/nodes/1/config/topic") {
			t.Fatalf("kafka connector to the work topic: %d %v", st, m)
		}
		// Had the work item reached the topic anyway (say through a broker an operator allowed),
		// it would be dead-lettered with the reason and no request would leave.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dlq := readTopic(t, p.kcfg, envelope.TopicDLQ)
		execID := testrig.Unique("forged")
		work := workDoc{
			ExecutionID: execID, FlowID: flowA, Revision: 1, Token: "t#1", Attempt: 1,
			Node: map[string]any{"id": "t", "type": "action", "connector": "http", "action": "request",
				"connection": connID, "config": map[string]any{"url": thief.URL, "method": "POST"}},
			Owners: []map[string]any{{"id": a.id, "type": "tenant"}},
		}.encode(t)
		produceRaw(ctx, t, p.kcfg, kafka.Message{Topic: prefix + envelope.PoolTopic(""), Key: []byte(execID), Value: work})
		m2 := dlq.await(ctx, t, execID)
		if r := header(m2, "flowd-dlq-reason"); !strings.Contains(r, "record authentication failed") {
			t.Fatalf("dead letter reason %q", r)
		}
		if n := hits.Load(); n != 0 {
			t.Fatalf("%d request(s) reached B's URL", n)
		}
	})

	t.Run("3 B cannot start A's signed webhook flow", func(t *testing.T) {
		if st, _ := p.post("/hooks/"+flowA, `{"x":1}`); st != 401 {
			t.Fatalf("unsigned webhook: %d, want 401", st)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		dlq := readTopic(t, p.kcfg, envelope.TopicDLQ)
		execID := testrig.Unique("forged")
		rec, _ := json.Marshal(envelope.Ingest{ExecutionID: execID, FlowID: flowA, Revision: 1, Trigger: envelope.TriggerWebhook,
			ReceivedAt: time.Unix(1, 0).UTC(), Input: json.RawMessage(`{"x":666}`)})
		produceRaw(ctx, t, p.kcfg, kafka.Message{Topic: prefix + envelope.TopicIngest, Key: []byte(flowA), Value: rec})
		dlq.await(ctx, t, execID)
		if ex, err := p.st.Execution(ctx, execID); err == nil {
			t.Fatalf("the forged ingest record started execution %+v", ex)
		}
		// A's signed webhook still runs.
		body := `{"x":2}`
		mac := hmac.New(sha256.New, []byte(password))
		mac.Write([]byte(body))
		req, _ := http.NewRequest("POST", p.base+"/hooks/"+flowA, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-Signature", hex.EncodeToString(mac.Sum(nil)))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		_ = json.NewDecoder(res.Body).Decode(&out)
		_ = res.Body.Close()
		if res.StatusCode != 202 {
			t.Fatalf("signed webhook: %d %v", res.StatusCode, out)
		}
		ex, _ := p.finished(out["data"].(map[string]any)["executionId"].(string))
		if ex.Status != envelope.StatusSucceeded {
			t.Fatalf("A's execution: %+v", ex)
		}
	})

	t.Run("4 B's flow waiting for a topic holds nobody up", func(t *testing.T) {
		// A topic B may use (its list allows mallory.*) that does not exist: B's flow runs and
		// waits for it, saying so; A's flow stops and starts as usual meanwhile.
		st, m := b.do("POST", "/api/v1/flows", `{"name":"stall","graph":{"nodes":[{"id":"k","type":"trigger.kafka","config":{"topic":"mallory.`+testrig.Unique("missing")+`"}}],"edges":[]}}`)
		if st != 201 {
			t.Fatalf("B's flow: %d %v", st, m)
		}
		bad := m["data"].(map[string]any)["id"].(string)
		b.do("POST", "/api/v1/flows/"+bad+"/start", "")
		for deadline := time.Now().Add(60 * time.Second); ; {
			_, m = b.do("GET", "/api/v1/flows/"+bad, "")
			d, _ := m["data"].(map[string]any)
			if ts, _ := d["triggerStatus"].(map[string]any); d["status"] == "active" && ts["state"] == "waitingForTopic" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("B's flow does not say it waits for its topic: %v", d)
			}
			time.Sleep(50 * time.Millisecond) // polling the API with a deadline
		}
		for _, step := range []struct{ action, want string }{{"stop", "inactive"}, {"start", "active"}} {
			if st, m := a.do("POST", "/api/v1/flows/"+flowA+"/"+step.action, ""); st != 200 || m["data"].(map[string]any)["status"] != step.want {
				t.Fatalf("A's flow %s: %d %v", step.action, st, m)
			}
		}
	})

	t.Run("5 B's connectors cannot reach flowd's own services", func(t *testing.T) {
		// A request line that is not HTTP (the way a Redis command rides in a method).
		st, m := b.do("POST", "/api/v1/flows", `{"name":"smuggle","graph":{"nodes":[
			{"id":"hook","type":"trigger.webhook"},
			{"id":"h","type":"action","connector":"http","action":"request","config":{"method":"SET","url":"http://`+p.redisAddr+`/"}}],
			"edges":[{"source":"hook","target":"h"}]}}`)
		if st != 400 || !strings.Contains(fmt.Sprint(m), "/graph/nodes/1/config/method") {
			t.Fatalf("non-standard method: %d %v", st, m)
		}
		// flowd's Redis by address, and flowd's own API through a name resolving to loopback.
		apiPort := p.base[strings.LastIndexByte(p.base, ':')+1:]
		for _, url := range []string{"http://" + p.redisAddr + "/", "http://localhost:" + apiPort + "/healthz"} {
			st, m := b.do("POST", "/api/v1/flows", `{"name":"probe","graph":{"nodes":[
				{"id":"hook","type":"trigger.webhook"},
				{"id":"h","type":"action","connector":"http","action":"request","config":{"method":"GET","url":"`+url+`"}}],
				"edges":[{"source":"hook","target":"h"}]}}`)
			if st != 201 {
				t.Fatalf("probe flow: %d %v", st, m)
			}
			id := m["data"].(map[string]any)["id"].(string)
			if st, m := b.do("POST", "/api/v1/flows/"+id+"/start", ""); st != 200 {
				t.Fatalf("start probe: %d %v", st, m)
			}
			st, out := p.post("/hooks/"+id, `{}`)
			if st != 202 {
				t.Fatalf("probe webhook: %d %v", st, out)
			}
			ex, steps := p.finished(out["data"].(map[string]any)["executionId"].(string))
			h := stepsByNode(steps)["h"]
			if ex.Status != envelope.StatusFailed || len(h) != 1 || h[0].Error == nil || h[0].Error.Code != "egress_denied" {
				t.Fatalf("%s: execution %+v, step %+v: want failed with egress_denied", url, ex, h)
			}
			if len(h[0].Output) > 0 {
				t.Fatalf("%s: the step holds a response: %s", url, h[0].Output)
			}
		}
	})
}

// workDoc is a work item as an attacker would write it: JSON only, nothing of flowd's code.
type workDoc struct {
	ExecutionID string           `json:"executionId"`
	FlowID      string           `json:"flowId"`
	Revision    int              `json:"revision"`
	Token       string           `json:"token"`
	Attempt     int              `json:"attempt"`
	Node        map[string]any   `json:"node"`
	Owners      []map[string]any `json:"owners"`
}

func (w workDoc) encode(t *testing.T) []byte {
	raw, err := json.Marshal(w)
	if err != nil {
		t.Fatal(err)
	}
	return raw
}

// produceRaw writes m as anyone with access to the broker could: unsigned.
func produceRaw(ctx context.Context, t *testing.T, kcfg kafkax.Config, m kafka.Message) {
	t.Helper()
	w := kafkax.NewWriter(kcfg)
	defer func() { _ = w.Close() }()
	if err := w.WriteMessages(ctx, m); err != nil {
		t.Fatal(err)
	}
}

type topicReader struct{ r *kafka.Reader }

// readTopic reads every partition of a flowd topic (the test's own prefix: only its records).
func readTopic(t *testing.T, kcfg kafkax.Config, name string) *topicReader {
	t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: kcfg.Brokers, GroupID: testrig.Unique("spy-"), Topic: kcfg.Topic(name),
		StartOffset: kafka.FirstOffset, MaxWait: 200 * time.Millisecond})
	t.Cleanup(func() { _ = r.Close() })
	return &topicReader{r: r}
}

// await returns the first record keyed or naming id, failing the test at ctx's deadline.
func (tr *topicReader) await(ctx context.Context, t *testing.T, id string) kafka.Message {
	t.Helper()
	for {
		m, err := tr.r.ReadMessage(ctx)
		if err != nil {
			t.Fatalf("no record for %s: %v", id, err)
		}
		if strings.Contains(string(m.Value), id) {
			return m
		}
	}
}

func header(m kafka.Message, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}
