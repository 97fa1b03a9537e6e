package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// role is one flowd role running as its own process.
type role struct {
	name  string
	cmd   *exec.Cmd
	done  chan struct{}
	log   string
	pprof string // host:port of its pprof listener
	// peakKiB is the highest VmHWM seen (sampled while it runs and just before it stops).
	peakKiB int64
	stopped bool // stop was called: its exit is no failure
	// pluginsKiB is the highest sum of its children's VmHWM seen (a runner's connector plugins).
	pluginsKiB int64
}

// startRole runs bin with args, its output in logDir/<name>.log.
func startRole(name, bin string, args, env []string, logDir string) (*role, error) {
	r := &role{name: name, log: filepath.Join(logDir, name+".log"), pprof: freeAddr()}
	f, err := os.OpenFile(r.log, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(env, "FLOWD_PPROF_ADDR="+r.pprof)
	cmd.Stdout, cmd.Stderr = f, f
	// Should the bench die, its roles die with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	r.cmd, r.done = cmd, make(chan struct{})
	go func() { _ = cmd.Wait(); _ = f.Close(); close(r.done) }()
	return r, nil
}

func (r *role) pid() int { return r.cmd.Process.Pid }

func (r *role) exited() bool {
	select {
	case <-r.done:
		return true
	default:
		return false
	}
}

// sample records the role's peak RSS so far.
func (r *role) sample() {
	if r.exited() {
		return
	}
	if kib := procStatusKiB(r.pid(), "VmHWM"); kib > r.peakKiB {
		r.peakKiB = kib
	}
	// A runner's children are its connector plugins.
	var plugins int64
	for _, c := range children(r.pid()) {
		plugins += procStatusKiB(c, "VmHWM")
	}
	r.pluginsKiB = max(r.pluginsKiB, plugins)
}

// stop ends the role with SIGTERM (SIGKILL after the bound), sampling its peak RSS first.
func (r *role) stop(bound time.Duration) {
	r.stopped = true
	r.sample()
	if r.exited() {
		return
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(bound):
		_ = r.cmd.Process.Signal(syscall.SIGKILL)
		<-r.done
	}
}

// tail returns the last n lines of the role's log.
func (r *role) tail(n int) string {
	data, err := os.ReadFile(r.log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// profile fetches a CPU profile of d from the role's pprof listener into path.
func (r *role) profile(ctx context.Context, d time.Duration, path string) error {
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", r.pprof, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof of %s: %s", r.name, resp.Status)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := f.ReadFrom(resp.Body); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
}

// roleEnv is this process's environment without FLOWD_ settings, plus set.
func roleEnv(set map[string]string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "FLOWD_") {
			env = append(env, kv)
		}
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return env
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer func() { _ = ln.Close() }()
	return ln.Addr().String()
}

// procStatusKiB reads a "Name:   123 kB" field of /proc/<pid>/status; 0 if unreadable.
func procStatusKiB(pid int, field string) int64 {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		name, rest, ok := strings.Cut(sc.Text(), ":")
		if !ok || name != field {
			continue
		}
		v, _ := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
		return v
	}
	return 0
}

// procStat returns a process's parent pid and its CPU time (user+system) in clock ticks.
func procStat(pid int) (ppid int, ticks int64, ok bool) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, 0, false
	}
	// The command name (field 2) may hold spaces: fields are counted after its ')'.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, 0, false
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return ppid, ut + st, true
}

// children lists the pids whose parent is pid.
func children(pid int) []int {
	ents, _ := os.ReadDir("/proc")
	var out []int
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if pp, _, ok := procStat(p); ok && pp == pid {
			out = append(out, p)
		}
	}
	return out
}

// findProc returns the first pid whose command line contains every one of parts.
func findProc(parts ...string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		s := string(bytes.ReplaceAll(cl, []byte{0}, []byte{' '}))
		all := true
		for _, part := range parts {
			if !strings.Contains(s, part) {
				all = false
				break
			}
		}
		if all {
			return p
		}
	}
	return 0
}

// findBroker returns the pid of the Kafka broker listening on port: a kafka.Kafka JVM whose
// server.properties names that port.
func findBroker(port string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cl, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil || !bytes.Contains(cl, []byte("kafka.Kafka")) {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cl), "\x00"), "\x00")
		props, err := os.ReadFile(args[len(args)-1])
		if err == nil && bytes.Contains(props, []byte("PLAINTEXT://127.0.0.1:"+port+",")) {
			return p
		}
	}
	return 0
}

// machineCPU returns busy and total jiffies of all CPUs since boot (/proc/stat).
func machineCPU() (busy, total int64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	f := strings.Fields(line)
	for i, v := range f[1:] {
		n, _ := strconv.ParseInt(v, 10, 64)
		total += n
		if i != 3 && i != 4 { // idle, iowait
			busy += n
		}
	}
	return busy, total
}

// cpuMeter measures, over one phase, the CPU each named process (and its children) used and
// how busy the whole machine was.
type cpuMeter struct {
	pids      map[string][]int // name -> pids whose time (and their children's) counts
	start     map[string]int64
	busy0     int64
	total0    int64
	startTime time.Time
}

func newCPUMeter(pids map[string][]int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: map[string]int64{}, startTime: time.Now()}
	for name := range pids {
		m.start[name] = m.ticks(name)
	}
	m.busy0, m.total0 = machineCPU()
	return m
}

// ticks sums the CPU time of a name's processes, and for runners that of their live children
// (the connector plugins).
func (m *cpuMeter) ticks(name string) int64 {
	var sum int64
	for _, pid := range m.pids[name] {
		if _, t, ok := procStat(pid); ok {
			sum += t
		}
		if !strings.HasPrefix(name, "runner") { // a runner's children are its connector plugins
			continue
		}
		for _, c := range children(pid) {
			if _, t, ok := procStat(c); ok {
				sum += t
			}
		}
	}
	return sum
}

// clkTck is the kernel's USER_HZ, 100 on every Linux that Go supports here.
const clkTck = 100

// stop returns each name's CPU use in percent of one core, and the machine's busy share in
// percent of all cores.
func (m *cpuMeter) stop() (map[string]float64, float64) {
	secs := time.Since(m.startTime).Seconds()
	out := map[string]float64{}
	for name := range m.pids {
		out[name] = round1(float64(m.ticks(name)-m.start[name]) / clkTck / secs * 100)
	}
	busy, total := machineCPU()
	machine := 0.0
	if total > m.total0 {
		machine = round1(float64(busy-m.busy0) / float64(total-m.total0) * 100)
	}
	return out, machine
}
