/**
 * Fused softmax cross-entropy with an ignore index (llm.c `crossentropy_softmax_backward`):
 * forward saves the row log-sum-exp, backward writes (softmax − onehot)·ct in one pass.
 * @module
 */
// N = rows (tokens), V = classes (vocab)
import { isFloat } from "../dtype.ts";
import type { KernelOp } from "../op.ts";
import { defineOp, NONDIFF, STATUS_BINDING } from "../op.ts";
import { apply, apply1 } from "../apply.ts";
import { fmt } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { maximum, notEqual } from "./binary.ts";
import { cast, div, mul } from "./arith.ts";
import { sum } from "./reduce.ts";
import { reshape } from "./movement.ts";
import { rowExp, rowStats } from "../backend/cpu/simd/ops.ts";
import {
  grid,
  GRID_ARGS,
  gridIndex,
  ROW_ARGS,
  rowLayout,
  rowMaxSumExp,
  statusDecl,
} from "../backend/webgpu/wgsl.ts";

/** Params of the cross-entropy ops. */
export interface CrossEntropyParams {
  /** Targets equal to this get loss 0 and no gradient. */
  readonly ignoreIndex: number;
}

/** logits [N, V], targets [N] → loss [N] (0 where ignored), lse [N]. */
export const crossEntropyOp: KernelOp<CrossEntropyParams, "cross_entropy"> = defineOp<
  CrossEntropyParams,
  "cross_entropy"
>({
  name: "cross_entropy",
  infer: ([l, t]) => {
    if (
      l.shape.length !== 2 || !isFloat(l.dtype) || t.shape.length !== 1 ||
      t.shape[0] !== l.shape[0] || t.dtype !== "i32"
    ) {
      throw new Error(
        `Cannot compute cross-entropy of ${l.dtype} logits ${
          fmt(l.shape)
        } with ${t.dtype} targets ${fmt(t.shape)}: expected [N, V] float and [N] i32`,
      );
    }
    return [{ shape: [l.shape[0]], dtype: l.dtype }, { shape: [l.shape[0]], dtype: l.dtype }];
  },
  cpu: ([l, t], [loss, lse], { inputs, params }) => {
    const [n, v] = inputs[0].shape;
    // f32: each row's max and Σ exp(l − max) from the SIMD kernel (f64 sum), null otherwise
    const st = rowStats(l, n, v);
    for (let r = 0; r < n; r++) {
      const base = r * v;
      let m = -Infinity, s = 0;
      if (st) [m, s] = [st[2 * r], st[2 * r + 1]];
      else {
        for (let i = 0; i < v; i++) if (l[base + i] > m) m = l[base + i];
        for (let i = 0; i < v; i++) s += Math.exp(l[base + i] - m);
      }
      const z = m + Math.log(s);
      lse[r] = z;
      const y = t[r];
      if (y === params.ignoreIndex) continue;
      if (y < 0 || y >= v) {
        throw new Error(`Cannot compute cross-entropy for target ${y}: there are ${v} classes`);
      }
      loss[r] = z - l[base + y];
    }
  },
  // one workgroup per row: max, Σ exp, then lse − logit[target]
  wgsl: ({ inputs: [l], params }, device) => {
    const [n, v] = l.shape;
    const L = rowLayout(v, device);
    return [{
      code: `@group(0) @binding(0) var<storage, read> l: array<f32>;
@group(0) @binding(1) var<storage, read> t: array<i32>;
@group(0) @binding(2) var<storage, read_write> loss: array<f32>;
@group(0) @binding(3) var<storage, read_write> lse: array<f32>;
${statusDecl(4)}
struct U { rows: u32, v: u32, ignore: i32 }
@group(1) @binding(0) var<uniform> u: U;
${L.prelude}
@compute @workgroup_size(${L.wg})
fn main(${ROW_ARGS}) {
  let row = ${L.row};
  let ok = row < u.rows;
  let base = row * u.v;
  ${rowMaxSumExp(L, "l", "u.v", false)}
  if (!ok || ${L.lane} != 0u) { return; }
  let z = m + log(s);
  lse[row] = z;
  let y = t[row];
  if (y == u.ignore) { loss[row] = 0.0; return; }
  if (y < 0 || u32(y) >= u.v) { report(3u, y, u.v); loss[row] = 0.0; return; }
  loss[row] = z - l[base + u32(y)];
}`,
      workgroups: L.workgroups(n),
      uniforms: [n, v, params.ignoreIndex],
      uniformTypes: ["u32", "u32", "i32"],
      bindings: [0, 1, 2, 3, STATUS_BINDING],
    }];
  },
  // dlogits = (softmax − onehot) ⊙ ct, zero on ignored rows
  vjp: (ct, ctx) => [
    crossEntropyBackward(
      ctx.inputs[0]!,
      ctx.inputs[1]!,
      ctx.outputs[1]!,
      ct[0]!,
      ctx.params.ignoreIndex,
    ),
    null,
  ],
  saves: { inputs: true, outputs: [1] },
  statOutputs: [1],
  examples: [
    {
      inputs: [{ shape: [5, 7] }, { shape: [5], dtype: "i32", values: [0, 6, -100, 3, 3] }],
      params: { ignoreIndex: -100 },
    },
  ],
});

/** Backward of `crossEntropyOp`: logits, targets, lse, ct [N] → dlogits [N, V]. */
export const crossEntropyBackwardOp: KernelOp<CrossEntropyParams, "cross_entropy_backward"> =
  defineOp<CrossEntropyParams, "cross_entropy_backward">({
    name: "cross_entropy_backward",
    infer: ([l]) => [{ shape: l.shape, dtype: l.dtype }],
    writesAll: true,
    cpu: ([l, t, lse, ct], [dl], { inputs, params }) => {
      const [n, v] = inputs[0].shape;
      // f32: softmax·ct of every row by the SIMD kernel (ignored rows 0), then the one-hot below
      const fast = rowExp(l, dl, n, v, lse, ct, (r) => t[r] === params.ignoreIndex);
      for (let r = 0; r < n; r++) {
        const y = t[r];
        if (y === params.ignoreIndex) {
          if (!fast) dl.fill(0, r * v, (r + 1) * v);
          continue;
        }
        const base = r * v, g = ct[r], z = lse[r];
        if (!fast) { for (let i = 0; i < v; i++) dl[base + i] = Math.exp(l[base + i] - z) * g; }
        dl[base + y] -= g;
      }
    },
    // elementwise over [N, V]: no reduction left after the forward's lse
    wgsl: ({ inputs: [l], params }) => {
      const [n, v] = l.shape;
      return [{
        code: `@group(0) @binding(0) var<storage, read> l: array<f32>;
@group(0) @binding(1) var<storage, read> t: array<i32>;
@group(0) @binding(2) var<storage, read> lse: array<f32>;
@group(0) @binding(3) var<storage, read> ct: array<f32>;
@group(0) @binding(4) var<storage, read_write> dl: array<f32>;
struct U { count: u32, v: u32, ignore: i32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let q = ${gridIndex(256)};
  if (q >= u.count) { return; }
  let r = q / u.v;
  let y = t[r];
  if (y == u.ignore) { dl[q] = 0.0; return; }
  let g = ct[r];
  var d = exp(l[q] - lse[r]) * g;
  if (i32(q % u.v) == y) { d -= g; }
  dl[q] = d;
}`,
        workgroups: grid(n * v),
        uniforms: [n * v, v, params.ignoreIndex],
        uniformTypes: ["u32", "u32", "i32"],
      }];
    },
    vjp: NONDIFF,
    examples: [
      {
        inputs: [{ shape: [3, 5] }, { shape: [3], dtype: "i32", values: [1, -100, 4] }, {
          shape: [3],
        }, { shape: [3] }],
        params: { ignoreIndex: -100 },
      },
    ],
  });

/**
 * Backward of cross-entropy (exposed for fused callers).
 *
 * @returns dlogits [N, V]
 */
export function crossEntropyBackward(
  logits: Tensor,
  targets: Tensor,
  lse: Tensor,
  ct: Tensor,
  ignoreIndex: number,
): Tensor {
  return apply1(crossEntropyBackwardOp, [logits, targets, lse, ct], { ignoreIndex });
}

/** Options of `crossEntropy`. */
export interface CrossEntropyOptions {
  /** Targets equal to this are ignored (default −100, PyTorch's). */
  ignoreIndex?: number;
  /** Per-target float weights (e.g. a loss mask), shaped like the targets. */
  mask?: Tensor;
  /** "mean" over counted targets (default), "sum", or "none" (per target). */
  reduction?: "mean" | "sum" | "none";
}

/**
 * Softmax cross-entropy of `logits` [..., V] against integer `targets` [...]. The mean divides by
 * the number of non-ignored targets (or Σ mask), as PyTorch's `cross_entropy` with
 * `ignore_index` does.
 *
 * @param logits unnormalised scores
 * @param targets i32 class ids
 * @param options ignore index, mask, reduction
 * @returns the loss (scalar unless reduction is "none")
 */
export function crossEntropy(
  logits: Tensor,
  targets: Tensor,
  options: CrossEntropyOptions = {},
): Tensor {
  const ignoreIndex = options.ignoreIndex ?? -100;
  const v = logits.shape[logits.rank - 1];
  const lead = logits.shape.slice(0, -1);
  const [per] = apply(crossEntropyOp, [reshape(logits, [-1, v]), reshape(targets, [-1])], {
    ignoreIndex,
  });
  let losses = per;
  let count: Tensor | null = null;
  if (options.mask) {
    const m = reshape(options.mask, [-1]);
    losses = mul(per, m);
    if (options.reduction !== "sum") {
      count = sum(mul(m, cast(notEqual(reshape(targets, [-1]), ignoreIndex), m.dtype)));
    }
  }
  const red = options.reduction ?? "mean";
  if (red === "none") return reshape(losses, lead);
  const total = sum(losses);
  if (red === "sum") return total;
  count ??= sum(cast(notEqual(reshape(targets, [-1]), ignoreIndex), logits.dtype));
  return div(total, maximum(count, 1));
}
