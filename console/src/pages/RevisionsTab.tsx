import { useMemo, useState } from "react";
import type { Connector, Flow } from "../api";
import { ErrorText, Json, Pager, useLoad, when } from "../components/common";
import { FlowCanvas } from "../components/FlowCanvas";
import { layout } from "../lib/graph";
import { useSession } from "../session";

/** RevisionsTab lists a flow's revisions, newest first; one can be viewed on a read-only canvas. */
export function RevisionsTab({ flow, connectors }: { flow: Flow; connectors: Connector[] }) {
  const { client } = useSession();
  const [page, setPage] = useState(1);
  const [shown, setShown] = useState<number | undefined>();
  const list = useLoad(() => client.revisions(flow.id, { "page[size]": 20, "page[number]": page, sort: "-revision" }), [client, flow.id, page, flow.revision]);
  const rev = useLoad(() => (shown ? client.revision(flow.id, shown) : Promise.resolve(undefined)), [client, flow.id, shown]);
  const graph = rev.data?.graph;
  const positions = useMemo(() => (graph ? layout(graph.nodes, graph.edges) : {}), [graph]);
  return (
    <section aria-label="Revisions">
      <ErrorText>{list.error || rev.error}</ErrorText>
      <table className="list" aria-label="Revisions of this flow">
        <thead>
          <tr>
            <th>Revision</th>
            <th>Saved</th>
            <th>
              <span className="sr-only">Actions</span>
            </th>
          </tr>
        </thead>
        <tbody>
          {list.data?.data.map((r) => (
            <tr key={r.revision} className={r.revision === shown ? "selected" : undefined}>
              <td>
                {r.revision}
                {r.revision === flow.revision && <span className="muted"> (current)</span>}
              </td>
              <td>{when((r.createdAt ?? r.updatedAt) as string | undefined)}</td>
              <td>
                <button type="button" onClick={() => setShown(r.revision)} aria-label={`View revision ${r.revision}`}>
                  View
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <Pager meta={list.data?.meta} onPage={setPage} label="Revisions" />
      {rev.data && graph && (
        <>
          <h2>Revision {rev.data.revision}</h2>
          <FlowCanvas label={`Revision ${rev.data.revision}`} nodes={graph.nodes} edges={graph.edges} positions={positions} connectors={connectors} />
          <Json label={`Revision ${rev.data.revision} as JSON`} value={rev.data} />
        </>
      )}
    </section>
  );
}
