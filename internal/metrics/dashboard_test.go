package metrics

import (
	"os"
	"regexp"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

// The Grafana dashboard and the metrics doc name only metrics that exist, and the doc names
// every flowd metric.
func TestDashboardAndDocNameRealMetrics(t *testing.T) {
	families, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatal(err)
	}
	// Vectors without a sample are not gathered: name them from the package's collectors.
	known := map[string]bool{}
	for _, f := range families {
		known[f.GetName()] = true
	}
	for _, c := range []prometheus.Collector{webhooks, webhooksInFlight, produceDuration, kafkaErrors, redisErrors,
		consumerLag, recordsProcessed, recordsInFlight, executionsStarted, executionsEnded, stepDuration, stepErrors,
		stepRetriesDelayed, deadLetters, pluginStarts, pluginCrashes, pluginRestarts, auditAppendErrors} {
		ch := make(chan *prometheus.Desc, 1)
		c.Describe(ch)
		d := (<-ch).String()
		name := regexp.MustCompile(`fqName: "([^"]+)"`).FindStringSubmatch(d)[1]
		known[name] = true
	}
	named := regexp.MustCompile(`\bflowd_[a-z_]+`)
	for _, file := range []string{"../../deployments/grafana/flowd-dashboard.json", "../../docs/observability.md"} {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range named.FindAllString(string(b), -1) {
			base := m
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				base = strings.TrimSuffix(base, suffix)
			}
			if !known[base] && !known[m] {
				t.Errorf("%s names %s, which flowd does not serve", file, m)
			}
		}
		if strings.HasSuffix(file, ".md") {
			for name := range known {
				if strings.HasPrefix(name, "flowd_") && !strings.Contains(string(b), "`"+name+"`") {
					t.Errorf("%s does not list %s", file, name)
				}
			}
		}
	}
}
