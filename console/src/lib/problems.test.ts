import { describe, expect, it } from "vitest";
import { fieldErrors, place, pointer } from "./problems";

const nodes = [
  { id: "hook", type: "trigger.webhook" },
  { id: "shape", type: "action", connector: "transform", action: "map" },
];
const edges = [{ source: "hook", target: "shape" }];

describe("place", () => {
  it("puts node, edge and flow problems where their paths point", () => {
    const placed = place(
      [
        { code: "invalid_config", message: "missing fields", path: "/graph/nodes/1/config/fields" },
        { code: "invalid_port", message: "bad port", path: "/graph/edges/0/port" },
        { code: "required", message: "name is required", path: "/name" },
        { code: "x", message: "no such node", path: "/graph/nodes/7/type" },
      ],
      nodes,
      edges,
    );
    expect(Object.keys(placed.nodes)).toEqual(["shape"]);
    expect(placed.nodes.shape[0].message).toBe("missing fields");
    expect(placed.edges[0][0].code).toBe("invalid_port");
    expect(placed.flow.map((p) => p.path)).toEqual(["/name", "/graph/nodes/7/type"]);
  });
});

describe("fieldErrors", () => {
  it("nests config problems by field and keeps the others apart", () => {
    const { tree, node } = fieldErrors([
      { code: "required", message: "missing fields", path: "/graph/nodes/1/config/fields" },
      { code: "enum", message: "bad mode", path: "/graph/nodes/1/config/auth/type" },
      { code: "invalid", message: "unknown connector", path: "/graph/nodes/1/connector" },
    ]);
    expect(tree).toEqual({ fields: { __errors: ["missing fields"] }, auth: { type: { __errors: ["bad mode"] } } });
    expect(node.map((p) => p.message)).toEqual(["unknown connector"]);
  });
});

describe("pointer", () => {
  it("unescapes tokens", () => {
    expect(pointer("/graph/nodes/0/config/a~1b~0c")).toEqual(["graph", "nodes", "0", "config", "a/b~c"]);
    expect(pointer("name")).toEqual([]);
  });
});
