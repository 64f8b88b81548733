/**
 * Fused SwiGLU gate: silu(g) ⊙ u (the MLP's elementwise core), with a fused backward.
 * @module
 */
import { isFloat } from "../dtype.ts";
import type { NoParams, OpDef } from "../op.ts";
import { apply, apply1, defineOp, NONDIFF } from "../op.ts";
import { fmt, sameShape } from "../shape.ts";
import type { Tensor } from "../tensor.ts";

function sig(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/** g, u (same shape) → silu(g) ⊙ u. */
export const swigluOp: OpDef<NoParams> = defineOp<NoParams>({
  name: "swiglu",
  infer: ([g, u]) => {
    if (!isFloat(g.dtype) || g.dtype !== u.dtype || !sameShape(g.shape, u.shape)) {
      throw new Error(
        `Cannot apply swiglu to ${g.dtype} ${fmt(g.shape)} and ${u.dtype} ${fmt(u.shape)}`,
      );
    }
    return [{ shape: g.shape, dtype: g.dtype }];
  },
  cpu: ([g, u], [y]) => {
    for (let i = 0; i < g.length; i++) y[i] = g[i] * sig(g[i]) * u[i];
  },
  // dg = ct ⊙ u ⊙ silu'(g) ; du = ct ⊙ silu(g)
  vjp: (ct, ctx) => {
    const [dg, du] = apply(swigluBackwardOp, [ct[0]!, ctx.inputs[0]!, ctx.inputs[1]!], {});
    return [dg, du];
  },
  examples: [{ inputs: [{ shape: [3, 8] }, { shape: [3, 8] }], params: {} }],
});

/** ct, g, u → dg, du. */
export const swigluBackwardOp: OpDef<NoParams> = defineOp<NoParams>({
  name: "swiglu_backward",
  infer: ([, g, u]) => [{ shape: g.shape, dtype: g.dtype }, { shape: u.shape, dtype: u.dtype }],
  cpu: ([ct, g, u], [dg, du]) => {
    for (let i = 0; i < g.length; i++) {
      const s = sig(g[i]);
      du[i] = ct[i] * g[i] * s;
      dg[i] = ct[i] * u[i] * s * (1 + g[i] * (1 - s));
    }
  },
  vjp: NONDIFF,
  examples: [{ inputs: [{ shape: [2, 5] }, { shape: [2, 5] }, { shape: [2, 5] }], params: {} }],
});

/**
 * silu(gate) ⊙ up, fused.
 *
 * @param gate pre-activation of the gate projection
 * @param up the up projection
 * @returns the gated activation
 */
export function swiglu(gate: Tensor, up: Tensor): Tensor {
  return apply1(swigluOp, [gate, up], {});
}
