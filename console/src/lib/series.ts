// Per-minute counts as a chart draws them: every minute of the window, empty ones as zeros
// (the API lists only minutes that had executions).
import type { Stats } from "../api";

export interface Series {
  minutes: number[]; // unix seconds
  success: number[];
  error: number[];
  ignored: number[];
}

export function minuteSeries(stats: Pick<Stats, "perMinute"> & { from?: string; to?: string }): Series {
  const byMinute = new Map(stats.perMinute.map((r) => [Math.floor(Date.parse(r.minute) / 60000), r]));
  const known = [...byMinute.keys()];
  const from = stats.from ? Math.floor(Date.parse(stats.from) / 60000) : Math.min(...known);
  const to = stats.to ? Math.floor(Date.parse(stats.to) / 60000) : Math.max(...known);
  const out: Series = { minutes: [], success: [], error: [], ignored: [] };
  if (!Number.isFinite(from) || !Number.isFinite(to) || to < from || to - from > 24 * 60) return out;
  for (let m = from; m <= to; m++) {
    const r = byMinute.get(m);
    out.minutes.push(m * 60);
    out.success.push(r?.success ?? 0);
    out.error.push(r?.error ?? 0);
    out.ignored.push(r?.ignored ?? 0);
  }
  return out;
}
