package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/flowd/flowd/connectors/egress"
	"github.com/flowd/flowd/connectors/host"
	"github.com/flowd/flowd/connectors/sdk"
)

// testPoller is the connector state behind testConnector's poll trigger, with the same
// loopback-allowing policy.
var testPoller = &connector{policy: mustPolicy("loopback"), transport: newTransport(mustPolicy("loopback"), loopbackOnly)}

// pollWith runs one poll of c's trigger the way the SDK hands it over: config decoded from
// JSON, items returned as the host decodes them (objects as maps, numbers as json.Number).
func pollWith(t *testing.T, c *connector, cfg map[string]any, cursor string, conn *sdk.Connection) (sdk.PollResult, *sdk.Error) {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var pc pollConfig
	if err := json.Unmarshal(b, &pc); err != nil {
		t.Fatalf("config %s: %v", b, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.poll(ctx, sdk.PollCall[pollConfig]{Trigger: "poll", Config: pc, Cursor: cursor, Connection: conn})
	if err != nil {
		return sdk.PollResult{}, sdk.AsError(err)
	}
	for i, it := range res.Items {
		b, err := json.Marshal(it)
		if err != nil {
			t.Fatalf("item %d: %v", i, err)
		}
		if res.Items[i], err = sdk.DecodeJSON(b); err != nil {
			t.Fatal(err)
		}
	}
	return res, nil
}

func pollOK(t *testing.T, cfg map[string]any, cursor string, conn *sdk.Connection) sdk.PollResult {
	t.Helper()
	res, perr := pollWith(t, testPoller, cfg, cursor, conn)
	if perr != nil {
		t.Fatalf("poll: %+v", perr)
	}
	return res
}

func pollErr(t *testing.T, cfg map[string]any, cursor, code string, retryable bool) *sdk.Error {
	t.Helper()
	res, perr := pollWith(t, testPoller, cfg, cursor, nil)
	if perr == nil {
		t.Fatalf("want error %s, got %d items, cursor %q", code, len(res.Items), res.Cursor)
	}
	if perr.Code != code || perr.Retryable != retryable {
		t.Fatalf("want error %s retryable=%v, got %+v", code, retryable, perr)
	}
	return perr
}

func cursorOf(t *testing.T, s string) pollCursor {
	t.Helper()
	c, err := decodeCursor(s)
	if err != nil {
		t.Fatalf("cursor %q: %v", s, err)
	}
	return c
}

// ids returns the id field of each item, as its JSON text.
func ids(t *testing.T, items []any) []string {
	t.Helper()
	out := make([]string, len(items))
	for i, it := range items {
		obj, ok := it.(map[string]any)
		if !ok {
			t.Fatalf("item %d is %T, want an object", i, it)
		}
		out[i] = fmt.Sprint(obj["id"])
	}
	return out
}

func seq(from, to int) []string {
	var out []string
	for i := from; i <= to; i++ {
		out = append(out, strconv.Itoa(i))
	}
	return out
}

// requests remembers every request a test server received, in order.
type requests struct {
	mu   sync.Mutex
	uris []string
	hdrs []http.Header
}

func (r *requests) add(req *http.Request) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.uris = append(r.uris, req.RequestURI)
	r.hdrs = append(r.hdrs, req.Header.Clone())
}

// take returns the requests since the last take.
func (r *requests) take() ([]string, []http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	u, h := r.uris, r.hdrs
	r.uris, r.hdrs = nil, nil
	return u, h
}

// feed is a source listing items oldest first, 100 a page: ?after=<id> lists those after it,
// ?page=N the Nth page of that list, with a Link header to the next page.
type feed struct {
	mu    sync.Mutex
	items []map[string]any
}

func (f *feed) add(n int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for range n {
		id := len(f.items) + 1
		f.items = append(f.items, map[string]any{"id": id, "name": fmt.Sprintf("order %d", id)})
	}
}

func (f *feed) serve(w http.ResponseWriter, r *http.Request) {
	const size = 100
	after, _ := strconv.Atoi(r.URL.Query().Get("after"))
	page, _ := strconv.Atoi(r.URL.Query().Get("page"))
	page = max(page, 1)
	f.mu.Lock()
	list := f.items[min(after, len(f.items)):]
	f.mu.Unlock()
	from := min((page-1)*size, len(list))
	to := min(from+size, len(list))
	if to < len(list) {
		next := fmt.Sprintf("%s?after=%d&page=%d", r.URL.Path, after, page+1)
		w.Header().Add("Link", fmt.Sprintf(`<%s>; rel="first", <%s>; rel="next"`, r.URL.Path, next))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(list[from:to])
}

// TestPollPagesWithCursor: a source of 250 items in pages of 100 with Link headers. One poll
// returns all 250 in order and a cursor after the last; the next poll asks only for what came
// after it and gets the 3 items added since; a poll with nothing new returns nothing.
func TestPollPagesWithCursor(t *testing.T) {
	src := &feed{}
	src.add(250)
	var seen requests
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r)
		src.serve(w, r)
	}))
	t.Cleanup(srv.Close)
	cfg := map[string]any{
		"url":         srv.URL + "/orders",
		"headers":     map[string]any{"X-Tenant": "t-1"},
		"cursorField": "id",
		"cursorParam": "after",
	}
	conn := &sdk.Connection{Type: "bearer", Data: map[string]any{"token": "tok-1"}}

	res := pollOK(t, cfg, "", conn)
	if got := ids(t, res.Items); !reflect.DeepEqual(got, seq(1, 250)) {
		t.Fatalf("first poll: %d items %v..., want ids 1..250 in order", len(got), got[:min(5, len(got))])
	}
	if c := cursorOf(t, res.Cursor); c.After != "250" {
		t.Fatalf("first poll: cursor %q, want after 250", res.Cursor)
	}
	uris, hdrs := seen.take()
	if want := []string{"/orders", "/orders?after=0&page=2", "/orders?after=0&page=3"}; !reflect.DeepEqual(uris, want) {
		t.Fatalf("first poll requested %v, want %v", uris, want)
	}
	for i, h := range hdrs {
		if h.Get("Authorization") != "Bearer tok-1" || h.Get("X-Tenant") != "t-1" {
			t.Errorf("request %d (%s): Authorization %q, X-Tenant %q: want the connection's token and the config's header on every page", i, uris[i], h.Get("Authorization"), h.Get("X-Tenant"))
		}
	}

	src.add(3)
	res = pollOK(t, cfg, res.Cursor, conn)
	if got := ids(t, res.Items); !reflect.DeepEqual(got, seq(251, 253)) {
		t.Fatalf("second poll: items %v, want 251..253", got)
	}
	if item := res.Items[0].(map[string]any); item["name"] != "order 251" || item["id"] != json.Number("251") {
		t.Errorf("second poll: first item %v, want it as the source listed it", item)
	}
	if uris, _ := seen.take(); !reflect.DeepEqual(uris, []string{"/orders?after=250"}) {
		t.Fatalf("second poll requested %v, want only /orders?after=250", uris)
	}
	cursor := res.Cursor
	if c := cursorOf(t, cursor); c.After != "253" {
		t.Fatalf("second poll: cursor %q, want after 253", cursor)
	}

	res = pollOK(t, cfg, cursor, conn)
	if len(res.Items) != 0 || cursorOf(t, res.Cursor).After != "253" {
		t.Fatalf("third poll: %d items, cursor %q: want none and after still 253", len(res.Items), res.Cursor)
	}
	if uris, _ := seen.take(); !reflect.DeepEqual(uris, []string{"/orders?after=253"}) {
		t.Fatalf("third poll requested %v", uris)
	}
}

// TestPollConditional: the first page's ETag and Last-Modified go into the cursor; the next
// poll sends them, a 304 returns no items and the very same cursor, and a changed list comes
// back whole with the new validators.
func TestPollConditional(t *testing.T) {
	var (
		mu      sync.Mutex
		etag    = `"v1"`
		lastMod = "Tue, 02 Dec 2025 10:00:00 GMT"
		body    = `[{"id":"a"},{"id":"b"}]`
	)
	var seen requests
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r)
		mu.Lock()
		defer mu.Unlock()
		w.Header().Set("ETag", etag)
		w.Header().Set("Last-Modified", lastMod)
		if r.Header.Get("If-None-Match") == etag {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(body))
	}))
	t.Cleanup(srv.Close)
	cfg := map[string]any{"url": srv.URL + "/list"}

	res := pollOK(t, cfg, "", nil)
	if got := ids(t, res.Items); !reflect.DeepEqual(got, []string{"a", "b"}) {
		t.Fatalf("first poll: items %v", got)
	}
	if c := cursorOf(t, res.Cursor); c != (pollCursor{ETag: `"v1"`, LastModified: lastMod}) {
		t.Fatalf("first poll: cursor %+v, want the ETag and Last-Modified", c)
	}
	if _, hdrs := seen.take(); hdrs[0].Get("If-None-Match") != "" || hdrs[0].Get("If-Modified-Since") != "" {
		t.Fatalf("first poll sent validators it could not have: %v", hdrs[0])
	}

	cursor := res.Cursor
	res = pollOK(t, cfg, cursor, nil)
	if len(res.Items) != 0 || res.Cursor != cursor {
		t.Fatalf("304 poll: %d items, cursor %q: want none and the same cursor %q", len(res.Items), res.Cursor, cursor)
	}
	_, hdrs := seen.take()
	if len(hdrs) != 1 || hdrs[0].Get("If-None-Match") != `"v1"` || hdrs[0].Get("If-Modified-Since") != lastMod {
		t.Fatalf("304 poll sent %v: want If-None-Match and If-Modified-Since from the cursor", hdrs)
	}

	mu.Lock()
	etag, lastMod, body = `"v2"`, "Tue, 02 Dec 2025 11:00:00 GMT", `[{"id":"a"},{"id":"b"},{"id":"c"}]`
	mu.Unlock()
	res = pollOK(t, cfg, cursor, nil)
	if got := ids(t, res.Items); !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Fatalf("changed list: items %v", got)
	}
	if c := cursorOf(t, res.Cursor); c.ETag != `"v2"` || c.LastModified != "Tue, 02 Dec 2025 11:00:00 GMT" {
		t.Fatalf("changed list: cursor %+v, want the new validators", c)
	}
}

// TestPollPointers: items at itemsPointer /data/items, the next page's URL (relative) at
// nextPointer /links/next, null on the last page.
func TestPollPointers(t *testing.T) {
	var seen requests
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r)
		w.Header().Set("Content-Type", "application/json")
		switch r.URL.Query().Get("page") {
		case "":
			_, _ = fmt.Fprint(w, `{"data":{"items":[{"id":1,"sku":"A"},{"id":2,"sku":"B"}]},"links":{"next":"things?page=2"}}`)
		case "2":
			_, _ = fmt.Fprintf(w, `{"data":{"items":[{"id":3,"sku":"C"}]},"links":{"next":%q}}`, "http://"+r.Host+"/v2/things?page=3")
		case "3":
			_, _ = fmt.Fprint(w, `{"data":{"items":[{"id":4,"sku":"D"}]},"links":{"next":null}}`)
		}
	}))
	t.Cleanup(srv.Close)
	res := pollOK(t, map[string]any{"url": srv.URL + "/v2/things", "itemsPointer": "/data/items", "nextPointer": "/links/next"}, "", nil)
	want := []any{
		map[string]any{"id": json.Number("1"), "sku": "A"},
		map[string]any{"id": json.Number("2"), "sku": "B"},
		map[string]any{"id": json.Number("3"), "sku": "C"},
		map[string]any{"id": json.Number("4"), "sku": "D"},
	}
	if !reflect.DeepEqual(res.Items, want) {
		t.Fatalf("items %v, want %v", res.Items, want)
	}
	if uris, _ := seen.take(); !reflect.DeepEqual(uris, []string{"/v2/things", "/v2/things?page=2", "/v2/things?page=3"}) {
		t.Fatalf("requested %v", uris)
	}
	if res.Cursor != "" {
		t.Fatalf("cursor %q: nothing to remember without cursorField or validators", res.Cursor)
	}

	// Pointer escapes (RFC 6901): ~1 is /, ~0 is ~.
	esc, _ := newServer(t, func(w http.ResponseWriter, _ *http.Request) {
		_, _ = fmt.Fprint(w, `{"a/b":{"c~d":[{"id":"x"}]}}`)
	})
	if got := ids(t, pollOK(t, map[string]any{"url": esc.URL, "itemsPointer": "/a~1b/c~0d"}, "", nil).Items); !reflect.DeepEqual(got, []string{"x"}) {
		t.Fatalf("escaped pointer: items %v", got)
	}
}

// TestPollBadBodies: a body that is not JSON, or a pointer that does not lead to an array,
// is a permanent error saying which.
func TestPollBadBodies(t *testing.T) {
	srv, _ := newServer(t, func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/html":
			w.Header().Set("Content-Type", "text/html")
			_, _ = fmt.Fprint(w, "<html>maintenance</html>")
		case "/empty":
		case "/last-without-id":
			_, _ = fmt.Fprint(w, `[{"id":1},{"name":"x"}]`)
		default:
			_, _ = fmt.Fprint(w, `{"data":{"items":{"id":1}},"count":1}`)
		}
	})
	for _, tc := range []struct {
		name, path, pointer string
		want                []string
	}{
		{"object at the pointer", "/obj", "/data/items", []string{`itemsPointer "/data/items" leads to an object, not an array`}},
		{"object body", "/obj", "", []string{`itemsPointer "" leads to an object, not an array`}},
		{"number at the pointer", "/obj", "/count", []string{"leads to a number"}},
		{"missing member", "/obj", "/data/list", []string{`no member "list" in the object at "/data"`}},
		{"through a scalar", "/obj", "/count/items", []string{`"/count" is a number`}},
		{"not JSON", "/html", "", []string{"body is not JSON", "200 OK"}},
		{"empty", "/empty", "", []string{"body is empty"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := pollErr(t, map[string]any{"url": srv.URL + tc.path, "itemsPointer": tc.pointer}, "", "invalid_response", false)
			for _, w := range tc.want {
				if !strings.Contains(e.Message, w) {
					t.Errorf("message %q does not say %q", e.Message, w)
				}
			}
		})
	}

	// A cursorField the last item lacks cannot advance the cursor: an error, not a loop.
	e := pollErr(t, map[string]any{"url": srv.URL + "/last-without-id", "cursorField": "id", "cursorParam": "after"}, "", "invalid_response", false)
	if !strings.Contains(e.Message, `last item of the poll: it has no cursorField "id"`) {
		t.Errorf("last item without the cursorField: %q", e.Message)
	}
}

// TestPollStatuses: a 503 (on any page) is retryable with its Retry-After, a 429 too; a 404 or
// 401 is permanent and quotes the start of the body; nothing is returned from a failed poll.
func TestPollStatuses(t *testing.T) {
	var seen requests
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r)
		switch r.URL.Path {
		case "/busy":
			w.Header().Set("Retry-After", "12")
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/limited":
			w.Header().Set("Retry-After", "3")
			w.WriteHeader(http.StatusTooManyRequests)
		case "/first":
			w.Header().Set("Link", `</busy>; rel="next"`)
			_, _ = fmt.Fprint(w, `[{"id":1}]`)
		case "/denied":
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = fmt.Fprint(w, `{"error": "token expired"}`)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)

	e := pollErr(t, map[string]any{"url": srv.URL + "/busy"}, "", "http_5xx", true)
	if e.RetryAfter != 12*time.Second || !strings.Contains(e.Message, "503") {
		t.Errorf("503: %q, RetryAfter %s: want the status and Retry-After 12s", e.Message, e.RetryAfter)
	}
	if e := pollErr(t, map[string]any{"url": srv.URL + "/limited"}, "", "http_429", true); e.RetryAfter != 3*time.Second {
		t.Errorf("429: RetryAfter %s, want 3s", e.RetryAfter)
	}
	_ = pollErr(t, map[string]any{"url": srv.URL + "/first"}, "", "http_5xx", true)
	if uris, _ := seen.take(); !reflect.DeepEqual(uris, []string{"/busy", "/limited", "/first", "/busy"}) {
		t.Fatalf("requested %v", uris)
	}
	if e := pollErr(t, map[string]any{"url": srv.URL + "/denied"}, "", "http_4xx", false); !strings.Contains(e.Message, "401") || !strings.Contains(e.Message, "token expired") {
		t.Errorf("401: %q, want the status and the body's start", e.Message)
	}
	_ = pollErr(t, map[string]any{"url": srv.URL + "/nope"}, "", "http_4xx", false)
}

// TestPollTimeoutAndConnection: a page that does not answer within timeoutMs and a refused
// connection are retryable.
func TestPollTimeoutAndConnection(t *testing.T) {
	release := make(chan struct{})
	slow, _ := newServer(t, func(_ http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})
	t.Cleanup(func() { close(release) })
	_ = pollErr(t, map[string]any{"url": slow.URL, "timeoutMs": 50}, "", "timeout", true)

	gone := httptest.NewServer(http.NotFoundHandler())
	url := gone.URL
	gone.Close()
	_ = pollErr(t, map[string]any{"url": url}, "", "connection", true)
}

// TestPollCursorAndConfigErrors: a cursor that is not the trigger's, and configs the schema
// would refuse, fail permanently before any request.
func TestPollCursorAndConfigErrors(t *testing.T) {
	srv, rec := newServer(t, jsonOK)
	for _, cursor := range []string{"not json", `["after"]`, `{"after": 5}`, `{"etag": "a\r\nX-Injected: 1"}`} {
		_ = pollErr(t, map[string]any{"url": srv.URL}, cursor, "invalid_cursor", false)
	}
	for name, cfg := range map[string]map[string]any{
		"no url":                    {},
		"ftp url":                   {"url": "ftp://example.com/"},
		"bad pointer":               {"url": srv.URL, "itemsPointer": "data/items"},
		"bad escape":                {"url": srv.URL, "itemsPointer": "/a~2"},
		"cursorField without param": {"url": srv.URL, "cursorField": "id"},
		"cursorParam without field": {"url": srv.URL, "cursorParam": "after"},
		"maxPages 0":                {"url": srv.URL, "maxPages": 0},
		"maxPages 101":              {"url": srv.URL, "maxPages": 101},
		"timeoutMs 0":               {"url": srv.URL, "timeoutMs": 0},
	} {
		t.Run(name, func(t *testing.T) { _ = pollErr(t, cfg, "", "invalid_config", false) })
	}
	if _, _, uri, _ := rec.last(); uri != "" {
		t.Fatalf("a refused poll reached the server: %s", uri)
	}
}

// TestPollPageLimits: paging stops at maxPages, and at a next link already read this poll.
func TestPollPageLimits(t *testing.T) {
	var seen requests
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.add(r)
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if r.URL.Path == "/loop" {
			// page 2 links back to page 1
			w.Header().Set("Link", fmt.Sprintf(`</loop?n=%d>; rel="next"`, (n+1)%2))
		} else {
			w.Header().Set("Link", fmt.Sprintf(`</endless?n=%d>; rel="next"`, n+1))
		}
		_, _ = fmt.Fprintf(w, `[{"id":%d}]`, n)
	}))
	t.Cleanup(srv.Close)

	res := pollOK(t, map[string]any{"url": srv.URL + "/endless?n=0", "maxPages": 3}, "", nil)
	if got := ids(t, res.Items); !reflect.DeepEqual(got, []string{"0", "1", "2"}) {
		t.Fatalf("maxPages 3: items %v", got)
	}
	if uris, _ := seen.take(); len(uris) != 3 {
		t.Fatalf("maxPages 3: %d requests %v", len(uris), uris)
	}
	res = pollOK(t, map[string]any{"url": srv.URL + "/endless?n=0"}, "", nil)
	if uris, _ := seen.take(); len(uris) != defaultMaxPages || len(res.Items) != defaultMaxPages {
		t.Fatalf("default maxPages: %d requests, %d items, want %d", len(uris), len(res.Items), defaultMaxPages)
	}
	res = pollOK(t, map[string]any{"url": srv.URL + "/loop?n=0"}, "", nil)
	if uris, _ := seen.take(); !reflect.DeepEqual(uris, []string{"/loop?n=0", "/loop?n=1"}) || len(res.Items) != 2 {
		t.Fatalf("looping next links: requests %v, %d items", uris, len(res.Items))
	}
}

// TestPollNextLinkElsewhere: a next link to another origin gets no credentials, and is refused
// when the egress policy refuses its address, as any request is.
func TestPollNextLinkElsewhere(t *testing.T) {
	var otherSeen requests
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		otherSeen.add(r)
		_, _ = fmt.Fprint(w, `[{"id":"elsewhere"}]`)
	}))
	t.Cleanup(other.Close)
	var firstSeen requests
	first := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		firstSeen.add(r)
		w.Header().Set("Link", "<"+other.URL+`/page2>; rel="next"`)
		_, _ = fmt.Fprint(w, `[{"id":"here"}]`)
	}))
	t.Cleanup(first.Close)
	cfg := map[string]any{"url": first.URL + "/page1", "headers": map[string]any{"X-Trace": "t1"}}
	conn := &sdk.Connection{Type: "api_key", Data: map[string]any{"header": "X-Partner-Key", "key": "k-1"}}

	res := pollOK(t, cfg, "", conn)
	if got := ids(t, res.Items); !reflect.DeepEqual(got, []string{"here", "elsewhere"}) {
		t.Fatalf("items %v", got)
	}
	_, h1 := firstSeen.take()
	_, h2 := otherSeen.take()
	if h1[0].Get("X-Partner-Key") != "k-1" || len(h2) != 1 || h2[0].Get("X-Partner-Key") != "" || h2[0].Get("X-Trace") != "t1" {
		t.Fatalf("key on the first origin %q; on the other %v: want the key only where the connection is for", h1[0].Get("X-Partner-Key"), h2)
	}

	// Only the first server is allowed: its next link to the other is refused.
	strict := &connector{policy: mustPolicy(first.Listener.Addr().String()), transport: newTransport(mustPolicy(first.Listener.Addr().String()), loopbackOnly)}
	_, perr := pollWith(t, strict, cfg, "", conn)
	if perr == nil || perr.Code != "egress_denied" || perr.Retryable || !strings.Contains(perr.Message, egress.EnvAllow) {
		t.Fatalf("next link to a refused address: %+v, want a permanent egress_denied", perr)
	}
	if uris, _ := otherSeen.take(); len(uris) != 0 {
		t.Fatalf("the refused server was reached: %v", uris)
	}
}

// TestPollUserAgent: the trigger presents itself as the request action does.
func TestPollUserAgent(t *testing.T) {
	srv, rec := newServer(t, func(w http.ResponseWriter, _ *http.Request) { _, _ = fmt.Fprint(w, `[]`) })
	output(t, invoke(t, map[string]any{"url": srv.URL}, nil, ""))
	h, _, _, _ := rec.last()
	want := h.Get("User-Agent")
	pollOK(t, map[string]any{"url": srv.URL}, "", nil)
	if h, _, _, _ = rec.last(); h.Get("User-Agent") != want || want == "" {
		t.Fatalf("poll User-Agent %q, request's %q", h.Get("User-Agent"), want)
	}
}

func TestLinkNext(t *testing.T) {
	for _, tc := range []struct {
		header []string
		want   string
	}{
		{[]string{`<https://api.example.com/items?page=2>; rel="next"`}, "https://api.example.com/items?page=2"},
		{[]string{`<https://a/1>; rel="prev", <https://a/3>; rel="next", <https://a/9>; rel="last"`}, "https://a/3"},
		{[]string{`<https://a/1>; rel="prev"`, `<https://a/3>; rel=next`}, "https://a/3"},
		{[]string{`<https://a/x>; title="a, b; c"; rel="last", <https://a/y>; REL="Next Archives"`}, "https://a/y"},
		{[]string{`<https://a/x>; rel="nextish"`}, ""},
		{[]string{`garbage, <https://a/x>; rel="next"`}, ""},
		{nil, ""},
	} {
		h := http.Header{"Link": tc.header}
		if got := linkNext(h); got != tc.want {
			t.Errorf("Link %q: next %q, want %q", tc.header, got, tc.want)
		}
	}
}

// TestPollManifest: the trigger is declared with a schema that compiles, refuses what the
// code refuses, and passes the host's manifest validation.
func TestPollManifest(t *testing.T) {
	m, err := testConnector.Describe()
	if err != nil {
		t.Fatal(err)
	}
	spec, ok := m.Triggers["poll"]
	if !ok || m.Version != version || version == "1.0.0" {
		t.Fatalf("manifest %+v: want trigger poll and a bumped version", m)
	}
	raw, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := host.ValidateManifest("http", raw); err != nil {
		t.Fatalf("manifest refused by the host: %v", err)
	}

	c := jsonschema.NewCompiler()
	c.AssertFormat()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(spec.ConfigSchema))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.AddResource("poll.json", doc); err != nil {
		t.Fatal(err)
	}
	schema, err := c.Compile("poll.json")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cfg   string
		valid bool
	}{
		{`{"url": "https://api.example.com/orders"}`, true},
		{`{"url": "https://x/", "headers": {"X-A": ["1", 2]}, "query": {"limit": 100}, "timeoutMs": 5000, "maxResponseBytes": 1024,
		   "itemsPointer": "/data/items", "nextPointer": "/links/next", "maxPages": 100, "cursorField": "id", "cursorParam": "since_id"}`, true},
		{`{"url": "https://x/", "itemsPointer": ""}`, true},
		{`{}`, false},
		{`{"url": "ftp://x/"}`, false},
		{`{"url": "https://x/", "method": "POST"}`, false},
		{`{"url": "https://x/", "cursorField": "id"}`, false},
		{`{"url": "https://x/", "cursorParam": "after"}`, false},
		{`{"url": "https://x/", "itemsPointer": "data"}`, false},
		{`{"url": "https://x/", "itemsPointer": "/a~2"}`, false},
		{`{"url": "https://x/", "nextPointer": ""}`, false},
		{`{"url": "https://x/", "maxPages": 101}`, false},
		{`{"url": "https://x/", "maxResponseBytes": 25165825}`, false},
	} {
		v, err := jsonschema.UnmarshalJSON(strings.NewReader(tc.cfg))
		if err != nil {
			t.Fatal(err)
		}
		if err := schema.Validate(v); (err == nil) != tc.valid {
			t.Errorf("config %s: validation error %v, want valid=%v", tc.cfg, err, tc.valid)
		}
	}
}
