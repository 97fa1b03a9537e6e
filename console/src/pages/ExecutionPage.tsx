// One execution: its steps as a timeline (input, output, error, attempts, durations) and the
// path it took, highlighted on the canvas of the revision it ran.
import { useMemo } from "react";
import { Link } from "wouter";
import { describe } from "../api";
import { ErrorText, Json, Status, useLoad, when } from "../components/common";
import { FlowCanvas } from "../components/FlowCanvas";
import { layout, pathOf, stepDuration } from "../lib/graph";
import { useSession } from "../session";

export default function ExecutionPage({ id }: { id: string }) {
  const { client } = useSession();
  const ex = useLoad(() => client.execution(id), [client, id], 2000);
  const x = ex.data;
  const flowId = x?.flowId;
  const revision = x?.revision;
  const ctx = useLoad(
    async () => {
      if (!flowId || !revision) return undefined;
      const [flow, connectors] = await Promise.all([client.revision(flowId, revision).catch((e) => Promise.reject(new Error(`revision ${revision}: ${describe(e)}`))), client.connectors()]);
      return { flow, connectors: connectors.data };
    },
    [client, flowId, revision],
  );
  const steps = useMemo(() => x?.steps ?? [], [x]);
  const graph = ctx.data?.flow.graph;
  const path = useMemo(() => (graph ? pathOf(graph.edges, steps) : undefined), [graph, steps]);
  const positions = useMemo(() => (graph ? layout(graph.nodes, graph.edges) : {}), [graph]);

  if (ex.error && !x) return <ErrorText>{ex.error}</ErrorText>;
  if (!x) return <p className="muted">Loading…</p>;
  return (
    <section aria-labelledby="execution-title">
      <div className="page-head">
        <div>
          <h1 id="execution-title">
            Execution <code>{x.id}</code>
          </h1>
          <p className="muted small">
            <Status value={x.status} /> flow <Link href={`/flows/${x.flowId}/executions`}>{ctx.data?.flow.name ?? x.flowId}</Link> · revision {x.revision} · {x.trigger} · received {when(x.receivedAt)}
            {x.durationMs !== undefined && ` · ${x.durationMs} ms`}
          </p>
          {x.error && (
            <p className="error">
              {x.error.code}: {x.error.message}
            </p>
          )}
        </div>
      </div>
      <ErrorText>{ctx.error}</ErrorText>
      <div className="execution">
        {graph && ctx.data && <FlowCanvas label="Path of this execution" nodes={graph.nodes} edges={graph.edges} positions={positions} connectors={ctx.data.connectors} path={path} />}
        <ol className="timeline" aria-label="Steps">
          {steps.map((s, i) => {
            const d = stepDuration(s);
            return (
              <li key={`${s.nodeId}-${i}`} className={`step step-${s.status}`} data-step={s.nodeId}>
                <div className="step-head">
                  <strong>{s.nodeId}</strong> <span className="muted">{s.type}</span> <Status value={s.status} />
                  {s.port && <span className="muted"> → {s.port}</span>}
                  <span className="muted">
                    {" "}
                    · attempt {s.attempt}
                    {d !== undefined && ` · ${d} ms`}
                    {s.replayed && " · replayed"}
                  </span>
                </div>
                {s.error && (
                  <p className="error">
                    {s.error.code}: {s.error.message}
                  </p>
                )}
                <Json label={`Input of ${s.nodeId}`} value={s.input} />
                <Json label={`Output of ${s.nodeId}`} value={s.output} />
              </li>
            );
          })}
          {steps.length === 0 && <li className="muted">No steps recorded (the flow's history may keep summaries only).</li>}
        </ol>
      </div>
    </section>
  );
}
