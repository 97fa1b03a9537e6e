package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// gate answers GET /gate at once, except for key "held", which it holds until released: an
// execution waits there, mid-flow, for as long as a test needs.
type gate struct {
	arrived chan struct{}
	release chan struct{}
}

func (g *gate) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("key") == "held" {
		select {
		case g.arrived <- struct{}{}:
		default:
		}
		select {
		case <-g.release:
		case <-r.Context().Done():
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{}`))
}

// An integration's settings reach its flows' executions through the flow revision they run:
// an execution waiting mid-flow when the settings change finishes with the settings it started
// with, and the executions that start after the change see the new ones. The flow's own
// settings win over the integration's throughout.
func TestIntegrationSettingsChangeReachesNewExecutionsOnly(t *testing.T) {
	p := startPipeline(t)
	g := &gate{arrived: make(chan struct{}, 1), release: make(chan struct{})}
	srv := httptest.NewServer(g)
	defer srv.Close()
	released := false
	release := func() {
		if !released {
			released = true
			close(g.release)
		}
	}
	defer release()

	st, m := p.post("/api/v1/integrations", `{"name":"crm-sync",
		"settingsSchema":{"type":"object","required":["region"],"properties":{"region":{"enum":["eu","us"]}}},
		"settings":{"region":"eu","tier":"gold"}}`)
	if st != 201 {
		t.Fatalf("create integration: %d %v", st, m)
	}
	integ := m["data"].(map[string]any)["id"].(string)
	st, m = p.post("/api/v1/flows", `{"name":"settings-echo","integration":"`+integ+`","settings":{"tier":"silver"},
		"graph":{"nodes":[
			{"id":"hook","type":"trigger.webhook","config":{"mode":"sync","timeoutMs":60000}},
			{"id":"wait","type":"action","connector":"http","action":"request","config":{"method":"GET","url":"`+srv.URL+`/gate","query":{"key":"{{ input.key }}"}}},
			{"id":"shape","type":"action","connector":"transform","action":"map","config":{"fields":{"key":"steps.hook.key","region":"settings.region","tier":"settings.tier"}}},
			{"id":"out","type":"respond"}],
		"edges":[{"source":"hook","target":"wait"},{"source":"wait","target":"shape"},{"source":"shape","target":"out"}]}}`)
	if st != 201 {
		t.Fatalf("create flow: %d %v", st, m)
	}
	flow := m["data"].(map[string]any)["id"].(string)
	// The integration starts its flows; the router confirms each.
	st, m = p.post("/api/v1/integrations/"+integ+"/start", "")
	if flows, _ := m["data"].(map[string]any)["flows"].([]any); st != 200 || len(flows) != 1 || flows[0].(map[string]any)["status"] != "active" {
		t.Fatalf("start the integration: %d %v", st, m)
	}

	type answer struct {
		status int
		body   map[string]any
	}
	held := make(chan answer, 1)
	go func() {
		st, body := p.post("/hooks/"+flow, `{"key":"held"}`)
		held <- answer{st, body}
	}()
	select {
	case <-g.arrived:
	case a := <-held:
		t.Fatalf("the held execution answered before it was released: %d %v", a.status, a.body)
	case <-time.After(60 * time.Second):
		t.Fatal("the held execution never reached the gate")
	}

	st, m = p.call("PATCH", "/api/v1/integrations/"+integ, p.token, `{"settings":{"region":"us","tier":"gold"}}`)
	if st != 200 {
		t.Fatalf("change the settings: %d %v", st, m)
	}
	// Webhooks take the flow's new revision as soon as ingest learns of it from flowd.events;
	// from then on every execution sees the new settings.
	var fresh map[string]any
	for i, deadline := 0, time.Now().Add(30*time.Second); ; i++ {
		st, body := p.post("/hooks/"+flow, fmt.Sprintf(`{"key":"new-%d"}`, i))
		if st != 200 {
			t.Fatalf("new execution %d: %d %v", i, st, body)
		}
		if body["region"] == "us" {
			fresh = body
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no execution saw the new settings: last answer %v", body)
		}
		time.Sleep(20 * time.Millisecond) // polling ingest with a deadline
	}
	if fresh["tier"] != "silver" {
		t.Fatalf("the flow's own setting lost to the integration's: %v", fresh)
	}

	release()
	select {
	case a := <-held:
		if a.status != 200 || a.body["key"] != "held" || a.body["region"] != "eu" || a.body["tier"] != "silver" {
			t.Fatalf("the execution running during the change: %d %v, want the old settings (region eu)", a.status, a.body)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the held execution never answered")
	}
	// The flow's revisions say the same: revision 1 has the old settings, 2 the new.
	for rev, want := range map[int]string{1: "eu", 2: "us"} {
		st, m := p.get(fmt.Sprintf("/api/v1/flows/%s/revisions/%d", flow, rev), p.token)
		if got := m["data"].(map[string]any)["integrationSettings"].(map[string]any)["region"]; st != 200 || got != want {
			t.Fatalf("revision %d: %d, region %v, want %s", rev, st, got, want)
		}
	}
	// The integration counts its flows' executions (each is counted once it has ended).
	for deadline := time.Now().Add(30 * time.Second); ; {
		st, m = p.get("/api/v1/integrations/"+integ+"/stats", p.token)
		d, _ := m["data"].(map[string]any)
		if st == 200 && d["executions"].(map[string]any)["success"].(float64) >= 2 && d["flows"].(map[string]any)["active"] == 1.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("integration stats: %d %v", st, m)
		}
		time.Sleep(20 * time.Millisecond) // polling the API with a deadline
	}
}

// crmStub is a CRM that wants an API key: it answers the contact it was sent, and notes which
// key each call carried.
type crmStub struct {
	mu   sync.Mutex
	keys []string
}

func (s *crmStub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	key := r.Header.Get("X-API-Key")
	s.mu.Lock()
	s.keys = append(s.keys, key)
	s.mu.Unlock()
	if key == "" {
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	var in map[string]any
	_ = json.NewDecoder(r.Body).Decode(&in)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"id": "c-1", "name": in["name"]})
}

func (s *crmStub) seen() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.keys)
}

// An integration exported by one tenant and imported by another runs there the same way: the
// same webhook gets the same answer, through the importer's own connection of the same name;
// the export never holds the exporter's secret.
func TestExportedIntegrationRunsTheSameInAnotherTenant(t *testing.T) {
	p := startPipeline(t)
	crm := &crmStub{}
	srv := httptest.NewServer(crm)
	defer srv.Close()

	setup := func(token, key string) {
		t.Helper()
		st, m := p.call("POST", "/api/v1/connections", token, `{"name":"crm","type":"api_key","data":{"header":"X-API-Key","key":"`+key+`"}}`)
		if st != 201 {
			t.Fatalf("connection: %d %v", st, m)
		}
	}
	hook := func(flow string) map[string]any {
		t.Helper()
		st, body := p.post("/hooks/"+flow, `{"name":"Ada"}`)
		if st != 200 {
			t.Fatalf("webhook of %s: %d %v", flow, st, body)
		}
		return body
	}

	_, alice := p.member("acme")
	setup(alice, "key-of-tenant-a")
	st, m := p.call("POST", "/api/v1/integrations", alice, `{"name":"crm-greeter","settings":{"greeting":"Hello"}}`)
	if st != 201 {
		t.Fatalf("integration: %d %v", st, m)
	}
	integ := m["data"].(map[string]any)["id"].(string)
	_, m = p.call("GET", "/api/v1/connections", alice, "")
	conn := m["data"].([]any)[0].(map[string]any)["id"].(string)
	st, m = p.call("POST", "/api/v1/flows", alice, `{"name":"greet","integration":"`+integ+`","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook","config":{"mode":"sync","timeoutMs":30000}},
		{"id":"crm","type":"action","connector":"http","action":"request","connection":"`+conn+`",
		 "config":{"method":"POST","url":"`+srv.URL+`/contacts","body":{"name":"{{ input.name }}"}}},
		{"id":"shape","type":"action","connector":"transform","action":"map","config":{"fields":{"id":"steps.crm.body.id","text":"settings.greeting + ', ' + steps.crm.body.name"}}},
		{"id":"out","type":"respond"}],
		"edges":[{"source":"hook","target":"crm"},{"source":"crm","target":"shape","port":"success"},{"source":"shape","target":"out"}]}}`)
	if st != 201 {
		t.Fatalf("flow: %d %v", st, m)
	}
	flowA := m["data"].(map[string]any)["id"].(string)
	if st, m := p.call("POST", "/api/v1/integrations/"+integ+"/start", alice, ""); st != 200 || m["data"].(map[string]any)["failed"] != 0.0 {
		t.Fatalf("start: %d %v", st, m)
	}
	want := hook(flowA)
	if want["text"] != "Hello, Ada" || want["id"] != "c-1" {
		t.Fatalf("tenant A's answer: %v", want)
	}

	req, _ := http.NewRequest(http.MethodGet, p.base+"/api/v1/integrations/"+integ+"/export?format=yaml", nil)
	req.Header.Set("Authorization", "Bearer "+alice)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	exported, _ := io.ReadAll(res.Body)
	_ = res.Body.Close()
	if res.StatusCode != 200 || strings.Contains(string(exported), "key-of-tenant-a") || strings.Contains(string(exported), conn) {
		t.Fatalf("export: %d, holds the secret or the connection id: %s", res.StatusCode, exported)
	}

	_, bob := p.member("globex")
	setup(bob, "key-of-tenant-b")
	req, _ = http.NewRequest(http.MethodPost, p.base+"/api/v1/integrations/import", bytes.NewReader(exported))
	req.Header.Set("Authorization", "Bearer "+bob)
	req.Header.Set("Content-Type", "application/yaml")
	res, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var imported map[string]any
	_ = json.NewDecoder(res.Body).Decode(&imported)
	_ = res.Body.Close()
	if res.StatusCode != 201 {
		t.Fatalf("import: %d %v", res.StatusCode, imported)
	}
	plan := imported["data"].(map[string]any)
	integB := plan["integration"].(map[string]any)["id"].(string)
	flowB := plan["flows"].([]any)[0].(map[string]any)["id"].(string)
	if st, m := p.call("POST", "/api/v1/integrations/"+integB+"/start", bob, ""); st != 200 || m["data"].(map[string]any)["failed"] != 0.0 {
		t.Fatalf("start the import: %d %v", st, m)
	}
	if got := hook(flowB); !reflect.DeepEqual(got, want) {
		t.Fatalf("tenant B's answer %v, want tenant A's %v", got, want)
	}
	if keys := crm.seen(); !reflect.DeepEqual(keys, []string{"key-of-tenant-a", "key-of-tenant-b"}) {
		t.Fatalf("the CRM saw keys %v: each tenant's flow must use its own connection", keys)
	}
}
