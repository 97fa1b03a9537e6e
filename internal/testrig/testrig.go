// Package testrig hands integration tests the addresses of the real Kafka broker and
// redis-server that tools/rig starts. Outside `make test` (no addresses in the environment) the
// tests skip and say why; under `make test` (FLOWD_REQUIRE_RIG=1) a missing address fails them.
package testrig

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/secrets"
)

const (
	// EnvKafka holds a comma-separated list of broker addresses.
	EnvKafka = "FLOWD_TEST_KAFKA_BROKERS"
	// EnvRedis holds a redis:// URL.
	EnvRedis = "FLOWD_TEST_REDIS_URL"
	// EnvRedisCluster holds the comma-separated addresses of a Redis Cluster's masters.
	EnvRedisCluster = "FLOWD_TEST_REDIS_CLUSTER"
	// EnvRequire makes a missing rig a failure instead of a skip.
	EnvRequire = "FLOWD_REQUIRE_RIG"
	// EnvKafkaVersion holds the version the rig's broker reports (e.g. "4.1.1").
	EnvKafkaVersion = "FLOWD_TEST_KAFKA_VERSION"
)

func need(t testing.TB, env string) string {
	t.Helper()
	v := os.Getenv(env)
	if v != "" {
		return v
	}
	if os.Getenv(EnvRequire) != "" {
		t.Fatalf("%s is not set but %s is: the test rig did not start", env, EnvRequire)
	}
	t.Skipf("integration test skipped: %s is not set (run `make test`, which starts a real broker and redis-server)", env)
	return ""
}

// Kafka returns the broker addresses of the real Kafka broker, or skips the test.
func Kafka(t testing.TB) []string {
	t.Helper()
	return strings.Split(need(t, EnvKafka), ",")
}

// KafkaVersion returns the version of the rig's Kafka broker, or "unknown" when the rig did
// not say (for logs; use Kafka to get the addresses and the skip/fail behaviour).
func KafkaVersion() string {
	if v := os.Getenv(EnvKafkaVersion); v != "" {
		return v
	}
	return "unknown"
}

// Redis returns the redis:// URL of the real redis-server, or skips the test.
func Redis(t testing.TB) string {
	t.Helper()
	return need(t, EnvRedis)
}

// Unique returns a short random name so tests sharing one broker and one Redis never collide
// (use it in topic prefixes and Redis key prefixes).
func Unique(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return prefix + hex.EncodeToString(b[:])
}

// RedisClient connects to the rig's redis-server (or skips the test) and closes the client
// when the test ends.
func RedisClient(t testing.TB) *redis.Client {
	t.Helper()
	opt, err := redis.ParseURL(Redis(t))
	if err != nil {
		t.Fatalf("parse %s: %v", EnvRedis, err)
	}
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// RedisClusterClient connects to the rig's three-master Redis Cluster (or skips the test) and
// closes the client when the test ends.
func RedisClusterClient(t testing.TB) *redis.ClusterClient {
	t.Helper()
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: strings.Split(need(t, EnvRedisCluster), ",")})
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// RedisClusterURL returns the rig's cluster as flowd's --redis-url takes it with
// --redis-cluster (redis://node1?addr=node2&addr=node3), or skips the test.
func RedisClusterURL(t testing.TB) string {
	t.Helper()
	addrs := strings.Split(need(t, EnvRedisCluster), ",")
	return "redis://" + addrs[0] + "?addr=" + strings.Join(addrs[1:], "&addr=")
}

// RedisBackend is one kind of Redis deployment a test runs against.
type RedisBackend struct {
	Name   string
	Client func(t testing.TB) redis.UniversalClient
}

// RedisBackends are the deployments code that must work on both runs its tests against: the
// single redis-server and the three-master cluster.
var RedisBackends = []RedisBackend{
	{Name: "single", Client: func(t testing.TB) redis.UniversalClient { return RedisClient(t) }},
	{Name: "cluster", Client: func(t testing.TB) redis.UniversalClient { return RedisClusterClient(t) }},
}

// LogBuffer collects log output written from many goroutines, for tests that search logs.
type LogBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String returns everything written so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

var (
	busKeyOnce sync.Once
	busKey     string
	busRing    *busauth.Keyring
)

// BusKey is this test process's record key list (for FLOWD_BUS_KEY of roles a test starts);
// every caller in the process gets the same, so records one helper signs verify in another.
func BusKey() string {
	busKeyOnce.Do(func() {
		busKey = busauth.Generate()
		keys, err := secrets.ParseKeyList(busKey)
		if err == nil {
			busRing, err = busauth.New(keys)
		}
		if err != nil {
			panic("testrig: bus key: " + err.Error())
		}
	})
	return busKey
}

// RecordKeys is the keyring of BusKey, for kafkax.Config.RecordKeys.
func RecordKeys() *busauth.Keyring {
	BusKey()
	return busRing
}
