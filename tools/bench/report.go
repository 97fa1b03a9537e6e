package main

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/flowd/flowd/internal/store"
)

// evaluate sets the goals against the figures; the benchmark reports, it never fails
// on them.
func evaluate(r *results) []goal {
	var out []goal
	atLeast := func(name string, measured, target float64, unit, note string) {
		g := goal{Goal: name, Measured: measured, Target: target, Unit: unit, Met: measured >= target, Note: note}
		g.ByPct = round1((measured - target) / target * 100)
		out = append(out, g)
	}
	atMost := func(name string, measured, target float64, unit, note string) {
		g := goal{Goal: name, Measured: measured, Target: target, Unit: unit, Met: measured <= target, Note: note}
		g.ByPct = round1((target - measured) / target * 100)
		out = append(out, g)
	}
	var maxRun *e2eRun
	for i, e := range r.E2E {
		if e.Mode == "closed-loop" && e.Runners == 1 {
			maxRun = &r.E2E[i] // the first: the default flow, default runners
			break
		}
	}
	if maxRun != nil {
		atLeast("end-to-end max >= 2,500 completed executions/s", maxRun.CompletedPS, 2500, "/s", "")
		if us, ok := maxRun.CPUPerExecUs["total"]; ok {
			atMost("CPU per execution <= 800 µs (every process but the load generator)", us, 800, "µs", "")
		}
	}
	for _, e := range r.E2E {
		if e.Mode == "open-loop" {
			atMost("end-to-end p99 at 50% of max rate <= 100 ms", e.P99ms, 100, "ms",
				fmt.Sprintf("at %.0f webhooks/s", e.TargetRate))
		}
	}
	if n := len(r.Ingest); n > 0 {
		top := r.Ingest[n-1]
		if top.AcceptedPS > 0 {
			atMost(fmt.Sprintf("ingest CPU per webhook at %d clients <= 35 µs", top.Clients), top.IngestCPUus, 35, "µs", "")
		}
		atMost(fmt.Sprintf("ingest p99 at %d clients <= 50 ms", top.Clients), top.P99ms, 50, "ms", "")
	}
	switch {
	case r.RunnerScaleBound > 0:
		atLeast("two runners >= 1.6x one (http step I/O-bound)", r.RunnerScaleBound, 1.6, "x",
			fmt.Sprintf("with the default flow %.2fx", r.RunnerScale))
	case r.RunnerScale > 0:
		atLeast("two runners >= 1.6x one", r.RunnerScale, 1.6, "x", "")
	}
	if a := r.RecordAuth; a != nil && a.ExecutionCPUms > 0 {
		atMost("record authentication < 5% of end-to-end CPU", a.SharePct, 5, "%",
			fmt.Sprintf("%.1f µs of %.2f ms CPU per execution (%d records)", a.NsPerExecution/1e3, a.ExecutionCPUms, a.RecordsPerExecution))
	}
	if h := r.History; h != nil && h.BytesPerExecution[store.SaveAll] > 0 {
		all := h.BytesPerExecution[store.SaveAll]
		atMost("history: summary needs at most 1/5 of the bytes per execution of all", h.BytesPerExecution[store.SaveSummary]/all, 0.2, "x",
			fmt.Sprintf("%.0f of %.0f bytes", h.BytesPerExecution[store.SaveSummary], all))
		atMost("history: none needs at most 1/20 of the bytes per execution of all", h.BytesPerExecution[store.SaveNone]/all, 0.05, "x",
			fmt.Sprintf("%.0f of %.0f bytes", h.BytesPerExecution[store.SaveNone], all))
	}
	if len(r.PeakRSSMiB) > 0 {
		worst, name := 0.0, ""
		for k, v := range r.PeakRSSMiB {
			if !strings.Contains(k, "plugins") && v > worst {
				worst, name = v, k
			}
		}
		atMost("no role above 300 MiB RSS", worst, 300, "MiB", "largest: "+name)
	}
	return out
}

func printTable(w io.Writer, r *results) {
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	p := func(format string, args ...any) { fmt.Fprintf(tw, format+"\n", args...) }
	m := r.Machine
	p("flowd bench\t%s, %d cores, %s, kafka %s, redis %s, %s, commit %s", m.CPUModel, m.Cores, m.GoVersion, m.KafkaVersion, m.RedisVersion, m.Kernel, m.GitCommit)
	p("")
	if r.Limit != nil {
		p("LIMIT (kafka-go, acks=all, 1 KiB)\trecords/s\tMiB/s\tgoroutines x records/call\tbatch")
		for _, c := range r.LimitTried {
			mark := ""
			if c == *r.Limit {
				mark = "  <- limit"
			}
			p("  %d partitions\t%d\t%.1f\t%d x %d\t%d / %s%s", c.Partitions, c.RecordsPerS, c.MiBPerS, c.Goroutines, c.Chunk, c.BatchSize, c.BatchTimeout, mark)
		}
		p("")
	}
	if len(r.Ingest) > 0 {
		p("INGEST (flowd ingest, async flow)\taccepted/s\tratio to limit\tp50 ms\tp99 ms\tp99.9 ms\trefused\tingest µs CPU per webhook\tmachine CPU %%\tingest / kafka / bench CPU %%")
		for _, l := range r.Ingest {
			p("  %d clients\t%d\t%.3f\t%.2f\t%.2f\t%.2f\t%d\t%.0f\t%.0f\t%.0f / %.0f / %.0f", l.Clients, l.AcceptedPS, l.RatioLimit, l.P50ms, l.P99ms, l.P999ms,
				l.Refused+l.Errors, l.IngestCPUus, l.MachineCPU, l.ProcessCPU["ingest"], l.ProcessCPU["kafka"], l.ProcessCPU["bench"])
		}
		p("")
	}
	if len(r.E2E) > 0 {
		p("END TO END (transform → http → transform)\tcompleted/s\tp50 ms\tp99 ms\tp99.9 ms\tfailed\tmachine CPU %%\tCPU %% by process")
		for _, e := range r.E2E {
			p("  %s\t%.1f\t%.1f\t%.1f\t%.1f\t%d\t%.0f\t%s", e.Name, e.CompletedPS, e.P50ms, e.P99ms, e.P999ms, e.Failed, e.MachineCPU, cpuList(e.ProcessCPU))
		}
		p("  two runners / one\t%.3f", r.RunnerScale)
		if r.RunnerScaleBound > 0 {
			p("  two runners / one, scale-out runs\t%.3f", r.RunnerScaleBound)
		}
		p("")
		p("CPU PER EXECUTION (µs)\ttotal\tby process")
		for _, e := range r.E2E {
			if len(e.CPUPerExecUs) == 0 {
				continue
			}
			by := maps.Clone(e.CPUPerExecUs)
			total := by["total"]
			delete(by, "total")
			p("  %s\t%.0f\t%s", e.Name, total, cpuList(by))
		}
		p("")
	}
	if a := r.RecordAuth; a != nil {
		p("RECORD AUTHENTICATION (HMAC-SHA256, sign + verify)	µs CPU per execution	records	execution CPU ms	share %%")
		p("  max, 1 runner	%.1f	%d	%.2f	%.2f", a.NsPerExecution/1e3, a.RecordsPerExecution, a.ExecutionCPUms, a.SharePct)
		p("")
	}
	if h := r.History; h != nil {
		p("HISTORY (Redis bytes per execution, %d executions per policy)\tonce the %.0f s redelivery window passed\twithin the window", h.Executions, h.WindowSeconds)
		for _, save := range []string{store.SaveAll, store.SaveSummary, store.SaveNone} {
			p("  %s\t%.0f\t%.0f", save, h.BytesPerExecution[save], h.BytesPerExecutionInWindow[save])
		}
		p("  history after the end-to-end runs\t%d bytes\t%d executions", h.HistoryBytesAfterE2E, h.HistoryKeptAfterE2E)
		p("")
	}
	if len(r.Connector) > 0 {
		p("CONNECTOR CALL (host → transform plugin)\tns/item\titems/s\tallocs/item\tspeed-up vs single")
		for _, c := range r.Connector {
			p("  batch of %d\t%d\t%d\t%d\t%.2f", c.Batch, c.NsPerItem, c.ItemsPerSec, c.AllocsPerOp, c.SpeedupVs1)
		}
		p("")
	}
	if len(r.PeakRSSMiB) > 0 {
		p("PEAK RSS (VmHWM)\tMiB")
		for _, k := range slices.Sorted(maps.Keys(r.PeakRSSMiB)) {
			p("  %s\t%.1f", k, r.PeakRSSMiB[k])
		}
		p("")
	}
	if len(r.Goals) > 0 {
		p("GOALS\tmeasured\ttarget\tresult")
		for _, g := range r.Goals {
			verdict := fmt.Sprintf("met, margin %.1f%%", g.ByPct)
			if !g.Met {
				verdict = fmt.Sprintf("MISSED by %.1f%%", -g.ByPct)
			}
			p("  %s\t%.3g %s\t%.3g %s\t%s", g.Goal, g.Measured, g.Unit, g.Target, g.Unit, verdict)
		}
	}
	p("")
	p("run took %.0f s", r.DurationS)
	_ = tw.Flush()
}

func cpuList(m map[string]float64) string {
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s %.0f", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
