// Package integration defines the integration: a named group of flows with owners like a
// flow's and settings its flows share. The settings are checked against the integration's own
// JSON Schema (settingsSchema) and reach the member flows as a snapshot in each flow revision
// (flowdoc.Flow.IntegrationSettings), so an execution keeps the settings it started with.
package integration

import (
	"strings"
	"time"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/schemaproblem"
	"github.com/flowd/flowd/internal/userschema"
)

// SchemaFile is the embedded schema of integration documents.
const SchemaFile = "integration.schema.json"

// Integration is a group of flows and the settings they share. ID, Revision, CreatedAt and
// UpdatedAt are managed by the server.
type Integration struct {
	ID             string          `json:"id,omitempty"`
	Name           string          `json:"name"`
	Description    string          `json:"description,omitempty"`
	Owners         []flowdoc.Owner `json:"owners,omitempty"`
	SettingsSchema map[string]any  `json:"settingsSchema,omitempty"`
	Settings       map[string]any  `json:"settings,omitempty"`
	Revision       int             `json:"revision,omitempty"`
	CreatedAt      *time.Time      `json:"createdAt,omitempty"`
	UpdatedAt      *time.Time      `json:"updatedAt,omitempty"`
}

// ReadOnly are the fields the server manages; a client may echo them back.
var ReadOnly = []string{"id", "revision", "createdAt", "updatedAt", "flows"}

// Decode validates an integration document (JSON): its shape, its settingsSchema as a JSON
// Schema, and its settings against that schema. Every problem is reported, each with a JSON
// pointer into the document.
func Decode(doc []byte) (*Integration, problem.List) {
	var in Integration
	if ps := schemaproblem.Decode(doc, SchemaFile, "the integration", &in); ps != nil {
		return nil, ps
	}
	if strings.TrimSpace(in.Name) == "" {
		return nil, problem.List{problem.New(schemaproblem.CodeLength, "/name", "the name must not be blank")}
	}
	if ps := CheckSettings(in.SettingsSchema, in.Settings); len(ps) > 0 {
		return nil, ps
	}
	return &in, nil
}

// CheckSettings compiles settingsSchema (problems under /settingsSchema) and checks settings
// against it (problems under /settings). Without a schema any object is accepted.
func CheckSettings(settingsSchema, settings map[string]any) problem.List {
	if settingsSchema == nil {
		return nil
	}
	s, ps := userschema.Compile(settingsSchema, "/settingsSchema")
	if len(ps) > 0 {
		return ps
	}
	if settings == nil {
		settings = map[string]any{}
	}
	return userschema.Check(s, settings, "/settings")
}

// SharesOwner tells whether a flow with owners may belong to in: they have an owner in common
// (the same user, or the same tenant), so an integration never gathers another tenant's flows.
func SharesOwner(in *Integration, owners []flowdoc.Owner) bool {
	for _, o := range owners {
		for _, io := range in.Owners {
			if o == io {
				return true
			}
		}
	}
	return false
}
