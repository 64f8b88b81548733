/**
 * Dynamic loss scaling's bookkeeping in one scalar kernel (PyTorch's `GradScaler`: unscale, the
 * overflow check and `_amp_update_scale_`), on the device so no step reads anything back. From
 * the global norm of gradients of a loss multiplied by `scale`, it gives the scalar the optimizer
 * multiplies each gradient by (unscaling and global-norm clipping in one; +Inf when a gradient
 * overflowed, which makes `adamwUpdate` skip the update), the unscaled norm, the next scale and
 * count of finite steps in a row, and the count of updates applied (the step count AdamW's bias
 * corrections use: a skipped update does not count, as with torch's `GradScaler.step`). Not
 * differentiable.
 * @module
 */
import type { KernelOp } from "../op.ts";
import { defineOp, NONDIFF } from "../op.ts";
import { apply } from "../apply.ts";
import { fmt } from "../shape.ts";
import type { Tensor } from "../tensor.ts";

/** Params of `lossScaleUpdate`. */
export interface LossScaleParams {
  /** Global-norm clipping bound (0: no clipping). */
  readonly maxNorm: number;
  /** The scale is multiplied by this after `growthInterval` finite steps in a row (torch: 2). */
  readonly growthFactor: number;
  /** The scale is multiplied by this after an overflow (torch: 0.5). */
  readonly backoffFactor: number;
  /** Finite steps in a row before the scale grows (torch: 2000). */
  readonly growthInterval: number;
}

/** The f32 arithmetic of the op, one scalar set (`r` rounds each result to the dtype). */
function update(
  [norm, scale, good, steps]: number[],
  p: LossScaleParams,
  r: (x: number) => number,
): number[] {
  const unscaled = r(norm / scale);
  if (!Number.isFinite(norm)) return [Infinity, unscaled, r(scale * p.backoffFactor), 0, steps];
  // clipCoefficient's min(1, maxNorm / (‖g‖ + 1e-6)), on the unscaled norm
  const coef = p.maxNorm > 0 ? Math.min(r(p.maxNorm / r(unscaled + 1e-6)), 1) : 1;
  const count = good + 1;
  const grown = r(scale * p.growthFactor);
  const grow = count >= p.growthInterval && Number.isFinite(grown);
  return [r(coef / scale), unscaled, grow ? grown : scale, grow ? 0 : count, steps + 1];
}

/**
 * norm, scale, good, steps (f32 or f64 scalars) → gradient multiplier, unscaled norm, scale',
 * good', steps'.
 */
export const lossScaleOp: KernelOp<LossScaleParams, "loss_scale"> = defineOp<
  LossScaleParams,
  "loss_scale"
>({
  name: "loss_scale",
  infer: (ins, p) => {
    const [norm] = ins;
    if (
      ins.length !== 4 || (norm.dtype !== "f32" && norm.dtype !== "f64") ||
      ins.some((x) => x.dtype !== norm.dtype || x.shape.length !== 0)
    ) {
      throw new Error(
        `Cannot update a loss scale from ${
          ins.map((x) => `${x.dtype} ${fmt(x.shape)}`).join(", ")
        }: expected the norm, the scale and the two counts as scalars of one float dtype`,
      );
    }
    if (
      !(p.maxNorm >= 0 && p.growthFactor > 1 && p.backoffFactor > 0 && p.backoffFactor < 1 &&
        Number.isInteger(p.growthInterval) && p.growthInterval >= 1)
    ) {
      throw new Error(
        `Cannot update a loss scale with ${
          JSON.stringify(p)
        }: need maxNorm ≥ 0, growthFactor > 1, 0 < backoffFactor < 1, an integer growthInterval ≥ 1`,
      );
    }
    return [0, 1, 2, 3, 4].map(() => ({ shape: [], dtype: norm.dtype }));
  },
  writesAll: true,
  cpu: (ins, outs, { outputs, params }) => {
    const r = outputs[0].dtype === "f32" ? Math.fround : (x: number) => x;
    update(ins.map((x) => x[0]), params, r).forEach((x, i) => (outs[i][0] = x));
  },
  // overflow is tested on the bits: shader compilers may assume floats are finite
  wgsl: ({ params }) => [{
    code: `@group(0) @binding(0) var<storage, read> norm: array<f32>;
@group(0) @binding(1) var<storage, read> scale: array<f32>;
@group(0) @binding(2) var<storage, read> good: array<f32>;
@group(0) @binding(3) var<storage, read> steps: array<f32>;
@group(0) @binding(4) var<storage, read_write> coef: array<f32>;
@group(0) @binding(5) var<storage, read_write> unscaled: array<f32>;
@group(0) @binding(6) var<storage, read_write> scale2: array<f32>;
@group(0) @binding(7) var<storage, read_write> good2: array<f32>;
@group(0) @binding(8) var<storage, read_write> steps2: array<f32>;
struct U { max_norm: f32, growth: f32, backoff: f32, interval: f32 }
@group(1) @binding(0) var<uniform> u: U;
fn finite(x: f32) -> bool { return (bitcast<u32>(x) & 0x7f800000u) != 0x7f800000u; }
@compute @workgroup_size(1)
fn main() {
  let n = norm[0];
  let s = scale[0];
  unscaled[0] = n / s;
  if (!finite(n)) {
    coef[0] = bitcast<f32>(0x7f800000u);
    scale2[0] = s * u.backoff;
    good2[0] = 0.0;
    steps2[0] = steps[0];
    return;
  }
  steps2[0] = steps[0] + 1.0;
  var c = 1.0;
  if (u.max_norm > 0.0) { c = min(u.max_norm / (n / s + 1e-6), 1.0); }
  coef[0] = c / s;
  let count = good[0] + 1.0;
  let grown = s * u.growth;
  if (count >= u.interval && finite(grown)) {
    scale2[0] = grown;
    good2[0] = 0.0;
  } else {
    scale2[0] = s;
    good2[0] = count;
  }
}`,
    workgroups: [1, 1, 1],
    uniforms: [params.maxNorm, params.growthFactor, params.backoffFactor, params.growthInterval],
    uniformTypes: ["f32", "f32", "f32", "f32"],
  }],
  vjp: NONDIFF,
  examples: [
    {
      inputs: [
        { shape: [], values: [3072] },
        { shape: [], values: [1024] },
        { shape: [], values: [5] },
        { shape: [], values: [9] },
      ],
      params: { maxNorm: 1, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 },
      label: "clipped",
    },
    {
      inputs: [
        { shape: [], values: [0.25] },
        { shape: [], values: [4] },
        { shape: [], values: [2] },
        { shape: [], values: [0] },
      ],
      params: { maxNorm: 1, growthFactor: 2, backoffFactor: 0.5, growthInterval: 3 },
      label: "grows",
    },
    {
      inputs: [
        { shape: [], values: [Infinity] },
        { shape: [], values: [65536] },
        { shape: [], values: [7] },
        { shape: [], values: [7] },
      ],
      params: { maxNorm: 0, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 },
      label: "overflow",
    },
  ],
});

/**
 * One loss-scaling update (see the module doc).
 *
 * @param norm global L2 norm of the gradients of `scale · loss`, scalar
 * @param scale the loss scale those gradients were taken at, scalar
 * @param good finite steps since the scale last changed, scalar
 * @param steps updates applied so far (skipped ones not counted), scalar
 * @param params clipping bound and torch's growth/backoff rule
 * @returns `[gradient multiplier (+Inf: skip), unscaled norm, next scale, next good, next steps]`;
 *   next steps is this update's 1-based step count when it is applied
 * @example
 * ```ts
 * import { lossScaleUpdate, scalar } from "@minimind/ts";
 * const [coef, norm, scale, good, steps] = lossScaleUpdate(
 *   scalar(3072),
 *   scalar(1024),
 *   scalar(0),
 *   scalar(0),
 *   { maxNorm: 1, growthFactor: 2, backoffFactor: 0.5, growthInterval: 2000 },
 * ); // coef ≈ 1 / 3072: clipped to norm 1, unscaled; steps 1
 * ```
 */
export function lossScaleUpdate(
  norm: Tensor,
  scale: Tensor,
  good: Tensor,
  steps: Tensor,
  params: LossScaleParams,
): [Tensor, Tensor, Tensor, Tensor, Tensor] {
  const [c, n, s, g, t] = apply(lossScaleOp, [norm, scale, good, steps], params);
  return [c, n, s, g, t];
}
