import { describe, expect, it } from "vitest";
import type { Flow } from "../api";
import { mergePatch, writable } from "./flowdoc";

const flow: Flow = {
  id: "f1",
  name: "orders",
  description: "d",
  status: "active",
  revision: 3,
  type: "webhook",
  owners: [{ id: "u", type: "user" }],
  triggerStatus: { ok: true },
  graph: { nodes: [{ id: "hook", type: "trigger.webhook" }], edges: [] },
};

describe("writable", () => {
  it("keeps what the schema lets a client write", () => {
    expect(Object.keys(writable(flow)).sort()).toEqual(["description", "graph", "name", "owners"]);
  });
});

describe("mergePatch", () => {
  it("sends changed fields whole and removed ones as null", () => {
    const edited = { ...flow, description: undefined, graph: { nodes: [], edges: [] }, revision: 9 };
    expect(mergePatch(flow, edited)).toEqual({ description: null, graph: { nodes: [], edges: [] } });
    expect(mergePatch(flow, { ...flow })).toEqual({});
  });
});
