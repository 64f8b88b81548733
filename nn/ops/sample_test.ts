import assert from "node:assert/strict";
import { tensor } from "../creation.ts";
import { sample } from "./sample.ts";
import { adamwUpdate } from "./adamw.ts";

async function ids(
  logits: number[][],
  u: number[],
  o: Parameters<typeof sample>[2] = {},
): Promise<number[]> {
  return [...await sample(tensor(logits), tensor(u), o).data()];
}

const OFF = { temperature: 1, topK: 0, topP: 1 };

Deno.test("sample() draws by inverse CDF in index order with the given uniform", async () => {
  // probabilities ∝ e^0, e^0, e^ln2 = 1/4, 1/4, 1/2
  const l = [0, 0, Math.log(2)];
  assert.deepEqual(await ids([l, l, l, l], [0, 0.24, 0.26, 0.99], OFF), [0, 0, 1, 2]);
  assert.deepEqual(await ids([l], [0.5], OFF), [2]);
});

Deno.test("sample() greedy is argmax (first index on ties) and ignores temperature", async () => {
  assert.deepEqual(
    await ids([[1, 5, 5, 2], [9, 0, 0, 0]], [0.9, 0.9], { greedy: true, temperature: 0 }),
    [1, 0],
  );
});

Deno.test("sample() divides by the temperature before the softmax", async () => {
  // t → 0.1 turns [0, ln2] into [0, 10 ln2]: p(1) = 1024/1025
  const l = [[0, Math.log(2)]];
  assert.deepEqual(await ids(l, [0.4], OFF), [1]); // p(0) = 1/3 > 0.4? no: 0.333 < 0.4 → 1
  assert.deepEqual(await ids(l, [0.3], OFF), [0]);
  assert.deepEqual(await ids(l, [0.3], { ...OFF, temperature: 0.1 }), [1]);
});

Deno.test("sample() top-k keeps the k largest (ties with the k-th kept)", async () => {
  const l = [[3, 1, 2, 0, 2]];
  // k = 1: only index 0 survives whatever the uniform
  assert.deepEqual(await ids(l, [0.999], { ...OFF, topK: 1 }), [0]);
  // k = 2: the 2nd largest is 2, so indices 0, 2 and 4 survive; index 1/3 never drawn
  for (const u of [0, 0.3, 0.6, 0.8, 0.999]) {
    const [i] = await ids(l, [u], { ...OFF, topK: 2 });
    assert.ok([0, 2, 4].includes(i), `u ${u} drew ${i}`);
  }
});

Deno.test("sample() top-p drops tokens once the mass before them exceeds p", async () => {
  // sorted probs 0.5, 0.3, 0.2 at indices 2, 0, 1
  const l = [[Math.log(0.3), Math.log(0.2), Math.log(0.5)]];
  // p = 0.55: mass before index 0 is 0.5 → kept; before index 1 it is 0.8 → dropped
  const seen = new Set<number>();
  for (const u of [0, 0.2, 0.4, 0.6, 0.8, 0.99]) {
    seen.add((await ids(l, [u], { ...OFF, topP: 0.55 }))[0]);
  }
  assert.deepEqual([...seen].sort(), [0, 2]);
  // tiny p keeps only the best token
  assert.deepEqual(await ids(l, [0.01], { ...OFF, topP: 1e-6 }), [2]);
});

Deno.test("sample() min-p drops tokens below minP × the best probability, after top-p", async () => {
  // probabilities 0.5, 0.3, 0.15, 0.05 at indices 2, 0, 1, 3
  const l = [[Math.log(0.3), Math.log(0.15), Math.log(0.5), Math.log(0.05)]];
  const drawn = async (o: Record<string, number>) => {
    const got = new Set<number>();
    for (let u = 0; u < 1; u += 0.02) got.add((await ids(l, [u], { ...OFF, ...o }))[0]);
    return [...got].sort();
  };
  // 0.2 × 0.5 = 0.1: 0.05 goes; the others are drawn in proportion (renormalized)
  assert.deepEqual(await drawn({ minP: 0.2 }), [0, 1, 2]);
  assert.deepEqual(await drawn({ minP: 0.5 }), [0, 2]); // 0.15 < 0.25
  assert.deepEqual(await drawn({ minP: 1 }), [2]);
  assert.deepEqual(await drawn({ minP: 0 }), [0, 1, 2, 3]);
  // after top-p (0.85 keeps 0.5, 0.3, 0.15 by the shifted mask): min-p 0.2 keeps the same three
  assert.deepEqual(await drawn({ topP: 0.85, minP: 0.2 }), [0, 1, 2]);
  // with the temperature: p ∝ p^(1/t); at t = 0.5, 0.15² / 0.5² = 0.09 < 0.2 → dropped
  assert.deepEqual(await drawn({ temperature: 0.5, minP: 0.2 }), [0, 2]);
  assert.throws(() => sample(tensor(l), tensor([0.5]), { minP: 1.5 }), /minP 1.5/);
});

Deno.test("sample() repetition penalty divides positive and multiplies negative seen logits", async () => {
  const seen = tensor([[1, 0, 1]], [1, 3], "u32");
  // logits [2, 1.5, -1] with penalty 2 → [1, 1.5, -2]: greedy picks index 1
  assert.deepEqual(
    await ids([[2, 1.5, -1]], [0], { greedy: true, repetitionPenalty: 2, seen }),
    [1],
  );
  // without the mask nothing changes
  assert.deepEqual(await ids([[2, 1.5, -1]], [0], { greedy: true, repetitionPenalty: 2 }), [0]);
});

Deno.test("sample() errors name the bad parameter", () => {
  assert.throws(() => sample(tensor([[1, 2]]), tensor([0.5]), { temperature: 0 }), /temperature 0/);
  assert.throws(() => sample(tensor([[1, 2]]), tensor([0.5]), { topP: 0 }), /topP 0/);
  assert.throws(() => sample(tensor([1, 2]), tensor([0.5])), /expected logits \[B, V\]/);
});

Deno.test("adamwUpdate() first step moves each weight by lr in the gradient's direction", async () => {
  const z = tensor([0, 0, 0]);
  const [p] = adamwUpdate(tensor([1, 1, 1]), tensor([3, -0.001, 0]), z, z, {
    lr: 0.1,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weightDecay: 0,
    step: 1,
  });
  const v = await p.data();
  assert.ok(Math.abs(v[0] - 0.9) < 1e-6 && Math.abs(v[1] - 1.1) < 1e-5 && v[2] === 1);
  assert.throws(
    () =>
      adamwUpdate(z, z, z, z, {
        lr: 1,
        beta1: 0.9,
        beta2: 0.9,
        eps: 0,
        weightDecay: 0,
        step: 0,
      }),
    /step 0/,
  );
});

Deno.test("kthLargest() equals the k-th value of a descending sort (repeats counted)", async () => {
  const { kthLargest } = await import("./sample.ts");
  let seed = 1;
  const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  for (const n of [1, 7, 64, 6400]) {
    for (const k of [1, 2, 5, 50, Math.max(1, n >> 1), n]) {
      if (k > n) continue;
      // few distinct values so ties straddle the k-th place; -Infinity entries included
      const x = Float64Array.from(
        { length: n },
        () => rnd() < 0.05 ? -Infinity : Math.floor(rnd() * 20) / 4,
      );
      const want = Float64Array.from(x).sort()[n - k];
      assert.equal(kthLargest(x, k), want, `n ${n} k ${k}`);
    }
  }
});
