// Succeeded, failed and ignored executions per minute, drawn by uPlot (small, made for time series).
import { useEffect, useRef } from "react";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import type { Stats } from "../api";
import { minuteSeries } from "../lib/series";

export function MinuteChart({ stats }: { stats: Stats }) {
  const el = useRef<HTMLDivElement>(null);
  useEffect(() => {
    if (!el.current) return;
    const s = minuteSeries(stats);
    const data: uPlot.AlignedData = [s.minutes, s.success, s.error, s.ignored];
    const plot = new uPlot(
      {
        width: Math.max(el.current.clientWidth, 320),
        height: 220,
        scales: { y: { range: (_u, _min, max) => [0, Math.max(1, max)] } },
        axes: [{}, { label: "per minute" }],
        series: [
          {},
          { label: "succeeded", stroke: "#1b7f3b", width: 2 },
          { label: "failed", stroke: "#c0262d", width: 2 },
          { label: "ignored", stroke: "#7a7f87", width: 2 },
        ],
      },
      data,
      el.current,
    );
    return () => plot.destroy();
  }, [stats]);
  return (
    <figure className="chart">
      <div ref={el} role="img" aria-label={`Executions per minute: ${stats.totals.success} succeeded, ${stats.totals.error} failed, ${stats.totals.ignored} ignored in the last hour`} />
      <figcaption className="muted small">
        Last hour: {stats.totals.success} succeeded, {stats.totals.error} failed, {stats.totals.ignored} ignored · all time: {stats.allTime.success} / {stats.allTime.error} / {stats.allTime.ignored}
      </figcaption>
    </figure>
  );
}
