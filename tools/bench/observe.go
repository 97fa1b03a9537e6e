package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync/atomic"
	"time"
)

// observability is what the observability phase measured: the same end-to-end run on a fresh
// stack with flowd's metrics off, on, and on with tracing exported over OTLP.
type observability struct {
	Runs []e2eRun `json:"runs"`
	// Ratios to the run with metrics off: completed per second, and CPU per execution of the
	// roles (lower is cheaper).
	MetricsThroughput float64 `json:"metricsOnThroughputRatio"`
	MetricsCPU        float64 `json:"metricsOnCpuPerExecutionRatio"`
	TracingThroughput float64 `json:"tracingOnThroughputRatio"`
	TracingCPU        float64 `json:"tracingOnCpuPerExecutionRatio"`
	SpansBatches      int64   `json:"tracingExportRequests"`
}

// otlpSink accepts OTLP/HTTP trace exports and discards them: an empty protobuf body is an
// ExportTraceServiceResponse that reports full success.
func otlpSink() (string, *atomic.Int64, func(), error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, nil, err
	}
	var n atomic.Int64
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		_, _ = http.MaxBytesReader(w, r.Body, 64<<20).Read(make([]byte, 1<<16))
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(ln) }()
	return "http://" + ln.Addr().String(), &n, func() { _ = srv.Close() }, nil
}

func (b *bench) observability(ctx context.Context) error {
	sk, err := startSink()
	if err != nil {
		return err
	}
	defer func() { _ = sk.srv.Close() }()
	otlp, exports, stopOTLP, err := otlpSink()
	if err != nil {
		return err
	}
	defer stopOTLP()
	sinkURL, err := url.Parse(sk.url)
	if err != nil {
		return err
	}
	res := &observability{}
	b.res.Observability = res
	variants := []struct {
		name  string
		extra map[string]string
	}{
		{"metrics off", map[string]string{"FLOWD_METRICS": "false"}},
		{"metrics on", nil},
		{"metrics on, tracing on", map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": otlp, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}},
	}
	for i, v := range variants {
		phase := "o" + strconv.Itoa(i)
		env := b.env(phase)
		for k, val := range v.extra {
			env = append(env, k+"="+val)
		}
		warm := 10 * time.Second
		if i == 0 {
			warm = b.o.e2eWarm // the broker's JIT, once for the phase
		}
		r, err := b.observeOnce(ctx, phase, v.name, env, sk, sinkURL.Host, warm)
		if err != nil {
			return fmt.Errorf("%s: %w", v.name, err)
		}
		res.Runs = append(res.Runs, r)
	}
	off, on, traced := res.Runs[0], res.Runs[1], res.Runs[2]
	res.MetricsThroughput = ratio(on.CompletedPS, off.CompletedPS)
	res.MetricsCPU = ratio(on.CPUPerExecUs["total"], off.CPUPerExecUs["total"])
	res.TracingThroughput = ratio(traced.CompletedPS, off.CompletedPS)
	res.TracingCPU = ratio(traced.CPUPerExecUs["total"], off.CPUPerExecUs["total"])
	res.SpansBatches = exports.Load()
	logf("observability: metrics on / off: throughput %.3f, CPU per execution %.3f; tracing on / metrics off: throughput %.3f, CPU per execution %.3f (%d OTLP exports)",
		res.MetricsThroughput, res.MetricsCPU, res.TracingThroughput, res.TracingCPU, res.SpansBatches)
	return nil
}

// observeOnce runs ingest, router and one runner with env, warms them for warm and measures one
// closed-loop end-to-end run.
func (b *bench) observeOnce(ctx context.Context, phase, name string, env []string, sk *sink, sinkHost string, warm time.Duration) (e2eRun, error) {
	st := b.store(phase)
	group := b.run + "-" + phase + "-runner-default"
	addr := freeAddr()
	var roles []*role
	defer func() {
		for _, r := range roles {
			r.stop(30 * time.Second)
		}
	}()
	for _, spec := range [][]string{
		{"ingest", "ingest", "--addr", addr},
		{"router", "router", "--history-max-count", "-1"},
		{"runner-1", "runner", "--pool", "default", "--group-id", group, "--concurrency", strconv.Itoa(b.o.runnerConc),
			"--connectors-dir", b.o.connectorsDir, "--egress-allow", sinkHost},
	} {
		r, err := b.startRole(spec[0]+" ("+name+")", env, spec[1:]...)
		if err != nil {
			return e2eRun{}, err
		}
		roles = append(roles, r)
	}
	base := "http://" + addr
	if err := waitHTTP(ctx, roles[0], http.MethodGet, base+"/readyz", 200, 90*time.Second); err != nil {
		return e2eRun{}, err
	}
	flows := map[string]string{}
	for _, f := range []string{"warm", "jit", "max"} {
		id, err := createActiveFlow(ctx, st, e2eFlow("bench-obs-"+f, sk.url))
		if err != nil {
			return e2eRun{}, err
		}
		flows[f] = id
	}
	hook := func(f string) string { return base + "/hooks/" + flows[f] }
	if err := waitHTTP(ctx, roles[0], http.MethodHead, hook("warm"), 200, 30*time.Second); err != nil {
		return e2eRun{}, err
	}
	if err := b.warmup(ctx, st, flows["warm"], hook("warm"), 50, roles...); err != nil {
		return e2eRun{}, err
	}
	if err := waitGroupMembers(ctx, b.brokers, group, 1, 60*time.Second); err != nil {
		return e2eRun{}, err
	}
	logf("observability %s: warming up for %s", name, warm)
	if _, err := e2eMax(ctx, hook("jit"), st, flows["jit"], 64, b.o.window, warm, time.Second, b.payload); err != nil {
		return e2eRun{}, err
	}
	m := newCPUMeter(b.cpuPids(roles...))
	began := time.Now()
	r, err := e2eMax(ctx, hook("max"), st, flows["max"], 64, b.o.window, b.o.warm+3*time.Second, b.o.e2eDur, b.payload)
	r.ProcessCPU, r.MachineCPU = m.stop()
	r.CPUPerExecUs = cpuPerExecution(r.ProcessCPU, time.Since(began), r.Completed)
	r.Name, r.Runners = name, 1
	logf("observability %s: %.1f completed/s, p99 %.1f ms, %.0f µs CPU per execution, %d failed",
		name, r.CompletedPS, r.P99ms, r.CPUPerExecUs["total"], r.Failed)
	return r, err
}
