package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/testrig"
	"github.com/flowd/flowd/runners"
)

// orderSource is a partner's list API: orders by id, 100 a page, after=<id> for what is newer,
// the next page by a Link header.
type orderSource struct {
	mu    sync.Mutex
	total int
	polls atomic.Int64 // first pages served
}

func (s *orderSource) add(n int) {
	s.mu.Lock()
	s.total += n
	s.mu.Unlock()
}

func (s *orderSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.Atoi(r.URL.Query().Get("after"))
	if r.URL.Query().Get("page") == "" {
		s.polls.Add(1)
	}
	s.mu.Lock()
	total := s.total
	s.mu.Unlock()
	items := []map[string]any{}
	for id := after + 1; id <= min(after+100, total); id++ {
		items = append(items, map[string]any{"id": id, "amount": id * 10})
	}
	if last := after + len(items); last < total {
		w.Header().Set("Link", fmt.Sprintf(`<http://%s/orders?after=%d&page=next>; rel="next"`, r.Host, last))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": items})
}

// A poll flow reads a partner's list API through the http connector's poll trigger: 250 orders
// over three pages start 250 executions, 30 added later start 30 more, and none starts twice,
// however many polls follow.
func TestPollStartsAnExecutionPerNewItem(t *testing.T) {
	p := startPipeline(t)
	src := &orderSource{total: 250}
	srv := httptest.NewServer(src)
	t.Cleanup(srv.Close)
	id := p.flow(`{"name":"orders","graph":{"nodes":[
	    {"id":"orders","type":"trigger.poll","connector":"http","trigger":"poll","interval":"1s",
	     "config":{"url":"` + srv.URL + `/orders","itemsPointer":"/data","cursorField":"id","cursorParam":"after"}},
	    {"id":"shape","type":"action","connector":"transform","action":"map","config":{"fields":{"order":"input.id"}}}],
	  "edges":[{"source":"orders","target":"shape"}]}}`)
	st, body := p.get("/api/v1/flows/"+id, p.token)
	if next, _ := body["data"].(map[string]any)["nextRunAt"].(string); st != 200 || next == "" {
		t.Fatalf("flow view without nextRunAt: %d %v", st, body)
	}

	p.awaitExecutions(id, 250)
	src.add(30)
	p.awaitExecutions(id, 280)
	// More polls find nothing new.
	for seen, deadline := src.polls.Load(), time.Now().Add(30*time.Second); src.polls.Load() < seen+3; {
		if time.Now().After(deadline) {
			t.Fatal("the flow stopped polling")
		}
		time.Sleep(50 * time.Millisecond) // polling the source's counter with a deadline
	}
	p.awaitExecutions(id, 280)
	ctx := context.Background()
	for _, n := range []int{1, 100, 101, 250, 251, 280} {
		ex, err := p.st.Execution(ctx, runners.PollExecutionID(id, strconv.Itoa(n)))
		if err != nil {
			t.Fatalf("order %d: %v", n, err)
		}
		if ex.Trigger != "poll" || (ex.Status != envelope.StatusSucceeded && ex.Status != envelope.StatusRunning) {
			t.Fatalf("order %d: %+v", n, ex)
		}
	}
}

// The Python example connector's poll trigger feeds a flow through router and runner as a Go
// connector's does: each guest it announces starts one execution, greeted by the same
// connector's action.
func TestPythonConnectorPollFeedsAFlow(t *testing.T) {
	greeterDir, err := filepath.Abs(filepath.Join("..", "..", "connectors", "examples", "python", "greeter"))
	if err != nil {
		t.Fatal(err)
	}
	// The host passes FLOWD_CONNECTOR_* on to connectors: the launcher runs greeter.py with it.
	t.Setenv("FLOWD_CONNECTOR_PYTHON", testrig.GreeterPython(t, greeterDir))
	p := newPipeline(t, 2, connectorPolicy{egressAllow: "127.0.0.1/32"})
	if err := os.Symlink(filepath.Join(greeterDir, "greeter"), filepath.Join(p.dir, "connectors", "greeter")); err != nil {
		t.Fatal(err)
	}
	p.start()
	id := p.flow(`{"name":"guests","graph":{"nodes":[
	    {"id":"arrivals","type":"trigger.poll","connector":"greeter","trigger":"arrivals","interval":"1s","config":{"batch":5,"total":12}},
	    {"id":"greet","type":"action","connector":"greeter","action":"greet","config":{"greeting":"Welcome"}}],
	  "edges":[{"source":"arrivals","target":"greet"}]}}`)
	p.awaitExecutions(id, 12)
	for n := 1; n <= 12; n++ {
		ex, steps := p.finished(runners.PollExecutionID(id, fmt.Sprintf("guest-%d", n)))
		var out struct {
			Message string `json:"message"`
		}
		by := stepsByNode(steps)
		if ex.Status != envelope.StatusSucceeded || ex.Trigger != "poll" || len(by["greet"]) != 1 ||
			json.Unmarshal(by["greet"][0].Output, &out) != nil || out.Message != fmt.Sprintf("Welcome, Guest %d!", n) {
			t.Fatalf("guest %d: %+v %+v", n, ex, steps)
		}
	}
}
