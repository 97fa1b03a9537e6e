package router

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/flowd/flowd/internal/backoff"
	"github.com/flowd/flowd/internal/envelope"
	"github.com/flowd/flowd/internal/flowdoc"
	"github.com/flowd/flowd/internal/kafkax"
	"github.com/flowd/flowd/internal/topicpolicy"
	"github.com/flowd/flowd/internal/tracing"
	"github.com/flowd/flowd/router/graph"
)

// partnerSpec is what a trigger.kafka node asks for.
type partnerSpec struct {
	topic   string
	key     *string           // exact match when set
	headers map[string]string // every one must match exactly
	// earliest: a new flow reads the topic from its first record, not from its end.
	earliest bool
}

func specOf(n *flowdoc.Node) (partnerSpec, error) {
	var s partnerSpec
	topic, _ := n.Config["topic"].(string)
	if topic == "" {
		return s, fmt.Errorf("trigger %s has no config.topic", n.ID)
	}
	s.topic = topic
	s.earliest = n.Config["startOffset"] == "earliest"
	if k, ok := n.Config["key"].(string); ok {
		s.key = &k
	}
	if hs, ok := n.Config["headers"].(map[string]any); ok {
		s.headers = make(map[string]string, len(hs))
		for name, v := range hs {
			str, ok := v.(string)
			if !ok {
				return s, fmt.Errorf("trigger %s: config.headers.%s must be a string", n.ID, name)
			}
			s.headers[name] = str
		}
	}
	return s, nil
}

func (s partnerSpec) matches(m kafka.Message) bool {
	if s.key != nil && string(m.Key) != *s.key {
		return false
	}
	for name, want := range s.headers {
		found := false
		for _, h := range m.Headers {
			if h.Key == name && string(h.Value) == want {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// subscription is one flow's reader on its partner topic, in the group GroupID-<flowId> that
// every router instance joins, so the partitions are shared among them.
type subscription struct {
	flowID   string
	revision int
	spec     partnerSpec
	g        *graph.Graph
	cancel   context.CancelFunc
	done     chan struct{}
	// waiting: the partner topic does not exist yet (see await).
	waiting atomic.Bool
}

// partners keeps this instance's subscriptions in step with the flows that want one. All
// changes are serialised: the broadcast, the lifecycle group and the periodic reconcile all
// converge on the same calls.
type partners struct {
	r    *Router
	base context.Context // ends when the router stops

	mu   sync.Mutex
	subs map[string]*subscription
	// reported: when each flow's partner topic was last described (see reportDue).
	reported map[string]time.Time
}

// ensure subscribes this instance to f's partner topic, unless it already is (for this
// revision). It returns once the reader runs and the group's starting offsets are set.
func (p *partners) ensure(ctx context.Context, f *flowdoc.Flow) error {
	t := f.Trigger()
	if t == nil || t.Type != flowdoc.TypeKafka {
		p.drop(f.ID)
		return nil
	}
	spec, err := specOf(t)
	if err != nil {
		p.drop(f.ID)
		return faultf(flowdoc.ReasonTriggerInvalid, err, "%s", err.Error())
	}
	if p.r.cfg.Kafka.Reserved(spec.topic) {
		// Validation refuses such flows; one stored before (or under another prefix) must
		// still never read flowd's own records.
		p.drop(f.ID)
		err := fmt.Errorf("trigger %s: topic %q is reserved", t.ID, spec.topic)
		return faultf(flowdoc.ReasonTopicDenied, err, "topic %q is reserved for flowd and Kafka themselves", spec.topic)
	}
	// The tenant's list may have narrowed since the flow was saved.
	policy := topicpolicy.Policy{Directory: p.r.cfg.Store, Restricted: p.r.cfg.PartnerTopicsRestricted}
	ps, err := policy.Check(ctx, f)
	if err != nil {
		return fmt.Errorf("check the partner topics of flow %s: %w", f.ID, err)
	}
	if len(ps) > 0 {
		p.drop(f.ID)
		return faultf(flowdoc.ReasonTopicDenied, ps, "%s", ps[0].Message)
	}
	if err := p.subscribe(ctx, f, spec); err != nil {
		return err
	}
	// Describing the topic is Kafka I/O: done outside the lock, which stops and starts
	// subscriptions.
	if p.reportDue(f.ID) {
		p.report(ctx, f.ID, spec.topic, p.waiting(f.ID))
	}
	return nil
}

// subscribe starts f's reader on its partner topic unless it runs already for f's revision. A
// topic that does not exist yet is waited for: the flow runs, says so in its trigger status,
// and reads the topic from its first record once a partner creates it.
func (p *partners) subscribe(ctx context.Context, f *flowdoc.Flow, spec partnerSpec) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if cur := p.subs[f.ID]; cur != nil {
		if cur.revision == f.Revision {
			return nil
		}
		p.stopLocked(cur)
	}
	g, err := p.r.graphs.get(ctx, f.ID, f.Revision)
	if errors.Is(err, errGone) {
		return faultf(flowdoc.ReasonRevisionUnusable, err, "revision %d is missing or does not compile: %v", f.Revision, err)
	}
	if err != nil {
		return err
	}
	group := p.r.cfg.GroupID + "-" + f.ID
	from := fromEnd
	if spec.earliest {
		from = fromReader
	} else if awaited, err := p.r.cfg.Store.PartnerTopicAwaited(ctx, f.ID, spec.topic); err != nil {
		return err
	} else if awaited {
		from = fromFirst
	}
	err = startAt(ctx, p.r.cfg.Kafka, group, spec.topic, from)
	if errors.Is(err, kafka.UnknownTopicOrPartition) && p.r.cfg.CreatePartnerTopics {
		// A developer's broker: the topic is created, as producing to it would.
		if err = kafkax.EnsureTopicsNamed(ctx, p.r.cfg.Kafka, spec.topic); err == nil {
			p.r.log.Info("created the partner topic of a flow", "flow", f.ID, "topic", spec.topic)
			err = startAt(ctx, p.r.cfg.Kafka, group, spec.topic, from)
		}
	}
	waiting := errors.Is(err, kafka.UnknownTopicOrPartition)
	if waiting {
		// Everything produced to the topic once it exists comes after the start; noted in
		// Redis so that a router restarting before the group has offsets agrees.
		if from == fromEnd {
			if err := p.r.cfg.Store.AwaitPartnerTopic(ctx, f.ID, spec.topic); err != nil {
				return err
			}
			from = fromFirst
		}
	} else if err != nil {
		return topicFault(fmt.Errorf("partner topic %s of flow %s: %w", spec.topic, f.ID, err), "partner topic", spec.topic)
	}
	subCtx, cancel := context.WithCancel(p.base)
	sub := &subscription{flowID: f.ID, revision: f.Revision, spec: spec, g: g, cancel: cancel, done: make(chan struct{})}
	sub.waiting.Store(waiting)
	name := "partner " + spec.topic + " for flow " + f.ID
	go func() {
		defer close(sub.done)
		if waiting && !p.await(subCtx, sub, group, from) {
			return
		}
		reader := kafka.NewReader(p.r.cfg.Kafka.GroupReader(kafka.ReaderConfig{
			GroupID:     group,
			Topic:       spec.topic,
			StartOffset: kafka.FirstOffset, // only for partitions the group has no offset on (see startAt)
			MaxWait:     500 * time.Millisecond,
		}))
		p.r.consumeWith(subCtx, name, true, reader, func(ctx context.Context, m kafka.Message) error { return p.r.handlePartner(ctx, sub, m) })
	}()
	p.subs[f.ID] = sub
	if waiting {
		p.r.log.Info("partner topic does not exist yet; the flow waits for it", "flow", f.ID, "revision", f.Revision, "topic", spec.topic)
	} else {
		p.r.log.Info("subscribed to partner topic", "flow", f.ID, "revision", f.Revision, "topic", spec.topic, "group", group)
	}
	delete(p.reported, f.ID) // a new subscription is reported at once
	return nil
}

// awaitTopicPoll bounds how long a created partner topic goes unnoticed. Nothing is lost
// meanwhile (the group starts at the topic's first record); the records only wait.
var awaitTopicPoll = backoff.Policy{Initial: 500 * time.Millisecond, Max: 10 * time.Second}

// await waits until sub's partner topic exists, then gives the group its starting offsets. It
// reports false when the subscription ended first.
func (p *partners) await(ctx context.Context, sub *subscription, group string, from startFrom) bool {
	b := &backoff.Backoff{Policy: awaitTopicPoll}
	for b.Wait(ctx) {
		err := startAt(ctx, p.r.cfg.Kafka, group, sub.spec.topic, from)
		if errors.Is(err, kafka.UnknownTopicOrPartition) {
			continue
		}
		if err != nil {
			if ctx.Err() == nil {
				p.r.log.Warn("cannot set up an awaited partner topic; will retry", "flow", sub.flowID, "topic", sub.spec.topic, "err", err)
			}
			continue
		}
		if from == fromFirst {
			// The group has its offsets now; a failure here only leaves a note that no longer
			// changes anything.
			if err := p.r.cfg.Store.ForgetAwaitedTopic(ctx, sub.flowID); err != nil {
				p.r.log.Warn("cannot clear an awaited partner topic", "flow", sub.flowID, "err", err)
			}
		}
		sub.waiting.Store(false)
		p.r.log.Info("partner topic created; consuming it from its first record", "flow", sub.flowID, "topic", sub.spec.topic, "group", group)
		p.report(ctx, sub.flowID, sub.spec.topic, false)
		return true
	}
	return false
}

// partnerStatus is the router's report on a partner topic, shown with the flow
// (triggerStatus): the partner owns the topic, and its replication bounds what flowd can
// promise about the records on it.
type partnerStatus struct {
	Type  string `json:"type"` // the trigger's type
	State string `json:"state"`
	Topic string `json:"topic"`
	*kafkax.TopicReplication
	// Warning says, in a sentence, how the topic is less durable than flowd's own topics, or
	// that it does not exist yet.
	Warning   string    `json:"warning,omitempty"`
	CheckedAt time.Time `json:"checkedAt"`
}

// reportDue tells whether a flow's partner topic is to be described now (at most once per
// reconcile interval), and notes that it is.
func (p *partners) reportDue(flowID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.r.now()
	if last, ok := p.reported[flowID]; ok && now.Sub(last) < p.r.cfg.ReconcileInterval {
		return false
	}
	p.reported[flowID] = now
	return true
}

// The states of a partner topic trigger.
const (
	partnerConsuming = "consuming"
	partnerAwaited   = "waitingForTopic"
)

// report describes a subscribed flow's partner topic and saves it for the API; the report
// expires if no router renews it. A failure only leaves the last report in place: the
// subscription itself is what matters.
func (p *partners) report(ctx context.Context, flowID, topic string, waiting bool) {
	now := p.r.now()
	st := partnerStatus{Type: flowdoc.TypeKafka, State: partnerConsuming, Topic: topic, CheckedAt: now.UTC()}
	if waiting {
		st.State = partnerAwaited
		st.Warning = fmt.Sprintf("partner topic %q does not exist yet: the flow reads it from its first record once it is created", topic)
	} else {
		reps, err := kafkax.DescribeReplication(ctx, p.r.cfg.Kafka, topic)
		if err != nil {
			p.r.log.Warn("cannot describe a partner topic", "flow", flowID, "topic", topic, "err", err)
			return
		}
		rep := reps[topic]
		st.TopicReplication = &rep
		st.Warning = partnerWarning(rep, kafkax.Durability{
			ReplicationFactor: p.r.cfg.Kafka.ReplicationFactor, MinInsyncReplicas: p.r.cfg.Kafka.MinInsyncReplicas,
		})
		if st.Warning != "" {
			p.r.log.Warn("partner topic less durable than flowd's own", "flow", flowID, "topic", topic, "warning", st.Warning)
		}
	}
	b, err := json.Marshal(st)
	if err == nil {
		err = p.r.cfg.Store.SetTriggerStatus(ctx, flowID, b, 3*p.r.cfg.ReconcileInterval)
	}
	if err != nil {
		p.r.log.Warn("cannot save a partner topic's status", "flow", flowID, "err", err)
	}
}

// waiting reports whether this instance waits for flowID's partner topic to exist.
func (p *partners) waiting(flowID string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.subs[flowID]
	return s != nil && s.waiting.Load()
}

// partnerWarning says how a partner topic falls short of the replication flowd gives its own
// topics (d), or is unavailable in part; "" when it does not.
func partnerWarning(r kafkax.TopicReplication, d kafkax.Durability) string {
	var why []string
	if b := r.Below(d); b != "" {
		why = append(why, "partner "+b+": a broker lost may lose records before flowd reads them")
	}
	if r.Offline > 0 {
		why = append(why, fmt.Sprintf("%d partition(s) have no leader: their records cannot be read", r.Offline))
	}
	if r.UnderReplicated > 0 {
		why = append(why, fmt.Sprintf("%d partition(s) have replicas out of sync", r.UnderReplicated))
	}
	return strings.Join(why, "; ")
}

// drop ends f's subscription, if any, and waits until its in-flight record is done and the
// reader has left the group.
func (p *partners) drop(flowID string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.reported, flowID)
	if cur := p.subs[flowID]; cur != nil {
		p.stopLocked(cur)
	}
}

func (p *partners) stopLocked(s *subscription) {
	s.cancel()
	<-s.done
	delete(p.subs, s.flowID)
	p.r.log.Info("unsubscribed from partner topic", "flow", s.flowID, "topic", s.spec.topic)
}

func (p *partners) closeAll() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.subs {
		s.cancel()
	}
	for _, s := range p.subs {
		<-s.done
	}
	p.subs = map[string]*subscription{}
}

// subscribed lists the flows this instance consumes partner topics for.
func (p *partners) subscribed() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	ids := make([]string, 0, len(p.subs))
	for id := range p.subs {
		ids = append(ids, id)
	}
	return ids
}

// handlePartner starts an execution for a partner record that passes the trigger's filters
// and counts the others as ignored.
func (r *Router) handlePartner(ctx context.Context, s *subscription, m kafka.Message) error {
	now := r.now()
	if !s.spec.matches(m) {
		recordID := fmt.Sprintf("%s/%d/%d", m.Topic, m.Partition, m.Offset)
		if _, err := r.cfg.Store.CountIgnored(ctx, s.flowID, recordID, now, r.cfg.Policy); err != nil {
			return err
		}
		return nil
	}
	// A partner's trace context is not flowd's to continue: the execution's trace starts here,
	// linked to the partner's span when the record names one.
	ctx, span := tracing.StartRoot(ctx, "route partner record", m.Headers)
	defer span.End()
	src := &envelope.KafkaSource{Topic: m.Topic, Partition: m.Partition, Offset: m.Offset, Key: string(m.Key)}
	if len(m.Headers) > 0 {
		src.Headers = make(map[string]string, len(m.Headers))
		for _, h := range m.Headers {
			src.Headers[h.Key] = string(h.Value)
		}
	}
	received := m.Time
	if received.IsZero() {
		received = now
	}
	in := &envelope.Ingest{
		ExecutionID: PartnerExecutionID(s.flowID, m.Topic, m.Partition, m.Offset),
		FlowID:      s.flowID, Revision: s.revision, Trigger: envelope.TriggerKafka,
		ReceivedAt: received, Input: recordInput(m.Value), Source: src,
	}
	spanExecution(ctx, in.ExecutionID, in.FlowID, "")
	if err := spanError(span, r.start(ctx, s.g, in)); errors.Is(err, errUnusable) {
		return r.deadLetter(ctx, m, err.Error())
	} else if err != nil {
		return err
	}
	return nil
}

// recordInput is a partner record's value as the flow's input: JSON as it is, anything else as
// a JSON string, nothing as null.
func recordInput(v []byte) []byte {
	switch {
	case len(v) == 0:
		return []byte("null")
	case json.Valid(v):
		return v
	default:
		return mustJSON(string(v))
	}
}

// partnerSetupTimeout bounds the broker round trips that set a subscription up, so a broker
// that does not answer fails this flow's setup instead of holding every lifecycle change.
const partnerSetupTimeout = 30 * time.Second

// offsetAdmin is the part of kafka.Client that startAtEnd uses.
type offsetAdmin interface {
	Metadata(context.Context, *kafka.MetadataRequest) (*kafka.MetadataResponse, error)
	OffsetFetch(context.Context, *kafka.OffsetFetchRequest) (*kafka.OffsetFetchResponse, error)
	ListOffsets(context.Context, *kafka.ListOffsetsRequest) (*kafka.ListOffsetsResponse, error)
	OffsetCommit(context.Context, *kafka.OffsetCommitRequest) (*kafka.OffsetCommitResponse, error)
}

// startFrom is where a consumer group that has never committed on a partner topic begins.
type startFrom int

const (
	// fromEnd (startOffset latest): at the topic's current end, so a new flow consumes what is
	// produced after it started rather than the topic's whole history.
	fromEnd startFrom = iota
	// fromFirst: at the topic's first record, committed (the topic appeared after the flow
	// started, so all of it is new).
	fromFirst
	// fromReader (startOffset earliest): nothing is committed; the group's reader starts at
	// the first record.
	fromReader
)

// startAt gives a consumer group that has never committed on topic its starting point (from).
// A group that has committed keeps its position. A topic that does not exist (or that flowd
// may not describe) is an error wrapping the broker's code.
func startAt(ctx context.Context, cfg kafkax.Config, group, topic string, from startFrom) error {
	ctx, cancel := context.WithTimeout(ctx, partnerSetupTimeout)
	defer cancel()
	tr := cfg.Transport()
	tr.ClientID, tr.MetadataTopics = "flowd-router", []string{topic}
	defer tr.CloseIdleConnections()
	return setStart(ctx, &kafka.Client{Addr: kafka.TCP(cfg.Brokers...), Transport: tr}, group, topic, from)
}

func setStart(ctx context.Context, c offsetAdmin, group, topic string, from startFrom) error {
	md, err := c.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("metadata: %w", err)
	}
	if len(md.Topics) != 1 {
		return fmt.Errorf("metadata of %s: %d topics in the answer: %w", topic, len(md.Topics), kafka.UnknownTopicOrPartition)
	}
	if md.Topics[0].Error != nil {
		return fmt.Errorf("metadata of %s: %w", topic, md.Topics[0].Error)
	}
	if len(md.Topics[0].Partitions) == 0 {
		return fmt.Errorf("metadata of %s: no partitions: %w", topic, kafka.UnknownTopicOrPartition)
	}
	if from == fromReader {
		return nil
	}
	var parts []int
	for _, p := range md.Topics[0].Partitions {
		parts = append(parts, p.ID)
	}
	of, err := c.OffsetFetch(ctx, &kafka.OffsetFetchRequest{GroupID: group, Topics: map[string][]int{topic: parts}})
	// GROUP_ID_NOT_FOUND is how some brokers (the embedded one of flowd dev among them) say a
	// group has never committed: no offsets yet, which is exactly the case this function
	// exists for. Some answer it for the request, some in the answer.
	noGroup := errors.Is(err, kafka.GroupIdNotFound)
	if err != nil && !noGroup {
		return fmt.Errorf("committed offsets of %s: %w", group, err)
	}
	if of == nil {
		of = &kafka.OffsetFetchResponse{}
	}
	noGroup = noGroup || errors.Is(of.Error, kafka.GroupIdNotFound)
	if of.Error != nil && !noGroup {
		return fmt.Errorf("committed offsets of %s: %w", group, of.Error)
	}
	offsetOf := kafka.LastOffsetOf
	if from == fromFirst {
		offsetOf = kafka.FirstOffsetOf
	}
	var missing []kafka.OffsetRequest
	if noGroup {
		for _, p := range parts {
			missing = append(missing, offsetOf(p))
		}
	}
	for _, p := range of.Topics[topic] {
		if noGroup {
			break
		}
		switch {
		case errors.Is(p.Error, kafka.GroupIdNotFound), p.Error == nil && p.CommittedOffset < 0:
			missing = append(missing, offsetOf(p.Partition))
		case p.Error != nil:
			return fmt.Errorf("committed offset of %s on %s/%d: %w", group, topic, p.Partition, p.Error)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	lo, err := c.ListOffsets(ctx, &kafka.ListOffsetsRequest{Topics: map[string][]kafka.OffsetRequest{topic: missing}})
	if err != nil {
		return fmt.Errorf("starting offsets of %s: %w", topic, err)
	}
	commits := make([]kafka.OffsetCommit, 0, len(missing))
	for _, p := range lo.Topics[topic] {
		if p.Error != nil {
			return fmt.Errorf("starting offset of %s/%d: %w", topic, p.Partition, p.Error)
		}
		at := p.LastOffset
		if from == fromFirst {
			at = p.FirstOffset
		}
		commits = append(commits, kafka.OffsetCommit{Partition: p.Partition, Offset: at})
	}
	// Generation -1 without a member is an administrative commit: accepted only while the group
	// has no members. If another router already consumes, it has its own offsets anyway.
	res, err := c.OffsetCommit(ctx, &kafka.OffsetCommitRequest{GroupID: group, GenerationID: -1, Topics: map[string][]kafka.OffsetCommit{topic: commits}})
	if errors.Is(err, kafka.GroupIdNotFound) {
		// A broker that keeps no offsets for a group before it has members (the embedded one
		// of flowd dev): the group's reader starts at the topic's first offset then, so a
		// flow reads what is on a topic it is the first to read; nothing is skipped.
		return nil
	}
	if err != nil {
		return fmt.Errorf("set starting offsets of %s: %w", group, err)
	}
	for _, p := range res.Topics[topic] {
		if p.Error != nil && !errors.Is(p.Error, kafka.IllegalGeneration) && !errors.Is(p.Error, kafka.UnknownMemberId) &&
			!errors.Is(p.Error, kafka.RebalanceInProgress) {
			return fmt.Errorf("set starting offset of %s on %s/%d: %w", group, topic, p.Partition, p.Error)
		}
	}
	return nil
}
