package testrig

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Environment of Prometheus:
//   - FLOWD_TEST_PROMETHEUS: the prometheus binary [prometheus on PATH: Debian's package].
//   - FLOWD_REQUIRE_PROMETHEUS=1: a missing binary fails the test instead of skipping it (CI).
const (
	EnvPrometheus        = "FLOWD_TEST_PROMETHEUS"
	EnvRequirePrometheus = "FLOWD_REQUIRE_PROMETHEUS"
)

// PrometheusServer is a real Prometheus server scraping the targets it was started with every
// second, in job "flowd".
type PrometheusServer struct {
	URL string
}

// Prometheus starts a Prometheus server scraping targets (host:port, /metrics) for the test and
// stops it at its end.
func Prometheus(t testing.TB, targets ...string) *PrometheusServer {
	t.Helper()
	bin := os.Getenv(EnvPrometheus)
	if bin == "" {
		bin, _ = exec.LookPath("prometheus")
	}
	if bin == "" {
		msg := "no prometheus binary: apt-get install prometheus, or set " + EnvPrometheus
		if os.Getenv(EnvRequirePrometheus) == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	dir := t.TempDir()
	quoted := make([]string, len(targets))
	for i, tg := range targets {
		quoted[i] = strconv.Quote(tg)
	}
	config := fmt.Sprintf("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: flowd\n    static_configs:\n      - targets: [%s]\n", strings.Join(quoted, ", "))
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := freeAddr(t)
	base := "http://" + addr
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr, "--log.level=warn")
	startServer(t, "prometheus", cmd, 30*time.Second, func() error {
		res, err := http.Get(base + "/-/ready")
		if err != nil {
			return err
		}
		_ = res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return fmt.Errorf("/-/ready answered %d", res.StatusCode)
		}
		return nil
	})
	return &PrometheusServer{URL: base}
}

// Query evaluates a PromQL expression now and returns its single value; ok is false when the
// result is empty. More than one series fails the test: the expression should aggregate.
func (p *PrometheusServer) Query(t testing.TB, expr string) (v float64, ok bool) {
	t.Helper()
	res, err := http.Get(p.URL + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		t.Fatalf("query %s: %v", expr, err)
	}
	defer func() { _ = res.Body.Close() }()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string `json:"resultType"`
			Result     []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatalf("query %s: %v", expr, err)
	}
	if body.Status != "success" {
		t.Fatalf("query %s: %s", expr, body.Error)
	}
	switch r := body.Data.Result; {
	case len(r) == 0:
		return 0, false
	case len(r) > 1:
		t.Fatalf("query %s: %d series, want one", expr, len(r))
	default:
		s, _ := r[0].Value[1].(string)
		if v, err = strconv.ParseFloat(s, 64); err != nil {
			t.Fatalf("query %s: value %q", expr, s)
		}
	}
	return v, true
}

// Await polls expr until its value is want, failing the test at the deadline with the last
// value.
func (p *PrometheusServer) Await(t testing.TB, expr string, want float64, within time.Duration) {
	t.Helper()
	var last string
	for deadline := time.Now().Add(within); ; {
		v, ok := p.Query(t, expr)
		if ok && v == want {
			return
		}
		last = "no result"
		if ok {
			last = strconv.FormatFloat(v, 'g', -1, 64)
		}
		if time.Now().After(deadline) {
			t.Fatalf("PromQL %s = %s after %s, want %v", expr, last, within, want)
		}
		time.Sleep(200 * time.Millisecond) // polling Prometheus with a deadline
	}
}
