/**
 * Next-token sampling in one kernel, in MiniMind's `generate()` order (HEAD, §1.11): logits /
 * temperature → repetition penalty on seen tokens (÷ if > 0, else ×) → top-k → top-p (sorted
 * cumulative softmax, mask shifted right so the best token always survives) → inverse-CDF sampling
 * with one host-drawn uniform per row (or argmax when greedy). Not differentiable.
 * @module
 */
// B = rows (sequences), V = vocabulary
import type { OpDef } from "../op.ts";
import { apply1, defineOp, NONDIFF } from "../op.ts";
import { fmt } from "../shape.ts";
import type { Tensor } from "../tensor.ts";

/** Params of `sample`. */
export interface SampleParams {
  /** Logits are divided by it (ignored when greedy; must be > 0 otherwise). */
  readonly temperature: number;
  /** Keep the k largest logits (ties with the k-th kept); 0 = off. */
  readonly topK: number;
  /** Nucleus mass; 1 = off. */
  readonly topP: number;
  /** Penalty on tokens marked in `seen`; 1 = off. */
  readonly repetitionPenalty: number;
  /** Argmax instead of sampling. */
  readonly greedy: boolean;
}

/** Filters one row in place (temperature, penalty, top-k, top-p); masked entries become −∞. */
function filterRow(
  x: Float64Array,
  seen: ArrayLike<number> | null,
  seenBase: number,
  p: SampleParams,
  order: Int32Array,
): void {
  const V = x.length;
  if (!p.greedy) {
    const t = p.temperature;
    for (let i = 0; i < V; i++) x[i] = x[i] / t;
  }
  if (seen && p.repetitionPenalty !== 1) {
    const r = p.repetitionPenalty;
    for (let i = 0; i < V; i++) {
      if (seen[seenBase + i] !== 0) x[i] = x[i] > 0 ? x[i] / r : x[i] * r;
    }
  }
  const k = Math.min(p.topK, V);
  if (k > 0 && k < V) {
    // the k-th largest value; everything strictly below it is dropped (torch: logits < kth)
    const vals = Float64Array.from(x).sort();
    const kth = vals[V - k];
    for (let i = 0; i < V; i++) if (x[i] < kth) x[i] = -Infinity;
  }
  if (p.topP < 1) {
    let n = 0;
    for (let i = 0; i < V; i++) if (x[i] > -Infinity) order[n++] = i;
    const idx = order.subarray(0, n).sort((a, b) => x[b] - x[a] || a - b);
    const mx = x[idx[0]];
    let z = 0;
    for (let j = 0; j < n; j++) z += Math.exp(x[idx[j]] - mx);
    // mask where cumsum > top_p, shifted right by one: token j is dropped when the mass strictly
    // before it already exceeds top_p
    let cum = 0;
    for (let j = 0; j < n; j++) {
      const i = idx[j];
      const pr = Math.exp(x[i] - mx) / z;
      if (j > 0 && cum > p.topP) x[i] = -Infinity;
      cum += pr;
    }
  }
}

/** logits [B, V] float, uniforms [B] float, seen? [B, V] → ids [B] i32. */
export const sampleOp: OpDef<SampleParams> = defineOp<SampleParams>({
  name: "sample",
  infer: (ins, p) => {
    const [l, u, s] = ins;
    const bad = ins.length < 2 || ins.length > 3 || l.shape.length !== 2 ||
      (l.dtype !== "f32" && l.dtype !== "f64") || u.shape.length !== 1 ||
      u.shape[0] !== l.shape[0] || (u.dtype !== "f32" && u.dtype !== "f64") ||
      (s !== undefined &&
        (s.shape.length !== 2 || s.shape[0] !== l.shape[0] || s.shape[1] !== l.shape[1]));
    if (bad) {
      throw new Error(
        `Cannot sample from ${
          ins.map((x) => `${x.dtype} ${fmt(x.shape)}`).join(", ")
        }: expected logits [B, V] float, uniforms [B] float and optional seen [B, V]`,
      );
    }
    if (!p.greedy && !(p.temperature > 0)) {
      throw new Error(`Cannot sample with temperature ${p.temperature}: it must be > 0`);
    }
    if (!(p.topP > 0 && p.topP <= 1)) {
      throw new Error(`Cannot sample with topP ${p.topP}: it must be in (0, 1]`);
    }
    if (!(Number.isInteger(p.topK) && p.topK >= 0)) {
      throw new Error(`Cannot sample with topK ${p.topK}: it must be an integer ≥ 0`);
    }
    if (!(p.repetitionPenalty > 0)) {
      throw new Error(`Cannot sample with repetitionPenalty ${p.repetitionPenalty}: need > 0`);
    }
    return [{ shape: [l.shape[0]], dtype: "i32" }];
  },
  cpu: ([l, u, seen], [ids], { inputs, params }) => {
    const [B, V] = inputs[0].shape;
    const x = new Float64Array(V);
    const order = new Int32Array(V);
    for (let b = 0; b < B; b++) {
      for (let i = 0; i < V; i++) x[i] = l[b * V + i];
      filterRow(x, seen ?? null, b * V, params, order);
      let best = 0;
      for (let i = 1; i < V; i++) if (x[i] > x[best]) best = i;
      if (params.greedy) {
        ids[b] = best;
        continue;
      }
      // inverse CDF in index order: the first i with Σ_{j≤i} p_j > u
      const mx = x[best];
      let z = 0;
      for (let i = 0; i < V; i++) z += Math.exp(x[i] - mx);
      const target = u[b] * z;
      let cum = 0, pick = -1, last = best;
      for (let i = 0; i < V; i++) {
        if (x[i] === -Infinity) continue;
        cum += Math.exp(x[i] - mx);
        last = i;
        if (cum > target) {
          pick = i;
          break;
        }
      }
      ids[b] = pick >= 0 ? pick : last;
    }
  },
  vjp: NONDIFF,
  examples: [
    {
      inputs: [{ shape: [3, 50] }, { shape: [3], values: [0.1, 0.5, 0.93] }],
      params: { temperature: 0.85, topK: 0, topP: 1, repetitionPenalty: 1, greedy: false },
      label: "plain",
    },
    {
      inputs: [
        { shape: [2, 40] },
        { shape: [2], values: [0.3, 0.7] },
        { shape: [2, 40], kind: "bool", dtype: "u32" },
      ],
      params: { temperature: 0.7, topK: 10, topP: 0.85, repetitionPenalty: 1.3, greedy: false },
      label: "top-k, top-p, penalty",
    },
    {
      inputs: [{ shape: [2, 30] }, { shape: [2], values: [0, 0] }],
      params: { temperature: 1, topK: 0, topP: 1, repetitionPenalty: 1, greedy: true },
      label: "greedy",
    },
  ],
});

/** Options of {@link sample}. */
export interface SampleOptions {
  /** Temperature (default 0.85, MiniMind's). */
  temperature?: number;
  /** Top-k (default 50; 0 = off). */
  topK?: number;
  /** Top-p (default 0.85; 1 = off). */
  topP?: number;
  /** Repetition penalty on `seen` tokens (default 1 = off). */
  repetitionPenalty?: number;
  /** Argmax (default false). */
  greedy?: boolean;
  /** u32/i32 [B, V], non-zero where a token already occurs in the row (prompt included). */
  seen?: Tensor;
}

/**
 * Samples one token per row with MiniMind's filters. The uniforms come from the host-side
 * key-based PRNG (`random.uniform(key, [B])`), so every backend draws the same tokens.
 *
 * @param logits last-position logits (B, V)
 * @param uniforms one uniform in [0, 1) per row (B)
 * @param options temperature, topK, topP, repetitionPenalty (+ `seen`), greedy
 * @returns token ids (B) i32
 * @example
 * ```ts
 * import { random, sample, tensor } from "@minimind/ts";
 * const logits = tensor([[0.1, 2.0, -1.0, 0.5]]);
 * const ids = sample(logits, random.uniform(random.key(0), [1]), { topK: 2 });
 * ```
 */
export function sample(logits: Tensor, uniforms: Tensor, options: SampleOptions = {}): Tensor {
  const params: SampleParams = {
    temperature: options.temperature ?? 0.85,
    topK: options.topK ?? 50,
    topP: options.topP ?? 0.85,
    repetitionPenalty: options.repetitionPenalty ?? 1,
    greedy: options.greedy ?? false,
  };
  const ins = options.seen ? [logits, uniforms, options.seen] : [logits, uniforms];
  return apply1(sampleOp, ins, params);
}
