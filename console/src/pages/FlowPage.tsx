// One flow: its canvas (edit, validate, save with If-Match), executions, errors and
// analytics, and revisions. A new flow (flowId null) is a draft until its first save.
import { useEffect, useMemo, useState } from "react";
import { Link, useLocation } from "wouter";
import { ApiError, describe, type Connection, type Connector, type Flow, type FlowEdge, type FlowNode } from "../api";
import { ErrorText, Status, useLoad } from "../components/common";
import { FlowCanvas } from "../components/FlowCanvas";
import { EdgePanel, NodePanel } from "../components/NodePanel";
import { connect, layout, removeNode, type Point } from "../lib/graph";
import { mergePatch, writable } from "../lib/flowdoc";
import { builtinKinds, configSchema, defaultsOf, newNodeId, portsOf } from "../lib/nodeTypes";
import { place, type Placed } from "../lib/problems";
import { can, useSession } from "../session";
import { ExecutionsTab } from "./ExecutionsTab";
import { AnalyticsTab } from "./AnalyticsTab";
import { RevisionsTab } from "./RevisionsTab";

const emptyFlow = (): Flow => ({ id: "", name: "", status: "inactive", revision: 0, graph: { nodes: [], edges: [] } });

const tabs: [string, string][] = [
  ["canvas", "Canvas"],
  ["executions", "Executions"],
  ["errors", "Errors & analytics"],
  ["revisions", "Revisions"],
];

export default function FlowPage({ flowId, tab = "canvas" }: { flowId: string | null; tab?: string }) {
  const { client } = useSession();
  const catalog = useLoad(() => client.connectors().then((p) => p.data), [client]);
  const conns = useLoad(() => client.connections({ "page[size]": 100 }).then((p) => p.data).catch(() => [] as Connection[]), [client]);
  const loaded = useLoad(() => (flowId ? client.flow(flowId).then((r) => r.data) : Promise.resolve(emptyFlow())), [client, flowId]);

  if (loaded.error) return <ErrorText>{loaded.error}</ErrorText>;
  if (!loaded.data || !catalog.data) return <p className="muted">Loading…</p>;
  const flow = loaded.data;
  return (
    <section aria-labelledby="flow-title">
      <FlowHeader flow={flow} isNew={flowId === null} onChanged={loaded.setData} />
      {flowId && (
        <nav className="tabs" aria-label="Flow views">
          {tabs.map(([t, label]) => (
            <Link key={t} href={`/flows/${flowId}/${t}`} className={t === tab ? "tab active" : "tab"} aria-current={t === tab ? "page" : undefined}>
              {label}
            </Link>
          ))}
        </nav>
      )}
      {(tab === "canvas" || !flowId) && <Editor key={flow.id || "new"} saved={flow} connectors={catalog.data} connections={conns.data ?? []} onSaved={loaded.setData} />}
      {flowId && tab === "executions" && <ExecutionsTab flowId={flowId} />}
      {flowId && tab === "errors" && <AnalyticsTab flowId={flowId} />}
      {flowId && tab === "revisions" && <RevisionsTab flow={flow} connectors={catalog.data} />}
    </section>
  );
}

function FlowHeader({ flow, isNew, onChanged }: { flow: Flow; isNew: boolean; onChanged: (f: Flow) => void }) {
  const { client, me } = useSession();
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  async function lifecycle(start: boolean) {
    setBusy(true);
    setError("");
    try {
      const r = start ? await client.startFlow(flow.id) : await client.stopFlow(flow.id);
      onChanged(r.data ?? (await client.flow(flow.id)).data);
    } catch (e) {
      setError(describe(e));
    } finally {
      setBusy(false);
    }
  }
  const running = flow.status === "active" || flow.status === "starting";
  return (
    <div className="page-head">
      <div>
        <h1 id="flow-title">{isNew ? "New flow" : flow.name}</h1>
        {!isNew && (
          <p className="muted small">
            <Status value={flow.status} /> revision <span data-testid="revision">{flow.revision}</span> · id <code>{flow.id}</code>
            {flow.type === "webhook" && (
              <>
                {" "}
                · webhook <code>POST /hooks/{flow.id}</code>
              </>
            )}
            {flow.statusReason && <span className="error"> · {flow.statusReason.message}</span>}
          </p>
        )}
      </div>
      {!isNew && can(me, "flows.control") && (
        <div className="actions">
          {running ? (
            <button type="button" disabled={busy} onClick={() => lifecycle(false)}>
              Stop flow
            </button>
          ) : (
            <button type="button" className="primary" disabled={busy} onClick={() => lifecycle(true)}>
              Start flow
            </button>
          )}
        </div>
      )}
      <ErrorText>{error}</ErrorText>
    </div>
  );
}

interface Conflict {
  theirs: Flow;
}

function Editor({ saved, connectors, connections, onSaved }: { saved: Flow; connectors: Connector[]; connections: Connection[]; onSaved: (f: Flow) => void }) {
  const { client, me } = useSession();
  const [, navigate] = useLocation();
  const [draft, setDraft] = useState<Flow>(saved);
  const [moved, setMoved] = useState<Record<string, Point>>({});
  const [selected, setSelected] = useState<{ node?: string; edge?: number }>({});
  const [placed, setPlaced] = useState<Placed>({ nodes: {}, edges: {}, flow: [] });
  const [message, setMessage] = useState("");
  const [error, setError] = useState("");
  const [conflict, setConflict] = useState<Conflict | null>(null);
  const [saving, setSaving] = useState(false);
  const isNew = saved.id === "";
  const readOnly = !can(me, "flows.update");
  const nodes = draft.graph.nodes;
  const edges = draft.graph.edges;
  const positions = useMemo(() => layout(nodes, edges, moved), [nodes, edges, moved]);
  const patch = useMemo(() => mergePatch(saved, draft), [saved, draft]);
  const dirty = isNew || Object.keys(patch).length > 0;

  // Leaving with unsaved changes asks first.
  useEffect(() => {
    if (!dirty || isNew) return;
    const warn = (e: BeforeUnloadEvent) => e.preventDefault();
    window.addEventListener("beforeunload", warn);
    return () => window.removeEventListener("beforeunload", warn);
  }, [dirty, isNew]);

  function setGraph(n: FlowNode[], e: FlowEdge[]) {
    setDraft((d) => ({ ...d, graph: { ...d.graph, nodes: n, edges: e } }));
    setMessage("");
  }

  function addNode(base: Partial<FlowNode> & { type: string }, idBase: string) {
    const id = newNodeId(idBase, nodes.map((n) => n.id));
    const n: FlowNode = { id, ...base };
    const schema = configSchema(n, connectors);
    n.config = { ...defaultsOf(schema), ...(base.config ?? {}) };
    // New nodes go right of the rightmost one, so the canvas does not reshuffle.
    const xs = Object.values(positions);
    const x = xs.length ? Math.max(...xs.map((p) => p.x)) + 260 : 0;
    const y = xs.length ? Math.min(...xs.map((p) => p.y)) : 0;
    setMoved((m) => ({ ...m, [id]: { x, y } }));
    setGraph([...nodes, n], edges);
    setSelected({ node: id });
  }

  function updateNode(n: FlowNode) {
    setGraph(
      nodes.map((x) => (x.id === n.id ? n : x)),
      edges,
    );
  }

  function problemsOf(err: unknown, sent: Flow) {
    if (err instanceof ApiError && err.status === 400) {
      const p = place(err.problems, sent.graph.nodes, sent.graph.edges);
      setPlaced(p);
      const n = err.problems.length;
      setError(`The flow was not saved: ${n} problem${n === 1 ? "" : "s"}${p.flow.length ? `: ${p.flow.map((x) => x.message).join("; ")}` : " (shown on the nodes)"}.`);
      const first = Object.keys(p.nodes)[0];
      if (first) setSelected({ node: first });
      return;
    }
    setPlaced({ nodes: {}, edges: {}, flow: [] });
    setError(describe(err));
  }

  async function save(overwrite?: Flow) {
    setSaving(true);
    setError("");
    setMessage("");
    const sent = draft;
    try {
      if (isNew) {
        const r = await client.createFlow(writable(sent));
        setPlaced({ nodes: {}, edges: {}, flow: [] });
        navigate(`/flows/${r.data.id}`, { replace: true });
        return;
      }
      const base = overwrite ?? saved;
      const body = mergePatch(base, sent);
      if (Object.keys(body).length === 0) {
        setMessage("No changes to save.");
        onSaved(base);
        setConflict(null);
        return;
      }
      const r = await client.patchFlow(saved.id, body, base.revision);
      setPlaced({ nodes: {}, edges: {}, flow: [] });
      setConflict(null);
      setMessage(`Saved as revision ${r.data.revision}.`);
      onSaved(r.data);
      setDraft(r.data);
    } catch (e) {
      if (e instanceof ApiError && e.status === 412) {
        const theirs = (await client.flow(saved.id)).data;
        setConflict({ theirs });
        setError("");
      } else {
        problemsOf(e, sent);
      }
    } finally {
      setSaving(false);
    }
  }

  const selNode = nodes.find((n) => n.id === selected.node);
  const selEdge = selected.edge !== undefined ? edges[selected.edge] : undefined;
  return (
    <div className="editor">
      <div className="editor-bar">
        <label>
          Name
          <input value={draft.name} readOnly={readOnly} onChange={(e) => setDraft({ ...draft, name: e.target.value })} required aria-invalid={placed.flow.some((p) => p.path === "/name")} />
        </label>
        <label className="grow">
          Description
          <input value={draft.description ?? ""} readOnly={readOnly} onChange={(e) => setDraft({ ...draft, description: e.target.value || undefined })} />
        </label>
        {!readOnly && (
          <button type="button" className="primary" onClick={() => save()} disabled={saving || !dirty}>
            {saving ? "Saving…" : isNew ? "Create flow" : "Save"}
          </button>
        )}
        {!isNew && dirty && !readOnly && (
          <button type="button" onClick={() => (setDraft(saved), setPlaced({ nodes: {}, edges: {}, flow: [] }), setError(""))}>
            Discard changes
          </button>
        )}
      </div>
      {conflict && (
        <div role="alert" className="conflict">
          <strong>Someone else saved this flow</strong> (revision {conflict.theirs.revision}, after your revision {saved.revision}). Your changes are still here, not saved.
          <div className="actions">
            <button type="button" onClick={() => save(conflict.theirs)}>
              Save mine over theirs
            </button>
            <button
              type="button"
              onClick={() => {
                onSaved(conflict.theirs);
                setDraft(conflict.theirs);
                setConflict(null);
              }}
            >
              Load theirs (drop mine)
            </button>
          </div>
        </div>
      )}
      <ErrorText>{error}</ErrorText>
      {message && (
        <p role="status" className="ok">
          {message}
        </p>
      )}
      <div className="editor-main">
        {!readOnly && <Palette connectors={connectors} onAdd={addNode} />}
        <FlowCanvas
          label="Flow canvas"
          nodes={nodes}
          edges={edges}
          positions={positions}
          connectors={connectors}
          problems={placed.nodes}
          edgeProblems={placed.edges}
          selectedNode={selected.node}
          selectedEdge={selected.edge}
          onSelectNode={(id) => setSelected({ node: id })}
          onSelectEdge={(i) => setSelected({ edge: i })}
          onConnect={readOnly ? undefined : (s, p, t) => setGraph(nodes, connect(edges, s, p, t))}
          onMove={(id, p) => setMoved((m) => ({ ...m, [id]: p }))}
        />
        {selNode && (
          <NodePanel
            key={selNode.id}
            node={selNode}
            connectors={connectors}
            connections={connections}
            problems={placed.nodes[selNode.id] ?? []}
            readOnly={readOnly}
            onChange={updateNode}
            onDelete={() => {
              const r = removeNode(nodes, edges, selNode.id);
              setGraph(r.nodes, r.edges);
              setSelected({});
            }}
          />
        )}
        {selEdge && selected.edge !== undefined && (
          <EdgePanel
            edge={selEdge}
            problems={placed.edges[selected.edge] ?? []}
            readOnly={readOnly}
            onChange={(e) =>
              setGraph(
                nodes,
                edges.map((x, i) => (i === selected.edge ? e : x)),
              )
            }
            onDelete={() => {
              setGraph(
                nodes,
                edges.filter((_, i) => i !== selected.edge),
              );
              setSelected({});
            }}
          />
        )}
      </div>
      <ConnectByKeyboard nodes={nodes} connectors={connectors} readOnly={readOnly} onConnect={(s, p, t) => setGraph(nodes, connect(edges, s, p, t))} />
    </div>
  );
}

/** Palette adds nodes: flowd's built-in kinds, then each connector's actions and poll triggers. */
function Palette({ connectors, onAdd }: { connectors: Connector[]; onAdd: (n: Partial<FlowNode> & { type: string }, idBase: string) => void }) {
  return (
    <nav className="palette" aria-label="Add a node">
      <h2>Add a node</h2>
      <h3>Built in</h3>
      {builtinKinds.map((k) => (
        <button key={k.type} type="button" title={k.description} onClick={() => onAdd({ type: k.type, config: k.defaultConfig }, k.type.replace("trigger.", ""))}>
          {k.label}
        </button>
      ))}
      {connectors.map((c) => (
        <div key={c.name}>
          <h3 title={c.description}>{c.name}</h3>
          {Object.entries(c.actions ?? {}).map(([a, op]) => (
            <button key={`a:${a}`} type="button" title={op.description} onClick={() => onAdd({ type: "action", connector: c.name, action: a }, `${c.name}-${a}`)}>
              {op.title ?? a}
            </button>
          ))}
          {Object.entries(c.triggers ?? {}).map(([t, op]) => (
            <button key={`t:${t}`} type="button" title={op.description} onClick={() => onAdd({ type: "trigger.poll", connector: c.name, trigger: t }, `${c.name}-${t}`)}>
              {op.title ?? t} (poll)
            </button>
          ))}
        </div>
      ))}
    </nav>
  );
}

/** ConnectByKeyboard connects ports without a pointer: pick a source port and a target. */
function ConnectByKeyboard({ nodes, connectors, readOnly, onConnect }: { nodes: FlowNode[]; connectors: Connector[]; readOnly: boolean; onConnect: (s: string, p: string, t: string) => void }) {
  const [from, setFrom] = useState("");
  const [to, setTo] = useState("");
  const outs = useMemo(
    () =>
      nodes.flatMap((n) =>
        portsOf(n, connectors).map((p) => ({ value: `${n.id}\u0000${p}`, label: p ? `${n.id} · ${p}` : n.id })),
      ),
    [nodes, connectors],
  );
  if (readOnly || nodes.length < 2) return null;
  return (
    <form
      className="connect-form"
      aria-label="Connect nodes"
      onSubmit={(e) => {
        e.preventDefault();
        const [s, p] = from.split("\u0000");
        if (s && to) onConnect(s, p ?? "", to);
      }}
    >
      <label>
        From
        <select value={from} onChange={(e) => setFrom(e.target.value)}>
          <option value="">choose an output</option>
          {outs.map((o) => (
            <option key={o.value} value={o.value}>
              {o.label}
            </option>
          ))}
        </select>
      </label>
      <label>
        To
        <select value={to} onChange={(e) => setTo(e.target.value)}>
          <option value="">choose a node</option>
          {nodes
            .filter((n) => !(n.type ?? "").startsWith("trigger."))
            .map((n) => (
              <option key={n.id} value={n.id}>
                {n.id}
              </option>
            ))}
        </select>
      </label>
      <button type="submit" disabled={!from || !to}>
        Connect
      </button>
    </form>
  );
}
