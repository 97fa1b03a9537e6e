package ingest_test

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/ingest"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/openapitest"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// env is one ingest server on the real broker and redis-server, isolated by unique topic and
// key prefixes, listening on a loopback port.
type env struct {
	t       testing.TB
	srv     *ingest.Server
	st      *store.Store
	kcfg    kafkax.Config
	keys    *secrets.Keyring
	base    string
	client  *http.Client
	records *collector
	owner   string
}

type envConfig struct {
	brokers []string
	mutate  func(*ingest.Config)
}

func newEnv(t testing.TB, opts ...func(*envConfig)) *env {
	t.Helper()
	ec := envConfig{}
	for _, o := range opts {
		o(&ec)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	ropt, err := redis.ParseURL(testrig.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	if ec.brokers == nil {
		ec.brokers = testrig.Kafka(t)
	}
	rdb := redis.NewClient(ropt)
	t.Cleanup(func() { _ = rdb.Close() })
	st := store.New(rdb, testrig.Unique("t")+":")
	kcfg := kafkax.Config{Brokers: ec.brokers, TopicPrefix: testrig.Unique("t") + ".", Partitions: 1, RecordKeys: testrig.RecordKeys()}
	if err := kafkax.EnsureTopics(ctx, kcfg, envelope.TopicIngest, events.TopicName); err != nil {
		t.Fatalf("ensure topics: %v", err)
	}
	keys, err := secrets.ParseKeys("k1:" + secrets.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	cfg := ingest.Config{
		Kafka: kcfg, Store: st, Secrets: keys,
		Log:            slog.New(slog.NewTextHandler(io.Discard, nil)),
		ProduceTimeout: 3 * time.Second,
		// Long enough that only flowd.events can refresh a flow within a test.
		CacheTTL: time.Hour,
	}
	if ec.mutate != nil {
		ec.mutate(&cfg)
	}
	srv, err := ingest.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sctx, stop := context.WithCancel(context.Background())
	done, ran := make(chan error, 1), make(chan error, 1)
	go func() { ran <- srv.Run(sctx) }() // the flow events watcher, as every ingest process runs it
	go func() { done <- srv.Serve(sctx, ln) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		if err := <-ran; err != nil {
			t.Errorf("run: %v", err)
		}
		_ = srv.Close()
	})
	select {
	case <-srv.Ready():
	case err := <-ran:
		t.Fatalf("ingest stopped before it was ready: %v", err)
	case <-ctx.Done():
		t.Fatal("ingest never followed flowd.events")
	}
	e := &env{
		t: t, srv: srv, st: st, kcfg: kcfg, keys: keys, base: "http://" + ln.Addr().String(),
		client: &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}},
		owner:  "user-" + testrig.Unique(""),
	}
	e.records = collect(t, kcfg)
	return e
}

// flowOpts shape the webhook flow a test creates.
type flowOpts struct {
	config  map[string]any
	payload *flowdoc.Payload
	trigger string // node type, trigger.webhook by default
	active  bool
	owner   string
}

// flow stores a flow with a webhook trigger and a respond node, and activates it (as the
// router's confirmation would) unless told otherwise.
func (e *env) flow(o flowOpts) string {
	e.t.Helper()
	ctx := context.Background()
	if o.trigger == "" {
		o.trigger = flowdoc.TypeWebhook
	}
	if o.owner == "" {
		o.owner = e.owner
	}
	now := time.Now().UTC()
	f := &flowdoc.Flow{
		ID: identity.NewID(), Name: "hook-" + testrig.Unique(""), Status: flowdoc.StatusInactive, Revision: 1,
		Graph: flowdoc.Graph{
			Nodes: []flowdoc.Node{{ID: "in", Type: o.trigger, Config: o.config}, {ID: "out", Type: flowdoc.TypeRespond}},
			Edges: []flowdoc.Edge{{Source: "in", Target: "out"}},
		},
		Owners:    []flowdoc.Owner{{ID: o.owner, Type: flowdoc.OwnerUser}},
		Payload:   o.payload,
		CreatedAt: &now, UpdatedAt: &now,
	}
	if err := e.st.CreateFlow(ctx, f); err != nil {
		e.t.Fatal(err)
	}
	if o.active {
		e.setStatus(f.ID, flowdoc.StatusActive)
	}
	return f.ID
}

func (e *env) setStatus(id, status string) {
	e.t.Helper()
	_, err := e.st.UpdateFlow(context.Background(), id, func(cur *flowdoc.Flow) (store.Mutation, error) {
		cur.Status = status
		return store.Mutation{Flow: cur}, nil
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

// connection stores a connection whose one secret field holds secret.
func (e *env) connection(typ, field, secret, owner string) string {
	e.t.Helper()
	id := identity.NewID()
	sealed, err := e.keys.Encrypt([]byte(secret), store.ConnectionAAD(id, field))
	if err != nil {
		e.t.Fatal(err)
	}
	now := time.Now().UTC()
	c := &store.Connection{ID: id, Name: "c-" + id, Type: typ, Owner: owner, Fields: map[string]any{},
		Secrets: map[string]secrets.Sealed{field: sealed}, CreatedAt: now, UpdatedAt: now}
	if typ == "basic" {
		c.Fields["username"] = "partner"
	}
	if err := e.st.CreateConnection(context.Background(), c); err != nil {
		e.t.Fatal(err)
	}
	return id
}

type resp struct {
	status int
	header http.Header
	raw    []byte
	body   map[string]any
}

func (r resp) executionID() string {
	d, _ := r.body["data"].(map[string]any)
	id, _ := d["executionId"].(string)
	return id
}

// problems lists the error envelope as code@path.
func (r resp) problems() []string {
	var out []string
	errs, _ := r.body["errors"].([]any)
	for _, e := range errs {
		m := e.(map[string]any)
		out = append(out, fmt.Sprintf("%v@%v", m["code"], m["path"]))
	}
	return out
}

// do sends a request; headers are name, value pairs.
func (e *env) do(method, path, ctype, body string, headers ...string) resp {
	e.t.Helper()
	r, err := e.try(method, path, ctype, body, headers...)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

// try is do for goroutines, which must not call Fatal.
func (e *env) try(method, path, ctype, body string, headers ...string) (resp, error) {
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.base+path, rd)
	if err != nil {
		return resp{}, err
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	res, err := e.client.Do(req)
	if err != nil {
		return resp{}, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer func() { _ = res.Body.Close() }()
	raw, _ := io.ReadAll(res.Body)
	r := resp{status: res.StatusCode, header: res.Header, raw: raw}
	// Every exchange of the ingest tests is checked against the OpenAPI document.
	if err := openapitest.Check(openapitest.Exchange{Method: method, Target: path, Header: req.Header, Body: []byte(body),
		Status: res.StatusCode, ResponseHeader: res.Header, ResponseBody: raw}); err != nil {
		return r, err
	}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			return r, fmt.Errorf("%s %s: response is not JSON: %s", method, path, raw)
		}
	}
	return r, nil
}

func (e *env) must(want int, r resp) resp {
	e.t.Helper()
	if r.status != want {
		e.t.Fatalf("status %d, want %d: %s", r.status, want, r.raw)
	}
	return r
}

// accepted asserts a 202 with a well-formed execution id and returns the id.
func (e *env) accepted(r resp) string {
	e.t.Helper()
	e.must(202, r)
	id := r.executionID()
	if len(id) != 26 || strings.ToUpper(id) != id {
		e.t.Fatalf("execution id %q is not a 26-character ULID: %s", id, r.raw)
	}
	if r.header.Get(ingest.HeaderExecutionID) != id {
		e.t.Fatalf("%s header %q, body id %q", ingest.HeaderExecutionID, r.header.Get(ingest.HeaderExecutionID), id)
	}
	return id
}

// record is one record read back from flowd.ingest.
type record struct {
	key string
	rec envelope.Ingest
}

// collector reads flowd.ingest (one partition) from the start into memory.
type collector struct {
	mu   sync.Mutex
	recs []record
}

func collect(t testing.TB, kcfg kafkax.Config) *collector {
	c := &collector{}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: kcfg.Brokers, Topic: kcfg.Topic(envelope.TopicIngest), Partition: 0, MaxWait: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			m, err := r.ReadMessage(ctx)
			if err != nil {
				return
			}
			var rec envelope.Ingest
			if err := json.Unmarshal(m.Value, &rec); err != nil {
				t.Errorf("record at offset %d is not an envelope.Ingest: %v: %s", m.Offset, err, m.Value)
				continue
			}
			c.mu.Lock()
			c.recs = append(c.recs, record{key: string(m.Key), rec: rec})
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { cancel(); <-done; _ = r.Close() })
	return c
}

// all returns the records of an execution seen so far.
func (c *collector) all(executionID string) []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []record
	for _, r := range c.recs {
		if r.rec.ExecutionID == executionID {
			out = append(out, r)
		}
	}
	return out
}

// wait polls until the execution's record was read, or fails the test after a deadline.
func (e *env) wait(executionID string) record {
	e.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if got := e.records.all(executionID); len(got) > 0 {
			return got[0]
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no record of execution %s on %s", executionID, e.kcfg.Topic(envelope.TopicIngest))
		}
		time.Sleep(10 * time.Millisecond) // poll interval only
	}
}

func jsonEqual(t testing.TB, got json.RawMessage, want string) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("not JSON: %s", got)
	}
	if err := json.Unmarshal([]byte(want), &w); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestAcceptedRecordIsOnTheTopic(t *testing.T) {
	e := newEnv(t)
	id := e.flow(flowOpts{active: true})
	xid := e.accepted(e.do("POST", "/hooks/"+id+"/orders/42?x=1&x=2&y=3", "application/json", `{"order": {"id": 42, "total": 9.5}}`,
		"Authorization", "Bearer caller-credential", "Cookie", "session=abc", "X-Request-Id", "req-1", "X-Multi", "a", "X-Multi", "b"))

	got := e.wait(xid)
	if got.key != xid {
		t.Fatalf("record key %q, want the execution id %q", got.key, xid)
	}
	r := got.rec
	if r.FlowID != id || r.Revision != 1 || r.Trigger != envelope.TriggerWebhook || r.Sync || r.ReceivedAt.IsZero() {
		t.Fatalf("record: %+v", r)
	}
	jsonEqual(t, r.Input, `{"order": {"id": 42, "total": 9.5}}`)
	if r.Request == nil || r.Request.Method != "POST" || r.Request.Path != "/orders/42" {
		t.Fatalf("request: %+v", r.Request)
	}
	if !reflect.DeepEqual(r.Request.Query, map[string][]string{"x": {"1", "2"}, "y": {"3"}}) {
		t.Fatalf("query: %v", r.Request.Query)
	}
	h := r.Request.Headers
	if h["X-Request-Id"] != "req-1" || h["X-Multi"] != "a, b" || h["Content-Type"] != "application/json" {
		t.Fatalf("headers: %v", h)
	}
	for name := range h {
		if strings.EqualFold(name, "Authorization") || strings.EqualFold(name, "Cookie") {
			t.Fatalf("header %s reached the flow: %v", name, h)
		}
	}

	// Ids sort by acceptance time.
	later := e.accepted(e.do("POST", "/hooks/"+id, "application/json", `{}`))
	if later <= xid {
		t.Fatalf("execution ids do not sort by time: %s then %s", xid, later)
	}
}

func TestBodies(t *testing.T) {
	e := newEnv(t)
	id := e.flow(flowOpts{active: true})
	cases := []struct {
		name, method, path, ctype, body string
		want                            string
	}{
		{"json", "POST", "", "application/json; charset=utf-8", `[1, "two"]`, `[1, "two"]`},
		{"json suffix", "POST", "", "application/vnd.partner+json", `{"a": 1}`, `{"a": 1}`},
		{"no content type", "POST", "", "", `{"a": 1}`, `{"a": 1}`},
		{"empty body", "POST", "", "application/json", "", `{}`},
		{"form", "POST", "", "application/x-www-form-urlencoded", "a=1&b=2&b=3&c=%C3%A9", `{"a": "1", "b": ["2", "3"], "c": "é"}`},
		{"text", "POST", "", "text/plain; charset=utf-8", "hello\nworld", `"hello\nworld"`},
		{"xml as text", "POST", "", "text/xml", "<a>1</a>", `"<a>1</a>"`},
		{"get query", "GET", "?q=flowd&tag=a&tag=b", "", "", `{"q": "flowd", "tag": ["a", "b"]}`},
		{"get without query", "GET", "", "", "", `{}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			xid := e.accepted(e.do(tc.method, "/hooks/"+id+tc.path, tc.ctype, tc.body))
			r := e.wait(xid).rec
			jsonEqual(t, r.Input, tc.want)
			if r.Request.Method != tc.method {
				t.Fatalf("method %q", r.Request.Method)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		e := *e
		e.t = t
		r := e.must(400, e.do("POST", "/hooks/"+id, "application/json", "{\n  \"a\": 1,\n}"))
		if got := r.problems(); len(got) != 1 || got[0] != "malformed@" || !strings.Contains(string(r.raw), "line 3") {
			t.Fatalf("malformed JSON: %s", r.raw)
		}
		r = e.must(415, e.do("POST", "/hooks/"+id, "application/octet-stream", "\x00\x01"))
		if got := r.problems(); len(got) != 1 || got[0] != "unsupported_media_type@" {
			t.Fatalf("octet-stream: %s", r.raw)
		}
		e.must(415, e.do("POST", "/hooks/"+id, "application/json", `{}`, "Content-Encoding", "gzip"))
		e.must(405, e.do("PUT", "/hooks/"+id, "application/json", `{}`)) // a method the webhook does not take
	})
}

func TestFlowMateWebhooks(t *testing.T) {
	e := newEnv(t)
	id := e.flow(flowOpts{active: true, payload: &flowdoc.Payload{
		InputParameters:  map[string]any{"firstName": "string", "lastName": "string"},
		OutputParameters: map[string]any{"ID": "number", "active": "boolean"},
	}})
	xid := e.accepted(e.do("POST", "/webhooks/"+id, "application/json", `{"data": {"firstName": "Ada", "lastName": "Lovelace", "extra": true}}`))
	r := e.wait(xid).rec
	jsonEqual(t, r.Input, `{"firstName": "Ada", "lastName": "Lovelace", "extra": true}`)
	if r.FlowID != id || r.Trigger != envelope.TriggerWebhook {
		t.Fatalf("record: %+v", r)
	}

	res := e.must(400, e.do("POST", "/webhooks/"+id, "application/json", `{"firstName": "Ada"}`))
	if got := res.problems(); len(got) != 1 || got[0] != "required@/data" {
		t.Fatalf("without data: %s", res.raw)
	}
	e.must(400, e.do("POST", "/webhooks/"+id, "application/json", `{"data": null}`))
	e.must(400, e.do("POST", "/webhooks/"+id, "application/json", `[1]`))
	e.must(415, e.do("POST", "/webhooks/"+id, "application/x-www-form-urlencoded", `data=1`))

	// Problems point into what the caller sent: under /data.
	res = e.must(422, e.do("POST", "/webhooks/"+id, "application/json", `{"data": {"firstName": 7}}`))
	if got := strings.Join(res.problems(), " "); got != "type@/data/firstName required@/data/lastName" {
		t.Fatalf("problems: %s", res.raw)
	}
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.mutate = func(cfg *ingest.Config) { cfg.BodyLimit = 1 << 10 } })
	id := e.flow(flowOpts{active: true})
	e.accepted(e.do("POST", "/hooks/"+id, "text/plain", strings.Repeat("a", 1000)))

	// Announce a body over the limit and send only the headers: the server must refuse on
	// Content-Length alone (sending the body races the server closing the socket).
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	if _, err := fmt.Fprintf(conn, "POST /hooks/%s HTTP/1.1\r\nHost: flowd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", id, 2048); err != nil {
		t.Fatal(err)
	}
	res, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	raw, _ := io.ReadAll(res.Body)
	if res.StatusCode != 413 || !strings.Contains(string(raw), `"code":"too_large"`) || !strings.Contains(string(raw), "1 KiB") {
		t.Fatalf("%d %s", res.StatusCode, raw)
	}
}

// A client that sends a whole body over the limit reads the 413 and its envelope: the
// connection is not reset while the body is still on its way. Two kinds of client: net/http's,
// which reads the answer while it still sends, and one that sends the whole body before
// reading anything. The bodies are far larger than the socket buffers, so both are mid-upload
// when refused; a reset fails the first one now and then and the second one always.
func TestBodyOverTheLimitIsAnsweredWhileUploading(t *testing.T) {
	e := newEnv(t, func(c *envConfig) { c.mutate = func(cfg *ingest.Config) { cfg.BodyLimit = 1 << 10 } })
	id := e.flow(flowOpts{active: true})
	client := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(client.CloseIdleConnections)
	big := strings.Repeat("a", 16<<20)
	check := func(how, path string, res *http.Response) {
		t.Helper()
		raw, _ := io.ReadAll(res.Body)
		_ = res.Body.Close()
		if res.StatusCode != 413 || res.Header.Get("Content-Type") != "application/json" ||
			string(raw) != `{"errors":[{"code":"too_large","message":"request body is larger than the limit of 1 KiB","path":""}]}` {
			t.Fatalf("POST %s (%s): %d %s %s", path, how, res.StatusCode, res.Header.Get("Content-Type"), raw)
		}
	}
	for _, path := range []string{"/hooks/" + id, "/hooks/" + id + "/sub/path", "/webhooks/" + id} {
		for i := range 3 {
			res, err := client.Post(e.base+path, "application/json", strings.NewReader(big))
			if err != nil {
				t.Fatalf("POST %s (net/http #%d): %v", path, i, err)
			}
			check("net/http", path, res)
		}
		conn, err := net.Dial("tcp", strings.TrimPrefix(e.base, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: flowd\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(big), big); err != nil {
			t.Fatalf("POST %s (whole body first): the connection broke while sending: %v", path, err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatalf("POST %s (whole body first): %v", path, err)
		}
		check("whole body first", path, res)
		_ = conn.Close()
	}
	e.accepted(e.do("POST", "/hooks/"+id, "text/plain", strings.Repeat("a", 1000)))
}

func TestUnknownAndInactiveFlowsAreNotFound(t *testing.T) {
	e := newEnv(t)
	active := e.flow(flowOpts{active: true})
	inactive := e.flow(flowOpts{})
	kafkaFlow := e.flow(flowOpts{active: true, trigger: flowdoc.TypeKafka, config: map[string]any{"topic": "partner"}})
	foreign := e.flow(flowOpts{active: false, owner: "someone-else"})
	stopping := e.flow(flowOpts{})
	e.setStatus(stopping, flowdoc.StatusStopping)

	var bodies []string
	for _, id := range []string{identity.NewID(), inactive, kafkaFlow, foreign, stopping} {
		for _, path := range []string{"/hooks/" + id, "/hooks/" + id + "/x", "/webhooks/" + id} {
			r := e.must(404, e.do("POST", path, "application/json", `{"data": {}}`))
			bodies = append(bodies, string(r.raw))
		}
		if r := e.do("HEAD", "/hooks/"+id, "", ""); r.status != 404 || len(r.raw) != 0 {
			t.Fatalf("HEAD %s: %d %q", id, r.status, r.raw)
		}
	}
	// One answer for all of them: which flows exist is nobody's business.
	for _, b := range bodies {
		if b != bodies[0] {
			t.Fatalf("404 bodies differ: %s vs %s", b, bodies[0])
		}
	}
	if r := e.do("HEAD", "/hooks/"+active, "", ""); r.status != 200 || len(r.raw) != 0 {
		t.Fatalf("HEAD active: %d %q", r.status, r.raw)
	}
}

func TestInputValidation(t *testing.T) {
	e := newEnv(t)
	simple := e.flow(flowOpts{active: true, payload: &flowdoc.Payload{InputParameters: map[string]any{
		"firstName": "string", "age": "integer", "tags": "array", "meta": "any",
		"address": map[string]any{"city": "string", "zip": "string"},
	}}})
	schema := e.flow(flowOpts{active: true, payload: &flowdoc.Payload{InputParameters: map[string]any{
		"type":     "object",
		"required": []any{"email", "items"},
		"properties": map[string]any{
			"email": map[string]any{"type": "string", "format": "email"},
			"n":     map[string]any{"type": "integer", "minimum": 1},
			"items": map[string]any{"type": "array", "items": map[string]any{"type": "object", "required": []any{"sku"}}},
		},
		"additionalProperties": false,
	}}})

	cases := []struct {
		name, flow, body string
		want             string // code@path, sorted by path
	}{
		{"simple: every problem at once", simple, `{"age": "ten", "tags": {}, "address": {"city": 1}}`,
			"type@/address/city required@/address/zip type@/age required@/firstName required@/meta type@/tags"},
		{"simple: not an object", simple, `[]`, "type@"},
		{"schema: formats, ranges, nested, extras", schema, `{"email": "nope", "n": 0, "items": [{"sku": "a"}, {}], "x": 1}`,
			"format@/email required@/items/1/sku range@/n additional_property@/x"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			r := e.must(422, e.do("POST", "/hooks/"+tc.flow, "application/json", tc.body))
			if got := strings.Join(r.problems(), " "); got != tc.want {
				t.Fatalf("problems %q, want %q: %s", got, tc.want, r.raw)
			}
			for _, p := range r.body["errors"].([]any) {
				if p.(map[string]any)["message"] == "" {
					t.Fatalf("problem without a message: %s", r.raw)
				}
			}
		})
	}
	// Extra fields pass the simple form; "any" takes null.
	e.accepted(e.do("POST", "/hooks/"+simple, "application/json",
		`{"firstName": "Ada", "age": 36, "tags": [], "meta": null, "address": {"city": "London", "zip": "W1"}, "extra": 1}`))
	e.accepted(e.do("POST", "/hooks/"+schema, "application/json", `{"email": "ada@example.com", "items": [{"sku": "a"}]}`))
	// A query string is checked like a body.
	r := e.must(422, e.do("GET", "/hooks/"+simple+"?firstName=Ada", "", ""))
	if got := strings.Join(r.problems(), " "); !strings.Contains(got, "required@/age") {
		t.Fatalf("GET problems: %s", r.raw)
	}
}

func TestIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	id := e.flow(flowOpts{active: true})
	other := e.flow(flowOpts{active: true})
	key := "order-" + testrig.Unique("")

	first := e.accepted(e.do("POST", "/hooks/"+id, "application/json", `{"n": 1}`, "Idempotency-Key", key))
	again := e.must(200, e.do("POST", "/hooks/"+id, "application/json", `{"n": 1}`, "Idempotency-Key", key))
	if again.executionID() != first || again.header.Get(ingest.HeaderReplayed) != "true" {
		t.Fatalf("repeat: %s (%v), first %s", again.raw, again.header, first)
	}
	// Keys are per flow.
	elsewhere := e.accepted(e.do("POST", "/hooks/"+other, "application/json", `{"n": 1}`, "Idempotency-Key", key))
	if elsewhere == first {
		t.Fatal("the same key on another flow returned the first flow's execution")
	}
	e.must(400, e.do("POST", "/hooks/"+id, "application/json", `{}`, "Idempotency-Key", strings.Repeat("k", 256)))

	// A fence: one partition keeps order, so once a later record is read every record the
	// repeat could have produced before it would have been read too.
	fence := e.accepted(e.do("POST", "/hooks/"+id, "application/json", `{"fence": true}`))
	e.wait(fence)
	if n := len(e.records.all(first)); n != 1 {
		t.Fatalf("%d records of execution %s, want exactly 1", n, first)
	}
}

func TestHMACAuth(t *testing.T) {
	e := newEnv(t)
	apiKey := e.connection("api_key", "key", "hmac-secret-1", e.owner)
	basic := e.connection("basic", "password", "hmac-secret-2", e.owner)
	prefixed := e.flow(flowOpts{active: true, config: map[string]any{
		"auth": map[string]any{"type": "hmac", "connection": apiKey, "header": "X-Hub-Signature-256", "prefix": "sha256="}}})
	plain := e.flow(flowOpts{active: true, config: map[string]any{"auth": map[string]any{"type": "hmac", "connection": basic}}})

	sign := func(secret, body string) string {
		m := hmac.New(sha256.New, []byte(secret))
		m.Write([]byte(body))
		return hex.EncodeToString(m.Sum(nil))
	}
	body := `{"event": "push"}`
	xid := e.accepted(e.do("POST", "/hooks/"+prefixed, "application/json", body, "X-Hub-Signature-256", "sha256="+sign("hmac-secret-1", body)))
	jsonEqual(t, e.wait(xid).rec.Input, body)
	e.accepted(e.do("POST", "/hooks/"+plain, "application/json", body, "X-Signature", sign("hmac-secret-2", body)))

	refused := []struct {
		name, flow string
		headers    []string
	}{
		{"missing", prefixed, nil},
		{"wrong secret", prefixed, []string{"X-Hub-Signature-256", "sha256=" + sign("other", body)}},
		{"signature of another body", prefixed, []string{"X-Hub-Signature-256", "sha256=" + sign("hmac-secret-1", body+" ")}},
		{"no prefix", prefixed, []string{"X-Hub-Signature-256", sign("hmac-secret-1", body)}},
		{"not hex", plain, []string{"X-Signature", "zz"}},
		{"default header missing", plain, []string{"X-Hub-Signature-256", sign("hmac-secret-2", body)}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			r := e.must(401, e.do("POST", "/hooks/"+tc.flow, "application/json", body, tc.headers...))
			if got := r.problems(); len(got) != 1 || got[0] != "unauthorized@" {
				t.Fatalf("401 body: %s", r.raw)
			}
		})
	}

	// A connection the flow's owners may not use makes the hook refuse everything.
	foreign := e.connection("api_key", "key", "theirs", "someone-else")
	stolen := e.flow(flowOpts{active: true, config: map[string]any{"auth": map[string]any{"type": "hmac", "connection": foreign}}})
	r := e.must(503, e.do("POST", "/hooks/"+stolen, "application/json", body, "X-Signature", sign("theirs", body)))
	if got := r.problems(); len(got) != 1 || got[0] != "flow_misconfigured@" || strings.Contains(string(r.raw), foreign) {
		t.Fatalf("foreign connection: %s", r.raw)
	}
}

func TestBearerAuth(t *testing.T) {
	e := newEnv(t)
	conn := e.connection("bearer", "token", "partner-token-123", e.owner)
	id := e.flow(flowOpts{active: true, config: map[string]any{"auth": map[string]any{"type": "bearer", "connection": conn}}})

	xid := e.accepted(e.do("POST", "/hooks/"+id, "application/json", `{}`, "Authorization", "Bearer partner-token-123"))
	if h := e.wait(xid).rec.Request.Headers; h["Authorization"] != "" {
		t.Fatalf("the token reached the flow: %v", h)
	}
	for _, auth := range []string{"", "Bearer partner-token-12", "Bearer partner-token-1234", "Basic cGFydG5lcjp4", "Bearer"} {
		var hs []string
		if auth != "" {
			hs = []string{"Authorization", auth}
		}
		r := e.must(401, e.do("POST", "/hooks/"+id, "application/json", `{}`, hs...))
		if !strings.HasPrefix(r.header.Get("WWW-Authenticate"), "Bearer") || r.problems()[0] != "unauthorized@" {
			t.Fatalf("%q: %v %s", auth, r.header, r.raw)
		}
	}
	// A token in clear in the flow is refused, not used.
	inline := e.flow(flowOpts{active: true, config: map[string]any{"auth": map[string]any{"type": "bearer", "connection": conn, "token": "x"}}})
	e.must(503, e.do("POST", "/hooks/"+inline, "application/json", `{}`, "Authorization", "Bearer x"))
}

func TestSyncMode(t *testing.T) {
	e := newEnv(t)
	simple := e.flow(flowOpts{active: true,
		config:  map[string]any{"mode": "sync", "timeoutMs": 20000},
		payload: &flowdoc.Payload{OutputParameters: map[string]any{"ID": "number", "active": "boolean", "owner": map[string]any{"name": "string"}}}})
	schema := e.flow(flowOpts{active: true,
		config: map[string]any{"mode": "sync"},
		payload: &flowdoc.Payload{OutputParameters: map[string]any{"type": "object", "properties": map[string]any{
			"items": map[string]any{"type": "array", "items": map[string]any{"properties": map[string]any{"sku": map[string]any{"type": "string"}}}},
		}}}})
	free := e.flow(flowOpts{active: true, config: map[string]any{"mode": "sync"}})

	cases := []struct {
		name, flow string
		reply      envelope.Reply
		wantStatus int
		wantBody   string
	}{
		{"simple form shapes the body", simple,
			envelope.Reply{Status: 201, Headers: map[string]string{"X-Flow": "yes"}, Body: json.RawMessage(`{"ID": 7, "active": true, "secret": "x", "owner": {"name": "Ada", "password": "p"}}`)},
			201, `{"ID": 7, "active": true, "owner": {"name": "Ada"}}`},
		{"json schema shapes array items", schema,
			envelope.Reply{Body: json.RawMessage(`{"items": [{"sku": "a", "cost": 1}], "debug": true}`)},
			200, `{"items": [{"sku": "a"}]}`},
		{"no output contract", free,
			envelope.Reply{Status: 200, Body: json.RawMessage(`{"anything": [1, 2]}`)},
			200, `{"anything": [1, 2]}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := *e
			e.t = t
			// Answer as the router would once the record shows up: through the store's
			// per-execution reply list.
			go func() {
				deadline := time.Now().Add(30 * time.Second)
				for time.Now().Before(deadline) {
					for _, r := range e.records.recsOf(tc.flow) {
						if r.rec.Sync {
							if err := e.st.PushReply(context.Background(), r.rec.ExecutionID, tc.reply, time.Minute); err != nil {
								t.Errorf("push reply: %v", err)
							}
							return
						}
					}
					time.Sleep(10 * time.Millisecond) // poll interval only
				}
			}()
			r := e.do("POST", "/hooks/"+tc.flow, "application/json", `{"q": 1}`)
			if r.status != tc.wantStatus {
				t.Fatalf("status %d: %s", r.status, r.raw)
			}
			jsonEqual(t, r.raw, tc.wantBody)
			xid := r.header.Get(ingest.HeaderExecutionID)
			if len(xid) != 26 || e.wait(xid).rec.FlowID != tc.flow {
				t.Fatalf("execution header %q", xid)
			}
			for k, v := range tc.reply.Headers {
				if r.header.Get(k) != v {
					t.Fatalf("reply header %s: %q", k, r.header.Get(k))
				}
			}
		})
	}
}

func TestSyncTimeout(t *testing.T) {
	e := newEnv(t)
	id := e.flow(flowOpts{active: true, config: map[string]any{"mode": "sync", "timeoutMs": 300}})
	r := e.must(504, e.do("POST", "/hooks/"+id, "application/json", `{}`))
	xid := r.header.Get(ingest.HeaderExecutionID)
	if got := r.problems(); len(got) != 1 || got[0] != "timeout@" || xid == "" || !strings.Contains(string(r.raw), xid) {
		t.Fatalf("504: %v %s", r.header, r.raw)
	}
	// The execution carries on: its record is on the topic, marked synchronous.
	if rec := e.wait(xid).rec; !rec.Sync || rec.FlowID != id {
		t.Fatalf("record: %+v", rec)
	}
}

func TestFlowChangesArriveThroughEvents(t *testing.T) {
	e := newEnv(t)
	id := e.flow(flowOpts{active: true})
	e.accepted(e.do("POST", "/hooks/"+id, "application/json", `{}`))
	if r := e.do("HEAD", "/hooks/"+id, "", ""); r.status != 200 {
		t.Fatalf("HEAD active: %d", r.status)
	}

	// Stopped in the store only: the cache (TTL 1h here) still serves the active flow.
	e.setStatus(id, flowdoc.StatusInactive)
	e.accepted(e.do("POST", "/hooks/"+id, "application/json", `{}`))

	// The control plane's flow.stopped event makes every ingest process reload it. The event
	// is published again while waiting: the broadcast consumer reads from its start-up offset
	// on and might not have resolved it yet.
	w := kafkax.NewProducer(e.kcfg)
	defer func() { _ = w.Close() }()
	pub := events.NewKafkaPublisher(w, e.kcfg)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := pub.Publish(context.Background(), events.Event{Type: events.FlowStopped, FlowID: id, Status: flowdoc.StatusInactive}); err != nil {
			t.Fatal(err)
		}
		if e.do("HEAD", "/hooks/"+id, "", "").status == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the hook still answers after flow.stopped")
		}
		time.Sleep(200 * time.Millisecond) // poll interval only
	}
	e.must(404, e.do("POST", "/hooks/"+id, "application/json", `{}`))

	// Started again: the next event opens it without a restart either.
	e.setStatus(id, flowdoc.StatusActive)
	if err := pub.Publish(context.Background(), events.Event{Type: events.FlowStarted, FlowID: id, Status: flowdoc.StatusActive}); err != nil {
		t.Fatal(err)
	}
	for e.do("HEAD", "/hooks/"+id, "", "").status != 200 {
		if time.Now().After(deadline) {
			t.Fatal("the hook stays closed after flow.started")
		}
		time.Sleep(50 * time.Millisecond) // poll interval only
	}
	e.accepted(e.do("POST", "/hooks/"+id, "application/json", `{}`))
}

// privateBroker is a Kafka broker of this test alone, started with tools/rig/kafka.sh, that
// the test may stop and start again on the same port and data.
type privateBroker struct {
	t   *testing.T
	dir string
}

func (b *privateBroker) run(verb string) {
	b.t.Helper()
	out, err := exec.Command("../tools/rig/kafka.sh", verb, b.dir).CombinedOutput()
	if err != nil {
		b.t.Fatalf("kafka.sh %s: %v\n%s", verb, err, out)
	}
}

func (b *privateBroker) addr() string {
	b.t.Helper()
	port, err := os.ReadFile(filepath.Join(b.dir, "port"))
	if err != nil {
		b.t.Fatal(err)
	}
	return "127.0.0.1:" + strings.TrimSpace(string(port))
}

func TestBrokerOutage(t *testing.T) {
	testrig.Kafka(t) // the rig provides Java and the broker's jars; outside it, skip
	if testing.Short() {
		t.Skip("starts its own broker twice")
	}
	b := &privateBroker{t: t, dir: filepath.Join(t.TempDir(), "kafka")}
	b.run("start")
	t.Cleanup(func() { _ = exec.Command("../tools/rig/kafka.sh", "stop", b.dir).Run() })
	addr := b.addr()
	e := newEnv(t, func(c *envConfig) {
		c.brokers = []string{addr}
		c.mutate = func(cfg *ingest.Config) {
			cfg.ProduceTimeout = 2 * time.Second
			cfg.BreakerCooldown = 300 * time.Millisecond
			cfg.RetryAfter = time.Second
		}
	})
	id := e.flow(flowOpts{active: true})
	before := e.accepted(e.do("POST", "/hooks/"+id, "application/json", `{"phase": "before"}`))
	e.wait(before)

	b.run("stop")
	// While the broker is away every answer is a 503 with Retry-After, never a 2xx: for a
	// while, from several clients at once, with and without an idempotency key.
	key := "outage-" + testrig.Unique("")
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	stopAt := time.Now().Add(4 * time.Second)
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stopAt) {
				var hs []string
				if w == 0 {
					hs = []string{"Idempotency-Key", key}
				}
				r, err := e.try("POST", "/hooks/"+id, "application/json", `{"phase": "outage"}`, hs...)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				statuses[r.status]++
				mu.Unlock()
				if r.status != 503 || r.header.Get("Retry-After") != "1" || strings.Join(r.problems(), " ") != "unavailable@" {
					t.Errorf("during the outage: %d %v %s", r.status, r.header, r.raw)
					return
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("answers during the outage: %v", statuses)

	// Same port, same data: the same server recovers without a restart.
	b.run("start")
	if b.addr() != addr {
		t.Fatalf("the broker came back on %s, not %s", b.addr(), addr)
	}
	back := time.Now()
	deadline := back.Add(90 * time.Second)
	var after string
	for after == "" {
		r := e.do("POST", "/hooks/"+id, "application/json", `{"phase": "after"}`)
		switch {
		case r.status == 202:
			after = e.accepted(r)
		case r.status != 503:
			t.Fatalf("while recovering: %d %s", r.status, r.raw)
		case time.Now().After(deadline):
			t.Fatal("ingest did not recover after the broker returned")
		default:
			time.Sleep(100 * time.Millisecond) // poll interval only
		}
	}
	t.Logf("accepting again %s after the broker answered", time.Since(back).Round(time.Millisecond))
	// A fresh reader: the test's collector may still be backing off from the outage.
	e.records = collect(t, e.kcfg)
	e.wait(after)
	// The key used during the outage was released: its retry goes through now.
	e.accepted(e.do("POST", "/hooks/"+id, "application/json", `{"phase": "outage"}`, "Idempotency-Key", key))
	// What was acknowledged before the outage survived it.
	if len(e.records.all(before)) != 1 {
		t.Fatalf("the record acknowledged before the outage is missing")
	}
}

// recsOf returns the records of one flow seen so far.
func (c *collector) recsOf(flowID string) []record {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []record
	for _, r := range c.recs {
		if r.rec.FlowID == flowID {
			out = append(out, r)
		}
	}
	return out
}

// BenchmarkIngest posts webhooks from parallel clients over real connections; "baseline" is
// the same round trip to /healthz, so the ratio is what accepting a webhook costs (lookup,
// record encoding, the acks=all produce) on top of HTTP. Not run by make test.
func BenchmarkIngest(b *testing.B) {
	e := newEnv(b, func(c *envConfig) {
		c.mutate = func(cfg *ingest.Config) { cfg.Log = slog.New(slog.NewTextHandler(io.Discard, nil)) }
	})
	id := e.flow(flowOpts{active: true, payload: &flowdoc.Payload{InputParameters: map[string]any{"firstName": "string", "n": "integer"}}})
	body := `{"firstName": "Ada", "n": 1, "note": "` + strings.Repeat("x", 512) + `"}`
	post := func(path string) func(pb *testing.PB) {
		return func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest("POST", e.base+path, strings.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				res, err := e.client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
				if res.StatusCode != 202 && res.StatusCode != 200 {
					b.Errorf("status %d", res.StatusCode)
					return
				}
			}
		}
	}
	b.Run("baseline", func(b *testing.B) {
		b.SetParallelism(16)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				res, err := e.client.Get(e.base + "/healthz")
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, res.Body)
				_ = res.Body.Close()
			}
		})
	})
	b.Run("hook", func(b *testing.B) {
		b.SetParallelism(16)
		b.SetBytes(int64(len(body)))
		b.RunParallel(post("/hooks/" + id))
	})
}

// A webhook URL answers a method it does not take with 405 and Allow (it was a 404, as if the
// flow did not exist), in the usual error shape.
func TestWebhookMethodNotAllowed(t *testing.T) {
	e := newEnv(t)
	id := e.flow(flowOpts{active: true})
	for _, c := range []struct{ method, path, allow string }{
		{"PUT", "/hooks/" + id, "GET, POST, HEAD"},
		{"DELETE", "/hooks/" + id + "/orders/1", "GET, POST, HEAD"},
		{"GET", "/webhooks/" + id, "POST"},
	} {
		r := e.do(c.method, c.path, "application/json", `{}`)
		if r.status != 405 || r.header.Get("Allow") != c.allow || strings.Join(r.problems(), " ") != "method_not_allowed@" {
			t.Errorf("%s %s: %d Allow %q %s", c.method, c.path, r.status, r.header.Get("Allow"), r.raw)
		}
	}
	if r := e.do("PUT", "/nowhere", "", ""); r.status != 404 {
		t.Errorf("PUT /nowhere: %d %s", r.status, r.raw)
	}
}
