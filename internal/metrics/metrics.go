// Package metrics holds flowd's Prometheus metrics (prometheus/client_golang), registered on the
// default registry beside the Go runtime and process collectors, and the handler that serves
// them. Labels are bounded: codes, statuses, connector and action names, never flow ids.
package metrics

import (
	"net/http"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promauto"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

var (
	webhooks = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_webhooks_total",
		Help: "Webhook requests answered by ingest, by HTTP status code.",
	}, []string{"code"})
	executions = promauto.NewCounterVec(prometheus.CounterOpts{
		Name: "flowd_executions_ended_total",
		Help: "Executions ended by the router, by final status (succeeded, failed, ...).",
	}, []string{"status"})
	stepDuration = promauto.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "flowd_step_duration_seconds",
		Help:    "Time of one step attempt in a runner, connector call included, by connector, action and outcome.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16), // 1 ms to about 33 s
	}, []string{"connector", "action", "outcome"})
)

// WebhookAnswered counts one webhook request answered with status.
func WebhookAnswered(status int) { webhooks.WithLabelValues(strconv.Itoa(status)).Inc() }

// ExecutionEnded counts one execution that ended with status.
func ExecutionEnded(status string) { executions.WithLabelValues(status).Inc() }

// StepFinished records one step attempt's duration in seconds; failed says whether it failed.
func StepFinished(connector, action string, seconds float64, failed bool) {
	outcome := "succeeded"
	if failed {
		outcome = "failed"
	}
	stepDuration.WithLabelValues(connector, action, outcome).Observe(seconds)
}

// Handler serves the metrics in Prometheus' text format.
func Handler() http.Handler { return promhttp.Handler() }
