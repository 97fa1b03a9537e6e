package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/kafkax"
)

const (
	failoverWebhooks = 900 // webhooks sent in all
	failoverKillAt   = 300 // accepted webhooks before one runner is killed
	failoverClients  = 16
	failoverWindow   = 200 // accepted webhooks the senders may be ahead of the sink
	failoverParts    = 3   // the rig's --partitions
)

// TestRunnerFailover: two runners share the work topic; under load one of them is killed with
// SIGKILL and not restarted. The survivor owns every partition of the work topic within the
// session timeout + 5 s, and every acknowledged webhook completes exactly once.
func TestRunnerFailover(t *testing.T) {
	ctx, rig := startCrashRig(t, crashOptions{runners: []string{"runner-a", "runner-b"}})
	group := rig.unique + "-runner-default"
	topic := rig.unique + "." + "steps.default"
	client := &kafka.Client{Addr: kafka.TCP(rig.brokers...)}
	crashPoll(ctx, t, 60*time.Second, "both runners to hold work partitions", func() (bool, string) {
		owners := partitionOwners(ctx, t, client, group, topic)
		return len(owners) == 2, fmt.Sprintf("owners %v", owners)
	}, nil)

	var (
		mu        sync.Mutex
		accepted  = map[string]int{}
		lost      int // answers other than 2xx, or none: such webhooks may or may not run
		acceptedN atomic.Int64
		next      atomic.Int64
		killed    = make(chan time.Time, 1)
	)
	url := rig.ingestURL + "/hooks/" + rig.flowID
	loadCtx, stopLoad := context.WithTimeout(ctx, 4*time.Minute)
	defer stopLoad()
	var wg sync.WaitGroup
	for range failoverClients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= failoverWebhooks || loadCtx.Err() != nil {
					return
				}
				if !rig.nearSink(loadCtx, &acceptedN, failoverWindow) {
					return
				}
				id, status, err := crashPost(loadCtx, rig.hc, url, i)
				mu.Lock()
				if err == nil && status/100 == 2 && id != "" {
					accepted[id] = i
				} else if err != nil || status != http.StatusNotFound {
					lost++
				}
				mu.Unlock()
				if err == nil && status/100 == 2 && acceptedN.Add(1) == failoverKillAt {
					rig.procs["runner-b"].kill()
					killed <- time.Now()
				}
			}
		})
	}

	// The takeover: from the kill until the group's one remaining member owns every partition.
	var killedAt time.Time
	select {
	case killedAt = <-killed:
	case <-loadCtx.Done():
		t.Fatal("the load ended before a runner was killed")
	}
	bound := kafkax.DefaultSessionTimeout + 5*time.Second
	var takeover time.Duration
	crashPoll(ctx, t, 2*bound, "the surviving runner to own every work partition", func() (bool, string) {
		owners := partitionOwners(ctx, t, client, group, topic)
		for _, parts := range owners {
			if len(owners) == 1 && len(parts) == failoverParts {
				takeover = time.Since(killedAt)
				return true, ""
			}
		}
		return false, fmt.Sprintf("owners %v", owners)
	}, rig.procs["runner-a"])
	t.Logf("the survivor owned every work partition %s after the kill (bound: session timeout %s + 5 s)", takeover.Round(10*time.Millisecond), kafkax.DefaultSessionTimeout)
	if takeover > bound {
		t.Errorf("takeover took %s, more than the session timeout + 5 s (%s)", takeover, bound)
	}
	wg.Wait()
	if n := int(next.Load()); n < failoverWebhooks {
		t.Fatalf("the load did not finish in time: %d of %d webhooks sent", n, failoverWebhooks)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("load: %d accepted, %d without a 2xx", len(accepted), lost)
	if len(accepted) < failoverKillAt*2 {
		t.Fatalf("only %d of %d webhooks were accepted", len(accepted), failoverWebhooks)
	}
	delete(rig.procs, "runner-b") // dead, and not to be stopped again
	rig.verify(ctx, t, accepted, lost)
	rig.shutdown(ctx, t)
}

// partitionOwners maps each member of group to the partitions of topic assigned to it.
func partitionOwners(ctx context.Context, t *testing.T, c *kafka.Client, group, topic string) map[string][]int {
	t.Helper()
	res, err := c.DescribeGroups(ctx, &kafka.DescribeGroupsRequest{GroupIDs: []string{group}})
	if err != nil || len(res.Groups) != 1 {
		return nil // the group is rebalancing or the coordinator moves: ask again
	}
	owners := map[string][]int{}
	for _, m := range res.Groups[0].Members {
		for _, at := range m.MemberAssignments.Topics {
			if at.Topic == topic {
				owners[m.MemberID] = append(owners[m.MemberID], at.Partitions...)
			}
		}
	}
	for id, parts := range owners {
		if len(parts) == 0 {
			delete(owners, id)
		} else {
			slices.Sort(parts)
		}
	}
	return owners
}
