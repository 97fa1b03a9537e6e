package controlplane_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/connectors/catalog"
	"github.com/flowd/flowd/controlplane"
	"github.com/flowd/flowd/internal/deadletters"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/events"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/openapitest"
	"github.com/flowd/flowd/internal/outbox"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// env is one API instance on the real broker and redis-server, isolated by unique prefixes.
type env struct {
	t      *testing.T
	app    *fiber.App
	rdb    *redis.Client
	st     *store.Store
	kcfg   kafkax.Config
	admin  string
	prefix string
	keys   *secrets.Keyring
	// dls serves the dead-letter routes when the env was made withDeadLetters.
	dls *deadletters.Service
}

const testBodyLimit = 64 << 10

// envOption adjusts newEnv; without options the env logs to nowhere.
type envOption func(*envOptions)

type envOptions struct {
	log         *slog.Logger
	catalog     *catalog.Catalog
	deadLetters bool
	// now, auditRetention and store set the Config's clock, audit retention and store.
	now            func() time.Time
	auditRetention time.Duration
	store          func(*store.Store) controlplane.Store
}

// withCatalog installs connectors, so flows are validated against their manifests.
func withCatalog(c *catalog.Catalog) envOption { return func(o *envOptions) { o.catalog = c } }

// withDeadLetters serves the dead-letter routes (replays go to the env's topics).
func withDeadLetters() envOption { return func(o *envOptions) { o.deadLetters = true } }

// withLog makes the env's API log through l (to search the logs, say).
func withLog(l *slog.Logger) envOption { return func(o *envOptions) { o.log = l } }

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	o := envOptions{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	for _, opt := range opts {
		opt(&o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	opt, err := redis.ParseURL(testrig.Redis(t))
	if err != nil {
		t.Fatal(err)
	}
	brokers := testrig.Kafka(t)
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := testrig.Unique("t") + ":"
	st := store.New(rdb, prefix)
	kcfg := kafkax.Config{Brokers: brokers, TopicPrefix: testrig.Unique("t") + ".", Partitions: 1, RecordKeys: testrig.RecordKeys()}
	if err := kafkax.EnsureTopics(ctx, kcfg, events.TopicName); err != nil {
		t.Fatalf("ensure topics: %v", err)
	}
	w := kafkax.NewProducer(kcfg)
	t.Cleanup(func() { _ = w.Close() })
	log := o.log
	relay := outbox.New(st, events.NewKafkaPublisher(w, kcfg), log)
	rctx, stop := context.WithCancel(context.Background())
	go relay.Run(rctx)
	t.Cleanup(stop)
	admin := "fld_admin_" + testrig.Unique("")
	if _, err := controlplane.EnsureAdmin(ctx, st, admin); err != nil {
		t.Fatalf("bootstrap admin: %v", err)
	}
	keys, err := secrets.ParseKeys("k1:" + secrets.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	cfg := controlplane.Config{Store: st, Relay: relay, Log: log, BodyLimit: testBodyLimit, AutoConfirm: true, Secrets: keys, Catalog: o.catalog,
		Now: o.now, AuditRetention: o.auditRetention}
	if o.store != nil {
		cfg.Store = o.store(st)
	}
	var dls *deadletters.Service
	if o.deadLetters {
		if err := kafkax.EnsureTopics(ctx, kcfg, envelope.TopicIngest, envelope.TopicResults, envelope.PoolTopic("")); err != nil {
			t.Fatalf("ensure topics: %v", err)
		}
		if dls, err = deadletters.New(deadletters.Config{Kafka: kcfg, Store: st, Writer: w, Log: log}); err != nil {
			t.Fatal(err)
		}
		cfg.DeadLetters = dls
	}
	app := controlplane.New(cfg)
	return &env{t: t, app: app, rdb: rdb, st: st, kcfg: kcfg, admin: admin, prefix: prefix, keys: keys, dls: dls}
}

// on returns the env reporting to a subtest's t.
func (e *env) on(t *testing.T) *env {
	c := *e
	c.t = t
	return &c
}

type resp struct {
	status int
	header http.Header
	body   map[string]any
	raw    []byte
}

func (r resp) data() map[string]any {
	d, _ := r.body["data"].(map[string]any)
	return d
}

func (r resp) list() []any {
	d, _ := r.body["data"].([]any)
	return d
}

func (r resp) errCodes() []string {
	var out []string
	errs, _ := r.body["errors"].([]any)
	for _, e := range errs {
		m := e.(map[string]any)
		out = append(out, fmt.Sprintf("%v@%v", m["code"], m["path"]))
	}
	return out
}

func (e *env) call(method, path, token string, body any, headers ...string) resp {
	e.t.Helper()
	var reqBody []byte
	ctype := "application/json"
	switch b := body.(type) {
	case nil:
	case string:
		reqBody = []byte(b)
	case []byte:
		reqBody = b
	default:
		raw, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		reqBody = raw
	}
	req := httptest.NewRequest(method, path, bytes.NewReader(reqBody))
	if body != nil {
		req.Header.Set("Content-Type", ctype)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := e.app.Test(req, 30_000)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = res.Body.Close() }()
	raw, _ := io.ReadAll(res.Body)
	// Every exchange of the API tests is checked against the OpenAPI document.
	openapitest.Validate(e.t, openapitest.Exchange{Method: method, Target: path, Header: req.Header, Body: reqBody,
		Status: res.StatusCode, ResponseHeader: res.Header, ResponseBody: raw})
	r := resp{status: res.StatusCode, header: res.Header, raw: raw}
	if len(raw) > 0 && raw[0] == '{' {
		if err := json.Unmarshal(raw, &r.body); err != nil {
			e.t.Fatalf("%s %s: response is not JSON: %s", method, path, raw)
		}
	}
	return r
}

func (e *env) must(want int, r resp) resp {
	e.t.Helper()
	if r.status != want {
		e.t.Fatalf("status %d, want %d: %s", r.status, want, r.raw)
	}
	return r
}

// user creates a tenant member with perms and returns (userID, token).
func (e *env) user(tenant, username string, perms ...string) (string, string) {
	e.t.Helper()
	body := map[string]any{"username": username + testrig.Unique("-"), "tenant": tenant}
	if perms != nil {
		body["permissions"] = perms
	}
	u := e.must(201, e.call("POST", "/api/v1/users", e.admin, body)).data()
	tok := e.must(201, e.call("POST", "/api/v1/users/"+u["id"].(string)+"/tokens", e.admin, map[string]any{"name": "test"})).data()
	return u["id"].(string), tok["token"].(string)
}

func (e *env) tenant(name string) string {
	e.t.Helper()
	return e.must(201, e.call("POST", "/api/v1/tenants", e.admin, map[string]any{"name": name + testrig.Unique("-")})).data()["id"].(string)
}

func readmeFlow(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile("../deployments/examples/hello-flow.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// eventsOn reads flowd.events until want events for flowID were seen, or the deadline.
func (e *env) eventsFor(flowID string, want ...string) []string {
	e.t.Helper()
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: e.kcfg.Brokers, Topic: e.kcfg.Topic(events.TopicName), Partition: 0, MaxWait: 100 * time.Millisecond})
	defer func() { _ = r.Close() }()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var got []string
	for len(got) < len(want) {
		m, err := r.ReadMessage(ctx)
		if err != nil {
			e.t.Fatalf("read events: got %v, want %v: %v", got, want, err)
		}
		var ev events.Event
		if err := json.Unmarshal(m.Value, &ev); err != nil {
			e.t.Fatalf("event is not JSON: %s", m.Value)
		}
		if ev.FlowID == flowID && string(m.Key) == flowID {
			got = append(got, ev.Type)
		}
	}
	return got
}

func TestFlowLifecycleFromTheREADME(t *testing.T) {
	e := newEnv(t)
	created := e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))).data()
	id := created["id"].(string)
	if created["status"] != "inactive" || created["revision"] != float64(1) || created["type"] != "webhook" {
		t.Fatalf("new flow: %v", created)
	}
	e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t)))

	list := e.must(200, e.call("GET", "/api/v1/flows?page[size]=1", e.admin, nil))
	meta := list.body["meta"].(map[string]any)
	if len(list.list()) != 1 || meta["total"] != float64(2) || meta["totalPages"] != float64(2) || meta["perPage"] != float64(1) || meta["page"] != float64(1) {
		t.Fatalf("page[size]=1: %s", list.raw)
	}

	started := e.must(200, e.call("POST", "/api/v1/flows/"+id+"/start", e.admin, nil)).data()
	if started["status"] != "active" {
		t.Fatalf("after start: %v", started["status"])
	}
	if got := e.eventsFor(id, "flow.created", "flow.starting", "flow.started"); strings.Join(got, ",") != "flow.created,flow.starting,flow.started" {
		t.Fatalf("events: %v", got)
	}
	active := e.must(200, e.call("GET", "/flows?filter[status]=1", e.admin, nil)).list()
	if len(active) != 1 || active[0].(map[string]any)["id"] != id {
		t.Fatalf("FlowMate filter[status]=1: %v", active)
	}

	r := e.must(409, e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"description": "changed"}))
	if r.errCodes()[0] != "flow_not_inactive@/status" {
		t.Fatalf("409 body: %s", r.raw)
	}
	e.must(409, e.call("DELETE", "/api/v1/flows/"+id, e.admin, nil))

	stopped := e.must(200, e.call("POST", "/api/v1/flows/"+id+"/stop", e.admin, nil)).data()
	if stopped["status"] != "inactive" {
		t.Fatalf("after stop: %v", stopped["status"])
	}
	patched := e.must(200, e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"description": "changed"})).data()
	if patched["revision"] != float64(2) || patched["description"] != "changed" || patched["name"] != "hello-flow" {
		t.Fatalf("after patch: %v", patched)
	}
	revs := e.must(200, e.call("GET", "/api/v1/flows/"+id+"/revisions", e.admin, nil)).list()
	if len(revs) != 2 || revs[1].(map[string]any)["revision"] != float64(2) || revs[0].(map[string]any)["description"] == "changed" {
		t.Fatalf("revisions: %v", revs)
	}
	rev1 := e.must(200, e.call("GET", "/api/v1/flows/"+id+"/revisions/1", e.admin, nil)).data()
	if rev1["description"] == "changed" {
		t.Fatal("revision 1 was rewritten")
	}
	if got := e.eventsFor(id, "flow.created", "flow.starting", "flow.started", "flow.stopping", "flow.stopped", "flow.updated"); got[5] != "flow.updated" {
		t.Fatalf("events: %v", got)
	}
	e.must(204, e.call("DELETE", "/api/v1/flows/"+id, e.admin, nil))
	e.must(404, e.call("GET", "/api/v1/flows/"+id, e.admin, nil))
}

func TestTenantsNeverSeeEachOthersFlows(t *testing.T) {
	e := newEnv(t)
	ta, tb := e.tenant("acme"), e.tenant("globex")
	aliceID, alice := e.user(ta, "alice")
	_, mallory := e.user(tb, "mallory")
	_, readOnly := e.user(ta, "reader", "flows.read")

	id := e.must(201, e.call("POST", "/api/v1/flows", alice, readmeFlow(t))).data()["id"].(string)
	for _, path := range []string{"/api/v1/flows/" + id, "/flows/" + id, "/api/v1/flows/" + id + "/revisions", "/api/v1/flows/" + id + "/revisions/1"} {
		r := e.must(404, e.call("GET", path, mallory, nil))
		if !strings.Contains(string(r.raw), "not_found") {
			t.Fatalf("%s: %s", path, r.raw)
		}
	}
	e.must(404, e.call("PATCH", "/api/v1/flows/"+id, mallory, map[string]any{"name": "mine"}))
	e.must(404, e.call("DELETE", "/api/v1/flows/"+id, mallory, nil))
	e.must(404, e.call("POST", "/api/v1/flows/"+id+"/start", mallory, nil))
	for _, q := range []string{"", "?filter[user]=" + aliceID, "?filter[user]=" + aliceID + "&filter[status]=inactive"} {
		if l := e.must(200, e.call("GET", "/api/v1/flows"+q, mallory, nil)); len(l.list()) != 0 || l.body["meta"].(map[string]any)["total"] != float64(0) {
			t.Fatalf("mallory lists %q: %s", q, l.raw)
		}
	}
	// Same tenant: visible through tenant ownership, but read-only.
	if l := e.must(200, e.call("GET", "/api/v1/flows?filter[user]="+aliceID, readOnly, nil)).list(); len(l) != 1 {
		t.Fatalf("tenant member lists %d flows", len(l))
	}
	r := e.must(403, e.call("PATCH", "/api/v1/flows/"+id, readOnly, map[string]any{"name": "x"}))
	if r.errCodes()[0] != "forbidden@" {
		t.Fatalf("403 body: %s", r.raw)
	}
	// Nobody plants a flow in another tenant.
	doc := map[string]any{}
	_ = json.Unmarshal(readmeFlow(t), &doc)
	doc["owners"] = []any{map[string]any{"id": ta, "type": "tenant"}}
	r = e.must(400, e.call("POST", "/api/v1/flows", mallory, doc))
	if r.errCodes()[0] != "forbidden_owner@/owners/0" {
		t.Fatalf("planting: %s", r.raw)
	}
	// Users of another tenant are invisible too.
	e.must(404, e.call("GET", "/api/v1/users/"+aliceID, mallory, nil))
	e.must(401, e.call("GET", "/api/v1/flows", "fld_nope", nil))
	e.must(401, e.call("GET", "/api/v1/flows", "", nil))
}

func TestBadFlowsAreRejectedAndChangeNothing(t *testing.T) {
	e := newEnv(t)
	id := e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))).data()["id"].(string)
	before := e.snapshot()

	node := func(id, typ string) map[string]any {
		n := map[string]any{"id": id, "type": typ}
		if typ == "action" {
			n["connector"], n["action"] = "http", "request"
		}
		return n
	}
	edge := func(s, t string, port ...string) map[string]any {
		m := map[string]any{"source": s, "target": t}
		if len(port) > 0 {
			m["port"] = port[0]
		}
		return m
	}
	flow := func(nodes []any, edges []any) map[string]any {
		return map[string]any{"name": "bad", "graph": map[string]any{"nodes": nodes, "edges": edges}}
	}
	hook := node("hook", "trigger.webhook")
	cases := []struct {
		name, want string
		body       any
	}{
		{"dangling edge", "unknown_node@/graph/edges/0/target", flow([]any{hook}, []any{edge("hook", "ghost")})},
		{"cycle", "cycle@", flow([]any{hook, node("a", "action"), node("b", "action")}, []any{edge("hook", "a"), edge("a", "b"), edge("b", "a")})},
		{"duplicate node id", "duplicate_node_id@/graph/nodes/2/id", flow([]any{hook, node("a", "action"), node("a", "action")}, []any{edge("hook", "a")})},
		{"unknown node type", "@/graph/nodes/1/type", flow([]any{hook, node("a", "teleport")}, []any{edge("hook", "a")})},
		{"invalid port", "invalid_port@/graph/edges/1/port", flow([]any{hook, map[string]any{"id": "c", "type": "if", "config": map[string]any{"condition": "input.x > 1"}}, node("a", "action")}, []any{edge("hook", "c"), edge("c", "a", "maybe")})},
		{"two triggers", "multiple_triggers@/graph/nodes/1", flow([]any{hook, node("hook2", "trigger.webhook"), node("a", "action")}, []any{edge("hook", "a")})},
		{"unreachable node", "unreachable@/graph/nodes/2/id", flow([]any{hook, node("a", "action"), node("island", "action")}, []any{edge("hook", "a")})},
		{"malformed JSON", "malformed@", `{"name": "x", "graph": {`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := e.on(t)
			for _, call := range []struct{ method, path string }{{"POST", "/api/v1/flows"}, {"PATCH", "/api/v1/flows/" + id}} {
				r := e.must(400, e.call(call.method, call.path, e.admin, tc.body))
				codes := strings.Join(r.errCodes(), " ")
				if !strings.Contains(codes, tc.want) {
					t.Fatalf("%s: want %s among %s", call.method, tc.want, codes)
				}
				for _, pr := range r.body["errors"].([]any) {
					if pr.(map[string]any)["message"] == "" {
						t.Fatalf("problem without message: %s", r.raw)
					}
				}
			}
		})
	}
	t.Run("body over the size limit", func(t *testing.T) {
		// Over a real socket: fiber's in-memory test transport refuses oversized bodies itself.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() { _ = e.app.Listener(ln) }()
		t.Cleanup(func() { _ = e.app.Shutdown() })
		// Announce a body over the limit and send only its headers: the server must refuse on
		// Content-Length alone. (Sending the whole body races the server closing the socket.)
		conn, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = conn.Close() }()
		_, err = fmt.Fprintf(conn, "POST /api/v1/flows HTTP/1.1\r\nHost: flowd\r\nAuthorization: Bearer %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", e.admin, testBodyLimit+1)
		if err != nil {
			t.Fatal(err)
		}
		res, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = res.Body.Close() }()
		raw, _ := io.ReadAll(res.Body)
		if res.StatusCode != 413 || !strings.Contains(string(raw), `"code":"too_large"`) {
			t.Fatalf("%d %s", res.StatusCode, raw)
		}
	})
	t.Run("several problems at once", func(t *testing.T) {
		e := e.on(t)
		r := e.must(400, e.call("POST", "/api/v1/flows", e.admin, flow([]any{hook, node("a", "action"), node("a", "action"), node("hook2", "trigger.webhook")}, []any{edge("hook", "ghost")})))
		if len(r.errCodes()) < 3 {
			t.Fatalf("want every problem, got %v", r.errCodes())
		}
	})
	if after := e.snapshot(); after != before {
		t.Fatalf("stored state changed after rejected requests:\nbefore %s\nafter  %s", before, after)
	}
}

// snapshot is every key and value under this env's prefix except the event outbox.
func (e *env) snapshot() string {
	e.t.Helper()
	ctx := context.Background()
	keys, err := e.rdb.Keys(ctx, e.prefix+"*").Result()
	if err != nil {
		e.t.Fatal(err)
	}
	var b strings.Builder
	sort.Strings(keys)
	n := 0
	for _, k := range keys {
		if strings.Contains(k, "outbox") {
			continue
		}
		n++
		typ := e.rdb.Type(ctx, k).Val()
		var v any
		switch typ {
		case "string":
			v = e.rdb.Get(ctx, k).Val()
		case "hash":
			v = e.rdb.HGetAll(ctx, k).Val()
		case "set":
			v = e.rdb.SMembers(ctx, k).Val()
		case "zset":
			v = e.rdb.ZRange(ctx, k, 0, -1).Val()
		case "stream":
			v = e.rdb.XRange(ctx, k, "-", "+").Val()
		}
		fmt.Fprintf(&b, "%s=%v;", k, v)
	}
	return fmt.Sprint(n, ":", hashOf(b.String()))
}

func hashOf(s string) string {
	var h uint64 = 14695981039346656037
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 1099511628211
	}
	return fmt.Sprintf("%x", h)
}

func TestConcurrentPatchesNeverLoseAnUpdate(t *testing.T) {
	e := newEnv(t)
	id := e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))).data()["id"].(string)
	const n = 8
	// With If-Match on the same revision: exactly one wins, the rest get 412.
	var wg sync.WaitGroup
	statuses := make([]int, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			statuses[i] = e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"description": fmt.Sprint("v", i)}, "If-Match", `"1"`).status
		}()
	}
	wg.Wait()
	won := 0
	for _, s := range statuses {
		switch s {
		case 200:
			won++
		case 412:
		default:
			t.Fatalf("unexpected status %d", s)
		}
	}
	if won != 1 {
		t.Fatalf("%d PATCHes with If-Match: 1 won, want exactly 1 (%v)", won, statuses)
	}
	// Without If-Match: each one applies on top of the latest, none is lost.
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e.must(200, e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"settings": map[string]any{fmt.Sprint("k", i): i}}))
		}()
	}
	wg.Wait()
	f := e.must(200, e.call("GET", "/api/v1/flows/"+id, e.admin, nil)).data()
	if f["revision"] != float64(2+n) || len(f["settings"].(map[string]any)) != n {
		t.Fatalf("after %d concurrent PATCHes: revision %v, settings %v", n, f["revision"], f["settings"])
	}
}

// DELETE with If-Match deletes only the revision the caller saw: a flow edited since stays.
func TestDeleteHonoursIfMatch(t *testing.T) {
	e := newEnv(t)
	id := e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))).data()["id"].(string)
	e.must(200, e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"description": "edited"}))
	r := e.call("DELETE", "/api/v1/flows/"+id, e.admin, nil, "If-Match", `"1"`)
	if r.status != 412 || !strings.Contains(string(r.raw), "revision_mismatch") {
		t.Fatalf("stale If-Match: %d %s", r.status, r.raw)
	}
	if f := e.must(200, e.call("GET", "/api/v1/flows/"+id, e.admin, nil)).data(); f["description"] != "edited" {
		t.Fatalf("the flow changed: %v", f)
	}
	e.must(400, e.call("DELETE", "/api/v1/flows/"+id, e.admin, nil, "If-Match", "two"))
	e.must(204, e.call("DELETE", "/api/v1/flows/"+id, e.admin, nil, "If-Match", `"2"`))
	e.must(404, e.call("GET", "/api/v1/flows/"+id, e.admin, nil))
}

func TestIdentityAndFlowMateRoutes(t *testing.T) {
	e := newEnv(t)
	ta := e.tenant("acme")
	uid, tok := e.user(ta, "partner-user-42", "flows.read", "flows.update", "users.read")
	u := e.must(200, e.call("GET", "/api/v1/users/"+uid, e.admin, nil)).data()
	username := u["username"].(string)
	// One user's shape is the same on every route: GET /users/{id} has the `_id` too.
	for _, path := range []string{"/api/v1/users/" + uid, "/users/" + uid} {
		if got := e.must(200, e.call("GET", path, e.admin, nil)).data(); got["_id"] != uid || got["id"] != uid {
			t.Fatalf("GET %s: %v", path, got)
		}
	}
	// FlowMate: GET /users?username= returns the user with its internal id.
	r := e.must(200, e.call("GET", "/users?username="+username, tok, nil))
	if r.body["_id"] != uid || r.body["id"] != uid || r.body["username"] != username || r.body["status"] != "ACTIVE" {
		t.Fatalf("GET /users?username=: %s", r.raw)
	}
	r = e.must(200, e.call("GET", "/users?username="+username+"&meta=true", tok, nil))
	if len(r.list()) != 1 || r.body["meta"].(map[string]any)["total"] != float64(1) {
		t.Fatalf("meta=true: %s", r.raw)
	}
	// YAML bodies are accepted.
	yamlFlow := "name: from-yaml\ngraph:\n  nodes:\n    - id: hook\n      type: trigger.webhook\n    - id: a\n      type: action\n      connector: http\n      action: request\n  edges:\n    - source: hook\n      target: a\n"
	e.must(201, e.call("POST", "/flows", tok, yamlFlow, "Content-Type", "application/yaml"))
	// Owners: the creator and its tenant.
	l := e.must(200, e.call("GET", "/flows?filter[user]="+uid, tok, nil)).list()
	owners := l[0].(map[string]any)["owners"].([]any)
	if len(l) != 1 || len(owners) != 2 {
		t.Fatalf("owners: %v", l)
	}
	// Nobody grants what they do not hold.
	r = e.must(400, e.call("POST", "/api/v1/users", e.admin, map[string]any{"username": "x" + testrig.Unique(""), "permissions": []string{"flows.fly"}}))
	if r.errCodes()[0] != "unknown_permission@/permissions/0" {
		t.Fatalf("unknown permission: %s", r.raw)
	}
	// Revoking a token locks it out; an expired token is refused.
	tk := e.must(201, e.call("POST", "/api/v1/users/"+uid+"/tokens", tok, map[string]any{"expiresIn": "1h"})).data()
	e.must(200, e.call("GET", "/api/v1/users/me", tk["token"].(string), nil))
	e.must(204, e.call("DELETE", "/api/v1/tokens/"+tk["id"].(string), tok, nil))
	e.must(401, e.call("GET", "/api/v1/users/me", tk["token"].(string), nil))
	// Tokens are stored hashed: the secret appears nowhere in Redis.
	keys := e.rdb.Keys(context.Background(), e.prefix+"*").Val()
	for _, k := range keys {
		if e.rdb.Type(context.Background(), k).Val() == "string" && strings.Contains(e.rdb.Get(context.Background(), k).Val(), tok) {
			t.Fatalf("token secret stored in clear under %s", k)
		}
	}
}

func TestStateSurvivesARestart(t *testing.T) {
	e := newEnv(t)
	id := e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))).data()["id"].(string)
	// A second API process on the same Redis sees the same flows and accepts the same token.
	again := controlplane.New(controlplane.Config{Store: store.New(e.rdb, e.prefix), Relay: nopRelay{}, AutoConfirm: true})
	e2 := *e
	e2.app = again
	if f := e2.must(200, e2.call("GET", "/api/v1/flows/"+id, e.admin, nil)).data(); f["name"] != "hello-flow" {
		t.Fatalf("after restart: %v", f)
	}
}

type nopRelay struct{}

func (nopRelay) Kick()                       {}
func (nopRelay) Flush(context.Context) error { return nil }

// Ids from the URL address only their own record: an id shaped like another key gives 404.
func TestIdsCannotAddressOtherKeys(t *testing.T) {
	e := newEnv(t)
	id := e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))).data()["id"].(string)
	for _, path := range []string{"/api/v1/flows/" + id + ":revs", "/api/v1/flows/" + id + "%3Arevs", "/api/v1/users/x:tokens", "/api/v1/tenants/x:y"} {
		e.must(404, e.call("GET", path, e.admin, nil))
	}
}

// A flow created without edges can be patched (its edges were stored as null, which the merged
// document then failed to validate: 400 "/graph/edges got null"); a patch that changes nothing
// makes no revision; and a PATCH cannot change the status (it was silently ignored yet made a
// revision), though echoing the current status back is fine.
func TestPatchEdgeCases(t *testing.T) {
	e := newEnv(t)
	flow := map[string]any{"name": "lonely", "graph": map[string]any{"nodes": []any{
		map[string]any{"id": "hook", "type": "trigger.webhook"},
	}}}
	created := e.must(201, e.call("POST", "/api/v1/flows", e.admin, flow)).data()
	id := created["id"].(string)
	if edges, ok := created["graph"].(map[string]any)["edges"].([]any); !ok || len(edges) != 0 {
		t.Fatalf("created without edges: graph %v", created["graph"])
	}
	patched := e.must(200, e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"description": "now described"})).data()
	if patched["revision"] != float64(2) || patched["description"] != "now described" {
		t.Fatalf("after patch: %v", patched)
	}
	same := e.must(200, e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"description": "now described", "status": "inactive"})).data()
	if same["revision"] != float64(2) {
		t.Fatalf("a patch changing nothing made revision %v", same["revision"])
	}
	r := e.must(400, e.call("PATCH", "/api/v1/flows/"+id, e.admin, map[string]any{"status": "active"}))
	if r.errCodes()[0] != "read_only@/status" || !strings.Contains(string(r.raw), "/start or /stop") {
		t.Fatalf("PATCH status: %s", r.raw)
	}
	if revs := e.must(200, e.call("GET", "/api/v1/flows/"+id+"/revisions", e.admin, nil)).list(); len(revs) != 2 {
		t.Fatalf("%d revisions after one change, want 2", len(revs))
	}
	if got := e.must(200, e.call("GET", "/api/v1/flows/"+id, e.admin, nil)).data(); got["status"] != "inactive" {
		t.Fatalf("status %v", got["status"])
	}
}

// A path that names no route is a 404 with or without a token (it was a 401 without one), and
// the FlowMate routes at the root still want a token.
func TestUnknownPathsAreNotFound(t *testing.T) {
	e := newEnv(t)
	for _, tok := range []string{"", e.admin} {
		if r := e.must(404, e.call("GET", "/no/such/route", tok, nil)); r.errCodes()[0] != "not_found@" {
			t.Fatalf("token %q: %s", tok, r.raw)
		}
	}
	e.must(401, e.call("GET", "/flows", "", nil))
	e.must(401, e.call("GET", "/users", "", nil))
	e.must(200, e.call("GET", "/flows", e.admin, nil))
	// Under /api/v1 and the FlowMate prefixes too: the URL is checked before the token.
	for _, path := range []string{"/api/v1/no-such-thing", "/api/v1/flows/x/no-such-thing", "/flows/x/y/z", "/users/x/y"} {
		for _, tok := range []string{"", e.admin} {
			if r := e.must(404, e.call("GET", path, tok, nil)); r.errCodes()[0] != "not_found@" {
				t.Fatalf("%s, token %q: %s", path, tok, r.raw)
			}
		}
	}
	e.must(401, e.call("GET", "/API/V1/FLOWS", "", nil)) // routes ignore case
	e.must(401, e.call("GET", "/api/v1/flows/", "", nil))
}

// A known path with a method it does not take is a 405 naming the ones it does.
func TestWrongMethodIsNotAllowed(t *testing.T) {
	e := newEnv(t)
	for _, tok := range []string{"", e.admin} {
		r := e.must(405, e.call("PUT", "/api/v1/flows", tok, map[string]any{}))
		if r.errCodes()[0] != "method_not_allowed@" || r.header.Get("Allow") != "GET, HEAD, POST" {
			t.Fatalf("token %q: %s (Allow %q)", tok, r.raw, r.header.Get("Allow"))
		}
	}
	r := e.must(405, e.call("DELETE", "/api/v1/executions/x", e.admin, nil))
	if r.header.Get("Allow") != "GET, HEAD" {
		t.Fatalf("Allow %q", r.header.Get("Allow"))
	}
}
