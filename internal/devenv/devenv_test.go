package devenv

import (
	"context"
	"io"
	"log/slog"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/kafkax"
)

func testLog(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

func TestBrokerPersistsAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	log := testLog(t)

	brokers, stop, err := StartBroker(ctx, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stop() }()
	cfg := kafkax.Config{Brokers: brokers, Partitions: 1}
	if err := kafkax.EnsureTopics(ctx, cfg, "devtest"); err != nil {
		t.Fatal(err)
	}
	w := kafkax.NewWriter(cfg)
	err = w.WriteMessages(ctx, kafka.Message{Topic: cfg.Topic("devtest"), Key: []byte("k"), Value: []byte("survives")})
	w.Close()
	if err != nil {
		t.Fatal(err)
	}
	stop()

	brokers2, stop2, err := StartBroker(ctx, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	if !slices.Equal(brokers, brokers2) {
		t.Errorf("broker address changed across restart: %v then %v", brokers, brokers2)
	}
	r := kafka.NewReader(kafka.ReaderConfig{Brokers: brokers2, Topic: cfg.Topic("devtest"), MaxWait: 100 * time.Millisecond})
	defer r.Close()
	m, err := r.FetchMessage(ctx)
	if err != nil {
		t.Fatalf("reading back after restart: %v", err)
	}
	if string(m.Key) != "k" || string(m.Value) != "survives" || m.Offset != 0 {
		t.Fatalf("got key %q value %q offset %d", m.Key, m.Value, m.Offset)
	}
}

func TestRedisPersistsAcrossRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	log := testLog(t)

	url, stop, err := StartRedis(ctx, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { stop() }()
	setKey(ctx, t, url)
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server is not on PATH: the in-memory fallback keeps nothing across restarts")
	}
	stop()

	url2, stop2, err := StartRedis(ctx, dir, log)
	if err != nil {
		t.Fatal(err)
	}
	defer stop2()
	if url2 != url {
		t.Errorf("redis URL changed across restart: %s then %s", url, url2)
	}
	if got := getKey(ctx, t, url2); got != "survives" {
		t.Fatalf("after restart the key holds %q", got)
	}
}

func TestRedisFallsBackToMiniredis(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no redis-server
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	url, stop, err := StartRedis(ctx, t.TempDir(), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	setKey(ctx, t, url)
	if got := getKey(ctx, t, url); got != "survives" {
		t.Fatalf("got %q", got)
	}
}

func client(t *testing.T, url string) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(url)
	if err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(opt)
	t.Cleanup(func() { c.Close() })
	return c
}

func setKey(ctx context.Context, t *testing.T, url string) {
	t.Helper()
	if err := client(t, url).Set(ctx, "devenv:test", "survives", 0).Err(); err != nil {
		t.Fatal(err)
	}
}

func getKey(ctx context.Context, t *testing.T, url string) string {
	t.Helper()
	v, err := client(t, url).Get(ctx, "devenv:test").Result()
	if err != nil {
		t.Fatal(err)
	}
	return v
}
