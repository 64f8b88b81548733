/**
 * Next-token sampling in one kernel, in MiniMind's `generate()` order (HEAD, §1.11): logits /
 * temperature → repetition penalty on seen tokens (÷ if > 0, else ×) → top-k → top-p (sorted
 * cumulative softmax, mask shifted right so the best token always survives) → min-p (llama.cpp's
 * and vLLM's: drop tokens below `minP` × the best one's probability, after top-p as both order it)
 * → inverse-CDF sampling with one host-drawn uniform per row (or argmax when greedy). Not
 * differentiable.
 * @module
 */
// B = rows (sequences), V = vocabulary
import type { KernelOp, WgslKernel } from "../op.ts";
import { defineOp, NONDIFF } from "../op.ts";
import { apply1 } from "../apply.ts";
import { fmt } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { cachedCode, NEG_INF, ROW_INDEX, rowGrid } from "../backend/webgpu/wgsl.ts";

/**
 * WGSL of `sample`: one 256-invocation workgroup per row, no sorting. Top-k finds the k-th
 * largest value by a 32-step bitwise search over order-preserving u32 keys of the floats
 * (count(key ≥ T) ≥ k); top-p finds the boundary value the same way on softmax mass
 * (Σ_{key ≥ T} p > top_p), then keeps only as many tokens tied at the boundary (lowest index
 * first) as the shifted mask would. The draw is an inverse CDF in index order over per-invocation
 * chunks (prefix sums of chunk masses, then a walk inside the crossing chunk).
 */
function sampleKernel(rows: number, v: number, p: SampleParams, hasSeen: boolean): WgslKernel {
  const useTopK = p.topK > 0 && p.topK < v;
  const useTopP = p.topP < 1;
  const useMinP = (p.minP ?? 0) > 0;
  // min-p keeps x ≥ max + log(minP) (thr), as one more term of every keep condition
  const minP = useMinP ? " && x >= thr" : "";
  const key = `sample ${useTopK} ${useTopP} ${hasSeen} ${useMinP}`;
  const code = cachedCode(key, () =>
    `@group(0) @binding(0) var<storage, read> logits: array<f32>;
@group(0) @binding(1) var<storage, read> unif: array<f32>;
${hasSeen ? "@group(0) @binding(2) var<storage, read> seen: array<u32>;" : ""}
@group(0) @binding(${hasSeen ? 3 : 2}) var<storage, read_write> ids: array<i32>;
struct U { rows: u32, v: u32, k: u32, greedy: u32, temp: f32, rep: f32, topp: f32, chunk: u32, lminp: f32 }
@group(1) @binding(0) var<uniform> u: U;
var<workgroup> rf: array<f32, 256>;
var<workgroup> ru: array<u32, 256>;
var<workgroup> pick: atomic<u32>;
var<workgroup> lastKept: atomic<u32>;
var<workgroup> base: u32;

fn val(i: u32) -> f32 {
  var x = logits[base + i];
  if (u.greedy == 0u) { x = x / u.temp; }
  ${
      hasSeen
        ? "if (u.rep != 1.0 && seen[base + i] != 0u) { x = select(x * u.rep, x / u.rep, x > 0.0); }"
        : ""
    }
  return x;
}
// order-preserving u32 key of an f32
fn key(x: f32) -> u32 {
  let b = bitcast<u32>(x);
  return select(b ^ 0x80000000u, ~b, (b >> 31u) == 1u);
}
fn unkey(k: u32) -> f32 {
  return bitcast<f32>(select(~k, k ^ 0x80000000u, (k >> 31u) == 1u));
}
fn sumU(x: u32, lid: u32) -> u32 {
  workgroupBarrier();
  ru[lid] = x;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { ru[lid] = ru[lid] + ru[lid + s]; }
    workgroupBarrier();
  }
  return ru[0];
}
fn sumF(x: f32, lid: u32) -> f32 {
  workgroupBarrier();
  rf[lid] = x;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { rf[lid] = rf[lid] + rf[lid + s]; }
    workgroupBarrier();
  }
  return rf[0];
}
fn maxF(x: f32, lid: u32) -> f32 {
  workgroupBarrier();
  rf[lid] = x;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) { rf[lid] = max(rf[lid], rf[lid + s]); }
    workgroupBarrier();
  }
  return rf[0];
}

@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = ${ROW_INDEX};
  if (row >= u.rows) { return; } // uniform across the workgroup
  if (lid == 0u) {
    base = row * u.v;
    atomicStore(&pick, 0xffffffffu);
    atomicStore(&lastKept, 0u);
  }
  workgroupBarrier();
  // the row maximum (first index on ties): argmax for greedy, shift for the softmax
  var bv = ${NEG_INF};
  var bi = 0xffffffffu;
  for (var i = lid; i < u.v; i += 256u) {
    let x = val(i);
    if (bi == 0xffffffffu || x > bv) { bv = x; bi = i; }
  }
  workgroupBarrier();
  rf[lid] = bv;
  ru[lid] = bi;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      let ov = rf[lid + s];
      let oi = ru[lid + s];
      if (oi != 0xffffffffu && (ru[lid] == 0xffffffffu || ov > rf[lid] || (ov == rf[lid] && oi < ru[lid]))) {
        rf[lid] = ov;
        ru[lid] = oi;
      }
    }
    workgroupBarrier();
  }
  let mx = rf[0];
  let best = ru[0];
  let thr = ${useMinP ? "mx + u.lminp" : "0.0"};
  if (u.greedy != 0u) {
    if (lid == 0u) { ids[row] = i32(best); }
    return;
  }
  // top-k: the largest key T with count(key ≥ T) ≥ k
  var tk = 0u;
  ${
      useTopK
        ? `for (var bit = 31i; bit >= 0i; bit--) {
    let cand = tk | (1u << u32(bit));
    var c = 0u;
    for (var i = lid; i < u.v; i += 256u) { if (key(val(i)) >= cand) { c += 1u; } }
    if (sumU(c, lid) >= u.k) { tk = cand; }
  }`
        : ""
    }
  var z = 0.0;
  for (var i = lid; i < u.v; i += 256u) {
    let x = val(i);
    if (key(x) >= tk) { z += exp(x - mx); }
  }
  z = sumF(z, lid);
  // top-p: boundary key vb = the largest T with Σ_{key ≥ T} p > top_p
  var vb = 0u;
  var nkeep = 0xffffffffu;
  ${
      useTopP
        ? `for (var bit = 31i; bit >= 0i; bit--) {
    let cand = vb | (1u << u32(bit));
    var m = 0.0;
    for (var i = lid; i < u.v; i += 256u) {
      let x = val(i);
      let kx = key(x);
      if (kx >= tk && kx >= cand) { m += exp(x - mx); }
    }
    if (sumF(m, lid) / z > u.topp) { vb = cand; }
  }
  var above = 0.0;
  for (var i = lid; i < u.v; i += 256u) {
    let x = val(i);
    let kx = key(x);
    if (kx >= tk && kx > vb) { above += exp(x - mx); }
  }
  above = sumF(above, lid) / z;
  let pvb = exp(unkey(vb) - mx) / z;
  nkeep = u32(max(floor((u.topp - above) / pvb), 0.0)) + 1u;`
        : ""
    }
  // chunked inverse CDF: invocation lid owns [lo, hi)
  let lo = min(lid * u.chunk, u.v);
  let hi = min(lo + u.chunk, u.v);
  var ties = 0u;
  ${useTopP ? "for (var i = lo; i < hi; i++) { if (key(val(i)) == vb) { ties += 1u; } }" : ""}
  workgroupBarrier();
  ru[lid] = ties;
  workgroupBarrier();
  if (lid == 0u) {
    var acc = 0u;
    for (var j = 0u; j < 256u; j++) { let c = ru[j]; ru[j] = acc; acc += c; }
  }
  workgroupBarrier();
  let tieBase = ru[lid];
  var rank = tieBase;
  var w = 0.0;
  for (var i = lo; i < hi; i++) {
    let x = val(i);
    let kx = key(x);
    var keep = kx >= tk && kx >= vb;
    if (kx == vb${useTopP ? "" : " && false"}) { keep = keep && rank < nkeep; rank += 1u; }
    keep = keep${minP};
    if (keep) { w += exp(x - mx); }
  }
  workgroupBarrier();
  rf[lid] = w;
  workgroupBarrier();
  if (lid == 0u) {
    var acc = 0.0;
    for (var j = 0u; j < 256u; j++) { let c = rf[j]; rf[j] = acc; acc += c; }
    ru[0] = bitcast<u32>(acc);
  }
  workgroupBarrier();
  let goal = unif[row] * bitcast<f32>(ru[0]);
  // walk the own chunk again from its prefix mass: the first crossing (lowest index) wins
  var cum = rf[lid];
  rank = tieBase;
  if (cum <= goal) {
    for (var i = lo; i < hi; i++) {
      let x = val(i);
      let kx = key(x);
      var keep = kx >= tk && kx >= vb;
      if (kx == vb${useTopP ? "" : " && false"}) { keep = keep && rank < nkeep; rank += 1u; }
      keep = keep${minP};
      if (keep) {
        atomicMax(&lastKept, i);
        cum += exp(x - mx);
        if (cum > goal) { atomicMin(&pick, i); break; }
      }
    }
  } else {
    for (var i = lo; i < hi; i++) {
      let x = val(i);
      let kx = key(x);
      var keep = kx >= tk && kx >= vb;
      if (kx == vb${useTopP ? "" : " && false"}) { keep = keep && rank < nkeep; rank += 1u; }
      keep = keep${minP};
      if (keep) { atomicMax(&lastKept, i); }
    }
  }
  workgroupBarrier();
  if (lid == 0u) {
    var r = atomicLoad(&pick);
    if (r == 0xffffffffu) { r = atomicLoad(&lastKept); }
    ids[row] = i32(r);
  }
}`);
  return {
    code,
    workgroups: rowGrid(rows),
    uniforms: [
      rows,
      v,
      p.topK,
      p.greedy ? 1 : 0,
      p.temperature,
      p.repetitionPenalty,
      p.topP,
      Math.ceil(v / 256),
      useMinP ? Math.log(p.minP!) : 0,
    ],
    uniformTypes: ["u32", "u32", "u32", "u32", "f32", "f32", "f32", "u32", "f32"],
  };
}

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
  /**
   * Min-p: after top-p, drop tokens whose probability is below `minP` × the most likely one's
   * (0 or absent = off; at most 1).
   */
  readonly minP?: number;
}

/**
 * The k-th largest of `x` (1 ≤ k ≤ length), counting repeats: a min-heap of the k largest seen,
 * O(V log k) — a full sort of a 6400-entry row costs ~1 ms, this ~0.05 ms at k = 50.
 */
export function kthLargest(x: ArrayLike<number>, k: number): number {
  const n = x.length;
  if (k * 4 > n) return Float64Array.from(x).sort()[n - k];
  const h = new Float64Array(k);
  for (let i = 0; i < k; i++) h[i] = x[i];
  h.sort(); // a sorted array is a valid min-heap
  for (let i = k; i < n; i++) {
    const v = x[i];
    if (!(v > h[0])) continue;
    // replace the root and sift it down
    let j = 0;
    for (;;) {
      const l = 2 * j + 1;
      if (l >= k) break;
      const c = l + 1 < k && h[l + 1] < h[l] ? l + 1 : l;
      if (!(h[c] < v)) break;
      h[j] = h[c];
      j = c;
    }
    h[j] = v;
  }
  return h[0];
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
    const kth = kthLargest(x, k);
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
  if ((p.minP ?? 0) > 0) {
    // x ≥ max + log(minP) ⇔ p ≥ minP · p_max (the max itself always stays)
    let mx = -Infinity;
    for (let i = 0; i < V; i++) if (x[i] > mx) mx = x[i];
    const thr = mx + Math.log(p.minP!);
    for (let i = 0; i < V; i++) if (x[i] < thr) x[i] = -Infinity;
  }
}

/** logits [B, V] float, uniforms [B] float, seen? [B, V] → ids [B] i32. */
export const sampleOp: KernelOp<SampleParams, "sample"> = defineOp<SampleParams, "sample">({
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
    if (p.minP !== undefined && !(p.minP >= 0 && p.minP <= 1)) {
      throw new Error(`Cannot sample with minP ${p.minP}: it must be in [0, 1]`);
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
  wgsl: ({ inputs, params }) => [
    sampleKernel(inputs[0].shape[0], inputs[0].shape[1], params, inputs.length > 2),
  ],
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
    {
      inputs: [{ shape: [3, 60] }, { shape: [3], values: [0.2, 0.6, 0.97] }],
      params: {
        temperature: 0.8,
        topK: 0,
        topP: 0.95,
        repetitionPenalty: 1,
        greedy: false,
        minP: 0.2,
      },
      label: "min-p after top-p",
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
  /** Min-p (default 0 = off): drop tokens below `minP` × the best one's probability. */
  minP?: number;
  /** u32/i32 [B, V], non-zero where a token already occurs in the row (prompt included). */
  seen?: Tensor;
}

/**
 * Samples one token per row with MiniMind's filters. The uniforms come from the host-side
 * key-based PRNG (`random.uniform(key, [B])`), so every backend draws the same tokens.
 *
 * @param logits last-position logits (B, V)
 * @param uniforms one uniform in [0, 1) per row (B)
 * @param options temperature, topK, topP, repetitionPenalty (+ `seen`), minP, greedy
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
    ...(options.minP ? { minP: options.minP } : {}),
  };
  const ins = options.seen ? [logits, uniforms, options.seen] : [logits, uniforms];
  return apply1(sampleOp, ins, params);
}
