package router

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/flowdoc"
)

// fakeAdmin answers setStart's four requests from fixed data and records the commit.
type fakeAdmin struct {
	topicErr  error // metadata error of the topic
	fetch     *kafka.OffsetFetchResponse
	fetchErr  error // the OffsetFetch request fails with it
	ends      map[int]int64
	firsts    map[int]int64
	committed []kafka.OffsetCommit
}

func (f *fakeAdmin) Metadata(_ context.Context, req *kafka.MetadataRequest) (*kafka.MetadataResponse, error) {
	t := kafka.Topic{Name: req.Topics[0], Error: f.topicErr}
	if f.topicErr == nil {
		for p := range f.ends {
			t.Partitions = append(t.Partitions, kafka.Partition{Topic: t.Name, ID: p})
		}
	}
	return &kafka.MetadataResponse{Topics: []kafka.Topic{t}}, nil
}

func (f *fakeAdmin) OffsetFetch(context.Context, *kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error) {
	if f.fetchErr != nil {
		return nil, f.fetchErr
	}
	return f.fetch, nil
}

func (f *fakeAdmin) ListOffsets(_ context.Context, req *kafka.ListOffsetsRequest) (*kafka.ListOffsetsResponse, error) {
	res := &kafka.ListOffsetsResponse{Topics: map[string][]kafka.PartitionOffsets{}}
	for topic, reqs := range req.Topics {
		for _, r := range reqs {
			res.Topics[topic] = append(res.Topics[topic], kafka.PartitionOffsets{Partition: r.Partition,
				FirstOffset: f.firsts[r.Partition], LastOffset: f.ends[r.Partition]})
		}
	}
	return res, nil
}

func (f *fakeAdmin) OffsetCommit(_ context.Context, req *kafka.OffsetCommitRequest) (*kafka.OffsetCommitResponse, error) {
	res := &kafka.OffsetCommitResponse{Topics: map[string][]kafka.OffsetCommitPartition{}}
	for topic, cs := range req.Topics {
		f.committed = append(f.committed, cs...)
		for _, c := range cs {
			res.Topics[topic] = append(res.Topics[topic], kafka.OffsetCommitPartition{Partition: c.Partition})
		}
	}
	return res, nil
}

func committedAt(cs []kafka.OffsetCommit) map[int]int64 {
	out := map[int]int64{}
	for _, c := range cs {
		out[c.Partition] = c.Offset
	}
	return out
}

func TestStartingOffsetsTreatGroupIDNotFoundAsNoOffsets(t *testing.T) {
	ctx := context.Background()
	ends := map[int]int64{0: 7, 1: 3}

	// The whole group unknown (a broker's answer for a group that never committed).
	f := &fakeAdmin{ends: ends, fetch: &kafka.OffsetFetchResponse{Error: kafka.GroupIdNotFound}}
	if err := setStart(ctx, f, "g", "partner", fromEnd); err != nil {
		t.Fatalf("GROUP_ID_NOT_FOUND is an error: %v", err)
	}
	if got := committedAt(f.committed); len(got) != 2 || got[0] != 7 || got[1] != 3 {
		t.Fatalf("starting offsets %v, want the ends %v", got, ends)
	}

	// Per partition, next to one the group has committed: that one keeps its position.
	f = &fakeAdmin{ends: ends, fetch: &kafka.OffsetFetchResponse{Topics: map[string][]kafka.OffsetFetchPartition{"partner": {
		{Partition: 0, CommittedOffset: 2}, {Partition: 1, CommittedOffset: -1, Error: kafka.GroupIdNotFound}}}}}
	if err := setStart(ctx, f, "g", "partner", fromEnd); err != nil {
		t.Fatal(err)
	}
	if got := committedAt(f.committed); len(got) != 1 || got[1] != 3 {
		t.Fatalf("starting offsets %v, want only partition 1 at 3", got)
	}

	// The same said for the whole request, as flowd dev's embedded broker does.
	f = &fakeAdmin{ends: ends, fetchErr: kafka.GroupIdNotFound}
	if err := setStart(ctx, f, "g", "partner", fromEnd); err != nil {
		t.Fatalf("GROUP_ID_NOT_FOUND for the request is an error: %v", err)
	}
	if got := committedAt(f.committed); len(got) != 2 || got[0] != 7 {
		t.Fatalf("starting offsets %v, want the ends %v", got, ends)
	}

	// startOffset earliest: nothing is committed, the reader starts at the first record.
	f = &fakeAdmin{ends: ends, fetch: &kafka.OffsetFetchResponse{Error: kafka.GroupIdNotFound}}
	if err := setStart(ctx, f, "g", "partner", fromReader); err != nil || len(f.committed) != 0 {
		t.Fatalf("earliest: %v, committed %v", err, f.committed)
	}

	// A topic created after the flow started: its first records, committed, unless the group
	// has an offset of its own.
	f = &fakeAdmin{ends: ends, firsts: map[int]int64{0: 4, 1: 0}, fetch: &kafka.OffsetFetchResponse{Topics: map[string][]kafka.OffsetFetchPartition{"partner": {
		{Partition: 0, CommittedOffset: -1}, {Partition: 1, CommittedOffset: 2}}}}}
	if err := setStart(ctx, f, "g", "partner", fromFirst); err != nil {
		t.Fatal(err)
	}
	if got := committedAt(f.committed); len(got) != 1 || got[0] != 4 {
		t.Fatalf("starting offsets %v, want only partition 0 at its first offset 4", got)
	}

	// Any other group error still is one.
	f = &fakeAdmin{ends: ends, fetch: &kafka.OffsetFetchResponse{Error: kafka.GroupAuthorizationFailed}}
	if err := setStart(ctx, f, "g", "partner", fromEnd); !errors.Is(err, kafka.GroupAuthorizationFailed) || len(f.committed) != 0 {
		t.Fatalf("group authorisation failure: %v, committed %v", err, f.committed)
	}
}

func TestForbiddenPartnerTopicFailsTheFlowForGood(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code string
	}{
		{kafka.TopicAuthorizationFailed, flowdoc.ReasonTopicDenied},
		{kafka.InvalidTopic, flowdoc.ReasonTopicInvalid},
	} {
		f := &fakeAdmin{topicErr: tc.err, fetch: &kafka.OffsetFetchResponse{}}
		err := topicFault(fmt.Errorf("partner topic x: %w", setStart(context.Background(), f, "g", "x", fromEnd)), "partner topic", "x")
		var ff *flowFault
		if !errors.As(err, &ff) || ff.reason.Code != tc.code || ff.reason.Message == "" || !errors.Is(err, tc.err) {
			t.Errorf("%v: got %v, want a fault %s", tc.err, err, tc.code)
		}
	}
	// A topic that does not exist yet is waited for, not a fault (partners.await).
	f := &fakeAdmin{topicErr: kafka.UnknownTopicOrPartition}
	if err := topicFault(setStart(context.Background(), f, "g", "x", fromEnd), "partner topic", "x"); !errors.Is(err, kafka.UnknownTopicOrPartition) || errors.As(err, new(*flowFault)) {
		t.Errorf("missing topic: %v", err)
	}
	// A broker that does not answer in time may answer next time: not a fault.
	if err := topicFault(fmt.Errorf("metadata: %w", kafka.RequestTimedOut), "partner topic", "x"); errors.As(err, new(*flowFault)) {
		t.Errorf("a timeout is permanent: %v", err)
	}
}
