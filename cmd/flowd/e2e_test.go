package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// pipeline is every role of flowd in this process (as `flowd dev` runs them), on the real
// broker and redis-server of the test rig.
type pipeline struct {
	t     *testing.T
	base  string
	token string
	st    *store.Store
	kcfg  kafkax.Config
	in    *infra
	dir   string
	stop  func() // stops every role; idempotent
	pol   connectorPolicy
	// redisAddr is where flowd's Redis listens: a target a tenant must not reach.
	redisAddr string
	ropt      routerOptions
	nopt      notifyOptions
}

// startPipeline runs the roles; opts adjust their settings (e.g. SASL, a Redis password).
func startPipeline(t *testing.T, opts ...func(*infra)) *pipeline {
	t.Helper()
	// The example flow calls the API's echo route on loopback: allowed as an operator would.
	return startPipelineWith(t, 2, connectorPolicy{egressAllow: "127.0.0.1/32"}, opts...)
}

// startPipelineWith runs every role on fresh topics of the given partition count, with the
// given connector policy; opts adjust the roles' settings.
func startPipelineWith(t *testing.T, partitions int, pol connectorPolicy, opts ...func(*infra)) *pipeline {
	t.Helper()
	p := newPipeline(t, partitions, pol, opts...)
	p.start()
	return p
}

// newPipeline prepares what startPipelineWith runs, without starting it.
func newPipeline(t *testing.T, partitions int, pol connectorPolicy, opts ...func(*infra)) *pipeline {
	t.Helper()
	brokers, redisURL := testrig.Kafka(t), testrig.Redis(t)
	dir := t.TempDir()
	hosttest.Build(t, filepath.Join(dir, "connectors"), map[string]string{
		"http":      "github.com/flowd/flowd/connectors/http",
		"transform": "github.com/flowd/flowd/connectors/transform",
	})
	t.Setenv(secrets.EnvKey, secrets.GenerateKey())
	t.Setenv(busauth.EnvKey, testrig.BusKey())
	in := &infra{brokers: strings.Join(brokers, ","), redisURL: redisURL, topicPrefix: testrig.Unique("e") + ".", partitions: partitions, keyPrefix: testrig.Unique("e") + ":"}
	for _, o := range opts {
		o(in)
	}
	rdb, _, err := in.redisClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rdb.Close() })
	u, err := url.Parse(in.redisURL)
	if err != nil {
		t.Fatal(err)
	}
	return &pipeline{t: t, token: "fld_e2e_" + testrig.Unique(""), st: store.New(rdb, in.keyPrefix), kcfg: in.kafka(), in: in, dir: dir, pol: pol, redisAddr: u.Host}
}

// start runs every role on p's infrastructure (again, after stop: a restart).
func (p *pipeline) start() {
	t := p.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	opt := apiOptions{addr: addr, connectorsDir: filepath.Join(p.dir, "connectors"), bodyLimit: 1 << 20, adminToken: p.token, notify: p.nopt}
	ctx, cancel := context.WithCancel(context.Background())
	all, err := startAll(ctx, p.in, opt, p.ropt, p.pol)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ready := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- listenAndServe(ctx, all.app, all.health, addr, func() { close(ready) }) }()
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("shutdown: %v", err)
			}
			all.close()
		})
	}
	t.Cleanup(p.stop)
	select {
	case <-ready:
	case err := <-done:
		t.Fatal(err)
	}
	p.base = "http://" + addr
}

// startAPIRole runs the api role alone on p's infrastructure (64 KiB body limit, lifecycle
// confirmed by itself), as `flowd api` does, and points p at it.
func (p *pipeline) startAPIRole() {
	t := p.t
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan error, 1)
	opt := apiOptions{addr: addr, connectorsDir: filepath.Join(p.dir, "connectors"), bodyLimit: 64 << 10, adminToken: p.token,
		autoConfirm: true, onReady: func(string) { close(ready) }}
	go func() { done <- serveAPI(ctx, p.in, opt) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("api: %v", err)
		}
	})
	select {
	case <-ready:
	case err := <-done:
		done <- nil // the cleanup above waits for it
		t.Fatalf("api did not start: %v", err)
	}
	p.base = "http://" + addr
}

func (p *pipeline) post(path, body string) (int, map[string]any) {
	p.t.Helper()
	token := ""
	if strings.HasPrefix(path, "/api/") {
		token = p.token
	}
	return p.call(http.MethodPost, path, token, body)
}

// flow creates and starts a flow; the router's confirmation makes it active.
func (p *pipeline) flow(doc string) string {
	p.t.Helper()
	st, m := p.post("/api/v1/flows", doc)
	if st != 201 {
		p.t.Fatalf("create flow: %d %v", st, m)
	}
	id := m["data"].(map[string]any)["id"].(string)
	st, m = p.post("/api/v1/flows/"+id+"/start", "")
	if st != 200 || m["data"].(map[string]any)["status"] != "active" {
		p.t.Fatalf("start flow: %d %v", st, m)
	}
	return id
}

// awaitExecutions polls until flowID has want executions, failing at once when it has more.
func (p *pipeline) awaitExecutions(flowID string, want int) {
	p.t.Helper()
	for deadline := time.Now().Add(90 * time.Second); ; {
		_, total, err := p.st.FlowExecutions(context.Background(), flowID, "", 0, 1)
		if err != nil {
			p.t.Fatal(err)
		}
		if total == want {
			return
		}
		if total > want || time.Now().After(deadline) {
			p.t.Fatalf("flow %s has %d executions, want %d", flowID, total, want)
		}
		time.Sleep(50 * time.Millisecond) // polling Redis with a deadline
	}
}

// finished polls until the execution has ended.
func (p *pipeline) finished(id string) (*envelope.Execution, []envelope.Step) {
	p.t.Helper()
	ctx := context.Background()
	for deadline := time.Now().Add(60 * time.Second); ; {
		ex, err := p.st.Execution(ctx, id)
		if err == nil && ex.Status != envelope.StatusRunning {
			steps, err := p.st.ExecutionSteps(ctx, id)
			if err != nil {
				p.t.Fatal(err)
			}
			return ex, steps
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("execution %s did not finish: %v %v", id, ex, err)
		}
		time.Sleep(20 * time.Millisecond) // polling Redis with a deadline
	}
}

func stepsByNode(steps []envelope.Step) map[string][]envelope.Step {
	out := map[string][]envelope.Step{}
	for _, s := range steps {
		out[s.NodeID] = append(out[s.NodeID], s)
	}
	return out
}

// Every role runs on a three-master Redis Cluster as on a single node: the README example
// answers, and its executions are listed and counted.
func TestPipelineOnRedisCluster(t *testing.T) {
	clusterURL := testrig.RedisClusterURL(t)
	p := startPipeline(t, func(in *infra) { in.redisCluster, in.redisURL = true, clusterURL })
	id, err := loadExample(context.Background(), p.base, p.token, "../../deployments/examples/hello-flow.json")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		st, body := p.post("/hooks/"+id, fmt.Sprintf(`{"firstName":"Ada%d","lastName":"Lovelace"}`, i))
		if st != 200 || body["greeting"] != fmt.Sprintf("Hello, Ada%d Lovelace", i) {
			t.Fatalf("webhook %d: %d %v", i, st, body)
		}
	}
	execs, total, err := p.st.FlowExecutions(context.Background(), id, "", 0, 10)
	if err != nil || total != 5 || len(execs) != 5 {
		t.Fatalf("executions: %d listed of %d, %v", len(execs), total, err)
	}
	for _, e := range execs {
		if ex, _ := p.finished(e.ID); ex.Status != envelope.StatusSucceeded {
			t.Fatalf("execution %s: %s %v", ex.ID, ex.Status, ex.Error)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		stats, err := p.st.FlowStats(context.Background(), id, time.Now().Add(-time.Hour), time.Now().Add(time.Minute))
		var n int64
		for _, b := range stats {
			n += b.Success
		}
		if err == nil && n == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats: %+v %v, want 5 successes", stats, err)
		}
		time.Sleep(20 * time.Millisecond) // polling Redis with a deadline
	}
}

func TestPipelineEndToEnd(t *testing.T) {
	p := startPipeline(t)

	t.Run("the README example answers synchronously through if, http, transform and respond", func(t *testing.T) {
		id, err := loadExample(context.Background(), p.base, p.token, "../../deployments/examples/hello-flow.json")
		if err != nil {
			t.Fatal(err)
		}
		st, body := p.post("/hooks/"+id, `{"firstName":"Ada","lastName":"Lovelace"}`)
		if st != 200 || body["greeting"] != "Hello, Ada Lovelace" || body["active"] != true || body["ID"] == "" {
			t.Fatalf("true branch: %d %v", st, body)
		}
		if len(body) != 3 {
			t.Fatalf("the answer is shaped by outputParameters: %v", body)
		}
		st, body = p.post("/hooks/"+id, `{"firstName":"Ada","lastName":""}`)
		if st != 422 || body["error"] != "lastName is required" {
			t.Fatalf("false branch: %d %v", st, body)
		}
		execs, total, err := p.st.FlowExecutions(context.Background(), id, "", 0, 10)
		if err != nil || total != 2 {
			t.Fatalf("executions: %d %v", total, err)
		}
		for _, e := range execs {
			ex, steps := p.finished(e.ID)
			if ex.Status != envelope.StatusSucceeded {
				t.Fatalf("execution %s: %s %v", ex.ID, ex.Status, ex.Error)
			}
			by := stepsByNode(steps)
			ran := func(node string) bool {
				return len(by[node]) == 1 && by[node][0].Status == envelope.StepSucceeded
			}
			switch {
			case ran("crm"):
				if by["crm"][0].Port != "success" || !ran("shape") || !ran("answer") || ran("reject") {
					t.Fatalf("true-branch steps: %+v", by)
				}
			case ran("reject"):
				if ran("shape") || ran("answer") {
					t.Fatalf("false-branch steps: %+v", by)
				}
			default:
				t.Fatalf("neither branch ran: %+v", by)
			}
		}
	})

	t.Run("merge after a fan-out runs once with both inputs", func(t *testing.T) {
		id := p.flow(`{"name":"fan","graph":{"nodes":[
			{"id":"hook","type":"trigger.webhook","config":{"mode":"sync"}},
			{"id":"a","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.x * 2"}}},
			{"id":"b","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.x + 1"}}},
			{"id":"join","type":"merge"},
			{"id":"sum","type":"action","connector":"transform","action":"map","config":{"fields":{"total":"input.a.v + input.b.v"}}},
			{"id":"out","type":"respond"}],
			"edges":[{"source":"hook","target":"a"},{"source":"hook","target":"b"},{"source":"a","target":"join"},{"source":"b","target":"join"},{"source":"join","target":"sum"},{"source":"sum","target":"out"}]}}`)
		st, body := p.post("/hooks/"+id, `{"x":10}`)
		if st != 200 || body["total"] != float64(31) {
			t.Fatalf("merge: %d %v", st, body)
		}
		execs, _, _ := p.st.FlowExecutions(context.Background(), id, "", 0, 1)
		_, steps := p.finished(execs[0].ID)
		if by := stepsByNode(steps); len(by["join"]) != 1 || len(by["sum"]) != 1 {
			t.Fatalf("merge ran %d times, sum %d times", len(by["join"]), len(by["sum"]))
		}
	})

	t.Run("split runs one step per element; filter ends as filtered", func(t *testing.T) {
		id := p.flow(`{"name":"split","graph":{"nodes":[
			{"id":"hook","type":"trigger.webhook"},
			{"id":"each","type":"split","config":{"path":"input.items"}},
			{"id":"big","type":"filter","config":{"condition":"input > 1"}},
			{"id":"double","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input * 2"}}}],
			"edges":[{"source":"hook","target":"each"},{"source":"each","target":"big"},{"source":"big","target":"double"}]}}`)
		st, body := p.post("/hooks/"+id, `{"items":[1,2,3]}`)
		if st != 202 {
			t.Fatalf("%d %v", st, body)
		}
		ex, steps := p.finished(body["data"].(map[string]any)["executionId"].(string))
		ran := 0
		for _, s := range stepsByNode(steps)["double"] {
			if s.Status == envelope.StepSucceeded {
				ran++
			}
		}
		if ex.Status != envelope.StatusSucceeded || ran != 2 || len(stepsByNode(steps)["big"]) != 3 {
			t.Fatalf("split: %s, steps %+v", ex.Status, stepsByNode(steps))
		}
		_, body = p.post("/hooks/"+id, `{"items":[0,1]}`)
		if ex, _ := p.finished(body["data"].(map[string]any)["executionId"].(string)); ex.Status != envelope.StatusFiltered {
			t.Fatalf("all filtered: %s", ex.Status)
		}
	})

	t.Run("a record on a partner topic runs its flow; stopping the flow stops consumption", func(t *testing.T) {
		name := testrig.Unique("orders")
		topic := "partner." + name
		if err := kafkax.EnsureTopics(context.Background(), kafkax.Config{Brokers: p.kcfg.Brokers, TopicPrefix: "partner.", Partitions: 1}, name); err != nil {
			t.Fatal(err)
		}
		id := p.flow(`{"name":"partner","graph":{"nodes":[
			{"id":"in","type":"trigger.kafka","config":{"topic":"` + topic + `"}},
			{"id":"t","type":"action","connector":"transform","action":"map","config":{"fields":{"order":"input.order"}}}],
			"edges":[{"source":"in","target":"t"}]}}`)
		w := &kafka.Writer{Addr: kafka.TCP(p.kcfg.Brokers...), RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
		defer func() { _ = w.Close() }()
		produce := func(order int) {
			if err := w.WriteMessages(context.Background(), kafka.Message{Topic: topic, Key: []byte("k"), Value: fmt.Appendf(nil, `{"order":%d}`, order)}); err != nil {
				t.Fatal(err)
			}
		}
		waitTotal := func(want int) {
			for deadline := time.Now().Add(60 * time.Second); ; {
				_, total, err := p.st.FlowExecutions(context.Background(), id, envelope.StatusSucceeded, 0, 10)
				if err == nil && total == want {
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("want %d succeeded executions, have %d (%v)", want, total, err)
				}
				time.Sleep(20 * time.Millisecond) // polling Redis with a deadline
			}
		}
		produce(1)
		waitTotal(1)
		// The flow shows the partner topic's replication, as the router found it (one replica
		// on the rig's single broker, as much as flowd's own topics there: no warning).
		var trig map[string]any
		for deadline := time.Now().Add(30 * time.Second); trig == nil; {
			st, m := p.get("/api/v1/flows/"+id, p.token)
			if st != 200 {
				t.Fatalf("get flow: %d %v", st, m)
			}
			trig, _ = m["data"].(map[string]any)["triggerStatus"].(map[string]any)
			if trig == nil && time.Now().After(deadline) {
				t.Fatalf("no triggerStatus on an active partner flow: %v", m)
			}
			time.Sleep(20 * time.Millisecond) // polling the API with a deadline
		}
		if trig["type"] != "trigger.kafka" || trig["topic"] != topic || trig["partitions"] != 1.0 || trig["replicationFactor"] != 1.0 ||
			trig["minInsyncReplicas"] != 1.0 || trig["offlinePartitions"] != 0.0 || trig["checkedAt"] == nil || trig["warning"] != nil {
			t.Fatalf("triggerStatus %v", trig)
		}
		if st, m := p.post("/api/v1/flows/"+id+"/stop", ""); st != 200 || m["data"].(map[string]any)["status"] != "inactive" {
			t.Fatalf("stop: %d %v", st, m)
		}
		if _, m := p.get("/api/v1/flows/"+id, p.token); m["data"].(map[string]any)["triggerStatus"] != nil {
			t.Fatalf("a stopped flow shows a trigger status: %v", m["data"])
		}
		produce(2)
		// While stopped nothing consumes the topic; starting again picks the record up exactly once.
		if _, total, _ := p.st.FlowExecutions(context.Background(), id, "", 0, 10); total != 1 {
			t.Fatalf("a stopped flow ran: %d executions", total)
		}
		if st, _ := p.post("/api/v1/flows/"+id+"/start", ""); st != 200 {
			t.Fatalf("restart: %d", st)
		}
		waitTotal(2)
	})
}

func (p *pipeline) get(path, token string) (int, map[string]any) {
	p.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.base+path, nil)
	req.Header.Set("Authorization", "Bearer "+token)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	var m map[string]any
	_ = json.NewDecoder(res.Body).Decode(&m)
	return res.StatusCode, m
}

func TestExecutionsAPI(t *testing.T) {
	p := startPipeline(t)
	id := p.flow(`{"name":"api","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook"},
		{"id":"t","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.x"}}}],
		"edges":[{"source":"hook","target":"t"}]}}`)
	var last string
	for i := range 3 {
		_, body := p.post("/hooks/"+id, fmt.Sprintf(`{"x":%d}`, i))
		last = body["data"].(map[string]any)["executionId"].(string)
		p.finished(last)
	}
	st, list := p.get("/api/v1/flows/"+id+"/executions?page[size]=2&filter[status]=succeeded", p.token)
	meta, _ := list["meta"].(map[string]any)
	if st != 200 || len(list["data"].([]any)) != 2 || meta["total"] != float64(3) || meta["totalPages"] != float64(2) {
		t.Fatalf("list: %d %v", st, list)
	}
	if newest := list["data"].([]any)[0].(map[string]any)["id"]; newest != last {
		t.Fatalf("newest first: got %v, want %s", newest, last)
	}
	st, every := p.get("/api/v1/executions?page[size]=1&filter[status]=succeeded", p.token)
	if meta, _ := every["meta"].(map[string]any); st != 200 || len(every["data"].([]any)) != 1 || meta["total"] != float64(3) ||
		every["data"].([]any)[0].(map[string]any)["id"] != last {
		t.Fatalf("executions of every flow: %d %v", st, every)
	}
	st, one := p.get("/api/v1/executions/"+last, p.token)
	data, _ := one["data"].(map[string]any)
	if st != 200 || data["status"] != "succeeded" || len(data["steps"].([]any)) != 2 {
		t.Fatalf("execution: %d %v", st, one)
	}
	from := time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	st, stats := p.get("/api/v1/flows/"+id+"/stats?from="+from, p.token)
	if st != 200 || stats["data"].(map[string]any)["totals"].(map[string]any)["success"] != float64(3) ||
		stats["data"].(map[string]any)["allTime"].(map[string]any)["success"] != float64(3) {
		t.Fatalf("stats: %d %v", st, stats)
	}
	st, hist := p.get("/api/v1/history", p.token)
	if h, _ := hist["data"].(map[string]any); st != 200 || h["kept"] != float64(3) || h["bytes"].(float64) <= 0 {
		t.Fatalf("history usage: %d %v, want 3 kept executions and their bytes", st, hist)
	}
	if st, _ := p.get("/api/v1/flows/"+id+"/stats?from=yesterday", p.token); st != 400 {
		t.Fatalf("bad from: %d", st)
	}
	// Another tenant sees none of it.
	_, ten := p.post("/api/v1/tenants", `{"name":"`+testrig.Unique("other")+`"}`)
	_, u := p.post("/api/v1/users", `{"username":"`+testrig.Unique("eve")+`","tenant":"`+ten["data"].(map[string]any)["id"].(string)+`"}`)
	_, tok := p.post("/api/v1/users/"+u["data"].(map[string]any)["id"].(string)+"/tokens", `{}`)
	eve := tok["data"].(map[string]any)["token"].(string)
	if st, body := p.get("/api/v1/history", eve); st != 403 {
		t.Fatalf("history usage for a tenant's user: %d %v, want 403", st, body)
	}
	for _, path := range []string{"/api/v1/executions/" + last, "/api/v1/flows/" + id + "/executions", "/api/v1/flows/" + id + "/stats"} {
		if st, _ := p.get(path, eve); st != 404 {
			t.Fatalf("%s for another tenant: %d", path, st)
		}
	}
	if st, none := p.get("/api/v1/executions", eve); st != 200 || len(none["data"].([]any)) != 0 || none["meta"].(map[string]any)["total"] != float64(0) {
		t.Fatalf("executions of every flow for another tenant: %d %v", st, none)
	}

	// A step in a pool no runner serves: the start warns with the node's path, and the
	// execution waiting there says so; a flow whose pools are served is warned of nothing.
	if _, m := p.post("/api/v1/flows/"+id+"/stop", ""); m["warnings"] != nil {
		t.Fatalf("stop warns: %v", m)
	}
	if st, m := p.post("/api/v1/flows/"+id+"/start", ""); st != 200 || m["warnings"] != nil {
		t.Fatalf("a flow on the served default pool: %d %v", st, m)
	}
	pool := testrig.Unique("nobody")
	st, m := p.post("/api/v1/flows", `{"name":"unserved","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook"},
		{"id":"t","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.x"}}},
		{"id":"u","type":"action","connector":"transform","action":"map","pool":"`+pool+`","config":{"fields":{"v":"input.v"}}}],
		"edges":[{"source":"hook","target":"t"},{"source":"t","target":"u"}]}}`)
	if st != 201 {
		t.Fatalf("create: %d %v", st, m)
	}
	unserved := m["data"].(map[string]any)["id"].(string)
	st, m = p.post("/api/v1/flows/"+unserved+"/start", "")
	ws, _ := m["warnings"].([]any)
	if st != 200 || m["data"].(map[string]any)["status"] != "active" || len(ws) != 1 {
		t.Fatalf("start on an unserved pool: %d %v, want active with one warning", st, m)
	}
	if w := ws[0].(map[string]any); w["code"] != "pool_unserved" || w["path"] != "/graph/nodes/2/pool" || !strings.Contains(w["message"].(string), pool) {
		t.Fatalf("warning %v", w)
	}
	_, body := p.post("/hooks/"+unserved, `{"x":7}`)
	waiting := body["data"].(map[string]any)["executionId"].(string)
	for deadline := time.Now().Add(60 * time.Second); ; {
		st, one = p.get("/api/v1/executions/"+waiting, p.token)
		data, _ = one["data"].(map[string]any)
		ws, _ = data["warnings"].([]any)
		if st == 200 && len(ws) == 1 {
			steps := data["steps"].([]any)
			w := ws[0].(map[string]any)
			i, _ := strconv.Atoi(strings.TrimPrefix(w["path"].(string), "/steps/"))
			if data["status"] != "running" || w["code"] != "pool_unserved" || i >= len(steps) ||
				steps[i].(map[string]any)["nodeId"] != "u" || steps[i].(map[string]any)["status"] != "running" {
				t.Fatalf("waiting execution: %v", data)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the execution waiting on pool %s does not say so: %d %v", pool, st, one)
		}
		time.Sleep(50 * time.Millisecond) // polling the API with a deadline
	}
}
