import { describe, expect, it } from "vitest";
import { connect, edgeLabel, layout, pathOf, removeNode, stepDuration } from "./graph";
import { newNodeId, portsOf } from "./nodeTypes";

const nodes = [
  { id: "hook", type: "trigger.webhook" },
  { id: "check", type: "if", config: { condition: "true" } },
  { id: "yes", type: "respond" },
  { id: "no", type: "respond" },
];
const edges = [
  { source: "hook", target: "check" },
  { source: "check", target: "yes", port: "true" },
  { source: "check", target: "no", port: "false" },
];

describe("layout", () => {
  it("places nodes left to right and keeps known positions", () => {
    const p = layout(nodes, edges, { no: { x: 999, y: 5 } });
    expect(p.hook.x).toBeLessThan(p.check.x);
    expect(p.check.x).toBeLessThan(p.yes.x);
    expect(p.no).toEqual({ x: 999, y: 5 });
  });
});

describe("connect", () => {
  it("adds an edge with its port once, never a self-loop", () => {
    let e = connect([], "check", "true", "yes");
    expect(e).toEqual([{ source: "check", target: "yes", port: "true" }]);
    e = connect(e, "check", "true", "yes");
    expect(e).toHaveLength(1);
    expect(connect(e, "yes", null, "yes")).toBe(e);
    expect(connect([], "hook", "", "check")).toEqual([{ source: "hook", target: "check" }]);
  });
});

describe("removeNode", () => {
  it("drops the node's edges", () => {
    const r = removeNode(nodes, edges, "check");
    expect(r.nodes.map((n) => n.id)).toEqual(["hook", "yes", "no"]);
    expect(r.edges).toEqual([]);
  });
});

describe("pathOf", () => {
  it("follows the ports the steps left by", () => {
    const p = pathOf(edges, [
      { nodeId: "hook", type: "trigger.webhook", status: "succeeded", attempt: 0 },
      { nodeId: "check", type: "if", status: "succeeded", attempt: 0, port: "true" },
      { nodeId: "no", type: "respond", status: "skipped", attempt: 0 },
      { nodeId: "yes", type: "respond", status: "failed", attempt: 1 },
    ]);
    expect([...p.nodes].sort()).toEqual(["check", "hook", "yes"]);
    expect([...p.edges].sort()).toEqual([0, 1]);
    expect([...p.failed]).toEqual(["yes"]);
  });
});

describe("labels and ids", () => {
  it("shows port and condition on an edge", () => {
    expect(edgeLabel({ source: "a", target: "b", port: "true", condition: "input.x > 1" })).toBe("true · when input.x > 1");
    expect(edgeLabel({ source: "a", target: "b" })).toBe("");
  });
  it("picks free node ids", () => {
    expect(newNodeId("transform map", ["transform-map"])).toBe("transform-map-2");
    expect(newNodeId("!!", [])).toBe("node");
  });
  it("knows each node's ports", () => {
    expect(portsOf({ id: "s", type: "switch", config: { cases: [{ name: "big" }] } }, [])).toEqual(["big", "default"]);
    expect(portsOf({ id: "r", type: "respond" }, [])).toEqual([]);
    expect(portsOf({ id: "a", type: "action", connector: "x", action: "y" }, [{ name: "x", version: "1", actions: { y: { ports: ["retry"] } } }])).toEqual(["success", "error", "retry"]);
  });
  it("measures a finished step", () => {
    expect(stepDuration({ nodeId: "a", type: "if", status: "succeeded", attempt: 0, startedAt: "2026-01-01T00:00:00.000Z", finishedAt: "2026-01-01T00:00:00.250Z" })).toBe(250);
    expect(stepDuration({ nodeId: "a", type: "if", status: "running", attempt: 0, startedAt: "2026-01-01T00:00:00Z" })).toBeUndefined();
  });
});
