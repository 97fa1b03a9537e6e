package controlplane

import (
	"context"
	"io"
	"log/slog"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/gofiber/fiber/v2"

	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/problem"
	"github.com/flowd/flowd/internal/problem/httpproblem"
	"github.com/flowd/flowd/internal/store"
)

// appendRecorder is a store that only records the audit entries appended to it.
type appendRecorder struct {
	*store.Store
	got []audit.Entry
}

func (r *appendRecorder) AppendAudit(_ context.Context, _ time.Duration, es ...audit.Entry) error {
	r.got = append(r.got, es...)
	return nil
}

// The trail appends what a handler noted only when the request succeeded, filled in with who
// and when; a failed request, by error or by status, appends nothing.
func TestAuditTrailAppendsOnlyAfterSuccess(t *testing.T) {
	rec := &appendRecorder{}
	at := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	s := &Server{cfg: Config{Now: func() time.Time { return at }, AuditRetention: time.Hour}, st: rec,
		log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	app := fiber.New(fiber.Config{ErrorHandler: httpproblem.Handler{}.Handle})
	app.Use(s.auditTrail)
	app.Use(func(c *fiber.Ctx) error {
		c.Locals(principalKey, &identity.Principal{User: identity.User{ID: "u1", Username: "ada", Tenant: "t1"}})
		return c.Next()
	})
	app.Post("/ok", func(c *fiber.Ctx) error {
		audited(c, audit.Entry{Action: "x.one", Target: audit.Target{Type: "x", ID: "1"}})
		audited(c, audit.Entry{Action: "x.two", Target: audit.Target{Type: "x", ID: "2"}})
		return c.SendStatus(fiber.StatusNoContent)
	})
	app.Post("/error", func(c *fiber.Ctx) error {
		audited(c, audit.Entry{Action: "x.error"})
		return fail(fiber.StatusConflict, problem.New("conflict", "", "no"))
	})
	app.Post("/status", func(c *fiber.Ctx) error {
		audited(c, audit.Entry{Action: "x.status"})
		return c.Status(fiber.StatusBadRequest).JSON(fiber.Map{})
	})
	app.Post("/nothing", func(c *fiber.Ctx) error { return c.SendStatus(fiber.StatusOK) })
	for path, want := range map[string]int{"/ok": 204, "/error": 409, "/status": 400, "/nothing": 200} {
		res, err := app.Test(httptest.NewRequest("POST", path, nil))
		if err != nil || res.StatusCode != want {
			t.Fatalf("POST %s: %v %v, want %d", path, res.StatusCode, err, want)
		}
	}
	if len(rec.got) != 2 {
		t.Fatalf("appended %+v, want x.one and x.two", rec.got)
	}
	for i, e := range rec.got {
		if e.Action != []string{"x.one", "x.two"}[i] || e.Actor != (audit.Actor{ID: "u1", Username: "ada"}) || e.Tenant != "t1" ||
			!e.Time.Equal(at) || len(e.ID) != 24 {
			t.Errorf("entry %d: %+v", i, e)
		}
	}
	if rec.got[0].ID == rec.got[1].ID {
		t.Error("two entries share an id")
	}
}

func TestChangedFieldsNamesTopLevelFields(t *testing.T) {
	base := func() *flowdoc.Flow {
		return &flowdoc.Flow{Name: "orders", Description: "v1", Revision: 3, Status: flowdoc.StatusInactive,
			Graph: flowdoc.Graph{Nodes: []flowdoc.Node{{ID: "hook", Type: flowdoc.TypeWebhook}}, Edges: []flowdoc.Edge{}}}
	}
	a, b := base(), base()
	if got := changedFields(a, b); len(got) != 0 {
		t.Fatalf("same flows: %v", got)
	}
	b.Description, b.Revision, b.Status = "v2", 4, flowdoc.StatusActive // server fields are no change
	b.Graph.Nodes[0].Config = map[string]any{"mode": "sync"}
	if got := changedFields(a, b); !slices.Equal(got, []string{"description", "graph"}) {
		t.Fatalf("changed %v, want [description graph]", got)
	}
	b = base()
	b.Description = ""
	if got := changedFields(a, b); !slices.Equal(got, []string{"description"}) {
		t.Fatalf("a removed field: %v", got)
	}
}
