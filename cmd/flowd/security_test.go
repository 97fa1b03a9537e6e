package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"
	"github.com/spf13/cobra"

	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testrig.StopPrivate() // the SASL broker this package's tests shared
	os.Exit(code)
}

// topicMetadataError is the error the broker gives cfg's principal for topic in a metadata
// response.
func topicMetadataError(ctx context.Context, cfg kafkax.Config, topic string) error {
	tr := cfg.Transport()
	tr.MetadataTopics = []string{topic}
	defer tr.CloseIdleConnections()
	c := &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr}
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return err
	}
	if len(md.Topics) != 1 {
		return fmt.Errorf("metadata of %s: %d topics", topic, len(md.Topics))
	}
	return md.Topics[0].Error
}

// rigLeader is partition 0's leader on the one-node rig broker at addr (node id 1).
func rigLeader(addr, topic string) kafka.Partition {
	host, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	return kafka.Partition{Topic: topic, ID: 0, Leader: kafka.Broker{Host: host, Port: p, ID: 1}}
}

// producePartition produces one record to partition 0 of topic through a connection to its
// leader, without the metadata lookup that would stop a client before the broker decides.
func producePartition(ctx context.Context, cfg kafkax.Config, topic string) error {
	conn, err := cfg.Dialer().DialPartition(ctx, "tcp", "", rigLeader(cfg.Brokers[0], topic))
	if err != nil {
		return err
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return err
	}
	_, err = conn.WriteMessages(kafka.Message{Key: []byte("k"), Value: []byte(`{"forged":true}`)})
	return err
}

// fetchFirst reads partition 0 of topic from offset 0 with a plain Fetch, so a refusal comes
// back as an error rather than as a reader retrying for ever.
func fetchFirst(ctx context.Context, cfg kafkax.Config, topic string) ([]byte, error) {
	conn, err := cfg.Dialer().DialPartition(ctx, "tcp", "", rigLeader(cfg.Brokers[0], topic))
	if err != nil {
		return nil, err
	}
	defer func() { _ = conn.Close() }()
	if err := conn.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		return nil, err
	}
	m, err := conn.ReadMessage(1 << 20)
	if err != nil {
		return nil, err
	}
	return m.Value, nil
}

// The connectors' credentials reach partner topics and nothing of flowd's: the ACLs of
// deployments/ (kafkax.RoleACLs) on a broker that enforces them.
func TestKafkaACLsKeepConnectorsOffFlowdTopics(t *testing.T) {
	b := testrig.SASLKafka(t)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()

	flowd := b.Config(testrig.SASLFlowd)
	flowd.Partitions = 1
	if err := kafkax.EnsureTopics(ctx, flowd, envelope.TopicIngest, envelope.PoolTopic(envelope.DefaultPool)); err != nil {
		t.Fatalf("flowd creates its topics: %v", err)
	}
	partner := b.Config(testrig.SASLConnector)
	partner.TopicPrefix, partner.Partitions = kafkax.DefaultPartnerPrefix, 1
	orders := testrig.Unique("orders")
	if err := kafkax.EnsureTopics(ctx, partner, orders); err != nil {
		t.Fatalf("connector creates a partner topic: %v", err)
	}

	// flowd writes its own topics (so the refusals below are about who asks, not the topics).
	fw := kafkax.NewWriter(flowd)
	defer func() { _ = fw.Close() }()
	for _, topic := range []string{"flowd.ingest", "flowd.steps.default"} {
		if err := fw.WriteMessages(ctx, kafka.Message{Topic: topic, Key: []byte("k"), Value: []byte(`{"by":"flowd"}`)}); err != nil {
			t.Fatalf("flowd writes %s: %v", topic, err)
		}
	}

	connector := b.Config(testrig.SASLConnector)
	cw := kafkax.NewWriter(connector)
	defer func() { _ = cw.Close() }()
	for _, topic := range []string{"flowd.ingest", "flowd.steps.default"} {
		// The connector cannot even see the topic flowd sees (kafka-go reports a topic left out
		// of the metadata answer as unknown) ...
		if err := topicMetadataError(ctx, flowd, topic); err != nil {
			t.Fatalf("flowd's metadata of %s: %v", topic, err)
		}
		if err := topicMetadataError(ctx, connector, topic); !errors.Is(err, kafka.TopicAuthorizationFailed) && !errors.Is(err, kafka.UnknownTopicOrPartition) {
			t.Errorf("connector's metadata of %s: got %v, want the topic hidden", topic, err)
		}
		if err := cw.WriteMessages(ctx, kafka.Message{Topic: topic, Key: []byte("k"), Value: []byte(`{"forged":true}`)}); err == nil {
			t.Errorf("connector's writer produced to %s", topic)
		}
		// ... and a produce or fetch sent straight to the partition leader is refused.
		if err := producePartition(ctx, connector, topic); !errors.Is(err, kafka.TopicAuthorizationFailed) {
			t.Errorf("connector producing to %s: got %v, want TopicAuthorizationFailed", topic, err)
		}
		if _, err := fetchFirst(ctx, connector, topic); !errors.Is(err, kafka.TopicAuthorizationFailed) {
			t.Errorf("connector reading %s: got %v, want TopicAuthorizationFailed", topic, err)
		}
	}
	// Nothing the connector sent landed: flowd reads its own record first and only.
	if v, err := fetchFirst(ctx, flowd, "flowd.ingest"); err != nil || string(v) != `{"by":"flowd"}` {
		t.Errorf("flowd.ingest holds %q (%v)", v, err)
	}

	topic := partner.Topic(orders)
	if err := cw.WriteMessages(ctx, kafka.Message{Topic: topic, Key: []byte("k"), Value: []byte(`{"order":1}`)}); err != nil {
		t.Fatalf("connector producing to its partner topic %s: %v", topic, err)
	}
	if v, err := fetchFirst(ctx, connector, topic); err != nil || string(v) != `{"order":1}` {
		t.Fatalf("connector reading %s: %q %v", topic, v, err)
	}
	// flowd's router may consume partner topics (trigger.kafka).
	if v, err := fetchFirst(ctx, flowd, topic); err != nil || string(v) != `{"order":1}` {
		t.Fatalf("flowd reading %s: %q %v", topic, v, err)
	}

	// Wrong password: refused at authentication, not at the first topic.
	wrong := connector
	wrong.SASL.PasswordFile = ""
	wrong.SASL.Password = "not-the-password"
	if err := kafkax.Ping(ctx, wrong); !errors.Is(err, kafka.SASLAuthenticationFailed) {
		t.Errorf("wrong password: got %v, want SASLAuthenticationFailed", err)
	}
}

// Every role on a broker that requires SCRAM and enforces ACLs, and a Redis that requires a
// password: a webhook reaches a completed execution.
func TestPipelineOnAuthenticatedInfrastructure(t *testing.T) {
	b := testrig.SASLKafka(t)
	redisURL, redisPasswordFile := testrig.RedisWithPassword(t)
	p := startPipeline(t, func(in *infra) {
		in.brokers = strings.Join(b.Brokers, ",")
		// Under flowd. so the flowd principal's prefixed ACLs cover topics and groups.
		in.topicPrefix = "flowd." + testrig.Unique("s") + "."
		in.kafkaSASL = kafkax.SASL{Mechanism: kafkax.MechanismScramSHA512, Username: testrig.SASLFlowd, PasswordFile: b.PasswordFile(testrig.SASLFlowd)}
		in.redisURL, in.redisPasswordFile = redisURL, redisPasswordFile
	})
	id := p.flow(`{"name":"sasl","graph":{"nodes":[
		{"id":"hook","type":"trigger.webhook"},
		{"id":"t","type":"action","connector":"transform","action":"map","config":{"fields":{"v":"input.x * 2"}}}],
		"edges":[{"source":"hook","target":"t"}]}}`)
	st, body := p.post("/hooks/"+id, `{"x":21}`)
	if st != 202 {
		t.Fatalf("webhook: %d %v", st, body)
	}
	ex, steps := p.finished(body["data"].(map[string]any)["executionId"].(string))
	by := stepsByNode(steps)
	if ex.Status != envelope.StatusSucceeded || len(by["t"]) != 1 || by["t"][0].Status != envelope.StepSucceeded {
		t.Fatalf("execution %s: %s %v, steps %+v", ex.ID, ex.Status, ex.Error, by)
	}
	var out struct{ V float64 }
	if err := json.Unmarshal(by["t"][0].Output, &out); err != nil || out.V != 42 {
		t.Fatalf("step output: %s (%v)", by["t"][0].Output, err)
	}
}

func TestRedisPasswordRequired(t *testing.T) {
	redisURL, passwordFile := testrig.RedisWithPassword(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	// Without the password: refused.
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	anon := redis.NewClient(opt)
	defer func() { _ = anon.Close() }()
	if err := anon.Ping(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatalf("unauthenticated PING: got %v, want NOAUTH", err)
	}

	// With it, from the file or the environment: a role connects.
	pw, err := os.ReadFile(passwordFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string]*infra{
		"password file": {redisURL: redisURL, redisPasswordFile: passwordFile},
		"environment":   {redisURL: redisURL, redisPassword: string(pw)},
	} {
		opt, err := in.redisOptions()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		c := redis.NewClient(opt)
		err = c.Ping(ctx).Err()
		_ = c.Close()
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}

	// A wrong password is refused and the error does not repeat it.
	wrong := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	in := &infra{redisURL: redisURL, redisPasswordFile: wrong}
	opt, err = in.redisOptions()
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	defer func() { _ = c.Close() }()
	if err := c.Ping(ctx).Err(); err == nil || strings.Contains(err.Error(), "not-the-password") {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestSecretsStayOutOfFlagsAndErrors(t *testing.T) {
	t.Setenv(envKafkaSASLPassword, "kafka-env-secret")
	t.Setenv(envRedisPassword, "redis-env-secret")
	t.Setenv("FLOWD_KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
	t.Setenv("FLOWD_KAFKA_SASL_USERNAME", "flowd")
	cmd := &cobra.Command{Use: "x"}
	in := &infra{}
	in.register(cmd)
	var help bytes.Buffer
	cmd.SetOut(&help)
	_ = cmd.Usage()
	if strings.Contains(help.String(), "env-secret") {
		t.Fatalf("--help shows a secret:\n%s", help.String())
	}
	for _, flag := range []string{"--kafka-sasl-mechanism", "--kafka-sasl-password-file", "--kafka-tls-ca-file", "--redis-password-file", "--redis-tls-ca-file"} {
		if !strings.Contains(help.String(), flag) {
			t.Errorf("%s missing from --help", flag)
		}
	}
	k := in.kafka()
	if k.SASL.Password != "kafka-env-secret" || k.SASL.Username != "flowd" || k.SASL.Mechanism != "SCRAM-SHA-512" {
		t.Fatalf("kafka sasl from the environment: %+v", k.SASL)
	}
	if err := k.Validate(); err != nil {
		t.Fatal(err)
	}
	opt, err := in.redisOptions()
	if err != nil || opt.Password != "redis-env-secret" {
		t.Fatalf("redis password from the environment: %v", err)
	}

	// Both a file and the environment: ambiguous, refused.
	in.redisPasswordFile = filepath.Join(t.TempDir(), "pw")
	if _, err := in.redisOptions(); err == nil || strings.Contains(err.Error(), "redis-env-secret") {
		t.Fatalf("file and env together: %v", err)
	}
	// A malformed URL with a password in it: the error does not quote the URL.
	bad := &infra{redisURL: "redis://flowd:url-secret@127.0.0.1:notaport/0"}
	if _, err := bad.redisOptions(); err == nil || strings.Contains(err.Error(), "url-secret") {
		t.Fatalf("bad url: %v", err)
	}
	// A CA file needs a TLS URL.
	ca := &infra{redisURL: "redis://127.0.0.1:6379/0", redisTLSCAFile: "/nonexistent"}
	if _, err := ca.redisOptions(); err == nil || !strings.Contains(err.Error(), "rediss://") {
		t.Fatalf("ca without rediss: %v", err)
	}
}

func TestParseBytes(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1048576": 1 << 20, "512MiB": 512 << 20, "2GiB": 2 << 30, "1GB": 1e9, "64 KiB": 64 << 10, "10B": 10} {
		if got, err := parseBytes(in); err != nil || got != want {
			t.Errorf("parseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "lots", "-1", "1.5GiB", "9999999999TiB"} {
		if _, err := parseBytes(in); err == nil {
			t.Errorf("parseBytes(%q) accepted", in)
		}
	}
}
