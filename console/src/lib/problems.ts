// Where each problem the API reports belongs on the screen. Problem paths are JSON pointers
// into the document that was sent: /graph/nodes/<i>/... names a node, /graph/edges/<i>/... an
// edge, /graph/nodes/<i>/config/<field>/... a field of that node's config form.
import type { FlowEdge, FlowNode, Problem } from "../api";

export interface Placed {
  /** Problems per node id. */
  nodes: Record<string, Problem[]>;
  /** Problems per edge index. */
  edges: Record<number, Problem[]>;
  /** Problems about the flow as a whole (name, owners, ...). */
  flow: Problem[];
}

/** pointer splits a JSON pointer into its unescaped tokens. */
export function pointer(path: string | undefined): string[] {
  if (!path || !path.startsWith("/")) return [];
  return path
    .slice(1)
    .split("/")
    .map((t) => t.replace(/~1/g, "/").replace(/~0/g, "~"));
}

export function place(problems: Problem[], nodes: FlowNode[], edges: FlowEdge[]): Placed {
  const out: Placed = { nodes: {}, edges: {}, flow: [] };
  for (const p of problems) {
    const t = pointer(p.path);
    const i = Number(t[2]);
    if (t[0] === "graph" && t[1] === "nodes" && Number.isInteger(i) && nodes[i]) {
      (out.nodes[nodes[i].id] ??= []).push(p);
    } else if (t[0] === "graph" && t[1] === "edges" && Number.isInteger(i) && edges[i]) {
      (out.edges[i] ??= []).push(p);
    } else {
      out.flow.push(p);
    }
  }
  return out;
}

/** ErrorTree is react-jsonschema-form's shape for errors shown under each field. */
export interface ErrorTree {
  __errors?: string[];
  [field: string]: ErrorTree | string[] | undefined;
}

/**
 * fieldErrors turns a node's problems into a form error tree, rooted at its config. Problems
 * about the node itself (not its config) are returned apart.
 */
export function fieldErrors(problems: Problem[]): { tree: ErrorTree; node: Problem[] } {
  const tree: ErrorTree = {};
  const node: Problem[] = [];
  for (const p of problems) {
    const t = pointer(p.path).slice(3); // drop graph, nodes, <i>
    if (t[0] !== "config") {
      node.push(p);
      continue;
    }
    let at: ErrorTree = tree;
    for (const k of t.slice(1)) {
      at = (at[k] as ErrorTree | undefined) ?? (at[k] = {});
    }
    (at.__errors ??= []).push(p.message);
  }
  return { tree, node };
}
