package controlplane_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/store"
)

// deadLetter stores a dead letter as the indexer does: id, its flow (empty: a record that
// names none, or no flowd role wrote), the original topic (unprefixed), reason and age.
func (e *env) deadLetter(id, flow, topic, reason string, at time.Time, adjust ...func(*store.DeadLetter)) {
	e.t.Helper()
	dl := &store.DeadLetter{ID: id, Reason: reason, Topic: e.kcfg.Topic(topic), Partition: 0, Offset: int64(len(id)),
		Key: []byte("x" + id), FlowID: flow, ExecutionID: "x" + id, Authentic: flow != "", At: at,
		Headers: []store.Header{{Key: "traceparent", Value: []byte("00-1-2-01")}},
		Value:   []byte(fmt.Sprintf(`{"executionId":"x%s","flowId":%q}`, id, flow))}
	dl.ValueBytes = len(dl.Value)
	for _, a := range adjust {
		a(dl)
	}
	if _, err := e.st.AddDeadLetter(context.Background(), dl, store.DeadLetterPolicy{Retention: 24 * time.Hour}, time.Now()); err != nil {
		e.t.Fatal(err)
	}
}

func (r resp) errCode() string {
	if c := r.errCodes(); len(c) > 0 {
		return c[0]
	}
	return ""
}

// Dead letters are listed, shown, replayed and discarded by the tenants whose flows they
// belong to, by nobody else (404), and those of no flow by administrators only; filters and
// paging narrow what the caller sees, never widen it.
func TestDeadLettersOfEachTenant(t *testing.T) {
	e := newEnv(t, withDeadLetters())
	ta, tb := e.tenant("acme"), e.tenant("globex")
	aliceID, alice := e.user(ta, "alice")
	_, reader := e.user(ta, "reader", "flows.read")
	_, mallory := e.user(tb, "mallory")
	flow := func(token string) string {
		return e.must(201, e.call("POST", "/api/v1/flows", token, readmeFlow(t))).data()["id"].(string)
	}
	a1, a2, b1 := flow(alice), flow(alice), flow(mallory)

	base := time.Now().UTC().Add(-time.Hour).Truncate(time.Millisecond)
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	gone := "flow revision not available"
	e.deadLetter("0-1", a1, envelope.TopicIngest, "flow "+a1+" revision 1: "+gone, at(1))
	e.deadLetter("0-2", a2, envelope.TopicResults, "result for unknown execution x0-2", at(2))
	e.deadLetter("0-3", a1, envelope.PoolTopic(""), "work item refused: activation not pending", at(3))
	e.deadLetter("0-4", b1, envelope.TopicIngest, "flow "+b1+" revision 1: "+gone, at(4))
	e.deadLetter("0-5", "", envelope.TopicIngest, "record authentication failed: record is not signed", at(5),
		func(d *store.DeadLetter) { d.Value, d.ValueBytes = []byte{0xff, 0x00}, 2 })
	e.deadLetter("0-6", a1, envelope.TopicIngest, "flow "+a1+" revision 2: "+gone, at(6),
		func(d *store.DeadLetter) { d.Value, d.ValueBytes, d.Truncated = d.Value[:10], 300000, true })

	t.Run("list", func(t *testing.T) {
		e := e.on(t)
		for _, tc := range []struct {
			who, token, query, want string
			total, pages            float64
		}{
			{"alice", alice, "", "0-6,0-3,0-2,0-1", 4, 1},
			{"reader", reader, "", "0-6,0-3,0-2,0-1", 4, 1},
			{"mallory", mallory, "", "0-4", 1, 1},
			{"admin", e.admin, "", "0-6,0-5,0-4,0-3,0-2,0-1", 6, 1},
			{"alice", alice, "?filter[flowId]=" + a1, "0-6,0-3,0-1", 3, 1},
			{"alice", alice, "?filter[flowId]=" + b1, "", 0, 0},
			{"mallory", mallory, "?filter[flowId]=" + a1, "", 0, 0},
			{"alice", alice, "?filter[topic]=results", "0-2", 1, 1},
			{"alice", alice, "?filter[topic]=" + e.kcfg.Topic(envelope.PoolTopic("")), "0-3", 1, 1},
			{"alice", alice, "?filter[reason]=REVISION%20NOT%20available", "0-6,0-1", 2, 1},
			{"mallory", mallory, "?filter[reason]=not%20available", "0-4", 1, 1},
			{"alice", alice, "?filter[reason]=authentication", "", 0, 0},
			{"admin", e.admin, "?filter[reason]=authentication", "0-5", 1, 1},
			{"alice", alice, "?filter[status]=open&page[size]=3&page[number]=2", "0-1", 4, 2},
			{"alice", alice, "?page[size]=2&page[number]=2", "0-2,0-1", 4, 2},
			{"alice", alice, "?filter[status]=replayed", "", 0, 0},
		} {
			r := e.must(200, e.call("GET", "/api/v1/dead-letters"+tc.query, tc.token, nil))
			got, meta := r.listed()
			if got != tc.want || meta["total"] != tc.total || meta["totalPages"] != tc.pages {
				t.Errorf("%s lists %q: %s (total %v, pages %v), want %s (%v, %v)", tc.who, tc.query, got, meta["total"], meta["totalPages"], tc.want, tc.total, tc.pages)
			}
		}
		item := e.must(200, e.call("GET", "/api/v1/dead-letters?filter[flowId]="+a2, alice, nil)).list()[0].(map[string]any)
		if item["status"] != "open" || item["flowId"] != a2 || item["executionId"] != "x0-2" || item["key"] != "x0-2" ||
			item["replayable"] != true || item["value"] != nil || item["headers"] != nil || item["topic"] != e.kcfg.Topic(envelope.TopicResults) {
			t.Errorf("list item: %v", item)
		}
		for q, path := range map[string]string{
			"?filter[status]=lost":                        "filter[status]",
			"?sort=deadLetteredAt":                        "sort",
			"?page[size]=1000":                            "page[size]",
			"?filter[reason]=" + strings.Repeat("x", 201): "filter[reason]",
		} {
			if r := e.must(400, e.call("GET", "/api/v1/dead-letters"+q, alice, nil)); r.errCode() != "invalid_parameter@"+path {
				t.Errorf("%s: %s", q, r.raw)
			}
		}
		_, noRead := e.user(ta, "noread", "secrets.read")
		e.must(403, e.call("GET", "/api/v1/dead-letters", noRead, nil))
		e.must(401, e.call("GET", "/api/v1/dead-letters", "", nil))
	})

	t.Run("show", func(t *testing.T) {
		e := e.on(t)
		d := e.must(200, e.call("GET", "/api/v1/dead-letters/0-1", alice, nil)).data()
		value, _ := d["value"].(map[string]any)
		headers, _ := d["headers"].([]any)
		if value["executionId"] != "x0-1" || len(headers) != 1 || headers[0].(map[string]any)["value"] != "00-1-2-01" ||
			d["replayable"] != true || d["authentic"] != true || d["reason"] != "flow "+a1+" revision 1: "+gone {
			t.Errorf("alice shows 0-1: %v", d)
		}
		d = e.must(200, e.call("GET", "/api/v1/dead-letters/0-5", e.admin, nil)).data()
		if d["valueBase64"] != "/wA=" || d["value"] != nil || d["authentic"] != false || d["replayable"] != false ||
			!strings.Contains(d["notReplayableReason"].(string), "not written by a flowd role") {
			t.Errorf("admin shows 0-5: %v", d)
		}
		d = e.must(200, e.call("GET", "/api/v1/dead-letters/0-6", alice, nil)).data()
		if d["truncated"] != true || d["value"] != nil || d["valueText"] != `{"executio` || d["replayable"] != false || d["valueBytes"] != float64(300000) {
			t.Errorf("alice shows 0-6: %v", d)
		}
		for _, c := range []struct{ token, id string }{{alice, "0-5"}, {alice, "0-4"}, {mallory, "0-1"}, {mallory, "0-5"}, {alice, "9-9"}, {e.admin, "9-9"}} {
			if r := e.call("GET", "/api/v1/dead-letters/"+c.id, c.token, nil); r.status != 404 || r.errCode() != "not_found@" {
				t.Errorf("GET %s: %d %s", c.id, r.status, r.raw)
			}
		}
	})

	t.Run("replay and discard", func(t *testing.T) {
		e := e.on(t)
		e.must(404, e.call("POST", "/api/v1/dead-letters/0-1/replay", mallory, nil))
		e.must(403, e.call("POST", "/api/v1/dead-letters/0-1/replay", reader, nil))
		d := e.must(200, e.call("POST", "/api/v1/dead-letters/0-1/replay", alice, nil)).data()
		if d["status"] != "replayed" || d["replayedBy"] != aliceID || d["replayedAt"] == nil {
			t.Fatalf("replayed: %v", d)
		}
		if r := e.must(409, e.call("POST", "/api/v1/dead-letters/0-1/replay", alice, nil)); r.errCode() != "already_replayed@" {
			t.Fatalf("second replay: %s", r.raw)
		}
		if r := e.must(409, e.call("POST", "/api/v1/dead-letters/0-1/replay", e.admin, nil)); r.errCode() != "already_replayed@" {
			t.Fatalf("third replay: %s", r.raw)
		}
		if r := e.must(409, e.call("POST", "/api/v1/dead-letters/0-5/replay", e.admin, nil)); r.errCode() != "not_replayable@" {
			t.Fatalf("replay of an unsigned record: %s", r.raw)
		}
		e.must(404, e.call("POST", "/api/v1/dead-letters/9-9/replay", e.admin, nil))

		e.must(404, e.call("DELETE", "/api/v1/dead-letters/0-3", mallory, nil))
		e.must(403, e.call("DELETE", "/api/v1/dead-letters/0-3", reader, nil))
		for range 2 {
			if d := e.must(200, e.call("DELETE", "/api/v1/dead-letters/0-3", alice, nil)).data(); d["status"] != "discarded" || d["discardedBy"] != aliceID {
				t.Fatalf("discarded: %v", d)
			}
		}
		if r := e.must(409, e.call("POST", "/api/v1/dead-letters/0-3/replay", alice, nil)); r.errCode() != "dead_letter_discarded@" {
			t.Fatalf("replay of a discarded dead letter: %s", r.raw)
		}
		if r := e.must(409, e.call("DELETE", "/api/v1/dead-letters/0-1", alice, nil)); r.errCode() != "already_replayed@" {
			t.Fatalf("discard of a replayed dead letter: %s", r.raw)
		}
		for status, want := range map[string]string{"discarded": "0-3", "replayed": "0-1", "open": "0-6,0-2"} {
			if got, _ := e.must(200, e.call("GET", "/api/v1/dead-letters?filter[status]="+status, alice, nil)).listed(); got != want {
				t.Errorf("filter[status]=%s: %s, want %s", status, got, want)
			}
		}
	})

	t.Run("replay a filtered set", func(t *testing.T) {
		e := e.on(t)
		e.deadLetter("1-7", a2, envelope.TopicIngest, "flow "+a2+" revision 1: "+gone, at(7))
		e.deadLetter("1-8", a2, envelope.TopicIngest, "flow "+a2+" revision 1: "+gone, at(8))
		for body, want := range map[string]string{
			`{}`:                           "required@/filter",
			`{"filter":{"status":"open"}}`: "required@/filter",
			`{"filter":{"topic":"ingest","status":"lost"}}`: "invalid_parameter@/filter/status",
			`{"filter":{"topic":"ingest"},"limit":1001}`:    "invalid@/limit",
			`[1]`: "malformed@",
		} {
			if r := e.must(400, e.call("POST", "/api/v1/dead-letters/replay", alice, body)); r.errCode() != want {
				t.Errorf("%s: %s, want %s", body, r.raw, want)
			}
		}
		e.must(403, e.call("POST", "/api/v1/dead-letters/replay", reader, `{"filter":{"topic":"ingest"}}`))
		// mallory names alice's flow: nothing of it is hers to replay.
		if d := e.must(200, e.call("POST", "/api/v1/dead-letters/replay", mallory, `{"filter":{"flowId":"`+a2+`"}}`)).data(); d["matched"] != float64(0) || d["replayed"] != float64(0) {
			t.Fatalf("mallory replays alice's flow: %v", d)
		}
		// Oldest first, two at a time: 0-6 (kept truncated) and 1-7, then 1-8.
		d := e.must(200, e.call("POST", "/api/v1/dead-letters/replay", alice, `{"filter":{"reason":"not available"},"limit":2}`)).data()
		if d["matched"] != float64(3) || d["remaining"] != float64(1) || d["replayed"] != float64(1) || d["notReplayable"] != float64(1) ||
			fmt.Sprint(d["replayedIds"]) != "[1-7]" {
			t.Fatalf("first call: %v", d)
		}
		d = e.must(200, e.call("POST", "/api/v1/dead-letters/replay", alice, `{"filter":{"reason":"not available"}}`)).data()
		if d["matched"] != float64(2) || d["remaining"] != float64(0) || d["replayed"] != float64(1) || d["notReplayable"] != float64(1) ||
			fmt.Sprint(d["replayedIds"]) != "[1-8]" {
			t.Fatalf("second call: %v", d)
		}
		d = e.must(200, e.call("POST", "/api/v1/dead-letters/replay", alice, `{"filter":{"reason":"not available","status":"replayed"}}`)).data()
		if d["matched"] != float64(3) || d["alreadyReplayed"] != float64(3) || d["replayed"] != float64(0) {
			t.Fatalf("replayed ones again: %v", d)
		}
		// mallory's own are hers; alice's stay as they are.
		d = e.must(200, e.call("POST", "/api/v1/dead-letters/replay", mallory, `{"filter":{"topic":"ingest"}}`)).data()
		if d["matched"] != float64(1) || fmt.Sprint(d["replayedIds"]) != "[0-4]" {
			t.Fatalf("mallory's: %v", d)
		}
		if got, _ := e.must(200, e.call("GET", "/api/v1/dead-letters?filter[status]=open", alice, nil)).listed(); got != "0-6,0-2" {
			t.Fatalf("alice's open dead letters after mallory's replay: %s", got)
		}
	})
}

// An API built without dead letters says so.
func TestDeadLettersUnavailable(t *testing.T) {
	e := newEnv(t)
	if r := e.must(503, e.call("GET", "/api/v1/dead-letters", e.admin, nil)); r.errCode() != "dead_letters_unavailable@" {
		t.Fatalf("%s", r.raw)
	}
}
