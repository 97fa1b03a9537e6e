package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/devenv"
	"github.com/flowd/flowd/internal/testrig"
)

// On the embedded broker of flowd dev, a partner-topic flow on a topic nobody created yet
// starts (the broker creates topics as a developer broker does), a partner producing to it
// (as kcat -P would) starts one execution per record, and a webhook flow starts and stops
// beside it.
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

	w := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: topic, AllowAutoTopicCreation: true, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer func() { _ = w.Close() }()
	const n = 20
	for i := range n {
		if err := w.WriteMessages(ctx, kafka.Message{Key: []byte(fmt.Sprint(i)), Value: []byte(fmt.Sprintf(`{"order":%d}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
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
	w2 := &kafka.Writer{Addr: kafka.TCP(brokers...), Topic: early, AllowAutoTopicCreation: true, RequiredAcks: kafka.RequireAll, BatchTimeout: time.Millisecond}
	defer func() { _ = w2.Close() }()
	if err := w2.WriteMessages(ctx, kafka.Message{Value: []byte(`{"before":true}`)}); err != nil {
		t.Fatal(err)
	}
	second := p.flow(`{"name":"from a partner's topic","graph":{"nodes":[
	    {"id":"orders","type":"trigger.kafka","config":{"topic":"` + early + `"}},
	    {"id":"shape","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input"}}}],
	  "edges":[{"source":"orders","target":"shape"}]}}`)
	for i := range 5 {
		if err := w2.WriteMessages(ctx, kafka.Message{Value: []byte(fmt.Sprintf(`{"after":%d}`, i))}); err != nil {
			t.Fatal(err)
		}
	}
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
