import assert from "node:assert/strict";
import { gae, groupAdvantages, SpoTracker } from "./advantages.ts";

const assertEquals = (a: unknown, b: unknown) => assert.deepEqual(a, b);
const assertAlmostEquals = (a: number, b: number, tol: number, msg?: string) =>
  assert.ok(Math.abs(a - b) <= tol, msg ?? `got ${a} want ${b} (±${tol})`);
const assertThrows = (f: () => unknown, _e: unknown, text: string) =>
  assert.throws(f, (e: Error) => e.message.includes(text));

const close = (got: ArrayLike<number>, want: number[], tol = 1e-5) => {
  assertEquals(got.length, want.length);
  want.forEach((w, i) => assertAlmostEquals(got[i], w, tol, `[${i}] got ${got[i]} want ${w}`));
};

Deno.test("gae: hand-computed deltas and returns (γ = 1, λ = 0.95), unwhitened", () => {
  // t=2: δ = 1 − 0.3 = 0.7; t=1: δ = 0.3 − 0.4, A = −0.1 + 0.95·0.7; t=0: δ = 0.4 − 0.5, A = −0.1 + 0.95·0.565
  const r = gae([0, 0, 1], [0.5, 0.4, 0.3], [1, 1, 1], 1, { whiten: false });
  close(r.advantages, [0.43675, 0.565, 0.7]);
  close(r.returns, [0.93675, 0.965, 1.0]);
});

Deno.test("gae: whitening uses the masked mean and variance of the batch", () => {
  // row 0 as above; row 1 masked after its first token: reward 2 at t=0, values masked to 0
  const r = gae([0, 0, 1, 2, 0, 0], [0.5, 0.4, 0.3, 1, 0, 0], [1, 1, 1, 1, 0, 0], 2);
  const raw = [0.43675, 0.565, 0.7, 1]; // row 1: δ₀ = 2 + 0 − 1 = 1, later δ = 0
  const mu = raw.reduce((a, b) => a + b) / 4;
  const sd = Math.sqrt(raw.reduce((a, b) => a + (b - mu) ** 2, 0) / 4 + 1e-8);
  close(r.advantages, [...raw.map((x) => (x - mu) / sd), 0, 0]);
  close(r.returns, [0.93675, 0.965, 1.0, 2, 0, 0]);
});

Deno.test("gae: rejects arrays of the wrong length", () => {
  assertThrows(() => gae([0, 1], [0], [1, 1], 1), Error, "values of length 1");
});

Deno.test("groupAdvantages: (r − mean)/(population std + 1e-4) per contiguous group", () => {
  const sd = Math.sqrt(2 / 3);
  close(groupAdvantages([1, 2, 3, 5, 5, 5], 3), [-1 / (sd + 1e-4), 0, 1 / (sd + 1e-4), 0, 0, 0]);
  close(groupAdvantages([1, 3], 2, { unbiased: true }), [
    -1 / (Math.SQRT2 + 1e-4),
    1 / (Math.SQRT2 + 1e-4),
  ]);
  assertThrows(() => groupAdvantages([1, 2, 3], 2), Error, "groups of 2");
});

Deno.test("SpoTracker: prior, baseline, clamped advantages and the ρ rule", () => {
  const t = new SpoTracker();
  assertEquals(t.state, { alpha: 1, beta: 1, lastMeanLogprob: null }); // N0 = 2, α = β = 1
  assertAlmostEquals(t.baseline(), 0, 1e-12); // 6·½ − 3
  close(t.advantages([1, 7, -9]), [1, 5, -5]);
  // first update: ρ = 0.9, r̂ = mean((0 + 3)/6, (3 + 3)/6) = 0.75
  assertAlmostEquals(t.update([0, 3], -1), 0.9, 1e-12);
  assertAlmostEquals(t.state.alpha, 1.65, 1e-12);
  assertAlmostEquals(t.state.beta, 1.15, 1e-12);
  assertAlmostEquals(t.baseline(), 6 * 1.65 / 2.8 - 3, 1e-12);
  // second: |Δ| = 0.03 → ρ = 2^(−0.5); r̂ = 0
  assertAlmostEquals(t.update([-3], -1.03), Math.SQRT1_2, 1e-12);
  assertAlmostEquals(t.state.alpha, 1.65 * Math.SQRT1_2, 1e-12);
  assertAlmostEquals(t.state.beta, 1.15 * Math.SQRT1_2 + 1, 1e-12);
  // a large move clamps ρ to 0.5; a tiny one to 0.96
  assertEquals(t.update([0], -2), 0.5);
  assertEquals(t.update([0], -2), 0.96);
  // the state round-trips (resume)
  const u = new SpoTracker({}, t.state);
  assertEquals(u.baseline(), t.baseline());
});

Deno.test("SpoTracker: a custom reward range maps onto [0, 1]", () => {
  const t = new SpoTracker({ rewardRange: [0, 4] });
  assertAlmostEquals(t.baseline(), 2, 1e-12);
  t.update([4, 4], 0); // r̂ = 1: α = 0.9 + 1, β = 0.9
  assertAlmostEquals(t.baseline(), 4 * 1.9 / 2.8, 1e-12);
});
