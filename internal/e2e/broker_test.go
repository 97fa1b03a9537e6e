package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/testrig"
)

const (
	brokerWebhooks  = 1500 // webhooks sent in all
	brokerKillAt    = 400  // accepted webhooks before the busiest broker is killed
	brokerRestartAt = 800  // accepted webhooks before it is started again
	// The senders wait for the restart once this many are accepted, so webhooks come in
	// after it too.
	brokerHoldAt  = 900
	brokerClients = 16
	brokerWindow  = 200 // accepted webhooks the senders may be ahead of the sink
)

// TestBrokerKilledUnderLoad is the durability test: the production roles run against a
// three-broker cluster with their topics replicated three times (min.insync.replicas 2). While
// webhooks come in through a three-step flow, the broker that leads the busiest partitions is
// killed with SIGKILL and, later, started again. Every webhook that got a 2xx ends as exactly
// one succeeded execution whose steps each ran once; what ingest could not make durable was
// answered 503, never 2xx, and the senders retry it with its Idempotency-Key as a partner would,
// which never adds an execution; and the stream goes on through both leader changes without
// any flowd role being restarted.
func TestBrokerKilledUnderLoad(t *testing.T) {
	cluster := testrig.StartKafkaCluster(t)
	ctx, rig := startCrashRig(t, crashOptions{
		runners: []string{"runner"}, brokers: cluster.Brokers, thirdStep: true,
		// Explicit, and refused if the topics were replicated less.
		args: []string{"--kafka-replication-factor", "3", "--kafka-min-insync-replicas", "2", "--kafka-require-replication"},
	})
	rig.lap("roles ready, flow active")

	var (
		mu          sync.Mutex
		accepted    = map[string]int{}
		unavailable int // 503: not durable, the caller retries
		other       int // any other answer: never expected
		transport   int
		acceptedN   atomic.Int64
		next        atomic.Int64
		phase       atomic.Int32 // 0 before the kill, 1 broker down, 2 restarted
		byPhase     [3]atomic.Int64
		killed      = make(chan int, 1)
		restarted   = make(chan struct{})
	)
	url := rig.ingestURL + "/hooks/" + rig.flowID
	loadCtx, stopLoad := context.WithTimeout(ctx, 5*time.Minute)
	defer stopLoad()

	// The broker's fate: killed at brokerKillAt accepted webhooks, started again at
	// brokerRestartAt, each while webhooks come in.
	brokerDone := make(chan error, 1)
	go func() {
		defer close(brokerDone)
		defer func() {
			select {
			case <-restarted:
			default:
				close(restarted) // release held senders if the broker could not be restarted
			}
		}()
		waitCount(loadCtx, &acceptedN, brokerKillAt)
		if loadCtx.Err() != nil {
			return
		}
		victim, why := busiestBroker(loadCtx, cluster.Brokers, rig.unique+".")
		if victim == 0 {
			brokerDone <- fmt.Errorf("no broker leads any partition: %s", why)
			return
		}
		if err := cluster.Kill(victim); err != nil {
			brokerDone <- err
			return
		}
		phase.Store(1)
		killed <- victim
		t.Logf("killed broker %d after %d accepted webhooks (%s)", victim, acceptedN.Load(), why)
		waitCount(loadCtx, &acceptedN, brokerRestartAt)
		if loadCtx.Err() != nil {
			return
		}
		started := time.Now()
		if err := cluster.Restart(victim); err != nil {
			brokerDone <- err
			return
		}
		phase.Store(2)
		t.Logf("broker %d back after %d accepted webhooks; its restart took %s", victim, acceptedN.Load(), time.Since(started).Round(100*time.Millisecond))
	}()

	var wg sync.WaitGroup
	for range brokerClients {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= brokerWebhooks || loadCtx.Err() != nil {
					return
				}
				if !rig.nearSink(loadCtx, &acceptedN, brokerWindow) {
					return
				}
				if acceptedN.Load() >= brokerHoldAt {
					select {
					case <-restarted:
					case <-loadCtx.Done():
						return
					}
				}
				// A partner retries what was not accepted, with the same key: the retry can never
				// start a second execution, even where the refused attempt landed after all.
				key := fmt.Sprintf("%s-%d", rig.unique, i)
				for {
					p := phase.Load()
					id, status, err := crashPostKey(loadCtx, rig.hc, url, i, key)
					mu.Lock()
					switch {
					case err != nil:
						transport++
					case status/100 == 2 && id != "":
						accepted[id] = i
					case status == http.StatusServiceUnavailable:
						unavailable++
					case status == http.StatusConflict: // the refused attempt's key is being released
					default:
						other++
					}
					mu.Unlock()
					if err == nil && status/100 == 2 {
						acceptedN.Add(1)
						byPhase[p].Add(1)
						break
					}
					if loadCtx.Err() != nil || err != nil || (status != http.StatusServiceUnavailable && status != http.StatusConflict) {
						break
					}
					select { // the client's backoff (ingest says Retry-After: 1)
					case <-time.After(200 * time.Millisecond):
					case <-loadCtx.Done():
						return
					}
				}
			}
		})
	}
	wg.Wait()
	stopLoad()
	if err := <-brokerDone; err != nil {
		t.Fatal(err)
	}
	if phase.Load() != 2 {
		t.Fatalf("the load ended before the broker was killed and restarted: %d accepted", acceptedN.Load())
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("load: %d accepted (%d before the kill, %d while a broker was down, %d after its restart), %d answers 503 (retried), %d other answers, %d transport errors",
		len(accepted), byPhase[0].Load(), byPhase[1].Load(), byPhase[2].Load(), unavailable, other, transport)
	if n := int(next.Load()); n < brokerWebhooks {
		t.Fatalf("the load did not finish in time: %d of %d webhooks sent", n, brokerWebhooks)
	}
	if other > 0 || transport > 0 {
		t.Errorf("%d answers other than 2xx, 503 or 409 and %d transport errors: ingest must answer 503 for what it cannot make durable", other, transport)
	}
	if len(accepted) != brokerWebhooks {
		t.Errorf("%d of %d webhooks accepted in the end: every one retried after a 503 must be", len(accepted), brokerWebhooks)
	}
	// The stream went on: with one broker down (min.insync.replicas 2 of 3) and after it came back.
	if byPhase[1].Load() == 0 || byPhase[2].Load() == 0 {
		t.Errorf("webhooks accepted while the broker was down: %d, after its restart: %d; want both", byPhase[1].Load(), byPhase[2].Load())
	}
	rig.lap("load")

	// Retried with their keys, refused attempts add no execution: exactly one per webhook.
	rig.verify(ctx, t, accepted, 0)
	// No role was restarted: each still runs its first process.
	for name, p := range rig.procs {
		if gone, how := p.exited(); gone || p.runs != 1 {
			t.Errorf("role %s: exited %v (%s), started %d times; it must ride out the broker's loss", name, gone, how, p.runs)
		}
	}
	rig.shutdown(ctx, t)
}

// waitCount returns once n reaches at least want, or ctx ends.
func waitCount(ctx context.Context, n *atomic.Int64, want int64) {
	for n.Load() < want && ctx.Err() == nil {
		time.Sleep(10 * time.Millisecond) // polling the load's progress
	}
}

// busiestBroker is the broker leading the partitions that hold the most records among the
// topics under prefix, and why.
func busiestBroker(ctx context.Context, brokers []string, prefix string) (int, string) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...)}
	md, err := client.Metadata(ctx, &kafka.MetadataRequest{})
	if err != nil {
		return 0, err.Error()
	}
	req := &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{}}
	leader := map[string]int{} // topic/partition -> broker
	for _, tp := range md.Topics {
		if !strings.HasPrefix(tp.Name, prefix) {
			continue
		}
		for _, p := range tp.Partitions {
			req.Topics[tp.Name] = append(req.Topics[tp.Name], kafka.LastOffsetOf(p.ID))
			leader[fmt.Sprintf("%s/%d", tp.Name, p.ID)] = p.Leader.ID
		}
	}
	res, err := client.ListOffsets(ctx, req)
	if err != nil {
		return 0, err.Error()
	}
	records := map[int]int64{}
	for topic, parts := range res.Topics {
		for _, p := range parts {
			records[leader[fmt.Sprintf("%s/%d", topic, p.Partition)]] += p.LastOffset
		}
	}
	best := 0
	for id, n := range records {
		if id > 0 && (best == 0 || n > records[best]) {
			best = id
		}
	}
	return best, fmt.Sprintf("records in the partitions each broker leads: %v", records)
}
