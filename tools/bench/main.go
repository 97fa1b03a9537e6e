// Command bench is flowd's load benchmark (`make bench`): against the test rig's real Kafka
// broker and redis-server (tools/rig/with-rig.sh exports where they are), on loopback, it
// measures in one run
//
//   - limit: kafka-go alone producing the 1 KiB payloads with acks=all, best batching found;
//   - ingest: `flowd ingest` as its own process under 16, 64 and 256 keep-alive clients;
//   - end to end: ingest + router + one, then two runner processes on a three-step flow
//     (transform → http to a sink served here → transform), closed-loop at the maximum
//     sustained rate, then open-loop at half of it;
//   - connector call overhead: host → plugin Execute, single and batched;
//   - peak RSS (VmHWM) and CPU of every process,
//
// prints a table and writes every figure with the machine's facts to bench/results/latest.json.
// Every loop is bounded in count and time; the whole run takes about five minutes.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/flowd/flowd/internal/busauth"
	"github.com/flowd/flowd/internal/secrets"
	"github.com/flowd/flowd/internal/store"
)

type options struct {
	out           string
	bin           string
	connectorsDir string
	limitDur      time.Duration
	ingestDur     time.Duration
	warm          time.Duration
	e2eWarm       time.Duration
	clients       []int
	e2eDur        time.Duration
	window        int
	runnerConc    int
	boundConc     int
	ioDelay       time.Duration
	historyN      int
	stream        bool
	partitions    int
	profileDir    string
	phases        map[string]bool
}

func main() {
	var o options
	var clients, phases string
	flag.StringVar(&o.out, "out", "bench/results/latest.json", "where the JSON results go")
	flag.StringVar(&o.bin, "bin", "bin/flowd", "the flowd binary (make build)")
	flag.StringVar(&o.connectorsDir, "connectors-dir", "bin/connectors", "the connector binaries the runners use (make build)")
	flag.DurationVar(&o.limitDur, "limit-duration", 5*time.Second, "measurement of each kafka-go producer configuration")
	flag.DurationVar(&o.ingestDur, "ingest-duration", 15*time.Second, "measurement of each ingest client count")
	flag.DurationVar(&o.warm, "warmup", 2*time.Second, "load before each measurement starts counting")
	flag.DurationVar(&o.e2eWarm, "e2e-warmup", 60*time.Second, "end-to-end load before the first end-to-end measurement, until the broker's JIT has settled")
	flag.StringVar(&clients, "clients", "16,64,256", "concurrent webhook clients of the ingest phase")
	flag.DurationVar(&o.e2eDur, "e2e-duration", 20*time.Second, "measurement of each end-to-end run")
	flag.IntVar(&o.window, "e2e-window", 512, "closed loop: most executions unfinished at once")
	flag.IntVar(&o.runnerConc, "runner-concurrency", 32, "--concurrency of each runner process")
	flag.IntVar(&o.boundConc, "runner-bound-concurrency", 0, "--concurrency of the runners in the scale-out runs (0: the default)")
	flag.BoolVar(&o.stream, "history-stream", false, "run the router with --history-stream (to measure what flowd.history costs)")
	flag.IntVar(&o.historyN, "history-executions", 3000, "executions per save policy in the history phase (0: skip it)")
	flag.DurationVar(&o.ioDelay, "io-sink-delay", 20*time.Millisecond, "how long the sink takes to answer in the scale-out runs (0 and no -runner-bound-concurrency: skip them)")
	flag.IntVar(&o.partitions, "partitions", 6, "--partitions of the roles (and of the limit's topic)")
	flag.StringVar(&o.profileDir, "profile", "", "directory: also capture 10 s CPU profiles of the roles under load")
	flag.StringVar(&phases, "phases", "limit,ingest,e2e,observability,connector", "phases to run")
	flag.Parse()
	for _, c := range strings.Split(clients, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n <= 0 {
			fatalf("-clients: %q is not a positive number", c)
		}
		o.clients = append(o.clients, n)
	}
	o.phases = map[string]bool{}
	for _, p := range strings.Split(phases, ",") {
		o.phases[strings.TrimSpace(p)] = true
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The whole run is bounded, whatever happens inside.
	ctx, cancel := context.WithTimeout(ctx, 15*time.Minute)
	defer cancel()
	if err := run(ctx, o); err != nil {
		fatalf("%v", err)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench %s: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

// results is everything latest.json holds.
type results struct {
	StartedAt   time.Time      `json:"startedAt"`
	DurationS   float64        `json:"durationSeconds"`
	Machine     machine        `json:"machine"`
	Settings    map[string]any `json:"settings"`
	Limit       *limitConfig   `json:"limit,omitempty"`
	LimitTried  []limitConfig  `json:"limitCandidates,omitempty"`
	Ingest      []ingestLevel  `json:"ingest,omitempty"`
	E2E         []e2eRun       `json:"endToEnd,omitempty"`
	RunnerScale float64        `json:"twoRunnersOverOne,omitempty"`
	// RunnerScaleBound is the same ratio in the scale-out runs: the http step I/O-bound
	// (-io-sink-delay), the runners optionally throttled (-runner-bound-concurrency).
	RunnerScaleBound float64            `json:"twoRunnersOverOneRunnerBound,omitempty"`
	Connector        []connectorCall    `json:"connectorCall,omitempty"`
	PeakRSSMiB       map[string]float64 `json:"peakRssMiB,omitempty"`
	RecordAuth       *recordAuth        `json:"recordAuthentication,omitempty"`
	History          *historyResult     `json:"history,omitempty"`
	Observability    *observability     `json:"observability,omitempty"`
	Goals            []goal             `json:"goals,omitempty"`
	Profiles         []string           `json:"profiles,omitempty"`
}

type machine struct {
	Cores        int    `json:"cores"`
	CPUModel     string `json:"cpuModel"`
	MemTotalMiB  int64  `json:"memTotalMiB"`
	Kernel       string `json:"kernel"`
	GoVersion    string `json:"goVersion"`
	KafkaVersion string `json:"kafkaBrokerVersion"`
	RedisVersion string `json:"redisVersion"`
	GitCommit    string `json:"gitCommit"`
}

type goal struct {
	Goal     string  `json:"goal"`
	Measured float64 `json:"measured"`
	Target   float64 `json:"target"`
	Unit     string  `json:"unit"`
	Met      bool    `json:"met"`
	// By is how far the measurement is from the target, as a share of the target: positive
	// is the margin of a met goal, negative how much a missed one falls short.
	ByPct float64 `json:"marginPct"`
	Note  string  `json:"note,omitempty"`
}

func run(ctx context.Context, o options) error {
	brokersEnv, redisURL := os.Getenv("FLOWD_TEST_KAFKA_BROKERS"), os.Getenv("FLOWD_TEST_REDIS_URL")
	if brokersEnv == "" || redisURL == "" {
		return errors.New("no broker or redis-server: run it as `make bench` (tools/rig/with-rig.sh go run ./tools/bench)")
	}
	brokers := strings.Split(brokersEnv, ",")
	for _, p := range []string{o.bin, filepath.Join(o.connectorsDir, "transform"), filepath.Join(o.connectorsDir, "http")} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%s missing: run `make build` first (make bench does)", p)
		}
	}
	ropt, err := redis.ParseURL(redisURL)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(ropt)
	defer func() { _ = rdb.Close() }()

	began := time.Now()
	res := &results{StartedAt: began.UTC(), Machine: machineFacts(ctx, rdb), PeakRSSMiB: map[string]float64{}}
	res.Settings = map[string]any{
		"limitSecondsPerConfig": o.limitDur.Seconds(), "ingestSecondsPerLevel": o.ingestDur.Seconds(),
		"warmupSeconds": o.warm.Seconds(), "e2eWarmupSeconds": o.e2eWarm.Seconds(), "e2eSeconds": o.e2eDur.Seconds(), "e2eWindow": o.window,
		"runnerConcurrency": o.runnerConc, "runnerBoundConcurrency": o.boundConc, "ioSinkDelayMs": o.ioDelay.Milliseconds(), "partitions": o.partitions, "payloadBytes": 1024,
	}
	logf("machine: %d cores (%s), %s, kafka %s, redis %s", res.Machine.Cores, res.Machine.CPUModel,
		res.Machine.GoVersion, res.Machine.KafkaVersion, res.Machine.RedisVersion)

	b := &bench{o: o, brokers: brokers, redisURL: redisURL, rdb: rdb, res: res, payload: benchPayload(),
		run: fmt.Sprintf("bench%d", time.Now().UnixNano()%1e9)}
	b.broker = findBroker(brokers[0][strings.LastIndexByte(brokers[0], ':')+1:])
	b.redis = findProc("redis-server", ropt.Addr)
	if o.profileDir != "" {
		if err := os.MkdirAll(o.profileDir, 0o755); err != nil {
			return err
		}
	}
	logDir, err := os.MkdirTemp("", "flowd-bench-logs")
	if err != nil {
		return err
	}
	b.logDir = logDir

	if o.phases["limit"] {
		if err := b.limit(ctx); err != nil {
			return fmt.Errorf("limit: %w", err)
		}
	}
	if o.phases["ingest"] {
		if err := b.ingest(ctx); err != nil {
			return fmt.Errorf("ingest: %w (role logs in %s)", err, logDir)
		}
	}
	if o.phases["e2e"] {
		if err := b.endToEnd(ctx); err != nil {
			return fmt.Errorf("end to end: %w (role logs in %s)", err, logDir)
		}
	}
	if o.phases["observability"] {
		if err := b.observability(ctx); err != nil {
			return fmt.Errorf("observability: %w (role logs in %s)", err, logDir)
		}
	}
	if o.phases["connector"] {
		calls, err := runConnector(ctx)
		if err != nil {
			return fmt.Errorf("connector: %w", err)
		}
		res.Connector = calls
	}
	res.DurationS = round1(time.Since(began).Seconds())
	res.Goals = evaluate(res)
	printTable(os.Stdout, res)
	if err := os.MkdirAll(filepath.Dir(o.out), 0o755); err != nil {
		return err
	}
	data, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(o.out, append(data, '\n'), 0o644); err != nil {
		return err
	}
	logf("results written to %s; role logs in %s", o.out, logDir)
	return nil
}

// bench holds what the phases share.
type bench struct {
	o        options
	brokers  []string
	redisURL string
	rdb      *redis.Client
	res      *results
	payload  []byte
	run      string // unique per run: topic prefix, redis prefix, group names
	logDir   string
	broker   int // pids, for CPU accounting (0 when not found)
	redis    int
}

func (b *bench) limit(ctx context.Context) error {
	tried, err := runLimit(ctx, b.brokers, b.run+"-l.", b.o.partitions, b.payload, b.o.limitDur)
	if err != nil {
		return err
	}
	b.res.LimitTried = tried
	best := tried[0]
	for _, c := range tried[1:] {
		if c.RecordsPerS > best.RecordsPerS {
			best = c
		}
	}
	b.res.Limit = &best
	return nil
}

// roleEnv is the environment of the roles of one phase.
func (b *bench) env(phase string) []string {
	return roleEnv(map[string]string{
		"FLOWD_KAFKA_BROKERS": strings.Join(b.brokers, ","),
		"FLOWD_REDIS_URL":     b.redisURL,
		"FLOWD_TOPIC_PREFIX":  b.run + "-" + phase + ".",
		"FLOWD_REDIS_PREFIX":  b.run + "-" + phase + ":",
		"FLOWD_ROUTER_GROUP":  b.run + "-" + phase + "-router",
		"FLOWD_SECRET_KEY":    secrets.GenerateKey(),
		"FLOWD_BUS_KEY":       busauth.Generate(),
		"FLOWD_LOG_LEVEL":     "warn",
		// Short, so that the history phase can measure what stays once it has passed.
		"FLOWD_REDELIVERY_WINDOW": benchWindow.String(),
	})
}

func (b *bench) store(phase string) *store.Store { return store.New(b.rdb, b.run+"-"+phase+":") }

// cpuPids names the processes whose CPU each phase reports.
func (b *bench) cpuPids(roles ...*role) map[string][]int {
	m := map[string][]int{"bench": {os.Getpid()}}
	if b.broker != 0 {
		m["kafka"] = []int{b.broker}
	}
	if b.redis != 0 {
		m["redis"] = []int{b.redis}
	}
	for _, r := range roles {
		if !r.stopped {
			m[r.name] = []int{r.pid()}
		}
	}
	return m
}

func (b *bench) startRole(name string, env []string, args ...string) (*role, error) {
	args = append(args, "--partitions", strconv.Itoa(b.o.partitions))
	return startRole(name, b.o.bin, args, env, b.logDir)
}

// waitHTTP polls url until it answers want.
func waitHTTP(ctx context.Context, r *role, method, url string, want int, bound time.Duration) error {
	deadline := time.Now().Add(bound)
	last := ""
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if r.exited() {
			return fmt.Errorf("%s exited:\n%s", r.name, r.tail(20))
		}
		req, _ := http.NewRequestWithContext(ctx, method, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == want {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s %s did not answer %d within %s (last: %s)", method, url, want, bound, last)
}

func (b *bench) ingest(ctx context.Context) error {
	env := b.env("i")
	addr := freeAddr()
	ing, err := b.startRole("ingest", env, "ingest", "--addr", addr)
	if err != nil {
		return err
	}
	defer func() {
		ing.stop(20 * time.Second)
		b.res.PeakRSSMiB["ingest (ingest phase)"] = round1(float64(ing.peakKiB) / 1024)
	}()
	base := "http://" + addr
	if err := waitHTTP(ctx, ing, http.MethodGet, base+"/readyz", 200, 90*time.Second); err != nil {
		return err
	}
	flowID, err := createActiveFlow(ctx, b.store("i"), ingestOnlyFlow("bench-ingest"))
	if err != nil {
		return err
	}
	url := base + "/hooks/" + flowID
	if err := waitHTTP(ctx, ing, http.MethodHead, url, 200, 30*time.Second); err != nil {
		return err
	}
	for _, n := range b.o.clients {
		m := newCPUMeter(b.cpuPids(ing))
		var prof chan error
		if b.o.profileDir != "" && n == b.o.clients[len(b.o.clients)-1] {
			prof = b.profile(ctx, fmt.Sprintf("ingest-%dclients", n), ing)
		}
		lvl := closedLoop(ctx, url, n, b.o.warm, b.o.ingestDur, b.payload)
		lvl.ProcessCPU, lvl.MachineCPU = m.stop()
		if lvl.AcceptedPS > 0 {
			// CPU % of one core over the phase (warm-up included) per accepted/s: roughly.
			lvl.IngestCPUus = round1(lvl.ProcessCPU["ingest"] / 100 * 1e6 / float64(lvl.AcceptedPS))
		}
		if prof != nil {
			if err := <-prof; err != nil {
				logf("profile: %v", err)
			}
		}
		ing.sample()
		if b.res.Limit != nil {
			lvl.RatioLimit = ratio(float64(lvl.AcceptedPS), float64(b.res.Limit.RecordsPerS))
		}
		logf("ingest: %d clients: %d accepted/s, p50 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, %d refused, %d errors (machine CPU %.0f%%, ingest %.0f µs CPU per webhook)",
			n, lvl.AcceptedPS, lvl.P50ms, lvl.P99ms, lvl.P999ms, lvl.Refused, lvl.Errors, lvl.MachineCPU, lvl.IngestCPUus)
		b.res.Ingest = append(b.res.Ingest, lvl)
		if ing.exited() {
			return fmt.Errorf("ingest exited under load:\n%s", ing.tail(20))
		}
	}
	return nil
}

// profile captures 10 s CPU profiles of roles in the background, starting after a short delay
// (so that the load is on); the channel reports once all are written.
func (b *bench) profile(ctx context.Context, label string, roles ...*role) chan error {
	done := make(chan error, 1)
	go func() {
		time.Sleep(b.o.warm + time.Second)
		errc := make(chan error, len(roles))
		for _, r := range roles {
			go func() {
				path := filepath.Join(b.o.profileDir, label+"-"+r.name+".pprof")
				err := r.profile(ctx, 10*time.Second, path)
				if err == nil {
					b.res.Profiles = append(b.res.Profiles, path)
				}
				errc <- err
			}()
		}
		var errs []error
		for range roles {
			errs = append(errs, <-errc)
		}
		done <- errors.Join(errs...)
	}()
	return done
}

func (b *bench) endToEnd(ctx context.Context) error {
	sk, err := startSink()
	if err != nil {
		return err
	}
	defer func() { _ = sk.srv.Close() }()
	env := b.env("e")
	st := b.store("e")
	group := b.run + "-e-runner-default"
	addr := freeAddr()
	var roles []*role
	defer func() {
		for _, r := range roles {
			r.stop(30 * time.Second)
			if strings.HasPrefix(r.name, "runner") {
				b.res.PeakRSSMiB[r.name+" connector plugins (sum)"] = round1(float64(r.pluginsKiB) / 1024)
			}
			name := r.name
			if name == "ingest" {
				name = "ingest (end-to-end phase)"
			}
			b.res.PeakRSSMiB[name] = round1(float64(r.peakKiB) / 1024)
		}
	}()
	start := func(name string, args ...string) (*role, error) {
		r, err := b.startRole(name, env, args...)
		if err == nil {
			roles = append(roles, r)
		}
		return r, err
	}
	ing, err := start("ingest", "ingest", "--addr", addr)
	if err != nil {
		return err
	}
	// Every execution stays listed: the latencies are read from the records.
	routerArgs := []string{"router", "--history-max-count", "-1"}
	if b.o.stream {
		routerArgs = append(routerArgs, "--history-stream")
	}
	rt, err := start("router", routerArgs...)
	if err != nil {
		return err
	}
	// The sink listens on loopback, which connectors reach only when the operator allows it.
	sinkURL, err := url.Parse(sk.url)
	if err != nil {
		return err
	}
	runnerArgs := []string{"runner", "--pool", "default", "--group-id", group,
		"--concurrency", strconv.Itoa(b.o.runnerConc), "--connectors-dir", b.o.connectorsDir,
		"--egress-allow", sinkURL.Host}
	r1, err := start("runner-1", runnerArgs...)
	if err != nil {
		return err
	}
	base := "http://" + addr
	if err := waitHTTP(ctx, ing, http.MethodGet, base+"/readyz", 200, 90*time.Second); err != nil {
		return err
	}
	flows := map[string]string{}
	for _, name := range []string{"warm", "jit", "max-1", "max-2", "half", "bound-1", "bound-2"} {
		id, err := createActiveFlow(ctx, st, e2eFlow("bench-e2e-"+name, sk.url))
		if err != nil {
			return err
		}
		flows[name] = id
	}
	hook := func(name string) string { return base + "/hooks/" + flows[name] }
	if err := waitHTTP(ctx, ing, http.MethodHead, hook("warm"), 200, 30*time.Second); err != nil {
		return err
	}
	// Warm-up: a few executions through every role, which also waits for the consumer groups.
	if err := b.warmup(ctx, st, flows["warm"], hook("warm"), 50, rt, r1); err != nil {
		return err
	}
	if err := waitGroupMembers(ctx, b.brokers, group, 1, 60*time.Second); err != nil {
		return err
	}
	// The broker's JIT compiler needs a minute or more of this load before it stops compiling
	// (docs/performance.md): a production broker has long passed that point, so the
	// measurements start after it.
	if b.o.e2eWarm > 0 {
		logf("e2e: warming up the whole pipeline (the broker's JIT) for %s", b.o.e2eWarm)
		if _, err := e2eMax(ctx, hook("jit"), st, flows["jit"], 64, b.o.window, b.o.e2eWarm, time.Second, b.payload); err != nil {
			return err
		}
	}

	measure := func(name string, runners int, fn func() (e2eRun, error), profRoles ...*role) (e2eRun, error) {
		m := newCPUMeter(b.cpuPids(roles...))
		var prof chan error
		if b.o.profileDir != "" && len(profRoles) > 0 {
			prof = b.profile(ctx, "e2e-"+name, profRoles...)
		}
		sinkBefore := sk.requests.Load()
		began := time.Now()
		r, err := fn()
		r.ProcessCPU, r.MachineCPU = m.stop()
		r.CPUPerExecUs = cpuPerExecution(r.ProcessCPU, time.Since(began), r.Completed)
		if prof != nil {
			if err := <-prof; err != nil {
				logf("profile: %v", err)
			}
		}
		for _, ro := range roles {
			ro.sample()
			if ro.exited() && !ro.stopped {
				return r, fmt.Errorf("%s exited under load:\n%s", ro.name, ro.tail(20))
			}
		}
		r.Name, r.Runners, r.SinkRequests = name, runners, sk.requests.Load()-sinkBefore
		logf("e2e %s: %.1f completed/s, p50 %.1f ms, p99 %.1f ms, %d failed, machine CPU %.0f%% %v",
			name, r.CompletedPS, r.P50ms, r.P99ms, r.Failed, r.MachineCPU, r.ProcessCPU)
		b.res.E2E = append(b.res.E2E, r)
		return r, err
	}

	const senders = 64
	one, err := measure("max, 1 runner", 1, func() (e2eRun, error) {
		return e2eMax(ctx, hook("max-1"), st, flows["max-1"], senders, b.o.window, b.o.warm+3*time.Second, b.o.e2eDur, b.payload)
	}, ing, rt, r1)
	if err != nil {
		return err
	}
	b.res.RecordAuth = measureRecordAuth(one, b.payload)
	logf("record authentication: %.1f µs CPU per execution (%d records signed and verified) of %.2f ms CPU per execution: %.2f%%",
		b.res.RecordAuth.NsPerExecution/1e3, b.res.RecordAuth.RecordsPerExecution, b.res.RecordAuth.ExecutionCPUms, b.res.RecordAuth.SharePct)
	r2, err := start("runner-2", runnerArgs...)
	if err != nil {
		return err
	}
	if err := waitGroupMembers(ctx, b.brokers, group, 2, 90*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, r2.tail(10))
	}
	two, err := measure("max, 2 runners", 2, func() (e2eRun, error) {
		return e2eMax(ctx, hook("max-2"), st, flows["max-2"], senders, b.o.window, b.o.warm+3*time.Second, b.o.e2eDur, b.payload)
	}, rt, r1, r2)
	if err != nil {
		return err
	}
	b.res.RunnerScale = ratio(two.CompletedPS, one.CompletedPS)
	maxRate := max(one.CompletedPS, two.CompletedPS)
	if maxRate <= 0 {
		return errors.New("no execution completed: nothing to take half of")
	}
	if _, err := measure("50% of max, 2 runners", 2, func() (e2eRun, error) {
		return e2eRate(ctx, hook("half"), st, flows["half"], maxRate/2, b.o.e2eDur, b.payload)
	}); err != nil {
		return err
	}
	if b.o.historyN > 0 {
		h, err := b.historyBytes(ctx, st, ing, base, sk.url, b.o.historyN)
		if err != nil {
			return err
		}
		b.res.History = h
	}
	// Scale-out: the same max with the http step made I/O-bound (the sink answers after
	// -io-sink-delay), so that the runners' waiting, not the two cores, bounds one runner.
	// -runner-bound-concurrency throttles the runners further.
	if b.o.ioDelay <= 0 && b.o.boundConc <= 0 {
		return nil
	}
	r1.stop(30 * time.Second)
	r2.stop(30 * time.Second)
	boundArgs := slices.Clone(runnerArgs)
	var labels []string
	if b.o.ioDelay > 0 {
		sk.delay.Store(int64(b.o.ioDelay))
		defer sk.delay.Store(0)
		labels = append(labels, fmt.Sprintf("sink %s", b.o.ioDelay))
	}
	if b.o.boundConc > 0 {
		boundArgs[slices.Index(boundArgs, "--concurrency")+1] = strconv.Itoa(b.o.boundConc)
		labels = append(labels, fmt.Sprintf("concurrency %d", b.o.boundConc))
	}
	label := strings.Join(labels, ", ")
	b1, err := start("runner-1 ("+label+")", boundArgs...)
	if err != nil {
		return err
	}
	if err := waitGroupMembers(ctx, b.brokers, group, 1, 90*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, b1.tail(10))
	}
	oneB, err := measure("max, 1 runner, "+label, 1, func() (e2eRun, error) {
		return e2eMax(ctx, hook("bound-1"), st, flows["bound-1"], senders, b.o.window, b.o.warm+3*time.Second, b.o.e2eDur, b.payload)
	})
	if err != nil {
		return err
	}
	b2, err := start("runner-2 ("+label+")", boundArgs...)
	if err != nil {
		return err
	}
	if err := waitGroupMembers(ctx, b.brokers, group, 2, 90*time.Second); err != nil {
		return fmt.Errorf("%w\n%s", err, b2.tail(10))
	}
	twoB, err := measure("max, 2 runners, "+label, 2, func() (e2eRun, error) {
		return e2eMax(ctx, hook("bound-2"), st, flows["bound-2"], senders, b.o.window, b.o.warm+3*time.Second, b.o.e2eDur, b.payload)
	})
	if err != nil {
		return err
	}
	b.res.RunnerScaleBound = ratio(twoB.CompletedPS, oneB.CompletedPS)
	return nil
}

// warmup sends n webhooks and waits for their executions to finish (bounded): it brings the
// consumer groups up and the connector plugins started before anything is measured.
func (b *bench) warmup(ctx context.Context, st *store.Store, flowID, url string, n int, watch ...*role) error {
	hc := newClient(8)
	defer hc.CloseIdleConnections()
	for i := 0; i < n; i++ {
		status, _, err := post(ctx, hc, url, b.payload)
		if err != nil || status != http.StatusAccepted {
			return fmt.Errorf("warm-up webhook: status %d, %v", status, err)
		}
	}
	deadline := time.Now().Add(120 * time.Second)
	for {
		s, other, err := ended(ctx, st, flowID)
		if err != nil {
			return err
		}
		if other > 0 {
			execs, _ := allExecutions(ctx, st, flowID)
			for _, e := range execs {
				if e.Error != nil {
					return fmt.Errorf("warm-up execution %s %s: %s: %s", e.ID, e.Status, e.Error.Code, e.Error.Message)
				}
			}
			return fmt.Errorf("%d warm-up executions did not succeed", other)
		}
		if s >= n {
			return nil
		}
		for _, r := range watch {
			if r.exited() {
				return fmt.Errorf("%s exited:\n%s", r.name, r.tail(20))
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("warm-up: %d of %d executions finished within 120 s", s, n)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func machineFacts(ctx context.Context, rdb *redis.Client) machine {
	m := machine{Cores: runtime.NumCPU(), GoVersion: runtime.Version(), KafkaVersion: os.Getenv("FLOWD_TEST_KAFKA_VERSION")}
	if data, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if v, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(v))
	}
	m.MemTotalMiB = procMemTotalKiB() / 1024
	if info, err := rdb.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				m.RedisVersion = v
			}
		}
	}
	if out, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output(); err == nil {
		m.GitCommit = strings.TrimSpace(string(out))
		if st, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(st) > 0 {
			m.GitCommit += "+dirty"
		}
	}
	return m
}

func procMemTotalKiB() int64 {
	data, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			n, _ := strconv.ParseInt(strings.Fields(v)[0], 10, 64)
			return n
		}
	}
	return 0
}
