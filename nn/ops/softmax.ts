/**
 * Fused last-axis `softmax`, `logSoftmax` and `logsumexp` (max-shifted, stable).
 * @module
 */
// N = rows, V = last-axis size
import { isFloat } from "../dtype.ts";
import type { KernelOp, Meta, NoParams } from "../op.ts";
import { defineOp } from "../op.ts";
import { apply1 } from "../apply.ts";
import { fmt, normAxis } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { sub } from "./binary.ts";
import { mul } from "./arith.ts";
import { exp } from "./unary.ts";
import { sum } from "./reduce.ts";
import { broadcastTo, expandDims } from "./movement.ts";
import type { WgslDevice, WgslKernel } from "../op.ts";
import { NEG_INF, ROW_ARGS, rowLayout } from "../backend/webgpu/wgsl.ts";
import type { TypedArray } from "../dtype.ts";
import { rowSoftmax, rowStats } from "../backend/cpu/simd/ops.ts";

/**
 * One workgroup per row: max, then Σ exp(x − max), then `write` per element (with `lse` in
 * scope), or one value per row when `perRow`.
 */
function rowKernel(
  shape: readonly number[],
  write: string,
  perRow: boolean,
  device: WgslDevice,
): WgslKernel {
  const n = shape[shape.length - 1];
  let rows = 1;
  for (let i = 0; i < shape.length - 1; i++) rows *= shape[i];
  const L = rowLayout(n, device);
  const code = `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> y: array<f32>;
struct U { rows: u32, n: u32 }
@group(1) @binding(0) var<uniform> u: U;
${L.prelude}
@compute @workgroup_size(${L.wg})
fn main(${ROW_ARGS}) {
  let row = ${L.row};
  let ok = row < u.rows;
  let base = row * u.n;
  var m = ${NEG_INF};
  if (ok) { for (var i = ${L.lane}; i < u.n; i += ${L.lanes}u) { m = max(m, x[base + i]); } }
  m = wgMax(m, lid);
  var s = 0.0;
  if (ok && m != ${NEG_INF}) { for (var i = ${L.lane}; i < u.n; i += ${L.lanes}u) { s += exp(x[base + i] - m); } }
  s = wgSum(s, lid);
  var lse = ${NEG_INF};
  if (m != ${NEG_INF}) { lse = m + log(s); }
  if (!ok) { return; }
  ${
    perRow
      ? `if (${L.lane} == 0u) { y[row] = lse; }`
      : `for (var i = ${L.lane}; i < u.n; i += ${L.lanes}u) { ${write} }`
  }
}`;
  return { code, workgroups: L.workgroups(rows), uniforms: [rows, n] };
}

function lastAxis(name: string, [x]: readonly Meta[]): void {
  if (!isFloat(x.dtype) || x.shape.length === 0) {
    throw new Error(
      `Cannot apply ${name} to ${x.dtype} ${fmt(x.shape)}: it needs a float tensor of rank >= 1`,
    );
  }
}

/** Row-wise max and log-sum-exp of the last axis (f64 accumulation). */
function rowLse(x: ArrayLike<number>, base: number, n: number): number {
  let m = -Infinity;
  for (let i = 0; i < n; i++) if (x[base + i] > m) m = x[base + i];
  if (m === -Infinity) return -Infinity;
  let s = 0;
  for (let i = 0; i < n; i++) s += Math.exp(x[base + i] - m);
  return m + Math.log(s);
}

/**
 * `rowLse` of every row [rows, n]: f32 through the SIMD kernel's max and Σ exp (same f64 sum),
 * anything else through the loop.
 */
function allLse(x: TypedArray, rows: number, n: number): Float64Array {
  const out = new Float64Array(rows);
  const st = rowStats(x, rows, n);
  for (let r = 0; r < rows; r++) {
    if (!st) out[r] = rowLse(x, r * n, n);
    else out[r] = st[2 * r] === -Infinity ? -Infinity : st[2 * r] + Math.log(st[2 * r + 1]);
  }
  return out;
}

function lastSize(m: Meta): number {
  return m.shape[m.shape.length - 1];
}

/** softmax over the last axis. */
export const softmaxOp: KernelOp<NoParams, "softmax"> = defineOp<NoParams, "softmax">({
  name: "softmax",
  infer: (ins) => (lastAxis("softmax", ins), [{ shape: ins[0].shape, dtype: ins[0].dtype }]),
  cpu: ([x], [y], { inputs }) => {
    const n = lastSize(inputs[0]), rows = n === 0 ? 0 : x.length / n;
    if (rowSoftmax(x, y, rows, n)) return; // f32: the SIMD kernel
    const lse = allLse(x, rows, n);
    for (let r = 0, base = 0; r < rows; r++, base += n) {
      for (let i = 0; i < n; i++) y[base + i] = Math.exp(x[base + i] - lse[r]);
    }
  },
  wgsl: ({ inputs: [x] }, device) => [
    rowKernel(x.shape, "y[base + i] = exp(x[base + i] - lse);", false, device),
  ],
  // dx = y ⊙ (ct − Σ ct ⊙ y)
  vjp: (ct, ctx) => {
    const y = ctx.outputs[0]!, g = ct[0]!;
    return [mul(y, sub(g, sum(mul(g, y), -1, true)))];
  },
  saves: { inputs: false, outputs: true },
  examples: [{ inputs: [{ shape: [3, 7] }], params: {} }, {
    inputs: [{ shape: [2, 2, 5] }],
    params: {},
  }],
});

/** log-softmax over the last axis. */
export const logSoftmaxOp: KernelOp<NoParams, "log_softmax"> = defineOp<NoParams, "log_softmax">({
  name: "log_softmax",
  infer: (ins) => (lastAxis("logSoftmax", ins), [{ shape: ins[0].shape, dtype: ins[0].dtype }]),
  cpu: ([x], [y], { inputs }) => {
    const n = lastSize(inputs[0]), rows = n === 0 ? 0 : x.length / n;
    const lse = allLse(x, rows, n);
    for (let r = 0, base = 0; r < rows; r++, base += n) {
      for (let i = 0; i < n; i++) y[base + i] = x[base + i] - lse[r];
    }
  },
  wgsl: ({ inputs: [x] }, device) => [
    rowKernel(x.shape, "y[base + i] = x[base + i] - lse;", false, device),
  ],
  // dx = ct − exp(y) Σ ct
  vjp: (ct, ctx) => {
    const y = ctx.outputs[0]!, g = ct[0]!;
    return [sub(g, mul(exp(y), sum(g, -1, true)))];
  },
  saves: { inputs: false, outputs: true },
  examples: [{ inputs: [{ shape: [4, 6] }], params: {} }],
});

/** log Σ exp over the last axis (that axis removed). */
export const logsumexpOp: KernelOp<NoParams, "logsumexp"> = defineOp<NoParams, "logsumexp">({
  name: "logsumexp",
  infer: (
    ins,
  ) => (lastAxis("logsumexp", ins), [{ shape: ins[0].shape.slice(0, -1), dtype: ins[0].dtype }]),
  cpu: ([x], [y], { inputs }) => {
    y.set(allLse(x, y.length, lastSize(inputs[0])));
  },
  wgsl: ({ inputs: [x] }, device) => [rowKernel(x.shape, "", true, device)],
  // dx = ct ⊙ exp(x − y)
  vjp: (ct, ctx) => {
    const x = ctx.inputs[0]!;
    const y = broadcastTo(expandDims(ctx.outputs[0]!, -1), x.shape);
    return [mul(broadcastTo(expandDims(ct[0]!, -1), x.shape), exp(sub(x, y)))];
  },
  saves: { inputs: true, outputs: true },
  examples: [{ inputs: [{ shape: [3, 5] }], params: {} }, { inputs: [{ shape: [9] }], params: {} }],
});

function checkLast(x: Tensor, axis: number, name: string): void {
  if (normAxis(axis, x.rank) !== x.rank - 1) {
    throw new Error(
      `Cannot apply ${name} over axis ${axis} of ${fmt(x.shape)}: only the last axis is supported`,
    );
  }
}

/**
 * Softmax over the last axis.
 *
 * @param x input
 * @param axis must be the last axis (default -1)
 * @returns probabilities
 */
export function softmax(x: Tensor, axis = -1): Tensor {
  checkLast(x, axis, "softmax");
  return apply1(softmaxOp, [x], {});
}

/**
 * Log-softmax over the last axis.
 *
 * @param x input
 * @param axis must be the last axis (default -1)
 * @returns log-probabilities
 */
export function logSoftmax(x: Tensor, axis = -1): Tensor {
  checkLast(x, axis, "logSoftmax");
  return apply1(logSoftmaxOp, [x], {});
}

/**
 * log Σ exp over the last axis.
 *
 * @param x input
 * @param axis must be the last axis (default -1)
 * @param keepdims keep the reduced axis as size 1
 * @returns the reduction
 */
export function logsumexp(x: Tensor, axis = -1, keepdims = false): Tensor {
  checkLast(x, axis, "logsumexp");
  const y = apply1(logsumexpOp, [x], {});
  return keepdims ? expandDims(y, -1) : y;
}
