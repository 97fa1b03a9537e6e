// The flow's graph on a canvas (@xyflow/react): one card per node with an input handle and
// one output handle per port, edges labelled with their port and condition. Read-only unless
// onConnect is given; problems and an execution's path are drawn on it.
import { useEffect, useMemo } from "react";
import {
  Background,
  Controls,
  Handle,
  MarkerType,
  Position,
  ReactFlow,
  type Connection,
  type Edge,
  type Node,
  type NodeProps,
  type NodeChange,
  type EdgeChange,
  useReactFlow,
} from "@xyflow/react";
import "@xyflow/react/dist/style.css";
import type { Connector, FlowEdge, FlowNode, Problem } from "../api";
import { edgeKey, edgeLabel, type Path, type Point } from "../lib/graph";
import { isTrigger, nodeLabel, nodeSubtitle, portsOf } from "../lib/nodeTypes";

interface CardData extends Record<string, unknown> {
  node: FlowNode;
  ports: string[];
  problems: Problem[];
  onPath: boolean;
  failed: boolean;
  dimmed: boolean;
}

type CardNode = Node<CardData, "card">;

function Card({ data, selected }: NodeProps<CardNode>) {
  const { node, ports, problems, onPath, failed, dimmed } = data;
  const cls = ["card", selected && "selected", problems.length > 0 && "has-problems", onPath && "on-path", failed && "failed", dimmed && "dimmed"]
    .filter(Boolean)
    .join(" ");
  return (
    <div className={cls} data-node-id={node.id} aria-label={`Node ${nodeLabel(node)}`}>
      {!isTrigger(node) && <Handle type="target" position={Position.Left} id="in" aria-label={`Input of ${node.id}`} />}
      <div className="card-title">{nodeLabel(node)}</div>
      <div className="card-sub">{nodeSubtitle(node)}</div>
      {problems.length > 0 && (
        <div className="card-problems" role="note" data-testid={`problems-${node.id}`}>
          {problems.length === 1 ? problems[0].message : `${problems.length} problems: ${problems[0].message}`}
        </div>
      )}
      <div className="card-ports">
        {ports.map((p, i) => (
          <Handle
            key={p || "out"}
            type="source"
            position={Position.Right}
            id={p || "out"}
            style={{ top: `${((i + 1) * 100) / (ports.length + 1)}%` }}
            aria-label={p ? `Port ${p} of ${node.id}` : `Output of ${node.id}`}
            title={p || "output"}
          >
            {p && <span className="port-label">{p}</span>}
          </Handle>
        ))}
      </div>
    </div>
  );
}

const nodeTypes = { card: Card };

/** FitOnGrowth keeps every node in view when nodes are added or removed. */
function FitOnGrowth({ count }: { count: number }) {
  const { fitView } = useReactFlow();
  useEffect(() => {
    const t = setTimeout(() => void fitView({ padding: 0.2, maxZoom: 1, duration: 0 }), 0);
    return () => clearTimeout(t);
  }, [count, fitView]);
  return null;
}

/** handleOf is the output handle an edge leaves by: its port, else the node's first output. */
function handleOf(e: FlowEdge, nodes: FlowNode[], connectors: Connector[]): string {
  if (e.port) return e.port;
  const src = nodes.find((n) => n.id === e.source);
  const first = src ? portsOf(src, connectors)[0] : "";
  return first ? first : "out";
}

export interface FlowCanvasProps {
  nodes: FlowNode[];
  edges: FlowEdge[];
  positions: Record<string, Point>;
  connectors: Connector[];
  problems?: Record<string, Problem[]>;
  edgeProblems?: Record<number, Problem[]>;
  path?: Path;
  selectedNode?: string;
  selectedEdge?: number;
  onSelectNode?: (id: string | undefined) => void;
  onSelectEdge?: (index: number) => void;
  onConnect?: (source: string, port: string, target: string) => void;
  onMove?: (id: string, p: Point) => void;
  label: string;
}

export function FlowCanvas(props: FlowCanvasProps) {
  const { nodes, edges, positions, connectors, problems = {}, edgeProblems = {}, path, selectedNode, selectedEdge } = props;
  const editable = props.onConnect !== undefined;

  const rfNodes = useMemo<CardNode[]>(
    () =>
      nodes.map((n) => ({
        id: n.id,
        type: "card",
        position: positions[n.id] ?? { x: 0, y: 0 },
        selected: n.id === selectedNode,
        draggable: true,
        data: {
          node: n,
          ports: portsOf(n, connectors),
          problems: problems[n.id] ?? [],
          onPath: path?.nodes.has(n.id) ?? false,
          failed: path?.failed.has(n.id) ?? false,
          dimmed: path !== undefined && !path.nodes.has(n.id),
        },
      })),
    [nodes, positions, connectors, problems, path, selectedNode],
  );

  const rfEdges = useMemo<Edge[]>(
    () =>
      edges.map((e, i) => {
        const onPath = path?.edges.has(i) ?? false;
        const bad = (edgeProblems[i]?.length ?? 0) > 0;
        return {
          id: edgeKey(e, i),
          source: e.source,
          target: e.target,
          sourceHandle: handleOf(e, nodes, connectors),
          targetHandle: "in",
          label: edgeLabel(e) || undefined,
          selected: i === selectedEdge,
          animated: onPath,
          className: [onPath && "on-path", bad && "has-problems", path && !onPath && "dimmed"].filter(Boolean).join(" "),
          markerEnd: { type: MarkerType.ArrowClosed },
          data: { index: i },
          ariaLabel: `Edge from ${e.source}${e.port ? ` port ${e.port}` : ""} to ${e.target}${e.condition ? ` when ${e.condition}` : ""}`,
        };
      }),
    [edges, nodes, connectors, edgeProblems, path, selectedEdge],
  );

  // Selection comes through changes too, so a node focused with Tab and picked with Enter
  // opens its panel as a click does.
  function onNodesChange(changes: NodeChange<CardNode>[]) {
    for (const c of changes) {
      if (c.type === "position" && c.position) props.onMove?.(c.id, c.position);
      if (c.type === "select" && c.selected && c.id !== selectedNode) props.onSelectNode?.(c.id);
    }
  }

  function onEdgesChange(changes: EdgeChange[]) {
    for (const c of changes) {
      if (c.type !== "select" || !c.selected) continue;
      const i = rfEdges.findIndex((e) => e.id === c.id);
      if (i >= 0 && i !== selectedEdge) props.onSelectEdge?.(i);
    }
  }

  function onConnect(c: Connection) {
    if (!c.source || !c.target) return;
    props.onConnect?.(c.source, c.sourceHandle === "out" ? "" : (c.sourceHandle ?? ""), c.target);
  }

  return (
    <div className="canvas" aria-label={props.label} role="region">
      <ReactFlow
        nodes={rfNodes}
        edges={rfEdges}
        nodeTypes={nodeTypes}
        onNodesChange={onNodesChange}
        onEdgesChange={onEdgesChange}
        onConnect={editable ? onConnect : undefined}
        nodesConnectable={editable}
        onNodeClick={(_, n) => props.onSelectNode?.(n.id)}
        onEdgeClick={(_, e) => props.onSelectEdge?.((e.data as { index: number }).index)}
        onPaneClick={() => props.onSelectNode?.(undefined)}
        fitView
        fitViewOptions={{ padding: 0.2, maxZoom: 1 }}
        minZoom={0.2}
        deleteKeyCode={null}
        proOptions={{ hideAttribution: false }}
      >
        <FitOnGrowth count={nodes.length} />
        <Background />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}
