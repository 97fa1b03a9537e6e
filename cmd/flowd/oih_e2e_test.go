package main

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
)

// An Open Integration Hub flow (componentId, function, fields, cron) sent to the Flow
// Repository's route runs on its cron: each tick's execution runs both nodes and succeeds.
// Its OIH export, sent back, is the same flow.
func TestOIHFlowRunsOnItsCron(t *testing.T) {
	p := startPipeline(t)
	doc := fmt.Sprintf(`{"name": "oih cron", "cron": "@every 1s", "graph": {
	  "nodes": [
	    {"id": "shape", "name": "Shape", "componentId": "transform", "function": "map",
	     "fields": {"fields": {"at": "input.scheduledAt"}}},
	    {"id": "send", "name": "Send", "componentId": "http", "function": "request",
	     "fields": {"method": "POST", "url": "%s/dev/echo", "body": {"at": "{{ steps.shape.at }}"}}}],
	  "edges": [{"source": "shape", "target": "send"}]}}`, p.base)
	st, m := p.call("POST", "/flows", p.token, doc)
	if st != 201 {
		t.Fatalf("create: %d %v", st, m)
	}
	created := m["data"].(map[string]any)
	id := created["id"].(string)
	if st, m = p.call("POST", "/flows/"+id+"/start", p.token, ""); st != 200 || m["data"].(map[string]any)["status"] != "active" {
		t.Fatalf("start: %d %v", st, m)
	}
	t0 := time.Now().UTC()
	ticks := p.ticks(id, t0.Add(2*time.Second))
	if len(ticks) < 2 {
		t.Fatalf("%d ticks in 2 s", len(ticks))
	}
	latest := latestExecution(id, ticks)
	ex, steps := p.finished(latest)
	if ex.Status != envelope.StatusSucceeded {
		t.Fatalf("execution %s: %s %v", latest, ex.Status, ex.Error)
	}
	byNode := stepsByNode(steps)
	for _, n := range []string{"cron", "shape", "send"} {
		if len(byNode[n]) != 1 || byNode[n][0].Status != envelope.StatusSucceeded {
			t.Fatalf("steps of %s: %+v", n, byNode[n])
		}
	}
	// The tick went through the transform and out over HTTP.
	var sent struct {
		Body struct {
			Received struct {
				At string `json:"at"`
			} `json:"received"`
		} `json:"body"`
	}
	err := json.Unmarshal(byNode["send"][0].Output, &sent)
	at, perr := time.Parse(time.RFC3339Nano, sent.Body.Received.At)
	if err != nil || perr != nil || !at.Equal(*ex.ScheduledAt) {
		t.Fatalf("echoed %s (%v, %v), want the tick %s", byNode["send"][0].Output, err, perr, ex.ScheduledAt)
	}

	// Exported and sent back: the same flow.
	st, m = p.get("/flows/"+id+"?format=oih", p.token)
	exp, _ := m["data"].(map[string]any)
	if st != 200 || exp["cron"] != "@every 1s" {
		t.Fatalf("export: %d %v", st, m)
	}
	raw, _ := json.Marshal(exp)
	st, m = p.call("POST", "/flows", p.token, string(raw))
	if st != 201 {
		t.Fatalf("re-import: %d %v", st, m)
	}
	a, _ := json.Marshal(created["graph"])
	b, _ := json.Marshal(m["data"].(map[string]any)["graph"])
	if string(a) != string(b) {
		t.Fatalf("re-imported graph\n%s\nwant\n%s", b, a)
	}
}
