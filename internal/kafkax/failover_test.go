package kafkax_test

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/testrig"
)

// envGroupChild makes the test binary a consumer group member (see TestMain) that the
// failover test kills with SIGKILL: "brokers|topic|group".
const envGroupChild = "FLOWD_TEST_GROUP_CHILD"

func TestMain(m *testing.M) {
	if spec := os.Getenv(envGroupChild); spec != "" {
		groupChild(spec)
		return
	}
	os.Exit(m.Run())
}

// groupChild joins the group with the roles' reader settings and fetches until it is killed,
// saying "fetching" once it runs.
func groupChild(spec string) {
	parts := strings.Split(spec, "|")
	cfg := kafkax.Config{Brokers: strings.Split(parts[0], ",")}
	r := kafka.NewReader(cfg.GroupReader(kafka.ReaderConfig{GroupID: parts[2], Topic: parts[1], MaxWait: 200 * time.Millisecond}))
	fmt.Println("fetching")
	for {
		if _, err := r.FetchMessage(context.Background()); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
}

// A member killed with SIGKILL (no LeaveGroup) loses its partitions to the survivor within
// the session timeout plus a few seconds: the acceptance figure for failover, with the
// defaults every role's readers use (GroupReader).
func TestDeadMembersPartitionsMoveWithinTheSessionTimeout(t *testing.T) {
	brokers := testrig.Kafka(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cfg := kafkax.Config{Brokers: brokers, TopicPrefix: testrig.Unique("t") + ".", Partitions: 4}
	if err := kafkax.EnsureTopics(ctx, cfg, "work"); err != nil {
		t.Fatal(err)
	}
	topic, group := cfg.Topic("work"), testrig.Unique("g-")

	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), envGroupChild+"="+strings.Join(brokers, ",")+"|"+topic+"|"+group)
	out, err := child.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = child.Process.Kill(); _ = child.Wait() })
	if line, _ := bufio.NewReader(out).ReadString('\n'); line != "fetching\n" {
		t.Fatalf("child member: %q", line)
	}
	survivor := kafka.NewReader(cfg.GroupReader(kafka.ReaderConfig{GroupID: group, Topic: topic, MaxWait: 200 * time.Millisecond}))
	defer func() { _ = survivor.Close() }()
	seen := make(chan int, 1024)
	go func() {
		for {
			m, err := survivor.FetchMessage(ctx)
			if err != nil {
				return
			}
			seen <- m.Partition
		}
	}()

	// Both members hold partitions before the kill.
	admin := &kafka.Client{Addr: kafka.TCP(brokers...), Transport: cfg.Transport()}
	assigned := func() []int {
		res, err := admin.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
		if err != nil || len(res.Groups) != 1 || res.Groups[0].GroupState != "Stable" {
			return nil
		}
		var counts []int
		for _, m := range res.Groups[0].Members {
			n := 0
			for _, tp := range m.MemberAssignments.Topics {
				n += len(tp.Partitions)
			}
			counts = append(counts, n)
		}
		return counts
	}
	for deadline := time.Now().Add(60 * time.Second); ; {
		if c := assigned(); len(c) == 2 && c[0] > 0 && c[1] > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the two members never shared the partitions: %v", assigned())
		}
		time.Sleep(100 * time.Millisecond) // polling the group with a deadline
	}

	if err := child.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	// Records on every partition from now on: the survivor must read all four, the dead
	// member's included.
	w := kafkax.NewWriter(cfg)
	defer func() { _ = w.Close() }()
	var msgs []kafka.Message
	for i := range 64 {
		msgs = append(msgs, kafka.Message{Topic: topic, Key: fmt.Appendf(nil, "k%d", i), Value: []byte("v")})
	}
	if err := w.WriteMessages(ctx, msgs...); err != nil {
		t.Fatal(err)
	}
	got := map[int]bool{}
	bound := kafkax.DefaultSessionTimeout + 5*time.Second
	for len(got) < 4 {
		select {
		case p := <-seen:
			got[p] = true
		case <-time.After(time.Until(killed.Add(bound))):
			t.Fatalf("%s after the kill the survivor reads partitions %v of 4; want all within the session timeout + 5 s (%s)", time.Since(killed).Round(time.Millisecond), got, bound)
		}
	}
	t.Logf("the survivor read every partition %s after the other member was killed (session timeout %s)", time.Since(killed).Round(time.Millisecond), kafkax.DefaultSessionTimeout)
}
