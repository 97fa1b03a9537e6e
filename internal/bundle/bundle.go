// Package bundle is the portable form of an integration: the integration's settings and its
// flows' writable fields in one JSON or YAML document, to move an integration between tenants
// or flowd instances. Ids that only mean something where they were made are left out or
// replaced: a flow's connections are named by their connection's NAME, and the importer's
// connections of those names take their place. A bundle never holds a secret: connections are
// referred to, never copied.
package bundle

import (
	"encoding/json"
	"fmt"
	"strconv"

	yaml "go.yaml.in/yaml/v2"

	"github.com/flowd/flowd/internal/flowdoc"
)

// Format names this version of the bundle document.
const Format = "flowd.integration/v1"

// Bundle is one integration with its flows.
type Bundle struct {
	Format      string         `json:"format"`
	Integration Integration    `json:"integration"`
	Flows       []flowdoc.Flow `json:"flows"`
	// Connections lists every connection the flows name, by name, with its type.
	Connections []Connection `json:"connections"`
}

// Integration is the integration's writable fields, without its owners.
type Integration struct {
	Name           string         `json:"name"`
	Description    string         `json:"description,omitempty"`
	SettingsSchema map[string]any `json:"settingsSchema,omitempty"`
	Settings       map[string]any `json:"settings,omitempty"`
}

// Connection is a connection a bundle's flows use: its name and type, nothing else.
type Connection struct {
	Name string `json:"name"`
	Type string `json:"type"`
}

// Ref is one place in a flow that names a connection.
type Ref struct {
	// Path is the JSON pointer of the value inside the flow document.
	Path  string
	value *string
	// auth is the webhook trigger's auth object, which holds the value in a map.
	auth map[string]any
}

// Value is the connection id or name at the place.
func (r Ref) Value() string {
	if r.auth != nil {
		s, _ := r.auth["connection"].(string)
		return s
	}
	return *r.value
}

// Set replaces the connection id or name at the place.
func (r Ref) Set(v string) {
	if r.auth != nil {
		r.auth["connection"] = v
		return
	}
	*r.value = v
}

// Refs lists the places in f that name a connection (a node's connection, a webhook trigger's
// auth connection, the failure notification webhook's connection), in document order.
func Refs(f *flowdoc.Flow) []Ref {
	var out []Ref
	for i := range f.Graph.Nodes {
		n := &f.Graph.Nodes[i]
		if n.Connection != "" {
			out = append(out, Ref{Path: "/graph/nodes/" + strconv.Itoa(i) + "/connection", value: &n.Connection})
		}
		if n.Type == flowdoc.TypeWebhook {
			if auth, ok := n.Config["auth"].(map[string]any); ok {
				if s, ok := auth["connection"].(string); ok && s != "" {
					out = append(out, Ref{Path: "/graph/nodes/" + strconv.Itoa(i) + "/config/auth/connection", auth: auth})
				}
			}
		}
	}
	if nt := f.Notifications; nt != nil && nt.Webhook != nil && nt.Webhook.Connection != "" {
		out = append(out, Ref{Path: "/notifications/webhook/connection", value: &nt.Webhook.Connection})
	}
	return out
}

// Portable is f as a bundle holds it: its writable fields only (no ids, status, owners,
// integration or template of this instance), deep-copied so that renaming its connections
// leaves f alone.
func Portable(f *flowdoc.Flow) (flowdoc.Flow, error) {
	raw, err := json.Marshal(f)
	if err != nil {
		return flowdoc.Flow{}, fmt.Errorf("copy flow %s: %w", f.ID, err)
	}
	var c flowdoc.Flow
	if err := json.Unmarshal(raw, &c); err != nil {
		return flowdoc.Flow{}, fmt.Errorf("copy flow %s: %w", f.ID, err)
	}
	c.ID, c.Status, c.StatusReason, c.Revision, c.Type, c.CreatedAt, c.UpdatedAt = "", "", nil, 0, "", nil, nil
	c.Owners, c.Integration, c.IntegrationSettings, c.FromTemplate, c.FromTemplateVersion = nil, "", nil, "", 0
	return c, nil
}

// YAML encodes the bundle as YAML, its top-level keys in the JSON order. Strings that YAML
// would read as something else are quoted, so flowd's YAML reader gets the same document back.
func (b *Bundle) YAML() ([]byte, error) {
	raw, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	var tree map[string]any
	if err := json.Unmarshal(raw, &tree); err != nil {
		return nil, err
	}
	doc := yaml.MapSlice{}
	for _, k := range []string{"format", "integration", "flows", "connections"} {
		doc = append(doc, yaml.MapItem{Key: k, Value: tree[k]})
	}
	return yaml.Marshal(doc)
}
