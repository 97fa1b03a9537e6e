package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/devenv"
	"github.com/flowd/flowd/internal/testrig"
)

// On the embedded broker of flowd dev, a partner-topic flow on a topic nobody created yet
// starts (the broker creates topics as a developer broker does), a partner producing to it
// with kcat -P starts one execution per record, and a webhook flow starts and stops beside it.
func TestDevPartnerTopicOnTheEmbeddedBroker(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	brokers, stop, err := devenv.StartBroker(ctx, t.TempDir(), slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	p := newPipeline(t, 2, connectorPolicy{egressAllow: "127.0.0.1/32"}, func(in *infra) { in.brokers = strings.Join(brokers, ",") })
	p.ropt.createPartnerTopics = true // as flowd dev runs its router
	p.start()
	topic := testrig.Unique("partner.orders.")
	id := p.flow(`{"name":"from a partner","graph":{"nodes":[
	    {"id":"orders","type":"trigger.kafka","config":{"topic":"` + topic + `"}},
	    {"id":"shape","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input"}}}],
	  "edges":[{"source":"orders","target":"shape"}]}}`)
	hook := p.flow(`{"name":"beside","graph":{"nodes":[{"id":"in","type":"trigger.webhook"},
	    {"id":"t","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input"}}}],
	  "edges":[{"source":"in","target":"t"}]}}`)

	const n = 20
	var lines []string
	for i := range n {
		lines = append(lines, fmt.Sprintf(`%d:{"order":%d}`, i, i))
	}
	kcatProduce(ctx, t, brokers, topic, lines...)
	p.awaitExecutions(id, n)
	execs, _, err := p.st.FlowExecutions(ctx, id, "", 0, n)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range execs {
		if ex, _ := p.finished(e.ID); ex.Status != "succeeded" || ex.Trigger != "kafka" {
			t.Fatalf("a partner record's execution: %+v", ex)
		}
	}
	// A topic a partner created by producing, before the flow started: the flow reads what is
	// produced after its start.
	early := testrig.Unique("partner.early.")
	kcatProduce(ctx, t, brokers, early, `k:{"before":true}`)
	second := p.flow(`{"name":"from a partner's topic","graph":{"nodes":[
	    {"id":"orders","type":"trigger.kafka","config":{"topic":"` + early + `"}},
	    {"id":"shape","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input"}}}],
	  "edges":[{"source":"orders","target":"shape"}]}}`)
	lines = lines[:0]
	for i := range 5 {
		lines = append(lines, fmt.Sprintf(`k:{"after":%d}`, i))
	}
	kcatProduce(ctx, t, brokers, early, lines...)
	p.awaitExecutions(second, 5)

	for _, action := range []string{"stop", "start", "stop"} {
		if st, m := p.post("/api/v1/flows/"+hook+"/"+action, ""); st != http.StatusOK {
			t.Fatalf("%s the webhook flow beside: %d %v", action, st, m)
		}
	}
	if st, m := p.post("/api/v1/flows/"+id+"/stop", ""); st != http.StatusOK || m["data"].(map[string]any)["status"] != "inactive" {
		t.Fatalf("stop the partner flow: %d %v", st, m)
	}
}

// kcatProduce produces lines ("key:value") to topic with kcat, as a partner would.
func kcatProduce(ctx context.Context, t *testing.T, brokers []string, topic string, lines ...string) {
	t.Helper()
	cmd := exec.CommandContext(ctx, "kcat", "-P", "-b", strings.Join(brokers, ","), "-t", topic, "-K:", "-X", "acks=all")
	cmd.Stdin = strings.NewReader(strings.Join(lines, "\n") + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kcat -P -t %s: %v\n%s", topic, err, out)
	}
}
