import { describe, expect, it } from "vitest";
import { minuteSeries } from "./series";

describe("minuteSeries", () => {
  it("fills every minute of the window, with zeros where nothing ran", () => {
    const s = minuteSeries({
      from: "2026-12-02T10:00:30Z",
      to: "2026-12-02T10:03:10Z",
      perMinute: [{ minute: "2026-12-02T10:02:00Z", success: 3, error: 1, ignored: 0 }],
    });
    expect(s.minutes).toEqual([0, 1, 2, 3].map((i) => Date.parse("2026-12-02T10:00:00Z") / 1000 + i * 60));
    expect(s.success).toEqual([0, 0, 3, 0]);
    expect(s.error).toEqual([0, 0, 1, 0]);
  });
  it("draws nothing for an empty or absurd window", () => {
    expect(minuteSeries({ perMinute: [] }).minutes).toEqual([]);
    expect(minuteSeries({ from: "2026-12-02T10:00:00Z", to: "2026-12-09T10:00:00Z", perMinute: [] }).minutes).toEqual([]);
  });
});
