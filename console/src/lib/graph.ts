// Flow graphs as the canvas draws them. A flow document has no coordinates, so nodes are laid
// out left to right by dagre; a node the user dragged keeps its place while the page is open.
import dagre from "@dagrejs/dagre";
import type { FlowEdge, FlowNode, Step } from "../api";

export interface Point {
  x: number;
  y: number;
}

export const NODE_WIDTH = 210;
export const NODE_HEIGHT = 64;

/** layout places every node without a known position, keeping the known ones. */
export function layout(nodes: FlowNode[], edges: FlowEdge[], known: Record<string, Point> = {}): Record<string, Point> {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 40, ranksep: 80 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const n of nodes) g.setNode(n.id, { width: NODE_WIDTH, height: NODE_HEIGHT });
  for (const e of edges) {
    if (g.hasNode(e.source) && g.hasNode(e.target)) g.setEdge(e.source, e.target);
  }
  dagre.layout(g);
  const out: Record<string, Point> = {};
  for (const n of nodes) {
    if (known[n.id]) {
      out[n.id] = known[n.id];
      continue;
    }
    const p = g.node(n.id);
    out[n.id] = p ? { x: Math.round(p.x - NODE_WIDTH / 2), y: Math.round(p.y - NODE_HEIGHT / 2) } : { x: 0, y: 0 };
  }
  return out;
}

/** edgeKey identifies an edge on the canvas: flow edges need not have ids. */
export function edgeKey(e: FlowEdge, index: number): string {
  return e.id ? `e:${e.id}` : `e${index}:${e.source}>${e.target}:${e.port ?? ""}`;
}

/** edgeLabel shows an edge's port and condition. */
export function edgeLabel(e: FlowEdge): string {
  const parts: string[] = [];
  if (e.port) parts.push(e.port);
  if (e.condition) parts.push(`when ${e.condition}`);
  return parts.join(" · ");
}

/** connect adds an edge from a node's port to another node, refusing duplicates and self-loops. */
export function connect(edges: FlowEdge[], source: string, port: string | null | undefined, target: string): FlowEdge[] {
  if (source === target) return edges;
  const p = port ?? "";
  if (edges.some((e) => e.source === source && e.target === target && (e.port ?? "") === p)) return edges;
  const e: FlowEdge = { source, target };
  if (p) e.port = p;
  return [...edges, e];
}

/** removeNode drops a node and every edge touching it. */
export function removeNode(nodes: FlowNode[], edges: FlowEdge[], id: string): { nodes: FlowNode[]; edges: FlowEdge[] } {
  return { nodes: nodes.filter((n) => n.id !== id), edges: edges.filter((e) => e.source !== id && e.target !== id) };
}

/** Path is what an execution went through: nodes that ran and the edges it followed. */
export interface Path {
  nodes: Set<string>;
  failed: Set<string>;
  edges: Set<number>;
}

/**
 * pathOf reads an execution's steps. A node is on the path when a step of it ran (skipped steps
 * are not); an edge is on it when both ends ran and the source left by the edge's port.
 */
export function pathOf(edges: FlowEdge[], steps: Step[]): Path {
  const ran = new Map<string, Set<string>>();
  const failed = new Set<string>();
  for (const s of steps) {
    if (s.status === "skipped") continue;
    if (!ran.has(s.nodeId)) ran.set(s.nodeId, new Set());
    ran.get(s.nodeId)!.add(s.port ?? "");
    if (s.status === "failed") failed.add(s.nodeId);
  }
  const out: Path = { nodes: new Set(ran.keys()), failed, edges: new Set() };
  edges.forEach((e, i) => {
    const ports = ran.get(e.source);
    if (!ports || !ran.has(e.target)) return;
    const p = e.port ?? "";
    if (ports.has(p) || (p === "success" && ports.has("")) || (p === "" && ports.size > 0)) out.edges.add(i);
  });
  return out;
}

/** stepDuration is a step's run time in milliseconds, when it finished. */
export function stepDuration(s: Step): number | undefined {
  if (!s.startedAt || !s.finishedAt) return undefined;
  const ms = Date.parse(s.finishedAt) - Date.parse(s.startedAt);
  return Number.isFinite(ms) && ms >= 0 ? ms : undefined;
}
