package testrig

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// KafkaCluster is a real three-node Kafka cluster (KRaft, three combined broker+controller
// nodes on loopback ports) of one test's own, started with `tools/rig/kafka.sh cluster-start`.
// Node n (1..3) is the broker with id n. Its internal topics have three replicas, and a killed
// broker is fenced within about 4 s.
type KafkaCluster struct {
	Brokers []string
	dir     string
}

// StartKafkaCluster starts a cluster for t (about 20 s on a 2-core machine) and stops it when t
// ends; outside the rig it skips t (or fails it, under FLOWD_REQUIRE_RIG).
func StartKafkaCluster(t testing.TB) *KafkaCluster {
	t.Helper()
	Kafka(t) // the rig provides Java, kcat and the broker's jars; outside it, skip (or fail)
	dir := t.TempDir()
	started := time.Now()
	c := &KafkaCluster{dir: dir}
	out, err := c.script("cluster-start", dir)
	t.Cleanup(func() {
		if t.Failed() {
			for n := 1; n <= 3; n++ {
				t.Logf("--- kafka node %d log (tail) ---\n%s", n, tail(filepath.Join(dir, strconv.Itoa(n), "kafka.log"), 40))
			}
		}
		_, _ = c.script("cluster-stop", dir)
	})
	if err != nil {
		t.Fatalf("kafka.sh cluster-start: %v\n%s", err, out)
	}
	brokers, err := os.ReadFile(filepath.Join(dir, "brokers"))
	if err != nil {
		t.Fatal(err)
	}
	c.Brokers = strings.Split(strings.TrimSpace(string(brokers)), ",")
	t.Logf("kafka cluster of 3 nodes on %v in %s", c.Brokers, time.Since(started).Round(100*time.Millisecond))
	return c
}

// Kill ends broker node with SIGKILL, as a crash would. (It returns an error rather than
// failing a test: tests call it from the goroutine that drives a load.)
func (c *KafkaCluster) Kill(node int) error {
	if out, err := c.script("kill", c.node(node)); err != nil {
		return fmt.Errorf("kill kafka node %d: %w\n%s", node, err, out)
	}
	return nil
}

// Restart starts a stopped or killed node again on its ports and data, and returns once it is
// back in the cluster's metadata.
func (c *KafkaCluster) Restart(node int) error {
	if out, err := c.script("node-start", c.node(node)); err != nil {
		return fmt.Errorf("restart kafka node %d: %w\n%s", node, err, out)
	}
	return nil
}

func (c *KafkaCluster) node(n int) string { return filepath.Join(c.dir, strconv.Itoa(n)) }

func (c *KafkaCluster) script(args ...string) ([]byte, error) {
	return exec.Command(filepath.Join(repoRoot(), "tools", "rig", "kafka.sh"), args...).CombinedOutput()
}

// tail returns about the last n lines of a file, for failure reports.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprint(err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
