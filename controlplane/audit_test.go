package controlplane_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flowd/flowd/controlplane"
	"github.com/flowd/flowd/internal/audit"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/identity"
	"github.com/flowd/flowd/internal/store"
	"github.com/flowd/flowd/internal/testrig"
)

// testClock is the API's clock, real time moved on by what a test says.
type testClock struct {
	mu  sync.Mutex
	off time.Duration
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.off)
}

func (c *testClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.off += d
}

func withClock(now func() time.Time) envOption { return func(o *envOptions) { o.now = now } }

func withAuditRetention(d time.Duration) envOption {
	return func(o *envOptions) { o.auditRetention = d }
}

func withStore(wrap func(*store.Store) controlplane.Store) envOption {
	return func(o *envOptions) { o.store = wrap }
}

// auditLog is the audit list token reads with query (100 a page unless query pages).
func (e *env) auditLog(token, query string) ([]map[string]any, resp) {
	e.t.Helper()
	var params []string
	if query != "" {
		params = append(params, query)
	}
	if !strings.Contains(query, "page[") {
		params = append(params, "page[size]=100")
	}
	r := e.must(200, e.call("GET", "/api/v1/audit?"+strings.Join(params, "&"), token, nil))
	var out []map[string]any
	for _, x := range r.list() {
		out = append(out, x.(map[string]any))
	}
	return out, r
}

// line sums an entry up: "action type:id".
func line(en map[string]any) string {
	tg := en["target"].(map[string]any)
	return fmt.Sprintf("%s %s:%s", en["action"], tg["type"], tg["id"])
}

func lines(es []map[string]any) []string {
	out := make([]string, len(es))
	for i, en := range es {
		out[i] = line(en)
	}
	return out
}

// Every kind of change made through the API is recorded once, with who made it, to what, and
// a flow's revisions; a request that fails or changes nothing records nothing; each tenant
// reads its own entries only; no secret reaches the log.
func TestAuditLogRecordsEveryChange(t *testing.T) {
	e := newEnv(t, withDeadLetters())
	ta, tb := e.tenant("acme"), e.tenant("globex")
	alicePerms := append(slices.Clone(identity.DefaultPermissions), identity.PermUsersWrite, identity.PermAuditRead)
	aliceID, alice := e.user(ta, "alice", alicePerms...)
	_, auditor := e.user(ta, "auditor", identity.PermAuditRead)
	malloryID, mallory := e.user(tb, "mallory", append(slices.Clone(identity.DefaultPermissions), identity.PermAuditRead)...)
	_, noAudit := e.user(ta, "noaudit")
	sec := func(name string) string { return name + "-" + testrig.Unique("s3cr3t") }
	password, newPassword := sec("pw"), sec("pw2")

	// Alice's changes, with failing and idle requests in between.
	f1 := e.must(201, e.call("POST", "/api/v1/flows", alice, readmeFlow(t))).data()
	flow, name := f1["id"].(string), f1["name"].(string)
	f2 := e.must(201, e.call("POST", "/flows", alice, readmeFlow(t))).data()["id"].(string) // FlowMate route
	e.must(400, e.call("POST", "/api/v1/flows", alice, `{"name": "no graph"}`))
	e.must(200, e.call("PATCH", "/api/v1/flows/"+flow, alice, `{"description": "v2"}`))
	e.must(200, e.call("PATCH", "/api/v1/flows/"+flow, alice, `{"description": "v2"}`)) // unchanged
	e.must(412, e.call("PATCH", "/api/v1/flows/"+flow, alice, `{"description": "v3"}`, "If-Match", "1"))
	e.must(200, e.call("POST", "/api/v1/flows/"+flow+"/start", alice, nil))
	e.must(200, e.call("POST", "/api/v1/flows/"+flow+"/start", alice, nil)) // running already
	e.must(409, e.call("DELETE", "/api/v1/flows/"+flow, alice, nil))
	e.must(200, e.call("POST", "/api/v1/flows/"+flow+"/stop", alice, nil))
	e.must(404, e.call("DELETE", "/api/v1/flows/"+flow, mallory, nil))
	conn := e.must(201, e.call("POST", "/api/v1/connections", alice, map[string]any{"name": "Billing API", "type": "basic",
		"data": map[string]any{"username": "billing-svc", "password": password}})).data()["id"].(string)
	e.must(400, e.call("PATCH", "/api/v1/connections/"+conn, alice, map[string]any{"data": map[string]any{"password": 7}}))
	e.must(200, e.call("PATCH", "/api/v1/connections/"+conn, alice, map[string]any{"name": "Billing", "data": map[string]any{"password": newPassword}}))
	e.must(204, e.call("DELETE", "/api/v1/connections/"+conn, alice, nil))
	e.must(400, e.call("POST", "/api/v1/users", alice, map[string]any{"username": "bob", "permissions": []string{"all"}}))
	bobName := "bob" + testrig.Unique("-")
	bob := e.must(201, e.call("POST", "/api/v1/users", alice, map[string]any{"username": bobName, "permissions": []string{"flows.read"}})).data()["id"].(string)
	tok := e.must(201, e.call("POST", "/api/v1/users/"+aliceID+"/tokens", alice, map[string]any{"name": "ci"})).data()
	newToken, tokID := tok["token"].(string), tok["id"].(string)
	e.must(204, e.call("DELETE", "/api/v1/tokens/"+tokID, alice, nil))
	e.must(404, e.call("DELETE", "/api/v1/tokens/"+tokID, alice, nil))

	at := time.Now().UTC().Add(-time.Minute)
	e.failed("x1", flow, "http_5xx", at)
	e.failed("x2", flow, "timeout", at)
	e.failed("x3", flow, "timeout", at)
	e.failed("x4", flow, "bad_request", at)
	e.must(404, e.call("POST", "/api/v1/executions/nope/retry", alice, nil))
	e.must(202, e.call("POST", "/api/v1/executions/x1/retry", alice, nil))
	e.must(202, e.call("POST", "/api/v1/executions/x1/retry", alice, nil)) // asked already
	e.must(202, e.call("POST", "/api/v1/flows/"+flow+"/errors/retry", alice, map[string]any{"code": "timeout"}))
	e.must(200, e.call("POST", "/api/v1/flows/"+flow+"/errors/resolve", alice, map[string]any{"executionIds": []string{"x4"}}))
	e.must(200, e.call("POST", "/api/v1/flows/"+flow+"/errors/resolve", alice, map[string]any{"executionIds": []string{"x4"}})) // resolved already

	gone := "flow revision not available"
	for i, id := range []string{"0-1", "0-2", "0-3", "0-4"} {
		reason := "flow " + flow + " revision 1: " + gone
		if i >= 2 {
			reason = "bulk: " + reason
		}
		e.deadLetter(id, flow, envelope.TopicIngest, reason, at.Add(time.Duration(i)*time.Second))
	}
	e.must(200, e.call("POST", "/api/v1/dead-letters/0-1/replay", alice, nil))
	e.must(409, e.call("POST", "/api/v1/dead-letters/0-1/replay", alice, nil))
	e.must(200, e.call("DELETE", "/api/v1/dead-letters/0-2", alice, nil))
	e.must(200, e.call("DELETE", "/api/v1/dead-letters/0-2", alice, nil)) // discarded already
	e.must(200, e.call("POST", "/api/v1/dead-letters/replay", alice, `{"filter": {"reason": "bulk"}}`))
	e.must(200, e.call("POST", "/api/v1/dead-letters/replay", alice, `{"filter": {"reason": "bulk"}}`)) // none left
	e.must(204, e.call("DELETE", "/api/v1/flows/"+flow, alice, nil))
	e.must(404, e.call("DELETE", "/api/v1/flows/"+flow, alice, nil))

	// Mallory's one change, and the administrator's.
	mflow := e.must(201, e.call("POST", "/api/v1/flows", mallory, readmeFlow(t))).data()["id"].(string)
	e.must(200, e.call("PATCH", "/api/v1/tenants/"+ta, e.admin, map[string]any{"partnerTopics": []string{"acme.*"}}))

	t.Run("each change once", func(t *testing.T) {
		e := e.on(t)
		got, r := e.auditLog(auditor, "")
		want := []string{
			"flow.delete flow:" + flow,
			"deadletter.replay deadletter:0-4", "deadletter.replay deadletter:0-3",
			"deadletter.discard deadletter:0-2", "deadletter.replay deadletter:0-1",
			"errors.resolve flow:" + flow, "errors.retry flow:" + flow, "execution.retry execution:x1",
			"token.delete token:" + tokID, "token.create token:" + tokID, "user.create user:" + bob,
			"connection.delete connection:" + conn, "connection.update connection:" + conn, "connection.create connection:" + conn,
			"flow.stop flow:" + flow, "flow.start flow:" + flow, "flow.update flow:" + flow,
			"flow.create flow:" + f2, "flow.create flow:" + flow,
		}
		if !slices.Equal(lines(got), want) {
			t.Fatalf("tenant acme's audit log:\n  %s\nwant\n  %s", strings.Join(lines(got), "\n  "), strings.Join(want, "\n  "))
		}
		if m := r.body["meta"].(map[string]any); m["total"] != float64(len(want)) || m["perPage"] != float64(100) {
			t.Fatalf("meta %v", m)
		}
		byLine := map[string]map[string]any{}
		for _, en := range got {
			byLine[line(en)] = en
			actor := en["actor"].(map[string]any)
			if actor["id"] != aliceID || !strings.HasPrefix(actor["username"].(string), "alice-") || en["tenant"] != ta || en["id"] == "" {
				t.Errorf("%s: actor %v, tenant %v, id %v", line(en), actor, en["tenant"], en["id"])
			}
			if tm, err := time.Parse(time.RFC3339Nano, en["time"].(string)); err != nil || time.Since(tm) > time.Hour {
				t.Errorf("%s: time %v", line(en), en["time"])
			}
		}
		for l, fields := range map[string]string{
			"flow.create flow:" + flow:             "name=" + name + " revisionAfter=1",
			"flow.update flow:" + flow:             "name=" + name + " revisionBefore=1 revisionAfter=2 changes=[description]",
			"flow.start flow:" + flow:              "name=" + name + " revisionBefore=2 revisionAfter=2",
			"flow.stop flow:" + flow:               "name=" + name + " revisionBefore=2 revisionAfter=2",
			"flow.delete flow:" + flow:             "name=" + name + " revisionBefore=2",
			"connection.create connection:" + conn: "name=Billing API",
			"connection.update connection:" + conn: "name=Billing changes=[data name]",
			"connection.delete connection:" + conn: "name=Billing",
			"user.create user:" + bob:              "name=" + bobName,
			"token.create token:" + tokID:          "name=ci",
			"token.delete token:" + tokID:          "name=ci",
			"execution.retry execution:x1":         "",
			"errors.retry flow:" + flow:            "name=" + name + " count=2",
			"errors.resolve flow:" + flow:          "name=" + name + " count=1",
			"deadletter.discard deadletter:0-2":    "",
			"deadletter.replay deadletter:0-1":     "",
			"flow.create flow:" + f2:               "name=" + name + " revisionAfter=1",
			"deadletter.replay deadletter:0-3":     "",
			"deadletter.replay deadletter:0-4":     "",
		} {
			en, ok := byLine[l]
			if !ok {
				t.Errorf("no entry %s", l)
				continue
			}
			var have []string
			tg := en["target"].(map[string]any)
			if tg["name"] != nil {
				have = append(have, fmt.Sprintf("name=%v", tg["name"]))
			}
			for _, k := range []string{"revisionBefore", "revisionAfter", "changes", "count"} {
				if v, ok := en[k]; ok {
					have = append(have, fmt.Sprintf("%s=%v", k, v))
				}
			}
			if strings.Join(have, " ") != fields {
				t.Errorf("%s: %s, want %s", l, strings.Join(have, " "), fields)
			}
		}
	})

	t.Run("tenants read their own", func(t *testing.T) {
		e := e.on(t)
		if got, _ := e.auditLog(mallory, ""); !slices.Equal(lines(got), []string{"flow.create flow:" + mflow}) || got[0]["actor"].(map[string]any)["id"] != malloryID {
			t.Fatalf("mallory reads %v", got)
		}
		for _, q := range []string{"filter[actor]=" + aliceID, "filter[targetId]=" + flow, "filter[action]=deadletter"} {
			if got, r := e.auditLog(mallory, q); len(got) != 0 || r.body["meta"].(map[string]any)["total"] != float64(0) {
				t.Errorf("mallory reads %s: %s", q, r.raw)
			}
		}
		if r := e.must(400, e.call("GET", "/api/v1/audit?filter[tenant]="+ta, mallory, nil)); r.errCode() != "forbidden_tenant@filter[tenant]" {
			t.Errorf("mallory asks for acme's: %s", r.raw)
		}
		if got, _ := e.auditLog(mallory, "filter[tenant]="+tb); len(got) != 1 {
			t.Errorf("mallory names her own tenant: %v", got)
		}
		e.must(403, e.call("GET", "/api/v1/audit", noAudit, nil))
		e.must(401, e.call("GET", "/api/v1/audit", "", nil))

		// The administrator reads every tenant's, and its own changes under tenant "".
		all, _ := e.auditLog(e.admin, "")
		seen := map[string]bool{}
		for _, en := range all {
			seen[fmt.Sprint(en["tenant"])+" "+line(en)] = true
		}
		for _, l := range []string{ta + " flow.delete flow:" + flow, tb + " flow.create flow:" + mflow, " tenant.update tenant:" + ta,
			" tenant.create tenant:" + ta, " user.create user:" + aliceID} {
			if !seen[l] {
				t.Errorf("the administrator does not read %q", l)
			}
		}
		if all[0]["action"] != "tenant.update" || fmt.Sprint(all[0]["changes"]) != "[partnerTopics]" || all[0]["tenant"] != "" {
			t.Errorf("newest entry %v", all[0])
		}
		if got, _ := e.auditLog(e.admin, "filter[tenant]="+tb); !slices.Equal(lines(got), []string{"flow.create flow:" + mflow}) {
			t.Errorf("the administrator reads globex's: %v", lines(got))
		}

		// A user of no tenant shares the administrator's log, and reads only their own entries.
		lonerID, loner := e.user("", "loner", identity.PermFlowsUpdate, identity.PermAuditRead)
		lflow := e.must(201, e.call("POST", "/api/v1/flows", loner, readmeFlow(t))).data()["id"].(string)
		if got, _ := e.auditLog(loner, ""); !slices.Equal(lines(got), []string{"flow.create flow:" + lflow}) || got[0]["tenant"] != "" {
			t.Errorf("a user of no tenant reads %v", got)
		}
		if got, _ := e.auditLog(loner, "filter[actor]="+aliceID); len(got) != 0 {
			t.Errorf("a user of no tenant reads alice's: %v", got)
		}
		if got, _ := e.auditLog(e.admin, "filter[actor]="+lonerID); !slices.Equal(lines(got), []string{"flow.create flow:" + lflow}) {
			t.Errorf("the administrator reads the loner's: %v", lines(got))
		}
	})

	t.Run("filters and pages", func(t *testing.T) {
		e := e.on(t)
		for q, want := range map[string]string{
			"filter[action]=flow.start": "flow.start flow:" + flow,
			"filter[action]=token":      "token.delete token:" + tokID + ",token.create token:" + tokID,
			"filter[targetType]=connection&filter[action]=connection.update": "connection.update connection:" + conn,
			"filter[targetId]=" + f2:                   "flow.create flow:" + f2,
			"filter[actor]=" + malloryID:               "",
			"filter[to]=2001-01-01T00:00:00Z":          "",
			"filter[from]=2999-01-01T00:00:00%2B02:00": "",
			"filter[action]=execution&filter[from]=" + time.Now().Add(-time.Hour).UTC().Format(time.RFC3339) + "&filter[to]=" + time.Now().Add(time.Hour).UTC().Format(time.RFC3339): "execution.retry execution:x1",
		} {
			if got, _ := e.auditLog(auditor, q); strings.Join(lines(got), ",") != want {
				t.Errorf("%s: %v, want %s", q, lines(got), want)
			}
		}
		r := e.must(200, e.call("GET", "/api/v1/audit", auditor, nil))
		if m := r.body["meta"].(map[string]any); len(r.list()) != 19 || m["perPage"] != float64(20) || m["total"] != float64(19) || m["totalPages"] != float64(1) {
			t.Errorf("default page: %d entries, meta %v", len(r.list()), m)
		}
		got, r := e.auditLog(auditor, "page[size]=5&page[number]=2")
		if m := r.body["meta"].(map[string]any); !slices.Equal(lines(got), []string{
			"errors.resolve flow:" + flow, "errors.retry flow:" + flow, "execution.retry execution:x1",
			"token.delete token:" + tokID, "token.create token:" + tokID,
		}) || m["page"] != float64(2) || m["totalPages"] != float64(4) {
			t.Errorf("second page of 5: %v %v", lines(got), m)
		}
		for q, want := range map[string]string{
			"filter[from]=yesterday": "invalid_parameter@filter[from]",
			"filter[to]=2025-01-01":  "invalid_parameter@filter[to]",
			"filter[from]=2025-02-01T00:00:00Z&filter[to]=2025-01-01T00:00:00Z": "invalid_parameter@filter[to]",
			"filter[action]=" + strings.Repeat("x", 201):                        "invalid_parameter@filter[action]",
			"filter[targetId]=a%20b":                                            "invalid_parameter@filter[targetId]",
			"page[size]=101":                                                    "invalid_parameter@page[size]",
			"sort=time":                                                         "invalid_parameter@sort",
		} {
			if r := e.must(400, e.call("GET", "/api/v1/audit?"+q, auditor, nil)); r.errCode() != want {
				t.Errorf("%s: %s, want %s", q, r.raw, want)
			}
		}
	})

	t.Run("append only", func(t *testing.T) {
		e := e.on(t)
		for _, m := range []string{"PUT", "PATCH", "DELETE", "POST"} {
			r := e.must(405, e.call(m, "/api/v1/audit", e.admin, map[string]any{}))
			if r.header.Get("Allow") != "GET, HEAD" {
				t.Errorf("%s: Allow %q", m, r.header.Get("Allow"))
			}
		}
		e.must(404, e.call("DELETE", "/api/v1/audit/x", e.admin, nil))
	})

	t.Run("no secrets", func(t *testing.T) {
		e := e.on(t)
		var raw strings.Builder
		for n := 1; ; n++ {
			r := e.must(200, e.call("GET", fmt.Sprintf("/api/v1/audit?page[size]=100&page[number]=%d", n), e.admin, nil))
			raw.Write(r.raw)
			if len(r.list()) < 100 {
				break
			}
		}
		for _, secret := range []string{password, newPassword, newToken, alice, auditor, mallory, e.admin} {
			if strings.Contains(raw.String(), secret) || strings.Contains(raw.String(), identity.HashToken(secret)) {
				t.Errorf("the audit log holds a secret (%.6s...)", secret)
			}
		}
		if !strings.Contains(raw.String(), `"connection.update"`) {
			t.Fatal("the log searched holds no connection update")
		}
	})
}

// Entries older than the retention are not listed, and the next append trims them.
func TestAuditLogRetention(t *testing.T) {
	clk := &testClock{}
	e := newEnv(t, withClock(clk.now), withAuditRetention(time.Hour))
	ta := e.tenant("acme")
	_, alice := e.user(ta, "alice", append(slices.Clone(identity.DefaultPermissions), identity.PermAuditRead)...)
	old := e.must(201, e.call("POST", "/api/v1/flows", alice, readmeFlow(t))).data()["id"].(string)
	clk.advance(50 * time.Minute)
	mid := e.must(201, e.call("POST", "/api/v1/flows", alice, readmeFlow(t))).data()["id"].(string)
	if got, _ := e.auditLog(alice, ""); !slices.Equal(lines(got), []string{"flow.create flow:" + mid, "flow.create flow:" + old}) {
		t.Fatalf("within the hour: %v", lines(got))
	}
	clk.advance(20 * time.Minute) // the first entry is 70 minutes old, the second 20
	if got, _ := e.auditLog(alice, ""); !slices.Equal(lines(got), []string{"flow.create flow:" + mid}) {
		t.Fatalf("after an hour: %v", lines(got))
	}
	stream := e.prefix + "{audit}:tenant:" + ta
	if n, err := e.rdb.XLen(context.Background(), stream).Result(); err != nil || n != 2 {
		t.Fatalf("stream holds %d entries (%v) before the next append, want 2", n, err)
	}
	e.must(200, e.call("POST", "/api/v1/flows/"+mid+"/start", alice, nil))
	if n, err := e.rdb.XLen(context.Background(), stream).Result(); err != nil || n != 2 {
		t.Fatalf("stream holds %d entries (%v) after the next append, want 2", n, err)
	}
	if got, _ := e.auditLog(alice, ""); !slices.Equal(lines(got), []string{"flow.start flow:" + mid, "flow.create flow:" + mid}) {
		t.Fatalf("after the append: %v", lines(got))
	}
}

// failingAudit is a store whose audit log cannot be written.
type failingAudit struct{ *store.Store }

func (failingAudit) AppendAudit(context.Context, time.Duration, ...audit.Entry) error {
	return errors.New("audit stream unavailable")
}

// A change whose entry cannot be written is still made and answered; the failure is logged at
// error level and counted.
func TestAuditAppendFailureKeepsTheChange(t *testing.T) {
	logs := &testrig.LogBuffer{}
	e := newEnv(t, withLog(slog.New(slog.NewJSONHandler(logs, nil))),
		withStore(func(st *store.Store) controlplane.Store { return failingAudit{st} }))
	before := auditErrors(t)
	id := e.must(201, e.call("POST", "/api/v1/flows", e.admin, readmeFlow(t))).data()["id"].(string)
	e.must(200, e.call("GET", "/api/v1/flows/"+id, e.admin, nil))
	out := logs.String()
	if !strings.Contains(out, `"level":"ERROR","msg":"audit entry not written; the change itself was made","action":"flow.create","target":"flow `+id+`"`) ||
		!strings.Contains(out, "audit stream unavailable") {
		t.Fatalf("logs:\n%s", out)
	}
	if after := auditErrors(t); after != before+1 {
		t.Fatalf("flowd_audit_append_errors_total went from %v to %v", before, after)
	}
}

func auditErrors(t *testing.T) float64 {
	t.Helper()
	fams, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == "flowd_audit_append_errors_total" {
			return f.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("flowd_audit_append_errors_total is not served")
	return 0
}

// Integrations and templates are recorded like flows: each change once, a refused or idle one
// not at all.
func TestAuditLogRecordsIntegrationsAndTemplates(t *testing.T) {
	e := newEnv(t)
	ta := e.tenant("acme")
	_, alice := e.user(ta, "alice", append(slices.Clone(identity.DefaultPermissions), identity.PermAuditRead, identity.PermTemplatesRead)...)

	in := e.must(201, e.call("POST", "/api/v1/integrations", alice, integrationDoc("crm-sync", map[string]any{"region": "eu"}))).data()["id"].(string)
	e.must(400, e.call("PATCH", "/api/v1/integrations/"+in, alice, map[string]any{"settings": map[string]any{"region": 7}}))
	e.must(200, e.call("PATCH", "/api/v1/integrations/"+in, alice, map[string]any{"description": "v2"}))
	clone := e.must(201, e.call("POST", "/api/v1/integrations/"+in+"/clone", alice, map[string]any{"name": "crm-sync copy"})).data()["id"].(string)
	e.must(204, e.call("DELETE", "/api/v1/integrations/"+clone, alice, nil))
	tpl := e.must(201, e.call("POST", "/api/v1/templates", alice, crmTemplate("crm contacts"))).data()["id"].(string)
	e.must(400, e.call("POST", "/api/v1/templates/"+tpl+"/instantiate", alice, map[string]any{"parameters": map[string]any{}}))
	f := e.must(201, e.call("POST", "/api/v1/templates/"+tpl+"/instantiate", alice, map[string]any{"parameters": map[string]any{"region": "eu"}})).data()["id"].(string)
	e.must(200, e.call("PATCH", "/api/v1/templates/"+tpl, alice, map[string]any{"description": "v2"}))
	e.must(204, e.call("DELETE", "/api/v1/templates/"+tpl, alice, nil))
	bundle := e.must(200, e.call("GET", "/api/v1/integrations/"+in+"/export?format=json", alice, nil)).raw
	e.must(200, e.call("POST", "/api/v1/integrations/import?dryRun=true", alice, string(bundle)))
	e.must(200, e.call("POST", "/api/v1/integrations/import", alice, string(bundle))) // unchanged: nothing to record
	bundle = []byte(strings.Replace(string(bundle), `"crm-sync"`, `"crm-sync imported"`, 1))
	imported := e.must(201, e.call("POST", "/api/v1/integrations/import", alice, string(bundle))).data()["integration"].(map[string]any)["id"].(string)

	got, _ := e.auditLog(alice, "")
	slices.Reverse(got) // oldest first
	want := []string{
		"integration.create integration:" + in,
		"integration.update integration:" + in,
		"integration.clone integration:" + clone,
		"integration.delete integration:" + clone,
		"template.create template:" + tpl,
		"flow.create flow:" + f,
		"template.update template:" + tpl,
		"template.delete template:" + tpl,
		"integration.import integration:" + imported,
	}
	if !slices.Equal(lines(got), want) {
		t.Fatalf("audit log:\n  %s\nwant:\n  %s", strings.Join(lines(got), "\n  "), strings.Join(want, "\n  "))
	}
	if r := got[1]; r["revisionBefore"] != float64(1) || r["revisionAfter"] != float64(2) {
		t.Errorf("integration.update revisions: %v → %v, want 1 → 2", r["revisionBefore"], r["revisionAfter"])
	}
}

// A flow's copy has its content, none of its server fields, and its own owners and history.
func TestCloneFlow(t *testing.T) {
	e := newEnv(t)
	ta, tb := e.tenant("acme"), e.tenant("globex")
	_, alice := e.user(ta, "alice", append(slices.Clone(identity.DefaultPermissions), identity.PermAuditRead)...)
	_, mallory := e.user(tb, "mallory", identity.DefaultPermissions...)
	src := e.must(201, e.call("POST", "/api/v1/flows", alice, readmeFlow(t))).data()
	id := src["id"].(string)
	e.must(200, e.call("PATCH", "/api/v1/flows/"+id, alice, `{"description": "v2"}`))

	cp := e.must(201, e.call("POST", "/api/v1/flows/"+id+"/clone", alice, nil)).data()
	if cp["id"] == id || cp["name"] != src["name"].(string)+" (copy)" || cp["revision"] != float64(1) || cp["status"] != "inactive" || cp["description"] != "v2" {
		t.Fatalf("copy: %v", cp)
	}
	if g1, g2 := fmt.Sprint(src["graph"]), fmt.Sprint(cp["graph"]); g1 != g2 {
		t.Fatalf("the copy's graph differs:\n%s\n%s", g1, g2)
	}
	named := e.must(201, e.call("POST", "/api/v1/flows/"+id+"/clone", alice, `{"name": "orders v2"}`)).data()
	if named["name"] != "orders v2" {
		t.Fatalf("named copy: %v", named["name"])
	}
	e.must(400, e.call("POST", "/api/v1/flows/"+id+"/clone", alice, `{"name": ""}`))
	e.must(400, e.call("POST", "/api/v1/flows/"+id+"/clone", alice, `{"owners": []}`))
	e.must(404, e.call("POST", "/api/v1/flows/"+id+"/clone", mallory, nil)) // another tenant's flow

	got, _ := e.auditLog(alice, "filter[action]=flow.create")
	if len(got) != 3 {
		t.Fatalf("flow.create entries: %v", lines(got))
	}
}
