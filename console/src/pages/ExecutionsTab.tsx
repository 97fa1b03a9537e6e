import { useState } from "react";
import { Link } from "wouter";
import { ErrorText, Pager, Status, useLoad, when } from "../components/common";
import { useSession } from "../session";

const statuses = ["", "running", "succeeded", "failed", "filtered"];

/** ExecutionsTab lists a flow's executions, newest first, refreshed every two seconds. */
export function ExecutionsTab({ flowId, status: initial = "" }: { flowId: string; status?: string }) {
  const { client } = useSession();
  const [status, setStatus] = useState(initial);
  const [page, setPage] = useState(1);
  const list = useLoad(() => client.executions(flowId, { "page[size]": 20, "page[number]": page, "filter[status]": status }), [client, flowId, page, status], 2000);
  return (
    <section aria-label="Executions">
      <div className="toolbar">
        <label>
          Status
          <select value={status} onChange={(e) => (setStatus(e.target.value), setPage(1))}>
            {statuses.map((s) => (
              <option key={s} value={s}>
                {s || "any"}
              </option>
            ))}
          </select>
        </label>
        <span className="muted small" aria-live="polite">
          live · {list.data?.meta.total ?? 0} in all
        </span>
      </div>
      <ErrorText>{list.error}</ErrorText>
      <table className="list" aria-label="Executions of this flow">
        <thead>
          <tr>
            <th>Execution</th>
            <th>Status</th>
            <th>Trigger</th>
            <th>Revision</th>
            <th>Received</th>
            <th>Duration</th>
            <th>Error</th>
          </tr>
        </thead>
        <tbody>
          {list.data?.data.map((x) => (
            <tr key={x.id} data-execution-id={x.id}>
              <td>
                <Link href={`/executions/${x.id}`}>
                  <code>{x.id}</code>
                </Link>
              </td>
              <td>
                <Status value={x.status} />
              </td>
              <td>{x.trigger}</td>
              <td>{x.revision}</td>
              <td>{when(x.receivedAt)}</td>
              <td>{x.durationMs !== undefined ? `${x.durationMs} ms` : ""}</td>
              <td className="error">{x.error ? `${x.error.code}: ${x.error.message}` : ""}</td>
            </tr>
          ))}
          {list.data && list.data.data.length === 0 && (
            <tr>
              <td colSpan={7} className="muted">
                No executions{status ? ` with status ${status}` : " yet"}.
              </td>
            </tr>
          )}
        </tbody>
      </table>
      <Pager meta={list.data?.meta} onPage={setPage} label="Executions" />
    </section>
  );
}
