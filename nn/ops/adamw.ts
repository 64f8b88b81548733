/**
 * Fused AdamW update (PyTorch `torch.optim.AdamW`, single-tensor path): one kernel per parameter
 * tensor reads p, g, m, v (and optionally a scalar the gradient is first multiplied by: the
 * global-norm clipping coefficient, so clipping costs no pass of its own) and writes p', m', v'.
 * A non-finite scalar skips the update: p, m, v are written back as they are (loss scaling's
 * overflow, `nn/ops/loss_scale.ts`); a sixth input, a scalar step count on the device, then
 * replaces `params.step` in the bias corrections, so that skipped updates do not count (as
 * torch's `GradScaler.step`). Decoupled weight decay, bias correction, eps outside the square
 * root. Not differentiable.
 * @module
 */
import type { KernelOp } from "../op.ts";
import { defineOp, NONDIFF } from "../op.ts";
import { apply } from "../apply.ts";
import { fmt, sameShape } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { grid, GRID_ARGS, gridIndex } from "../backend/webgpu/wgsl.ts";
import { parallel } from "../backend/cpu/threads/mod.ts";
import { f32Simd } from "../backend/cpu/simd/mod.ts";

/** Fewest elements per piece of a pooled update (~2 ns each with SIMD, ~6 without). */
const ADAMW_GRAIN = 32768;

/** Params of `adamwUpdate` (hyper-parameters of one step). */
export interface AdamwParams {
  /** Learning rate of this step. */
  readonly lr: number;
  /** First-moment decay β₁. */
  readonly beta1: number;
  /** Second-moment decay β₂. */
  readonly beta2: number;
  /** Added to √v̂ (outside the square root, as PyTorch). */
  readonly eps: number;
  /** Decoupled weight decay λ: p ← p·(1 − lr·λ) before the Adam step. */
  readonly weightDecay: number;
  /** 1-based step count t (bias corrections 1 − βᵗ). */
  readonly step: number;
  /**
   * Write p', m', v' into p, m, v's buffers where the backend can (CPU): for callers that give
   * p, m and v up (the train step), saving three parameter-sized buffers.
   */
  readonly inPlace?: boolean;
}

/** The per-step constants of the update (bias corrections folded in). */
function adamwConstants(params: AdamwParams) {
  const { lr, beta1, beta2, eps, weightDecay, step } = params;
  return {
    beta1,
    beta2,
    eps,
    decay: 1 - lr * weightDecay,
    a1: 1 - beta1,
    a2: 1 - beta2,
    stepSize: -(lr / (1 - Math.pow(beta1, step))), // −lr / (1 − β₁ᵗ)
    invBc2Sqrt: 1 / Math.sqrt(1 - Math.pow(beta2, step)), // 1 / √(1 − β₂ᵗ)
  };
}

/** The same update in f64 (the reference path the conformance test compares f32 against). */
function adamwF64(
  p: ArrayLike<number>,
  g: ArrayLike<number>,
  m: ArrayLike<number>,
  v: ArrayLike<number>,
  po: { [i: number]: number },
  mo: { [i: number]: number },
  vo: { [i: number]: number },
  params: AdamwParams,
  gradScale: number,
): void {
  const { beta1, beta2, eps, decay, a1, a2, stepSize, invBc2Sqrt } = adamwConstants(params);
  for (let i = 0; i < p.length; i++) {
    const gi = g[i] * gradScale;
    const mi = m[i] * beta1 + a1 * gi;
    const vi = v[i] * beta2 + a2 * gi * gi;
    po[i] = p[i] * decay + (stepSize * mi) / (Math.sqrt(vi) * invBc2Sqrt + eps);
    mo[i] = mi;
    vo[i] = vi;
  }
}

/**
 * p, g, m, v (same shape, f32/f64), [scale (a scalar g is multiplied by), [t (the 1-based step
 * count, a scalar)]] → p', m', v'.
 */
export const adamwOp: KernelOp<AdamwParams, "adamw"> = defineOp<AdamwParams, "adamw">({
  name: "adamw",
  infer: (ins, { step }) => {
    const [p] = ins;
    if (
      ins.length < 4 || ins.length > 6 || (p.dtype !== "f32" && p.dtype !== "f64") ||
      ins.slice(0, 4).some((x) => x.dtype !== p.dtype || !sameShape(x.shape, p.shape)) ||
      ins.slice(4).some((x) => x.dtype !== p.dtype || x.shape.length !== 0)
    ) {
      throw new Error(
        `Cannot apply adamw to ${
          ins.map((x) => `${x.dtype} ${fmt(x.shape)}`).join(", ")
        }: expected p, g, m, v of one float dtype and shape, then optionally a scale and a step ` +
          "count, scalars of that dtype",
      );
    }
    if (!(Number.isInteger(step) && step >= 1)) {
      throw new Error(`Cannot apply adamw at step ${step}: the step count starts at 1`);
    }
    return [0, 1, 2].map(() => ({ shape: p.shape, dtype: p.dtype }));
  },
  writesAll: true,
  inPlace: (p) => p.inPlace ? [0, 2, 3] : null,
  cpu: ([p, g, m, v, scale, t], [po, mo, vo], { params: given }) => {
    const k = scale ? scale[0] : 1;
    const params = t ? { ...given, step: t[0] } : given;
    if (!Number.isFinite(k)) {
      // a skipped update (loss scaling found an overflow): p, m, v as they are
      po.set(p);
      mo.set(m);
      vo.set(v);
      return;
    }
    if (po instanceof Float32Array) {
      const c = adamwConstants(params);
      // torch's f32 update (threads/kernels.ts): the wasm SIMD map where SIMD is on (f32
      // arithmetic as torch's), else the f64 loop; split over the kernel pool's threads
      parallel(
        f32Simd(p, g, m, v, po, mo, vo) ? "adamw_simd" : "adamw",
        [p, g, m, v, po, mo, vo],
        [
          c.beta1,
          c.beta2,
          c.eps,
          c.decay,
          c.a1,
          c.a2,
          c.stepSize,
          c.invBc2Sqrt,
          k,
        ],
        0,
        po.length,
        ADAMW_GRAIN,
      );
    } else adamwF64(p, g, m, v, po, mo, vo, params, k);
  },
  // torch's operation order in f32 (vec4 when the size allows); the step's scalars come from the
  // host, or from the device's step count t (bias corrections in f32 then)
  wgsl: ({ inputs: [p, , , , scale, t], params }) => {
    const { lr, beta1, beta2, eps, weightDecay, step } = params;
    let n = 1;
    for (const d of p.shape) n *= d;
    const vec = n % 4 === 0;
    const T = vec ? "vec4<f32>" : "f32";
    const count = vec ? n / 4 : n;
    const o = t ? 6 : scale ? 5 : 4;
    return [{
      code: `@group(0) @binding(0) var<storage, read> p: array<${T}>;
@group(0) @binding(1) var<storage, read> g: array<${T}>;
@group(0) @binding(2) var<storage, read> m: array<${T}>;
@group(0) @binding(3) var<storage, read> v: array<${T}>;
${scale ? "@group(0) @binding(4) var<storage, read> scale: array<f32>;" : ""}
${t ? "@group(0) @binding(5) var<storage, read> t: array<f32>;" : ""}
@group(0) @binding(${o}) var<storage, read_write> po: array<${T}>;
@group(0) @binding(${o + 1}) var<storage, read_write> mo: array<${T}>;
@group(0) @binding(${o + 2}) var<storage, read_write> vo: array<${T}>;
struct U { n: u32, decay: f32, b1: f32, a1: f32, b2: f32, a2: f32, step_size: f32, bc2: f32, eps: f32, lr: f32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(256)};
  if (i >= u.n) { return; }
${
        scale
          ? `  let k = scale[0];
  // a non-finite scale skips the update (bit test: compilers may assume floats are finite)
  if ((bitcast<u32>(k) & 0x7f800000u) == 0x7f800000u) {
    po[i] = p[i];
    mo[i] = m[i];
    vo[i] = v[i];
    return;
  }`
          : ""
      }
  let gi = g[i]${scale ? " * k" : ""};
  let mi = m[i] * u.b1 + u.a1 * gi;
  let vi = v[i] * u.b2 + u.a2 * gi * gi;
${
        t
          ? `  let step_size = -u.lr / (1.0 - pow(u.b1, t[0]));
  let bc2 = sqrt(1.0 - pow(u.b2, t[0]));`
          : `  let step_size = u.step_size;
  let bc2 = u.bc2;`
      }
  let denom = sqrt(vi) / bc2 + u.eps;
  po[i] = p[i] * u.decay + (step_size * mi) / denom;
  mo[i] = mi;
  vo[i] = vi;
}`,
      workgroups: grid(count),
      uniforms: [
        count,
        1 - lr * weightDecay,
        beta1,
        1 - beta1,
        beta2,
        1 - beta2,
        -(lr / (1 - Math.pow(beta1, step))),
        Math.sqrt(1 - Math.pow(beta2, step)),
        eps,
        lr,
      ],
      uniformTypes: ["u32", "f32", "f32", "f32", "f32", "f32", "f32", "f32", "f32", "f32"],
    }];
  },
  vjp: NONDIFF,
  examples: [
    {
      inputs: [
        { shape: [4, 6] },
        { shape: [4, 6] },
        { shape: [4, 6] },
        { shape: [4, 6], kind: "positive" },
      ],
      params: { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 3 },
    },
    {
      inputs: [{ shape: [7] }, { shape: [7] }, { shape: [7], values: [0, 0, 0, 0, 0, 0, 0] }, {
        shape: [7],
        values: [0, 0, 0, 0, 0, 0, 0],
      }],
      params: { lr: 0.1, beta1: 0.8, beta2: 0.99, eps: 1e-6, weightDecay: 0, step: 1 },
      label: "first step from zero moments",
    },
    {
      inputs: [
        { shape: [3, 4] },
        { shape: [3, 4] },
        { shape: [3, 4] },
        { shape: [3, 4], kind: "positive" },
        { shape: [], values: [0.25] },
      ],
      params: { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 2 },
      label: "clipped gradient (scale input)",
    },
    {
      inputs: [
        { shape: [2, 4] },
        { shape: [2, 4] },
        { shape: [2, 4] },
        { shape: [2, 4], kind: "positive" },
        { shape: [], values: [NaN] },
      ],
      params: { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 2 },
      label: "skipped update (non-finite scale)",
    },
    {
      inputs: [
        { shape: [2, 4] },
        { shape: [2, 4] },
        { shape: [2, 4] },
        { shape: [2, 4], kind: "positive" },
        { shape: [], values: [0.5] },
        { shape: [], values: [3] },
      ],
      params: { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 7 },
      label: "the step count from the device (t = 3, not params.step)",
    },
  ],
});

/**
 * One fused AdamW step on a parameter tensor (PyTorch semantics). Returns new tensors; the
 * caller disposes the old ones.
 *
 * @param p parameter
 * @param g gradient
 * @param m first moment
 * @param v second moment
 * @param params learning rate, betas, eps, weight decay and the 1-based step count
 * @param gradScale optional scalar tensor `g` is multiplied by first (a clipping coefficient); a
 *   non-finite one leaves p, m and v as they are
 * @param stepCount optional scalar tensor: the 1-based step count, instead of `params.step`
 *   (loss scaling counts only the updates it did not skip); needs `gradScale`
 * @returns `[p', m', v']`
 * @example
 * ```ts
 * import { adamwUpdate, tensor, zeros } from "@minimind/ts";
 * const [p, m, v] = adamwUpdate(tensor([1, 2]), tensor([0.1, -0.2]), zeros([2]), zeros([2]), {
 *   lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01, step: 1,
 * });
 * ```
 */
export function adamwUpdate(
  p: Tensor,
  g: Tensor,
  m: Tensor,
  v: Tensor,
  params: AdamwParams,
  gradScale?: Tensor,
  stepCount?: Tensor,
): [Tensor, Tensor, Tensor] {
  if (stepCount && !gradScale) {
    throw new Error("Cannot apply adamw with a step count tensor but no scale: pass both");
  }
  const extra = [gradScale, stepCount].filter((x): x is Tensor => x !== undefined);
  const [po, mo, vo] = apply(adamwOp, [p, g, m, v, ...extra], params);
  return [po, mo, vo];
}
