package oih

import (
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/problem"
)

// Imported is an OIH document mapped to a flowd one.
type Imported struct {
	// Doc is the flowd document, for flowdoc.Decode.
	Doc map[string]any
	// Problems are what cannot be mapped: the document is refused with them.
	Problems problem.List
	// Warnings name what the document holds that flowd does not keep.
	Warnings problem.List
	Layout
}

// Import maps an OIH document (a JSON object without the fields the server manages) to a
// flowd document:
//   - a node with componentId and function becomes an action (connector, action, config from
//     fields, connection from credentials_id, retry/timeout/pool from nodeSettings); the first
//     node no edge leads to becomes a trigger.poll node instead when isTrigger lists its
//     function as one of the connector's triggers (or nodeSettings.trigger is true);
//   - a node without either stays a draft (no type), which is stored but does not start;
//   - a node with a type (and no OIH field) passes through as flowd wrote it;
//   - an edge's config.condition becomes its condition;
//   - cron becomes a trigger.schedule node (id "cron") feeding every node no edge leads to, or
//     the interval of the poll trigger when there is one; a flow with neither cron nor a
//     trigger gets a trigger.webhook node (id "webhook") in the same place. Either comes after
//     the document's own nodes and edges, so theirs keep their indices (and problem paths).
//
// Paths of Problems and Warnings point into the OIH document; Path does the same for the
// problems flowdoc finds in Doc.
func Import(doc map[string]any, isTrigger IsTrigger) *Imported {
	im := &Imported{Doc: clone(doc)}
	out := im.Doc
	for _, k := range dropped {
		if _, ok := out[k]; ok {
			delete(out, k)
			im.warn("/"+k, "%s has no flowd counterpart and is not kept", k)
		}
	}
	cron, hasCron := out[fCron]
	delete(out, fCron)
	graph, ok := out["graph"].(map[string]any)
	if !ok {
		return im // flowd's schema says what is wrong with it
	}
	graph = clone(graph)
	out["graph"] = graph
	rawNodes, nodesOK := graph["nodes"].([]any)
	rawEdges, _ := graph["edges"].([]any)

	// Which nodes edges lead to decides which node may be the trigger.
	var targets []string
	for _, e := range rawEdges {
		if m, ok := e.(map[string]any); ok {
			if t, ok := m["target"].(string); ok {
				targets = append(targets, t)
			}
		}
	}
	if !nodesOK {
		graph["edges"] = im.mapEdges(rawEdges)
		return im
	}

	ids := make([]string, len(rawNodes))
	for i, n := range rawNodes {
		if m, ok := n.(map[string]any); ok {
			ids[i], _ = m["id"].(string)
		}
	}
	rs := roots(ids, targets, onErrorNode(out))
	nodes := make([]any, len(rawNodes))
	im.nodes = make([]kind, len(rawNodes))
	poll, trigger := -1, ""
	for i, n := range rawNodes {
		nodes[i] = n
		m, ok := n.(map[string]any)
		if !ok {
			continue
		}
		if !isOIHNode(m) {
			if t, _ := m["type"].(string); strings.HasPrefix(t, "trigger.") && trigger == "" {
				trigger = ids[i]
			}
			continue
		}
		isRoot := slices.Contains(rs, i)
		node, isPoll := im.node(i, m, isRoot, len(rs) > 0 && rs[0] == i, isTrigger)
		nodes[i], im.nodes[i] = node, mapped
		if isPoll && poll < 0 {
			poll = i
			if trigger == "" {
				trigger = ids[i]
			}
		}
	}

	edges := im.mapEdges(rawEdges)
	if hasCron {
		cs, ok := cron.(string)
		switch {
		case !ok || strings.TrimSpace(cs) == "":
			im.fail(CodeType, "/"+fCron, "cron must be a cron expression such as */5 * * * *")
			hasCron = false
		case poll >= 0:
			im.cronToPoll(cs, nodes[poll].(map[string]any))
			hasCron = false
		case trigger != "":
			im.fail(CodeInvalid, "/"+fCron, "node %s is the flow's trigger already; a cron would be a second one", trigger)
			hasCron = false
		}
		if hasCron {
			id := freeID(CronID, ids)
			nodes = append(nodes, map[string]any{"id": id, "type": flowdoc.TypeSchedule, "config": map[string]any{"cron": cs}})
			edges = im.feed(id, edges, rs, ids)
			im.cron = true
		}
	} else if trigger == "" {
		id := freeID(WebhookID, ids)
		nodes = append(nodes, map[string]any{"id": id, "type": flowdoc.TypeWebhook})
		edges = im.feed(id, edges, rs, ids)
	}
	graph["nodes"] = nodes
	if _, ok := graph["edges"]; ok || len(edges) > 0 {
		graph["edges"] = edges
	}
	return im
}

// mapEdges maps the edges with a config (OIH's), leaving the others as they are.
func (im *Imported) mapEdges(raw []any) []any {
	edges := make([]any, len(raw))
	im.edges = make([]kind, len(raw))
	for j, e := range raw {
		edges[j] = e
		if m, ok := e.(map[string]any); ok {
			if _, ok := m[fConfig]; ok {
				edges[j] = im.edge(j, m)
				im.edges[j] = mapped
			}
		}
	}
	return edges
}

// feed appends the implied trigger's node kind and its edges to every root.
func (im *Imported) feed(trigger string, edges []any, rs []int, ids []string) []any {
	im.nodes = append(im.nodes, implied)
	for _, r := range rs {
		edges = append(edges, map[string]any{"source": trigger, "target": ids[r]})
		im.edges = append(im.edges, implied)
	}
	return edges
}

// node maps OIH node i; it reports whether it became the poll trigger.
func (im *Imported) node(i int, m map[string]any, isRoot, firstRoot bool, isTrigger IsTrigger) (map[string]any, bool) {
	p := "/graph/nodes/" + strconv.Itoa(i)
	out := map[string]any{}
	for _, k := range commonNode {
		if v, ok := m[k]; ok {
			out[k] = v
		}
	}
	// In key order, so that problems and warnings come in the same order every time.
	for _, k := range slices.Sorted(maps.Keys(m)) {
		switch {
		case slices.Contains(commonNode, k), slices.Contains(oihNodeFields, k):
		case slices.Contains(flowdOnly, k):
			im.fail(CodeMixed, p+"/"+problem.EscapeToken(k), "%s is a flowd node field; a node with %s is written the Open Integration Hub way (componentId, function, fields, credentials_id, nodeSettings)", k, strings.Join(present(m, oihNodeFields), ", "))
		default:
			im.warn(p+"/"+problem.EscapeToken(k), "%s has no flowd counterpart and is not kept", k)
		}
	}
	comp := im.str(m, fComponent, p)
	fn := im.str(m, fFunction, p)
	if v, ok := m[fFields]; ok {
		if _, isObj := v.(map[string]any); !isObj && v != nil {
			im.fail(CodeType, p+"/"+fFields, "fields must be an object (the node's config)")
		} else if v != nil {
			out["config"] = v
		}
	}
	if c := im.str(m, fCredentials, p); c != "" {
		out["connection"] = c
	}
	var trig *bool
	if v, ok := m[fSettings]; ok && v != nil {
		s, isObj := v.(map[string]any)
		if !isObj {
			im.fail(CodeType, p+"/"+fSettings, "nodeSettings must be an object")
		}
		for _, k := range slices.Sorted(maps.Keys(s)) {
			sv := s[k]
			switch {
			case slices.Contains(settingsKept, k):
				out[k] = sv
			case k == fTrigger:
				if trig = settingsTrigger(s); trig == nil {
					im.fail(CodeType, p+"/"+fSettings+"/"+fTrigger, "nodeSettings.trigger must be true or false")
				}
			default:
				im.warn(p+"/"+fSettings+"/"+problem.EscapeToken(k), "nodeSettings.%s has no flowd counterpart and is not kept", k)
			}
		}
	}
	if trig != nil && *trig && !isRoot {
		im.fail(CodeInvalid, p+"/"+fSettings+"/"+fTrigger, "node %v has inbound edges (or handles errors); only a node no edge leads to can be the trigger", m["id"])
	}
	if comp == "" || fn == "" {
		// A draft: stored with what it has.
		if comp != "" {
			out["connector"] = comp
		}
		if fn != "" {
			out["action"] = fn
		}
		return out, false
	}
	out["connector"] = comp
	poll := isRoot && trig != nil && *trig
	if trig == nil && firstRoot && isTrigger != nil {
		poll = isTrigger(comp, fn)
	}
	if poll {
		out["type"], out["trigger"] = flowdoc.TypePoll, fn
	} else {
		out["type"], out["action"] = flowdoc.TypeAction, fn
	}
	return out, poll
}

// edge maps an edge's config (OIH: {condition, mapper}).
func (im *Imported) edge(j int, m map[string]any) map[string]any {
	p := "/graph/edges/" + strconv.Itoa(j)
	out := clone(m)
	delete(out, fConfig)
	cfg, ok := m[fConfig].(map[string]any)
	if !ok {
		if m[fConfig] != nil {
			im.fail(CodeType, p+"/"+fConfig, "config must be an object: {\"condition\": ...}")
		}
		return out
	}
	for _, k := range slices.Sorted(maps.Keys(cfg)) {
		v := cfg[k]
		switch k {
		case "condition":
			s, ok := v.(string)
			switch {
			case v == nil || s == "":
			case !ok:
				im.fail(CodeType, p+"/"+fConfig+"/condition", "condition must be an expression string")
			case m["condition"] != nil:
				im.fail(CodeMixed, p+"/condition", "the edge has a condition in config already")
			default:
				out["condition"] = s
			}
		default:
			im.warn(p+"/"+fConfig+"/"+problem.EscapeToken(k), "config.%s has no flowd counterpart and is not kept (put mappings in a transform node)", k)
		}
	}
	return out
}

// cronToPoll makes a cron the poll trigger's interval: a poll trigger runs at an interval.
func (im *Imported) cronToPoll(cron string, node map[string]any) {
	id := node["id"]
	if _, ok := node["interval"]; ok {
		im.fail(CodeInvalid, "/"+fCron, "node %v polls at its nodeSettings.interval; remove the cron or the interval", id)
		return
	}
	d, ok := Interval(cron)
	if !ok {
		im.fail(CodeInvalid, "/"+fCron, "node %v is a polling trigger, which polls at an interval; cron %q is none (use */N * * * *, @hourly or @every 30s), or set nodeSettings.interval", id, cron)
		return
	}
	node["interval"] = d
	im.Warnings = append(im.Warnings, problem.New(CodeCronToPoll, "/"+fCron, "node %v is a polling trigger: it polls every %s (its nodeSettings.interval) rather than on a schedule", id, d))
}

func (im *Imported) str(m map[string]any, k, p string) string {
	v, ok := m[k]
	if !ok || v == nil {
		return ""
	}
	s, isStr := v.(string)
	if !isStr {
		im.fail(CodeType, p+"/"+k, "%s must be a string", k)
	}
	return s
}

func (im *Imported) fail(code, path, format string, args ...any) {
	im.Problems = append(im.Problems, problem.New(code, path, format, args...))
}

func (im *Imported) warn(path, format string, args ...any) {
	im.Warnings = append(im.Warnings, problem.New(CodeNotKept, path, format, args...))
}

// present lists which of keys m has.
func present(m map[string]any, keys []string) []string {
	var out []string
	for _, k := range keys {
		if _, ok := m[k]; ok {
			out = append(out, k)
		}
	}
	return out
}

// Interval is the fixed interval a cron expression fires at, as a Go duration, when it has
// one: @every d, @hourly, @daily, "*/N * * * *" (minutes), "* * * * *", "0 */N * * *"
// (hours), or with a seconds field "*/N * * * * *".
func Interval(cron string) (string, bool) {
	cron = strings.TrimSpace(cron)
	switch cron {
	case "@hourly":
		return "1h", true
	case "@daily", "@midnight":
		return "24h", true
	}
	if d, ok := strings.CutPrefix(cron, "@every "); ok {
		d = strings.TrimSpace(d)
		_, err := time.ParseDuration(d)
		return d, err == nil
	}
	f := strings.Fields(cron)
	if len(f) == 0 {
		return "", false
	}
	every := func(s string) (int, bool) {
		if s == "*" {
			return 1, true
		}
		n, err := strconv.Atoi(strings.TrimPrefix(s, "*/"))
		return n, strings.HasPrefix(s, "*/") && err == nil && n > 0
	}
	stars := func(fs []string) bool {
		for _, s := range fs {
			if s != "*" {
				return false
			}
		}
		return true
	}
	if n, ok := every(f[0]); ok && len(f) == 5 && stars(f[1:]) {
		return strconv.Itoa(n) + "m", true
	}
	if n, ok := every(f[0]); ok && len(f) == 6 && stars(f[1:]) {
		return strconv.Itoa(n) + "s", true
	}
	if len(f) == 5 && f[0] == "0" && stars(f[2:]) {
		if n, ok := every(f[1]); ok {
			return strconv.Itoa(n) + "h", true
		}
	}
	return "", false
}
