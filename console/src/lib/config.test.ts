import { describe, expect, it } from "vitest";
import { prune } from "./config";

describe("prune", () => {
  it("drops undefined values and empty objects, keeps falsy values and arrays", () => {
    expect(prune({ mode: "sync", auth: { type: undefined }, timeoutMs: undefined, headers: {}, merge: false, n: 0, list: [{}], s: "" })).toEqual({
      mode: "sync",
      merge: false,
      n: 0,
      list: [{}],
      s: "",
    });
  });
});
