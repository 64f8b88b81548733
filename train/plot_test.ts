import assert from "node:assert/strict";
import { lineChartSvg, niceTicks } from "./plot.ts";

Deno.test("niceTicks: round steps; a range below float resolution gives one tick", () => {
  assert.deepEqual(niceTicks(0, 1), [0, 0.2, 0.4, 0.6, 0.8, 1]);
  assert.deepEqual(niceTicks(0.0051, 0.0051 * (1 + Number.EPSILON)), [0.0051]);
  assert.deepEqual(niceTicks(3, 3), [3]);
  // a one-point series with smoothing draws (it once looped until memory ran out)
  assert.ok(
    lineChartSvg([{ name: "loss", x: [1], y: [0.0051] }], { smooth: 0.9 }).startsWith("<svg"),
  );
});
