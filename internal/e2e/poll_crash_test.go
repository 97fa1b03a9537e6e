package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// pollSource is a partner's list API: orders by id, 100 a page, after=<id> for what is newer,
// the next page by a Link header. The first request for a second page waits until its caller
// goes away: the test kills the runner polling it there.
type pollSource struct {
	mu       sync.Mutex
	total    int
	firsts   atomic.Int64  // first pages served
	midPage  chan struct{} // closed when a second page is first asked for
	stalled  sync.Once
	released atomic.Bool
}

func (s *pollSource) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	after, _ := strconv.Atoi(r.URL.Query().Get("after"))
	page := r.URL.Query().Get("page")
	if page == "" {
		s.firsts.Add(1)
	} else if !s.released.Load() {
		stall := false
		s.stalled.Do(func() { stall = true; close(s.midPage) })
		if stall {
			<-r.Context().Done() // the runner was killed mid-page
			return
		}
	}
	s.mu.Lock()
	total := s.total
	s.mu.Unlock()
	items := []map[string]any{}
	for id := after + 1; id <= min(after+100, total); id++ {
		items = append(items, map[string]any{"id": id})
	}
	if last := after + len(items); last < total {
		w.Header().Set("Link", fmt.Sprintf(`<http://%s/orders?after=%d&page=next>; rel="next"`, r.Host, last))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"data": items})
}

// A runner polling a partner's list API is killed with SIGKILL in the middle of a poll (on its
// second page) and restarted: the poll is taken up again once its lease ends, and the 250
// orders start 250 executions, then 30 added orders 30 more, none twice.
func TestPollSurvivesSIGKILLMidPage(t *testing.T) {
	src := &pollSource{total: 250, midPage: make(chan struct{})}
	ctx, rig := startCrashRig(t, crashOptions{runners: []string{"runner"}, keepAll: true, handler: src, flow: func(url string) map[string]any {
		return map[string]any{"name": "orders", "graph": map[string]any{
			"nodes": []any{
				map[string]any{"id": "orders", "type": "trigger.poll", "connector": "http", "trigger": "poll", "interval": "1s",
					"config": map[string]any{"url": url + "/orders", "itemsPointer": "/data", "cursorField": "id", "cursorParam": "after"}},
				map[string]any{"id": "shape", "type": "action", "connector": "transform", "action": "map",
					"config": map[string]any{"fields": map[string]any{"order": "input.id"}}},
			},
			"edges": []any{map[string]any{"source": "orders", "target": "shape"}},
		}}
	}})
	select {
	case <-src.midPage:
	case <-ctx.Done():
		t.Fatal("the runner never asked for a second page")
	}
	if err := rig.procs["runner"].crash(); err != nil {
		t.Fatal(err)
	}
	src.released.Store(true)
	total := func() int {
		var got struct {
			Meta struct {
				Total int `json:"total"`
			} `json:"meta"`
		}
		crashAPI(ctx, t, rig.hc, rig.token, http.MethodGet, rig.apiURL+"/api/v1/flows/"+rig.flowID+"/executions?page[size]=1", nil, http.StatusOK, &got)
		return got.Meta.Total
	}
	await := func(want int) {
		crashPoll(ctx, t, 90*time.Second, fmt.Sprintf("%d executions", want), func() (bool, string) {
			n := total()
			if n > want {
				t.Fatalf("%d executions, want %d", n, want)
			}
			return n == want, fmt.Sprintf("%d executions", n)
		}, rig.procs["runner"])
	}
	await(250)
	src.mu.Lock()
	src.total += 30
	src.mu.Unlock()
	await(280)
	seen := src.firsts.Load()
	crashPoll(ctx, t, 30*time.Second, "three more polls", func() (bool, string) {
		return src.firsts.Load() >= seen+3, ""
	}, rig.procs["runner"])
	if n := total(); n != 280 {
		t.Fatalf("%d executions after more polls, want 280", n)
	}
	rig.shutdown(ctx, t)
}
