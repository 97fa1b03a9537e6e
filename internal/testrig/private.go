package testrig

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flowd/flowd/internal/kafkax"
)

// The rig users of a broker started with `tools/rig/kafka.sh start DIR --sasl`.
const (
	SASLAdmin     = "admin"     // super user
	SASLFlowd     = "flowd"     // flowd's roles: kafkax.RoleACLs grants it the flowd. prefix
	SASLConnector = "connector" // connectors' own credentials: partner topics only
)

// SASLBroker is a Kafka broker with SCRAM-SHA-512 authentication and ACLs enforced, with
// kafkax.RoleACLs granted for topic prefix "flowd." and partner prefix "partner.".
type SASLBroker struct {
	Brokers []string
	dir     string
}

// Config returns a kafkax.Config that authenticates as user (SASLAdmin, SASLFlowd or
// SASLConnector), reading its password from the rig's password file as an operator would.
func (b *SASLBroker) Config(user string) kafkax.Config {
	return kafkax.Config{Brokers: b.Brokers, SASL: kafkax.SASL{
		Mechanism: kafkax.MechanismScramSHA512, Username: user, PasswordFile: b.PasswordFile(user),
	}}
}

// PasswordFile is the file holding user's SCRAM password.
func (b *SASLBroker) PasswordFile(user string) string { return filepath.Join(b.dir, "sasl", user) }

var (
	privMu    sync.Mutex
	saslOnce  sync.Once
	saslBrk   *SASLBroker
	saslErr   error
	stopFuncs []func()
)

// SASLKafka starts (once per test binary: a JVM start is seconds) a broker of its own with
// SASL and ACLs, or skips the test outside the rig. Call StopPrivate from TestMain.
func SASLKafka(t testing.TB) *SASLBroker {
	t.Helper()
	Kafka(t) // the rig provides Java and the broker's jars; outside it, skip (or fail)
	saslOnce.Do(func() { saslBrk, saslErr = startSASL() })
	if saslErr != nil {
		t.Fatal(saslErr)
	}
	return saslBrk
}

func startSASL() (*SASLBroker, error) {
	dir, err := os.MkdirTemp("", "flowd-sasl-kafka.")
	if err != nil {
		return nil, err
	}
	script := filepath.Join(repoRoot(), "tools", "rig", "kafka.sh")
	started := time.Now()
	out, err := exec.Command(script, "start", dir, "--sasl").CombinedOutput()
	onStop(func() {
		_ = exec.Command(script, "stop", dir).Run()
		_ = os.RemoveAll(dir)
	})
	if err != nil {
		return nil, fmt.Errorf("kafka.sh start --sasl: %w\n%s", err, out)
	}
	port, err := os.ReadFile(filepath.Join(dir, "port"))
	if err != nil {
		return nil, err
	}
	b := &SASLBroker{Brokers: []string{"127.0.0.1:" + strings.TrimSpace(string(port))}, dir: dir}

	// The listener is open; wait until the admin authenticates (SCRAM credentials are served
	// from the metadata the broker has just loaded), then grant flowd's ACLs.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	admin := b.Config(SASLAdmin)
	for {
		err := kafkax.Ping(ctx, admin)
		if err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("sasl broker: admin cannot authenticate: %w", err)
		case <-time.After(200 * time.Millisecond): // poll interval
		}
	}
	acls := kafkax.Config{TopicPrefix: kafkax.DefaultTopicPrefix}.RoleACLs(SASLFlowd, SASLConnector, kafkax.DefaultPartnerPrefix)
	if err := kafkax.CreateACLs(ctx, admin, acls); err != nil {
		return nil, err
	}
	fmt.Fprintf(os.Stderr, "testrig: SASL/SCRAM kafka broker with ACLs ready on %s in %s\n", b.Brokers[0], time.Since(started).Round(100*time.Millisecond))
	return b, nil
}

// RedisWithPassword starts a redis-server of this test alone that requires a password, and
// returns its redis:// URL (without the password) and the password file.
func RedisWithPassword(t testing.TB) (url, passwordFile string) {
	t.Helper()
	Redis(t) // the rig provides redis-server; outside it, skip (or fail)
	dir := t.TempDir()
	script := filepath.Join(repoRoot(), "tools", "rig", "redis.sh")
	out, err := exec.Command(script, "start", dir, "--password").CombinedOutput()
	t.Cleanup(func() { _ = exec.Command(script, "stop", dir).Run() })
	if err != nil {
		t.Fatalf("redis.sh start --password: %v\n%s", err, out)
	}
	port, err := os.ReadFile(filepath.Join(dir, "port"))
	if err != nil {
		t.Fatal(err)
	}
	return "redis://127.0.0.1:" + strings.TrimSpace(string(port)) + "/0", filepath.Join(dir, "password")
}

func onStop(f func()) {
	privMu.Lock()
	defer privMu.Unlock()
	stopFuncs = append(stopFuncs, f)
}

// StopPrivate stops the servers started once per test binary (SASLKafka). Call it from
// TestMain after m.Run.
func StopPrivate() {
	privMu.Lock()
	defer privMu.Unlock()
	for _, f := range stopFuncs {
		f()
	}
	stopFuncs = nil
}

// repoRoot is the module root, found from this file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..")
}
