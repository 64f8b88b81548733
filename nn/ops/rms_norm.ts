/**
 * Fused RMSNorm over the last axis: y = w ⊙ x · rsqrt(mean(x²) + eps). Forward saves rstd;
 * backward is one fused op returning dx and dw.
 * @module
 */
// N = rows, H = normalised width
import { isFloat } from "../dtype.ts";
import type { KernelOp } from "../op.ts";
import { defineOp, NONDIFF } from "../op.ts";
import { apply } from "../apply.ts";
import { fmt } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { grid, GRID_ARGS, gridIndex, ROW_ARGS, rowLayout } from "../backend/webgpu/wgsl.ts";
import { parallel } from "../backend/cpu/threads/mod.ts";
import { f32Simd } from "../backend/cpu/simd/mod.ts";

/** Fewest elements per piece of a pooled row kernel (a handoff costs microseconds). */
const ROW_GRAIN_ELEMENTS = 32768;
/** Pieces of rows RMSNorm's backward splits a large input into (each with its own dw partial). */
const DW_PARTS = 16;

/** Fewest rows of width `h` per piece. */
function rowGrain(h: number): number {
  return Math.max(1, Math.ceil(ROW_GRAIN_ELEMENTS / Math.max(1, h)));
}

function rowsOf(shape: readonly number[]): [number, number] {
  const h = shape[shape.length - 1];
  let rows = 1;
  for (let i = 0; i < shape.length - 1; i++) rows *= shape[i];
  return [rows, h];
}

/** Params of `rmsNorm`. */
export interface RmsNormParams {
  /** Added inside the square root. */
  readonly eps: number;
}

/** x [..., H], w [H] → y [..., H], rstd [...]. */
export const rmsNormOp: KernelOp<RmsNormParams, "rms_norm"> = defineOp<RmsNormParams, "rms_norm">({
  name: "rms_norm",
  infer: ([x, w]) => {
    const h = x.shape[x.shape.length - 1];
    if (!isFloat(x.dtype) || w.dtype !== x.dtype || w.shape.length !== 1 || w.shape[0] !== h) {
      throw new Error(
        `Cannot rmsNorm ${x.dtype} ${fmt(x.shape)} with weight ${w.dtype} ${fmt(w.shape)}`,
      );
    }
    return [{ shape: x.shape, dtype: x.dtype }, { shape: x.shape.slice(0, -1), dtype: x.dtype }];
  },
  writesAll: true,
  cpu: ([x, w], [y, rstd], { inputs, params }) => {
    const h = inputs[0].shape[inputs[0].shape.length - 1];
    const rows = h === 0 ? 0 : x.length / h;
    const kernel = f32Simd(x, w, y, rstd) ? "rms_norm_simd" : "rms_norm";
    parallel(kernel, [x, w, y, rstd], [h, params.eps], 0, rows, rowGrain(h));
  },
  // one workgroup per row: Σ x², then the scaled row
  wgsl: ({ inputs: [x], params }, device) => {
    const [rows, h] = rowsOf(x.shape);
    const L = rowLayout(h, device);
    return [{
      code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read> w: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
struct U { rows: u32, h: u32, eps: f32 }
@group(1) @binding(0) var<uniform> u: U;
${L.prelude}
@compute @workgroup_size(${L.wg})
fn main(${ROW_ARGS}) {
  let row = ${L.row};
  let ok = row < u.rows;
  let base = row * u.h;
  var ss = 0.0;
  if (ok) { for (var i = ${L.lane}; i < u.h; i += ${L.lanes}u) { let v = x[base + i]; ss += v * v; } }
  ss = wgSum(ss, lid);
  if (!ok) { return; }
  let rs = 1.0 / sqrt(ss / f32(u.h) + u.eps);
  if (${L.lane} == 0u) { rstd[row] = rs; }
  for (var i = ${L.lane}; i < u.h; i += ${L.lanes}u) { y[base + i] = w[i] * (x[base + i] * rs); }
}`,
      workgroups: L.workgroups(rows),
      uniforms: [rows, h, params.eps],
      uniformTypes: ["u32", "u32", "f32"],
    }];
  },
  // see rmsNormBackward
  vjp: (ct, ctx) => {
    const [dx, dw] = apply(rmsNormBackwardOp, [
      ct[0]!,
      ctx.inputs[0]!,
      ctx.inputs[1]!,
      ctx.outputs[1]!,
    ], {});
    return [dx, dw];
  },
  saves: { inputs: true, outputs: [1] },
  statOutputs: [1],
  examples: [
    { inputs: [{ shape: [3, 8] }, { shape: [8] }], params: { eps: 1e-5 } },
    { inputs: [{ shape: [2, 3, 5] }, { shape: [5] }], params: { eps: 1e-6 } },
  ],
});

/**
 * ct, x, w, rstd → dx, dw with g = w ⊙ ct:
 * dx = rstd·g − x·rstd³·(Σ g⊙x)/H ;  dw = Σ_rows ct ⊙ x · rstd.
 */
export const rmsNormBackwardOp: KernelOp<Record<string, never>, "rms_norm_backward"> = defineOp<
  Record<string, never>,
  "rms_norm_backward"
>({
  name: "rms_norm_backward",
  infer: ([_ct, x, w]) => [{ shape: x.shape, dtype: x.dtype }, { shape: w.shape, dtype: w.dtype }],
  writesAll: true,
  cpu: ([ct, x, w, rstd], [dx, dw], { inputs }) => {
    const h = inputs[1].shape[inputs[1].shape.length - 1];
    const rows = h === 0 ? 0 : x.length / h;
    // dx and a partial dw per piece of rows, in one pass; the partials (f64) are summed in piece
    // order. The pieces depend on the shape only, so any number of threads gives the same bits.
    const parts = x.length >= 2 * ROW_GRAIN_ELEMENTS ? Math.min(DW_PARTS, rows) : 1;
    const partial = new Float64Array(parts * h);
    const kernel = f32Simd(ct, x, w, rstd, dx) ? "rms_norm_backward_simd" : "rms_norm_backward";
    parallel(kernel, [ct, x, w, rstd, dx, partial], [rows, h, parts], 0, parts, 1);
    for (let i = 0; i < h; i++) {
      let sum = 0;
      for (let p = 0; p < parts; p++) sum += partial[p * h + i];
      dw[i] = sum;
    }
  },
  // dx: one workgroup per row (needs Σ w·ct·x); dw: one invocation per column over the rows
  wgsl: ({ inputs: [, x] }, device) => {
    const [rows, h] = rowsOf(x.shape);
    const L = rowLayout(h, device);
    const decl = `@group(0) @binding(0) var<storage, read> ct: array<f32>;
@group(0) @binding(1) var<storage, read> x: array<f32>;
@group(0) @binding(2) var<storage, read> w: array<f32>;
@group(0) @binding(3) var<storage, read> rstd: array<f32>;
struct U { rows: u32, h: u32 }
@group(1) @binding(0) var<uniform> u: U;`;
    const dx = `${decl}
@group(0) @binding(4) var<storage, read_write> dx: array<f32>;
${L.prelude}
@compute @workgroup_size(${L.wg})
fn main(${ROW_ARGS}) {
  let row = ${L.row};
  let ok = row < u.rows;
  let base = row * u.h;
  var dot = 0.0;
  if (ok) { for (var i = ${L.lane}; i < u.h; i += ${L.lanes}u) { dot += w[i] * ct[base + i] * x[base + i]; } }
  dot = wgSum(dot, lid);
  if (!ok) { return; }
  let rs = rstd[row];
  let c = rs * rs * rs * dot / f32(u.h);
  for (var i = ${L.lane}; i < u.h; i += ${L.lanes}u) { dx[base + i] = rs * w[i] * ct[base + i] - x[base + i] * c; }
}`;
    const dw = `${decl}
@group(0) @binding(4) var<storage, read_write> dw: array<f32>;
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(64)};
  if (i >= u.h) { return; }
  var acc = 0.0;
  for (var r = 0u; r < u.rows; r++) { acc += ct[r * u.h + i] * x[r * u.h + i] * rstd[r]; }
  dw[i] = acc;
}`;
    return [
      { code: dx, workgroups: L.workgroups(rows), uniforms: [rows, h], bindings: [0, 1, 2, 3, 4] },
      { code: dw, workgroups: grid(h, 64), uniforms: [rows, h], bindings: [0, 1, 2, 3, 5] },
    ];
  },
  vjp: NONDIFF,
  examples: [
    {
      inputs: [{ shape: [3, 8] }, { shape: [3, 8] }, { shape: [8] }, {
        shape: [3],
        kind: "positive",
      }],
      params: {},
    },
  ],
});

/**
 * RMSNorm over the last axis (MiniMind/Llama): w ⊙ x / sqrt(mean(x²) + eps).
 *
 * @param x input [..., H]
 * @param weight scale [H]
 * @param options eps (default 1e-5)
 * @returns normalised x
 */
export function rmsNorm(x: Tensor, weight: Tensor, options: { eps?: number } = {}): Tensor {
  return apply(rmsNormOp, [x, weight], { eps: options.eps ?? 1e-5 })[0];
}
