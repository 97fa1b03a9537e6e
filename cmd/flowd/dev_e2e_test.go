package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/connectors/host/hosttest"
	"github.com/flowd/flowd/controlplane"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/schemas"
)

// hookAck is one webhook answer: its status and, for a 202, the execution it started.
type hookAck struct {
	status    int
	execution string
	err       error
}

// hookClient sends the webhooks of the test. Its spare connections are closed at the end: a
// connection dialled for a burst but never used holds a fiber shutdown until its timeout.
var hookClient = &http.Client{Transport: &http.Transport{}}

// hook posts to a flow's webhook; safe from any goroutine.
func (p *pipeline) hook(id, body string) hookAck {
	res, err := hookClient.Post(p.base+"/hooks/"+id, "application/json", strings.NewReader(body))
	if err != nil {
		return hookAck{err: err}
	}
	defer func() { _ = res.Body.Close() }()
	raw, _ := io.ReadAll(res.Body)
	a := hookAck{status: res.StatusCode}
	if a.status == http.StatusAccepted {
		var m struct {
			Data struct {
				ExecutionID string `json:"executionId"`
			} `json:"data"`
		}
		if err := json.Unmarshal(raw, &m); err != nil || m.Data.ExecutionID == "" {
			return hookAck{status: a.status, err: fmt.Errorf("202 without an execution id: %s", raw)}
		}
		a.execution = m.Data.ExecutionID
	}
	return a
}

// TestDevWebhooksFollowTheFlowLifecycle is issue 9's acceptance test for the one composition
// path, on the roles as `flowd dev` composes them (startAll): a webhook follows its flow's
// start and stop within 1 s, and every webhook answered 202 runs even when its flow is stopped
// and deleted while the record is in flight.
func TestDevWebhooksFollowTheFlowLifecycle(t *testing.T) {
	p := startPipeline(t)
	t.Cleanup(hookClient.CloseIdleConnections) // before the pipeline stops
	// The 1 s is the acceptance figure for a webhook to follow start and stop.
	const follow = time.Second

	var acked []string // every execution a 202 promised
	// within posts to the hook until it answers want, and fails after the acceptance deadline.
	within := func(id string, want int, what string) {
		t.Helper()
		deadline := time.Now().Add(follow)
		for n := 0; ; n++ {
			a := p.hook(id, fmt.Sprintf(`{"probe":%d}`, n))
			if a.err != nil {
				t.Fatalf("%s: %v", what, a.err)
			}
			if a.execution != "" {
				acked = append(acked, a.execution)
			}
			if a.status == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: webhook answers %d %s after the flow changed, want %d", what, a.status, follow, want)
			}
			time.Sleep(5 * time.Millisecond) // polling the webhook against the deadline
		}
	}
	lifecycle := func(id, action, want string) {
		t.Helper()
		st, m := p.post("/api/v1/flows/"+id+"/"+action, "")
		if st != http.StatusOK || m["data"].(map[string]any)["status"] != want {
			t.Fatalf("%s: %d %v", action, st, m)
		}
	}

	st, m := p.post("/api/v1/flows", `{"name":"lifecycle","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook"},
		{"id":"t","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input"}}}],
		"edges":[{"source":"hook","target":"t"}]}}`)
	if st != http.StatusCreated {
		t.Fatalf("create: %d %v", st, m)
	}
	id := m["data"].(map[string]any)["id"].(string)
	rev := int(m["data"].(map[string]any)["revision"].(float64))
	if a := p.hook(id, `{}`); a.err != nil || a.status != http.StatusNotFound {
		t.Fatalf("webhook of an inactive flow: %d %v", a.status, a.err)
	}

	lifecycle(id, "start", "active")
	within(id, http.StatusAccepted, "start")
	lifecycle(id, "stop", "inactive")
	within(id, http.StatusNotFound, "stop")
	lifecycle(id, "start", "active")
	within(id, http.StatusAccepted, "start again")

	// A burst of webhooks; once some are acknowledged the flow is stopped and deleted at once,
	// while the rest are still being sent and the acknowledged ones are on their way.
	const burst = 50
	acks := make(chan hookAck, burst)
	someAcked := make(chan struct{})
	var once sync.Once
	var wg sync.WaitGroup
	for i := range burst {
		wg.Go(func() {
			a := p.hook(id, fmt.Sprintf(`{"n":%d}`, i))
			if a.status == http.StatusAccepted {
				once.Do(func() { close(someAcked) })
			}
			acks <- a
		})
	}
	go func() { wg.Wait(); once.Do(func() { close(someAcked) }) }()
	<-someAcked
	lifecycle(id, "stop", "inactive")
	if st, m := p.call(http.MethodDelete, "/api/v1/flows/"+id, p.token, ""); st != http.StatusNoContent {
		t.Fatalf("delete: %d %v", st, m)
	}
	deleted := time.Now()
	wg.Wait()
	close(acks)
	inBurst := 0
	for a := range acks {
		switch {
		case a.err != nil:
			t.Fatalf("burst webhook: %v", a.err)
		case a.status == http.StatusAccepted:
			acked = append(acked, a.execution)
			inBurst++
		case a.status != http.StatusNotFound: // refused after the stop: never acknowledged
			t.Fatalf("burst webhook answered %d", a.status)
		}
	}
	if inBurst == 0 {
		t.Fatal("no webhook of the burst was acknowledged")
	}
	if st, _ := p.call(http.MethodGet, "/api/v1/flows/"+id, p.token, ""); st != http.StatusNotFound {
		t.Fatalf("the deleted flow is still served: %d", st)
	}
	// The history outlives the flow until in-flight work has drained (store.RevisionGrace).
	if _, err := p.st.Revision(context.Background(), id, rev); err != nil {
		t.Fatalf("revision %d of the deleted flow: %v", rev, err)
	}

	// Every acknowledged webhook ends as a finished execution of the flow, exactly once.
	late := 0 // started after the delete: what the revision grace exists for
	for _, ex := range acked {
		got, steps := p.finished(ex)
		if got.StartedAt.After(deleted) {
			late++
		}
		ran := stepsByNode(steps)["t"]
		if got.Status != envelope.StatusSucceeded || got.FlowID != id || len(ran) != 1 || ran[0].Status != envelope.StepSucceeded {
			t.Fatalf("execution %s: %s flow %s, action steps %+v, error %v", ex, got.Status, got.FlowID, ran, got.Error)
		}
	}
	_, total, err := p.st.FlowExecutions(context.Background(), id, "", 0, 1)
	if err != nil || total != len(acked) {
		t.Fatalf("executions of the flow: %d (%v), want one per 202: %d", total, err, len(acked))
	}
	t.Logf("%d webhooks acknowledged (%d in the burst), all ran; %d started after the delete", len(acked), inBurst, late)
}

// TestDevPicksUpInstalledConnectors: a connector installed into the connectors dir of a running
// `flowd dev` (startAll) is listed by the API, accepted in flows and run by the runner within
// about a second, without a restart.
func TestDevPicksUpInstalledConnectors(t *testing.T) {
	staging := t.TempDir()
	hosttest.Build(t, staging, map[string]string{"code": "github.com/flowd/flowd/connectors/code"})
	p := startPipeline(t)
	doc := `{"name":"doubler","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook","config":{"mode":"sync","timeoutMs":10000}},
		{"id":"double","type":"action","connector":"code","action":"run","config":{"source":"return {doubled: input.n * 2};"}},
		{"id":"answer","type":"respond","config":{"status":200}}],
		"edges":[{"source":"hook","target":"double"},{"source":"double","target":"answer"}]}}`

	if st, _ := p.get("/api/v1/connectors/code", p.token); st != http.StatusNotFound {
		t.Fatalf("code before it is installed: %d, want 404", st)
	}
	if st, m := p.post("/api/v1/flows", doc); st != http.StatusBadRequest || !strings.Contains(fmt.Sprint(m), "unknown_connector") {
		t.Fatalf("a flow using code before it is installed: %d %v, want 400 unknown_connector", st, m)
	}

	if _, _, err := installConnector(filepath.Join(staging, "code"), filepath.Join(p.dir, "connectors"), ""); err != nil {
		t.Fatal(err)
	}
	installed := time.Now()
	for {
		st, m := p.get("/api/v1/connectors/code", p.token)
		if st == http.StatusOK {
			break
		}
		if time.Since(installed) > 15*time.Second { // about a second, with room for a busy machine
			t.Fatalf("code still unknown %s after its install: %d %v", time.Since(installed), st, m)
		}
		time.Sleep(50 * time.Millisecond) // polling the API against the deadline
	}
	t.Logf("code listed %s after its install", time.Since(installed).Round(time.Millisecond))

	id := p.flow(doc)
	st, body := p.post("/hooks/"+id, `{"n":21}`)
	if st != http.StatusOK || fmt.Sprint(body["doubled"]) != "42" {
		t.Fatalf("webhook through the installed connector: %d %v, want 200 with doubled 42", st, body)
	}
}

// `flowd dev` serves the OpenAPI document on its one address, without a token.
func TestDevServesTheOpenAPIDocument(t *testing.T) {
	p := startPipeline(t)
	if s, b := fetch(p.base + controlplane.PathOpenAPI); s != http.StatusOK || b != string(schemas.OpenAPI()) {
		t.Fatalf("GET %s = %d %.300s", controlplane.PathOpenAPI, s, b)
	}
}
