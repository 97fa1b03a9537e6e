import { useState } from "react";
import { Link } from "wouter";
import { describe } from "../api";
import { ErrorText, useLoad, when } from "../components/common";
import { MinuteChart } from "../components/MinuteChart";
import { can, useSession } from "../session";
import { ExecutionsTab } from "./ExecutionsTab";

/** AnalyticsTab: the flow's executions per minute and its open errors, grouped by code. */
export function AnalyticsTab({ flowId }: { flowId: string }) {
  const { client, me } = useSession();
  const stats = useLoad(() => client.stats(flowId), [client, flowId], 10000);
  const errors = useLoad(() => client.errors(flowId), [client, flowId], 5000);
  const [note, setNote] = useState("");
  const [fail, setFail] = useState("");

  async function act(what: "retry" | "resolve", code: string) {
    setFail("");
    setNote("");
    try {
      const r = what === "retry" ? await client.retryErrors(flowId, code) : await client.resolveErrors(flowId, code);
      const n = (r.data as { retried?: unknown[]; resolved?: number } | undefined) ?? {};
      setNote(what === "retry" ? `Retrying ${Array.isArray(n.retried) ? n.retried.length : "the"} failed executions of ${code}.` : `Resolved ${n.resolved ?? "the"} failures of ${code}.`);
      errors.reload();
    } catch (e) {
      setFail(describe(e));
    }
  }

  const control = can(me, "flows.control");
  return (
    <section aria-label="Errors and analytics">
      <h2>Executions per minute</h2>
      <ErrorText>{stats.error}</ErrorText>
      {stats.data && <MinuteChart stats={stats.data} />}
      <h2>Open errors</h2>
      <ErrorText>{errors.error || fail}</ErrorText>
      {note && (
        <p role="status" className="ok">
          {note}
        </p>
      )}
      {errors.data && (
        <>
          <p className="muted small">
            {errors.data.open} open, {errors.data.resolved} resolved{errors.data.truncated ? " (more failures exist than were read)" : ""}
          </p>
          <table className="list" aria-label="Open errors by code">
            <thead>
              <tr>
                <th>Code</th>
                <th>Count</th>
                <th>Last message</th>
                <th>Last seen</th>
                <th>
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {errors.data.groups.map((g) => (
                <tr key={g.code}>
                  <td>
                    <code>{g.code}</code>
                  </td>
                  <td>{g.count}</td>
                  <td>
                    {g.lastMessage} <Link href={`/executions/${g.lastExecutionId}`}>last execution</Link>
                  </td>
                  <td>{when(g.lastAt)}</td>
                  <td className="actions">
                    {control && (
                      <>
                        <button type="button" onClick={() => act("retry", g.code)} aria-label={`Retry ${g.code}`}>
                          Retry
                        </button>
                        <button type="button" onClick={() => act("resolve", g.code)} aria-label={`Resolve ${g.code}`}>
                          Resolve
                        </button>
                      </>
                    )}
                  </td>
                </tr>
              ))}
              {errors.data.groups.length === 0 && (
                <tr>
                  <td colSpan={5} className="muted">
                    No open errors.
                  </td>
                </tr>
              )}
            </tbody>
          </table>
        </>
      )}
      <h2>Failed executions</h2>
      <ExecutionsTab flowId={flowId} status="failed" />
    </section>
  );
}
