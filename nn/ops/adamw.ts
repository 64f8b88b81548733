/**
 * Fused AdamW update (PyTorch `torch.optim.AdamW`, single-tensor path): one kernel per parameter
 * tensor reads p, g, m, v and writes p', m', v'. Decoupled weight decay, bias correction, eps
 * outside the square root. Not differentiable.
 * @module
 */
import type { OpDef } from "../op.ts";
import { apply, defineOp, NONDIFF } from "../op.ts";
import { fmt, sameShape } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { grid, GRID_ARGS, gridIndex } from "../backend/webgpu/wgsl.ts";

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
}

/** p, g, m, v (same shape, f32/f64) → p', m', v'. */
export const adamwOp: OpDef<AdamwParams> = defineOp<AdamwParams>({
  name: "adamw",
  infer: (ins, { step }) => {
    const [p] = ins;
    if (
      ins.length !== 4 || (p.dtype !== "f32" && p.dtype !== "f64") ||
      ins.some((x) => x.dtype !== p.dtype || !sameShape(x.shape, p.shape))
    ) {
      throw new Error(
        `Cannot apply adamw to ${
          ins.map((x) => `${x.dtype} ${fmt(x.shape)}`).join(", ")
        }: expected p, g, m, v of one float dtype and shape`,
      );
    }
    if (!(Number.isInteger(step) && step >= 1)) {
      throw new Error(`Cannot apply adamw at step ${step}: the step count starts at 1`);
    }
    return [0, 1, 2].map(() => ({ shape: p.shape, dtype: p.dtype }));
  },
  cpu: ([p, g, m, v], [po, mo, vo], { params }) => {
    const { lr, beta1, beta2, eps, weightDecay, step } = params;
    // f32 storage: round after every PyTorch in-place op (and the Python-float scalars) so the
    // update follows torch's float32 arithmetic; f64 (gradient checks) keeps full precision.
    const r = po instanceof Float32Array ? Math.fround : (x: number) => x;
    const decay = r(1 - lr * weightDecay);
    const b1 = r(beta1), a1 = r(1 - beta1), b2 = r(beta2), a2 = r(1 - beta2);
    const stepSize = r(-(lr / (1 - Math.pow(beta1, step))));
    const bc2Sqrt = r(Math.sqrt(1 - Math.pow(beta2, step)));
    const e = r(eps);
    for (let i = 0; i < p.length; i++) {
      const gi = g[i];
      const pi = r(p[i] * decay); // param.mul_(1 - lr * wd)
      const mi = r(r(m[i] * b1) + r(a1 * gi)); // exp_avg.mul_(b1).add_(g, alpha=1-b1)
      const vi = r(r(v[i] * b2) + r(r(a2 * gi) * gi)); // exp_avg_sq.mul_(b2).addcmul_(g, g, 1-b2)
      const denom = r(r(r(Math.sqrt(vi)) / bc2Sqrt) + e); // (sqrt(v) / sqrt(bc2)).add_(eps)
      po[i] = r(pi + r(r(stepSize * mi) / denom)); // param.addcdiv_(m, denom, -step_size)
      mo[i] = mi;
      vo[i] = vi;
    }
  },
  // the same f32 operation order as the CPU kernel; step scalars are rounded on the host
  wgsl: ({ inputs: [p], params }) => {
    const { lr, beta1, beta2, eps, weightDecay, step } = params;
    const r = Math.fround;
    let n = 1;
    for (const d of p.shape) n *= d;
    return [{
      code: `@group(0) @binding(0) var<storage, read> p: array<f32>;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> m: array<f32>;
@group(0) @binding(3) var<storage, read> v: array<f32>;
@group(0) @binding(4) var<storage, read_write> po: array<f32>;
@group(0) @binding(5) var<storage, read_write> mo: array<f32>;
@group(0) @binding(6) var<storage, read_write> vo: array<f32>;
struct U { n: u32, decay: f32, b1: f32, a1: f32, b2: f32, a2: f32, step_size: f32, bc2: f32, eps: f32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(256)};
  if (i >= u.n) { return; }
  let gi = g[i];
  let pi = p[i] * u.decay;
  let mi = m[i] * u.b1 + u.a1 * gi;
  let vi = v[i] * u.b2 + (u.a2 * gi) * gi;
  let denom = sqrt(vi) / u.bc2 + u.eps;
  po[i] = pi + (u.step_size * mi) / denom;
  mo[i] = mi;
  vo[i] = vi;
}`,
      workgroups: grid(n),
      uniforms: [
        n,
        r(1 - lr * weightDecay),
        r(beta1),
        r(1 - beta1),
        r(beta2),
        r(1 - beta2),
        r(-(lr / (1 - Math.pow(beta1, step)))),
        r(Math.sqrt(1 - Math.pow(beta2, step))),
        r(eps),
      ],
      uniformTypes: ["u32", "f32", "f32", "f32", "f32", "f32", "f32", "f32", "f32"],
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
): [Tensor, Tensor, Tensor] {
  const [po, mo, vo] = apply(adamwOp, [p, g, m, v], params);
  return [po, mo, vo];
}
