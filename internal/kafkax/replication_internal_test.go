package kafkax

import (
	"strings"
	"testing"

	"github.com/segmentio/kafka-go"
)

func TestResolveDurability(t *testing.T) {
	for _, c := range []struct {
		name              string
		rf, minISR, nodes int
		want              Durability
		err               string
	}{
		{name: "defaults on three brokers", nodes: 3, want: Durability{ReplicationFactor: 3, MinInsyncReplicas: 2, Brokers: 3}},
		{name: "defaults on five brokers", nodes: 5, want: Durability{ReplicationFactor: 3, MinInsyncReplicas: 2, Brokers: 5}},
		{name: "defaults lowered on one broker", nodes: 1, want: Durability{ReplicationFactor: 1, MinInsyncReplicas: 1, Brokers: 1, Lowered: true}},
		{name: "defaults lowered on two brokers", nodes: 2, want: Durability{ReplicationFactor: 2, MinInsyncReplicas: 1, Brokers: 2, Lowered: true}},
		{name: "explicit factor keeps its own min ISR default", rf: 5, nodes: 5, want: Durability{ReplicationFactor: 5, MinInsyncReplicas: 2, Brokers: 5}},
		{name: "explicit factor 2", rf: 2, nodes: 3, want: Durability{ReplicationFactor: 2, MinInsyncReplicas: 1, Brokers: 3}},
		{name: "explicit both", rf: 3, minISR: 3, nodes: 3, want: Durability{ReplicationFactor: 3, MinInsyncReplicas: 3, Brokers: 3}},
		{name: "explicit factor is never lowered", rf: 3, nodes: 1, err: "replication factor 3 needs at least 3 brokers, and the cluster lists 1"},
		{name: "min ISR above the factor", rf: 1, minISR: 2, nodes: 3, err: "min.insync.replicas 2 is more than the replication factor 1"},
		{name: "min ISR above a lowered factor", minISR: 2, nodes: 1, err: "min.insync.replicas 2 is more than the replication factor 1"},
		{name: "negative", rf: -1, nodes: 3, err: "must not be negative"},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := resolveDurability(c.rf, c.minISR, c.nodes)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("err %v, want %q", err, c.err)
				}
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, c.want)
			}
		})
	}
}

func TestReplicationOfAndBelow(t *testing.T) {
	b := func(id int) kafka.Broker { return kafka.Broker{ID: id, Host: "h"} }
	topic := kafka.Topic{Name: "flowd.ingest", Partitions: []kafka.Partition{
		{ID: 0, Leader: b(1), Replicas: []kafka.Broker{b(1), b(2), b(3)}, Isr: []kafka.Broker{b(1), b(2), b(3)}},
		{ID: 1, Leader: b(2), Replicas: []kafka.Broker{b(2), b(3)}, Isr: []kafka.Broker{b(2)}},
		{ID: 2, Replicas: []kafka.Broker{b(3), b(1), b(2)}, Isr: []kafka.Broker{}},
	}}
	r := replicationOf(topic)
	want := TopicReplication{Topic: "flowd.ingest", Partitions: 3, ReplicationFactor: 2, UnderReplicated: 2, Offline: 1}
	if r != want {
		t.Fatalf("replicationOf = %+v, want %+v", r, want)
	}
	prod := Durability{ReplicationFactor: 3, MinInsyncReplicas: 2}
	if got := r.Below(prod); got != "topic flowd.ingest has replication factor 2, below the configured 3" {
		t.Errorf("Below = %q", got)
	}
	r.ReplicationFactor, r.MinInsyncReplicas = 3, 1
	if got := r.Below(prod); got != "topic flowd.ingest has min.insync.replicas 1, below the configured 2" {
		t.Errorf("Below = %q", got)
	}
	r.MinInsyncReplicas = 0 // unknown (no DescribeConfigs permission): not held against the topic
	if got := r.Below(prod); got != "" {
		t.Errorf("Below with an unknown min ISR = %q", got)
	}
	r.MinInsyncReplicas = 2
	if got := r.Below(prod); got != "" {
		t.Errorf("Below of a topic as replicated as configured = %q", got)
	}
}
