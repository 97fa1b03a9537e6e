package bundle

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/flowd/flowd/internal/flowdoc"
)

func TestRefsFindEveryConnectionAndRenameIt(t *testing.T) {
	f := &flowdoc.Flow{ID: "f1", Name: "x", Status: "active", Revision: 4, Integration: "i1",
		Owners: []flowdoc.Owner{{ID: "u1", Type: flowdoc.OwnerUser}},
		Graph: flowdoc.Graph{Nodes: []flowdoc.Node{
			{ID: "hook", Type: flowdoc.TypeWebhook, Config: map[string]any{"auth": map[string]any{"type": "bearer", "connection": "c-auth"}}},
			{ID: "crm", Type: flowdoc.TypeAction, Connector: "http", Action: "request", Connection: "c-crm"},
		}},
		Notifications: &flowdoc.Notifications{Webhook: &flowdoc.WebhookNotification{URL: "https://ops", Connection: "c-ops"}},
	}
	p, err := Portable(f)
	if err != nil {
		t.Fatal(err)
	}
	if p.ID != "" || p.Status != "" || p.Revision != 0 || p.Owners != nil || p.Integration != "" {
		t.Fatalf("portable keeps instance fields: %+v", p)
	}
	var paths []string
	for _, r := range Refs(&p) {
		paths = append(paths, r.Path+"="+r.Value())
		r.Set("name-of-" + r.Value())
	}
	want := []string{"/graph/nodes/0/config/auth/connection=c-auth", "/graph/nodes/1/connection=c-crm", "/notifications/webhook/connection=c-ops"}
	if !reflect.DeepEqual(paths, want) {
		t.Fatalf("refs %v, want %v", paths, want)
	}
	if p.Graph.Nodes[1].Connection != "name-of-c-crm" || p.Graph.Nodes[0].Config["auth"].(map[string]any)["connection"] != "name-of-c-auth" ||
		p.Notifications.Webhook.Connection != "name-of-c-ops" {
		t.Fatalf("renamed: %+v", p)
	}
	if f.Graph.Nodes[1].Connection != "c-crm" || f.Graph.Nodes[0].Config["auth"].(map[string]any)["connection"] != "c-auth" {
		t.Fatal("renaming the portable copy changed the flow")
	}
}

func TestYAMLReadsBackAsTheSameDocument(t *testing.T) {
	b := &Bundle{Format: Format, Integration: Integration{Name: "crm", Settings: map[string]any{"country": "NO", "zip": "01234", "on": true, "n": 1000000.0}},
		Flows: []flowdoc.Flow{{Name: "f", Graph: flowdoc.Graph{Nodes: []flowdoc.Node{{ID: "hook", Type: flowdoc.TypeWebhook,
			Config: map[string]any{"mode": "sync"}}, {ID: "t", Type: flowdoc.TypeAction, Connector: "transform", Action: "map",
			Config: map[string]any{"fields": map[string]any{"v": "{{ input.x }}: yes"}}}}, Edges: []flowdoc.Edge{}}}},
		Connections: []Connection{}}
	y, err := b.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(y), "format: flowd.integration/v1\nintegration:") {
		t.Fatalf("yaml:\n%s", y)
	}
	back, ps := flowdoc.ToJSON(y, "application/yaml")
	if len(ps) > 0 {
		t.Fatalf("%v\n%s", ps, y)
	}
	want, _ := json.Marshal(b)
	var a, w any
	_ = json.Unmarshal(back, &a)
	_ = json.Unmarshal(want, &w)
	if !reflect.DeepEqual(a, w) {
		t.Fatalf("read back:\n%s\nwant\n%s", back, want)
	}
}
