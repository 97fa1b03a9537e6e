// Package metrics holds flowd's Prometheus metrics (prometheus/client_golang), registered on the
// default registry beside the Go runtime and process collectors, and the handler that serves
// them.
//
// Labels are bounded: status codes, statuses, flowd's own consumer names, connector and action
// names (of installed connectors), error codes (at most maxValues distinct per label, the rest
// "other"). Flow ids appear only where SetFlowLabel allows (--metrics-flow-label): a label per
// flow multiplies every series by the number of flows.
package metrics

import (
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	webhooks = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_webhooks_total",
		Help: "Webhook requests answered by ingest, by HTTP status code.",
	}, []string{"code"})
	webhooksInFlight = promauto.NewGauge(prometheus.GaugeOpts{
		Name: "flowd_webhooks_in_flight",
		Help: "Webhook requests ingest is answering now.",
	})
	produceDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flowd_produce_duration_seconds",
		Help:    "Time from handing records to the producer until the brokers acknowledged them (acks=all), per call, by outcome.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16), // 0.5 ms to about 16 s
	}, []string{"outcome"})
	kafkaErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_kafka_errors_total",
		Help: "Kafka requests that failed (and are retried), by operation: fetch, commit, produce.",
	}, []string{"op"})
	redisErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_redis_errors_total",
		Help: "Redis commands that failed, by command (pipeline for pipelines and transactions); a missing key or a lost optimistic transaction is not an error.",
	}, []string{"command"})
	consumerLag = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flowd_consumer_lag",
		Help: "Records on a partition that its consumer group has not committed yet, as this process last saw it (high-water mark minus committed offset).",
	}, []string{"group", "topic", "partition"})
	recordsProcessed = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_records_processed_total",
		Help: "Records a consumer finished processing, by consumer.",
	}, []string{"consumer"})
	recordsInFlight = promauto.NewGaugeVec(prometheus.GaugeOpts{
		Name: "flowd_records_in_flight",
		Help: "Records a consumer is processing now, by consumer.",
	}, []string{"consumer"})
	executionsStarted = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_executions_started_total",
		Help: "Executions started by the router; flow is empty unless --metrics-flow-label is on.",
	}, []string{"flow"})
	executionsEnded = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_executions_ended_total",
		Help: "Executions ended by the router, by final status (succeeded, failed, filtered: ignored by a filter); flow is empty unless --metrics-flow-label is on.",
	}, []string{"status", "flow"})
	stepDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flowd_step_duration_seconds",
		Help:    "Time of one step attempt in a runner, connector call included, by connector, action and outcome.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16), // 1 ms to about 33 s
	}, []string{"connector", "action", "outcome"})
	stepErrors = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_step_errors_total",
		Help: "Step attempts that failed, by connector, action and error code (at most 100 codes, then other).",
	}, []string{"connector", "action", "code"})
	stepRetriesDelayed = promauto.NewCounter(prometheus.CounterOpts{
		Name: "flowd_step_retries_delayed_total",
		Help: "Step attempts the router put on the delay queue (a retry after a backoff); a redelivered result may count its retry again.",
	})
	deadLetters = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_dead_letters_total",
		Help: "Records sent to the dead-letter topic, by the role that gave them up (router, runner).",
	}, []string{"role"})
	pluginStarts = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_plugin_starts_total",
		Help: "Connector plugin processes started, by connector and outcome (started, failed).",
	}, []string{"connector", "outcome"})
	pluginCrashes = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_plugin_crashes_total",
		Help: "Connector plugin processes that died or failed their health check while in use, by connector.",
	}, []string{"connector"})
	pluginRestarts = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_plugin_restarts_total",
		Help: "Connector plugin processes started again after one died, by connector.",
	}, []string{"connector"})
	auditAppendErrors = promauto.NewCounter(prometheus.CounterOpts{
		Name: "flowd_audit_append_errors_total",
		Help: "Audit log entries the API could not write (the change itself was made).",
	})
)

// flowLabel says whether flow ids are label values (SetFlowLabel).
var flowLabel atomic.Bool

// off says the metrics record nothing (SetEnabled).
var off atomic.Bool

// SetEnabled turns recording on (the default) or off (--metrics=false): off, every hook returns
// at once, and flowd's metrics stay empty (the Go and process ones remain).
func SetEnabled(on bool) { off.Store(!on) }

// Enabled says whether the metrics record.
func Enabled() bool { return !off.Load() }

// SetFlowLabel turns the flow label of the execution metrics on or off (--metrics-flow-label).
func SetFlowLabel(on bool) { flowLabel.Store(on) }

func flow(id string) string {
	if flowLabel.Load() {
		return id
	}
	return ""
}

// WebhookAnswered counts one webhook request answered with status.
func WebhookAnswered(status int) {
	if off.Load() {
		return
	}
	webhooks.WithLabelValues(strconv.Itoa(status)).Inc()
}

// WebhookBegun counts a webhook request in flight; the returned func ends it.
func WebhookBegun() func() {
	if off.Load() {
		return func() {}
	}
	webhooksInFlight.Inc()
	return webhooksInFlight.Dec
}

// Produced records one producer call's time until acknowledgement; failed counts a produce
// error too.
func Produced(seconds float64, failed bool) {
	if off.Load() {
		return
	}
	if failed {
		produceDuration.WithLabelValues("failed").Observe(seconds)
		kafkaErrors.WithLabelValues("produce").Inc()
		return
	}
	produceDuration.WithLabelValues("acknowledged").Observe(seconds)
}

// KafkaError counts one failed Kafka request of op (fetch, commit).
func KafkaError(op string) {
	if off.Load() {
		return
	}
	kafkaErrors.WithLabelValues(op).Inc()
}

// ExecutionStarted counts one execution the router started.
func ExecutionStarted(flowID string) {
	if off.Load() {
		return
	}
	executionsStarted.WithLabelValues(flow(flowID)).Inc()
}

// ExecutionEnded counts one execution that ended with status.
func ExecutionEnded(flowID, status string) {
	if off.Load() {
		return
	}
	executionsEnded.WithLabelValues(status, flow(flowID)).Inc()
}

// StepFinished records one step attempt's duration in seconds; errCode is its error's code, ""
// when it succeeded.
func StepFinished(connector, action string, seconds float64, errCode string) {
	if off.Load() {
		return
	}
	outcome := "succeeded"
	if errCode != "" {
		outcome = "failed"
		stepErrors.WithLabelValues(connector, action, codes.value(errCode)).Inc()
	}
	stepDuration.WithLabelValues(connector, action, outcome).Observe(seconds)
}

// StepRetriesDelayed counts n step attempts put on the delay queue.
func StepRetriesDelayed(n int) {
	if off.Load() {
		return
	}
	stepRetriesDelayed.Add(float64(n))
}

// DeadLettered counts one record role sent to the dead-letter topic.
func DeadLettered(role string) {
	if off.Load() {
		return
	}
	deadLetters.WithLabelValues(role).Inc()
}

// PluginStarted counts one start of connector's plugin process; restart says one died before it.
func PluginStarted(connector string, err error, restart bool) {
	if off.Load() {
		return
	}
	if err != nil {
		pluginStarts.WithLabelValues(connector, "failed").Inc()
		return
	}
	pluginStarts.WithLabelValues(connector, "started").Inc()
	if restart {
		pluginRestarts.WithLabelValues(connector).Inc()
	}
}

// PluginCrashed counts one death of connector's plugin process while in use.
func PluginCrashed(connector string) {
	if off.Load() {
		return
	}
	pluginCrashes.WithLabelValues(connector).Inc()
}

// AuditAppendFailed counts one audit log entry the API could not write.
func AuditAppendFailed() {
	if off.Load() {
		return
	}
	auditAppendErrors.Inc()
}

// Handler serves the metrics in Prometheus' text format.
func Handler() http.Handler { return promhttp.Handler() }

// maxValues bounds the distinct values of a label whose values come from outside flowd.
const maxValues = 100

// codes bounds error codes, which connectors choose.
var codes = &bounded{seen: map[string]bool{}}

// bounded passes the first maxValues distinct values (of at most 64 bytes) and names the rest
// "other", so a connector inventing codes cannot grow the series without limit.
type bounded struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (b *bounded) value(v string) string {
	if len(v) > 64 {
		return "other"
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.seen[v] {
		return v
	}
	if len(b.seen) >= maxValues {
		return "other"
	}
	b.seen[v] = true
	return v
}
