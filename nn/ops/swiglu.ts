/**
 * Fused SwiGLU gate: silu(g) ⊙ u (the MLP's elementwise core), with a fused backward. Takes f32,
 * f64, or bf16 (the CPU's bfloat16 precision: computed in f32 from the widened values, each result
 * rounded to bf16 once, as PyTorch's CPU autocast runs MiniMind's MLP).
 * @module
 */
import { computeDtype, isFloat, storeAt, valueAt } from "../dtype.ts";
import type { KernelOp, NoParams } from "../op.ts";
import { defineOp, NONDIFF } from "../op.ts";
import { apply, apply1 } from "../apply.ts";
import { fmt, sameShape } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { grid, GRID_ARGS, gridIndex, mapWgsl } from "../backend/webgpu/wgsl.ts";
import {
  swiglu as simdSwiglu,
  swigluBackward as simdSwigluBackward,
} from "../backend/cpu/simd/ops.ts";

const SIGMOID_WGSL = "select(exp(x) / (1.0 + exp(x)), 1.0 / (1.0 + exp(-x)), x >= 0.0)";

function sig(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x));
}

/** g, u (same shape) → silu(g) ⊙ u. */
export const swigluOp: KernelOp<NoParams, "swiglu"> = defineOp<NoParams, "swiglu">({
  name: "swiglu",
  infer: ([g, u]) => {
    if (!isFloat(computeDtype(g.dtype)) || g.dtype !== u.dtype || !sameShape(g.shape, u.shape)) {
      throw new Error(
        `Cannot apply swiglu to ${g.dtype} ${fmt(g.shape)} and ${u.dtype} ${fmt(u.shape)}`,
      );
    }
    return [{ shape: g.shape, dtype: g.dtype }];
  },
  writesAll: true,
  cpu: ([g, u], [y]) => {
    if (simdSwiglu(g, u, y)) return; // f32, bf16: the wasm SIMD kernel
    for (let i = 0; i < g.length; i++) {
      const x = valueAt(g, i);
      storeAt(y, i, x * sig(x) * valueAt(u, i));
    }
  },
  wgsl: ({ inputs: [g] }) => {
    let n = 1;
    for (const d of g.shape) n *= d;
    const expr = `x * ${SIGMOID_WGSL} * up`;
    return [mapWgsl(["x", "up"], ["f32", "f32"], "f32", expr, n)];
  },
  // dg = ct ⊙ u ⊙ silu'(g) ; du = ct ⊙ silu(g)
  vjp: (ct, ctx) => {
    const [dg, du] = apply(swigluBackwardOp, [ct[0]!, ctx.inputs[0]!, ctx.inputs[1]!], {});
    return [dg, du];
  },
  examples: [{ inputs: [{ shape: [3, 8] }, { shape: [3, 8] }], params: {} }],
});

/** ct, g, u → dg, du. */
export const swigluBackwardOp: KernelOp<NoParams, "swiglu_backward"> = defineOp<
  NoParams,
  "swiglu_backward"
>({
  name: "swiglu_backward",
  infer: ([ct, g, u]) => {
    const ok = isFloat(computeDtype(g.dtype)) && ct.dtype === g.dtype && u.dtype === g.dtype &&
      sameShape(ct.shape, g.shape) && sameShape(u.shape, g.shape);
    if (!ok) {
      throw new Error(
        `Cannot apply swiglu_backward to ct ${ct.dtype} ${fmt(ct.shape)}, g ${g.dtype} ${
          fmt(g.shape)
        }, u ${u.dtype} ${fmt(u.shape)}: expected one float dtype and one shape`,
      );
    }
    return [{ shape: g.shape, dtype: g.dtype }, { shape: u.shape, dtype: u.dtype }];
  },
  writesAll: true,
  cpu: ([ct, g, u], [dg, du]) => {
    if (simdSwigluBackward(ct, g, u, dg, du)) return; // f32, bf16: the wasm SIMD kernel
    for (let i = 0; i < g.length; i++) {
      const x = valueAt(g, i), c = valueAt(ct, i), s = sig(x);
      storeAt(du, i, c * x * s);
      storeAt(dg, i, c * valueAt(u, i) * s * (1 + x * (1 - s)));
    }
  },
  wgsl: ({ inputs: [, g] }) => {
    let n = 1;
    for (const d of g.shape) n *= d;
    return [{
      code: `@group(0) @binding(0) var<storage, read> ct: array<f32>;
@group(0) @binding(1) var<storage, read> g: array<f32>;
@group(0) @binding(2) var<storage, read> up: array<f32>;
@group(0) @binding(3) var<storage, read_write> dg: array<f32>;
@group(0) @binding(4) var<storage, read_write> du: array<f32>;
struct U { n: u32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(256)};
  if (i >= u.n) { return; }
  let x = g[i];
  let s = ${SIGMOID_WGSL};
  du[i] = ct[i] * x * s;
  dg[i] = ct[i] * up[i] * s * (1.0 + x * (1.0 - s));
}`,
      workgroups: grid(n),
      uniforms: [n],
    }];
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
