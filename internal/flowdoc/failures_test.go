package flowdoc

import (
	"fmt"
	"testing"
	"time"
)

func TestRetryTimeoutAndOnErrorAreChecked(t *testing.T) {
	t.Parallel()
	base := `{"name":"f","graph":{"nodes":[{"id":"t","type":"trigger.webhook"},
	  {"id":"a","type":"action","connector":"c","action":"x"%s},
	  {"id":"h","type":"action","connector":"c","action":"notify"},
	  {"id":"h2","type":"action","connector":"c","action":"log"}],
	  "edges":[{"source":"t","target":"a"},{"source":"h","target":"h2"}%s]}%s}`
	for _, c := range []struct {
		name, node, edges, top string
		code, path             string
	}{
		{"valid", `,"retry":{"maxAttempts":5,"initialInterval":"2s","maxInterval":"1m","jitter":0.2,"on":["http_5xx"]},"timeout":"30s"`, "", `,"onError":{"node":"h"}`, "", ""},
		{"interval too short", `,"retry":{"initialInterval":"0s"}`, "", `,"onError":{"node":"h"}`, "range", "/graph/nodes/1/retry/initialInterval"},
		{"flow interval too long", "", "", `,"onError":{"node":"h"},"retry":{"maxInterval":"48h"}`, "range", "/retry/maxInterval"},
		{"timeout not a duration", `,"timeout":"soon"`, "", `,"onError":{"node":"h"}`, "pattern", "/graph/nodes/1/timeout"},
		{"handler unreachable without onError", "", "", "", "unreachable", "/graph/nodes/2/id"},
		{"unknown handler", "", "", `,"onError":{"node":"zz"}`, "unknown_node", "/onError/node"},
		{"edge into the handler", "", `,{"source":"a","target":"h"}`, `,"onError":{"node":"h"}`, "invalid_on_error", "/graph/edges/2/target"},
		{"handler shares a node", "", `,{"source":"a","target":"h2"}`, `,"onError":{"node":"h"}`, "unreachable", "/graph/nodes/3/id"},
	} {
		doc := []byte(fmt.Sprintf(base, c.node, c.edges, c.top))
		f, ps := Decode(doc, Options{})
		if c.code == "" {
			if len(ps) != 0 {
				t.Errorf("%s: %v", c.name, ps)
				continue
			}
			p := RetryOf(DefaultRetry, f, f.Node("a"))
			if p.MaxAttempts != 5 || p.Backoff.Initial != 2*time.Second || p.Backoff.Max != time.Minute || p.Backoff.Jitter != 0.2 ||
				!p.Retries("http_5xx", true, 4) || p.Retries("http_5xx", true, 5) || p.Retries("http_429", true, 1) {
				t.Errorf("%s: policy %+v", c.name, p)
			}
			if d := StepTimeout(time.Minute, f.Node("a")); d != 30*time.Second {
				t.Errorf("%s: timeout %s", c.name, d)
			}
			continue
		}
		if !has(ps, c.code, c.path) {
			t.Errorf("%s: problems %v, want %s at %s", c.name, ps, c.code, c.path)
		}
	}
}
