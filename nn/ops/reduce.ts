/**
 * Reductions over axes: `sum`, `sumSquares` (Σx², one pass and no x² tensor: the global
 * gradient norm), `max` (primitives), `argmax` (non-differentiable), and `mean` composed from
 * `sum`.
 * @module
 */
import { isFloat } from "../dtype.ts";
import type { KernelOp, Meta, WgslDevice, WgslKernel } from "../op.ts";
import { defineOp, NONDIFF } from "../op.ts";
import { apply1 } from "../apply.ts";
import { normAxes, normAxis, sizeOf, stridesOf } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { equal } from "./binary.ts";
import { affine, cast, div, mul } from "./arith.ts";
import { broadcastTo, reshape } from "./movement.ts";
import type { DType } from "../dtype.ts";
import { sumOfSquares } from "../backend/cpu/threads/mod.ts";
import {
  cachedCode,
  coalesce,
  grid,
  GRID_ARGS,
  gridIndex,
  NEG_INF,
  ROW_INDEX,
  rowGrid,
  stridedPrelude,
  stridedUniforms,
  wgslType,
} from "../backend/webgpu/wgsl.ts";

/** Params of a reduction. */
export interface ReduceParams {
  /** Reduced axes (sorted, non-negative). */
  readonly axes: readonly number[];
  /** Keep reduced axes with size 1. */
  readonly keepdims: boolean;
}

function reducedShape(
  shape: readonly number[],
  axes: readonly number[],
  keepdims: boolean,
): number[] {
  const out: number[] = [];
  for (let i = 0; i < shape.length; i++) {
    if (axes.includes(i)) {
      if (keepdims) out.push(1);
    } else out.push(shape[i]);
  }
  return out;
}

function inferReduce(name: string, [x]: readonly Meta[], p: ReduceParams): Meta[] {
  for (const a of p.axes) {
    if (a < 0 || a >= x.shape.length) {
      throw new Error(`Cannot ${name} over axis ${a} of a rank-${x.shape.length} tensor`);
    }
  }
  return [{ shape: reducedShape(x.shape, p.axes, p.keepdims), dtype: x.dtype }];
}

/**
 * Folds every input element into its output slot: `init` fills, `step(acc, v)` accumulates.
 * Contiguous trailing reductions take a fast path.
 */
function reduceKernel(
  x: ArrayLike<number>,
  y: { [i: number]: number; length: number },
  shape: readonly number[],
  axes: readonly number[],
  init: number,
  step: (acc: number, v: number) => number,
): void {
  const r = shape.length;
  for (let i = 0; i < y.length; i++) y[i] = init;
  // fast path: reduce a trailing block of axes
  let trailing = true;
  for (let i = 0; i < axes.length; i++) {
    if (axes[axes.length - 1 - i] !== r - 1 - i) trailing = false;
  }
  if (trailing) {
    let inner = 1;
    for (const a of axes) inner *= shape[a];
    const outer = inner === 0 ? 0 : x.length / inner;
    for (let o = 0; o < outer; o++) {
      let acc = init;
      const base = o * inner;
      for (let i = 0; i < inner; i++) acc = step(acc, x[base + i]);
      y[o] = acc;
    }
    return;
  }
  // general: odometer over the input with output strides (0 on reduced axes)
  const outShape = shape.map((d, i) => (axes.includes(i) ? 1 : d));
  const os = stridesOf(outShape).map((s, i) => (axes.includes(i) ? 0 : s));
  const idx = new Array<number>(r).fill(0);
  let o = 0;
  for (let i = 0; i < x.length; i++) {
    y[o] = step(y[o], x[i]);
    for (let ax = r - 1; ax >= 0; ax--) {
      idx[ax]++;
      o += os[ax];
      if (idx[ax] < shape[ax]) break;
      o -= os[ax] * shape[ax];
      idx[ax] = 0;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// WGSL: one invocation per output (software adapters, many outputs) or one workgroup per output
// (real GPUs, few long reductions), accumulating in f32 (i32/u32 wrap like the CPU stores).

type ReduceKind = "sum" | "sumsq" | "max";

function reduceInit(kind: ReduceKind, t: string): string {
  if (kind !== "max") return `${t}(0)`;
  if (t === "f32") return NEG_INF;
  return t === "i32" ? "i32(-2147483647) - 1" : "0u";
}

function reduceStep(kind: ReduceKind, acc: string, v: string): string {
  if (kind === "sumsq") return `${acc} + ${v} * ${v}`;
  return kind === "sum" ? `${acc} + ${v}` : `select(${acc}, ${v}, ${v} > ${acc})`;
}

/** WGSL plan of `sum` / `sumsq` / `max` over any set of axes. */
function reduceWgsl(
  kind: ReduceKind,
  x: Meta,
  axes: readonly number[],
  device: WgslDevice,
): WgslKernel[] {
  const t = wgslType(x.dtype as DType);
  const st = stridesOf(x.shape);
  const kept = x.shape.map((_, i) => i).filter((i) => !axes.includes(i));
  const red = coalesce(axes.map((a) => x.shape[a]), [axes.map((a) => st[a])]);
  let nOut = 1, nRed = 1;
  for (const i of kept) nOut *= x.shape[i];
  for (const a of axes) nRed *= x.shape[a];
  if (red.shape.length > 4) {
    throw new Error(
      `Cannot ${kind} over ${red.shape.length} non-contiguous axes on WebGPU: at most 4`,
    );
  }
  const pad4 = (xs: number[]) => [...xs, ...new Array(4 - xs.length).fill(0)];
  const uniforms = [
    ...stridedUniforms(kept.map((i) => x.shape[i]), [kept.map((i) => st[i])]),
    ...pad4(red.shape),
    ...pad4(red.strides[0]),
    nRed,
    red.shape.length,
    0,
    0,
  ];
  // offset of reduction step r: one axis is a multiply, more need divisions
  const roff = red.shape.length <= 1 ? "r * u.rst[0]" : "roff(r)";
  const head = () =>
    `@group(0) @binding(0) var<storage, read> x: array<${t}>;
@group(0) @binding(1) var<storage, read_write> y: array<${t}>;
${
      stridedPrelude(
        1,
        "rshape: vec4<u32>, rst: vec4<u32>, nred: u32, rrank: u32, _q0: u32, _q1: u32,",
      )
    }
fn roff(r: u32) -> u32 {
  var rem = r;
  var o = 0u;
  for (var d = i32(u.rrank) - 1; d >= 0; d--) {
    let c = rem % u.rshape[d];
    rem = rem / u.rshape[d];
    o += c * u.rst[d];
  }
  return o;
}`;
  const wgPerOutput = nRed >= 64 && (device.software ? nOut < 64 : nOut < 65536 * 4);
  const key = `reduce ${kind} ${t} ${red.shape.length <= 1} ${wgPerOutput}`;
  if (!wgPerOutput) {
    const code = cachedCode(key, () =>
      `${head()}
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(64)};
  if (i >= u.n) { return; }
  let base = offsets(i)[0];
  var acc = ${reduceInit(kind, t)};
  for (var r = 0u; r < u.nred; r++) {
    let v = x[base + ${roff}];
    acc = ${reduceStep(kind, "acc", "v")};
  }
  y[i] = acc;
}`);
    return [{ code, workgroups: grid(nOut, 64), uniforms }];
  }
  const code = cachedCode(key, () =>
    `${head()}
var<workgroup> part: array<${t}, 256>;
@compute @workgroup_size(256)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let i = ${ROW_INDEX};
  let inRange = i < u.n;
  var base = 0u;
  if (inRange) { base = offsets(i)[0]; }
  var acc = ${reduceInit(kind, t)};
  if (inRange) {
    for (var r = lid; r < u.nred; r += 256u) {
      let v = x[base + ${roff}];
      acc = ${reduceStep(kind, "acc", "v")};
    }
  }
  part[lid] = acc;
  workgroupBarrier();
  for (var s = 128u; s > 0u; s = s >> 1u) {
    if (lid < s) {
      let a = part[lid];
      let v = part[lid + s];
      part[lid] = ${reduceStep(kind === "sumsq" ? "sum" : kind, "a", "v")}; // partial sums add
    }
    workgroupBarrier();
  }
  if (lid == 0u && inRange) { y[i] = part[0]; }
}`);
  return [{ code, workgroups: rowGrid(nOut), uniforms }];
}

function keepShape(m: Meta, p: ReduceParams): number[] {
  return reducedShape(m.shape, p.axes, true);
}

/** Sum over axes. */
export const sumOp: KernelOp<ReduceParams, "sum"> = defineOp<ReduceParams, "sum">({
  name: "sum",
  infer: (ins, p) => inferReduce("sum", ins, p),
  writesAll: true,
  cpu: ([x], [y], { inputs, params }) =>
    reduceKernel(x, y, inputs[0].shape, params.axes, 0, (a, v) => a + v),
  wgsl: ({ inputs: [x], params }, device) => reduceWgsl("sum", x, params.axes, device),
  // d sum = broadcast(ct)
  vjp: (
    ct,
    ctx,
  ) => [broadcastTo(reshape(ct[0]!, keepShape(ctx.inMetas[0], ctx.params)), ctx.inMetas[0].shape)],
  saves: { inputs: false },
  examples: [
    { inputs: [{ shape: [3, 4] }], params: { axes: [1], keepdims: false } },
    {
      inputs: [{ shape: [2, 3, 4] }],
      params: { axes: [0, 2], keepdims: true },
      label: "non-trailing",
    },
    { inputs: [{ shape: [2, 3] }], params: { axes: [0, 1], keepdims: false }, label: "all" },
  ],
});

/** Σx² over a whole array, four f64 accumulators (a monomorphic loop: 20× the generic fold). */
function sumSquaresAll(x: ArrayLike<number>): number {
  let a0 = 0, a1 = 0, a2 = 0, a3 = 0, i = 0;
  const n = x.length, n4 = n - (n % 4);
  for (; i < n4; i += 4) {
    const v0 = x[i], v1 = x[i + 1], v2 = x[i + 2], v3 = x[i + 3];
    a0 += v0 * v0;
    a1 += v1 * v1;
    a2 += v2 * v2;
    a3 += v3 * v3;
  }
  for (; i < n; i++) a0 += x[i] * x[i];
  return (a0 + a1) + (a2 + a3);
}

/** Sum of squares over axes (Σx² without an x² tensor). */
export const sumSquaresOp: KernelOp<ReduceParams, "sum_squares"> = defineOp<
  ReduceParams,
  "sum_squares"
>({
  name: "sum_squares",
  infer: (ins, p) => {
    if (!isFloat(ins[0].dtype)) {
      throw new Error(`Cannot take the sum of squares of a ${ins[0].dtype} tensor: need a float`);
    }
    return inferReduce("sum_squares", ins, p);
  },
  writesAll: true,
  cpu: ([x], [y], { inputs, params }) => {
    const shape = inputs[0].shape;
    if (params.axes.length === shape.length) {
      // the global-norm case: BLAS's dsdot on pieces of large f32 arrays (f64 sums of f32
      // products), on the kernel pool's threads
      y[0] = x instanceof Float32Array && x.length >= 4096 ? sumOfSquares(x) : sumSquaresAll(x);
    } else reduceKernel(x, y, shape, params.axes, 0, (a, v) => a + v * v);
  },
  wgsl: ({ inputs: [x], params }, device) => reduceWgsl("sumsq", x, params.axes, device),
  // d Σx² = 2x·broadcast(ct)
  vjp: (ct, ctx) => {
    const x = ctx.inputs[0]!;
    const c = broadcastTo(reshape(ct[0]!, keepShape(ctx.inMetas[0], ctx.params)), x.shape);
    return [mul(affine(x, 2), c)];
  },
  examples: [
    { inputs: [{ shape: [3, 4] }], params: { axes: [1], keepdims: false } },
    { inputs: [{ shape: [2, 3, 4] }], params: { axes: [0, 1, 2], keepdims: false }, label: "all" },
    {
      inputs: [{ shape: [3, 150] }],
      params: { axes: [0, 1], keepdims: false },
      label: "long (WebGPU: a workgroup per output)",
    },
  ],
});

/** Max over axes. */
export const maxOp: KernelOp<ReduceParams, "max"> = defineOp<ReduceParams, "max">({
  name: "max",
  infer: (ins, p) => inferReduce("max", ins, p),
  cpu: ([x], [y], { inputs, params }) =>
    reduceKernel(x, y, inputs[0].shape, params.axes, -Infinity, (a, v) => (v > a ? v : a)),
  wgsl: ({ inputs: [x], params }, device) => reduceWgsl("max", x, params.axes, device),
  // the gradient is shared equally by the maxima
  vjp: (ct, ctx) => {
    const x = ctx.inputs[0]!;
    const ks = keepShape(ctx.inMetas[0], ctx.params);
    const yb = broadcastTo(reshape(ctx.outputs[0]!, ks), x.shape);
    const m = cast(equal(x, yb), x.dtype);
    const cnt = broadcastTo(sum(m, ctx.params.axes, true), x.shape);
    return [div(mul(broadcastTo(reshape(ct[0]!, ks), x.shape), m), cnt)];
  },
  saves: { inputs: true, outputs: true },
  examples: [
    { inputs: [{ shape: [3, 5] }], params: { axes: [1], keepdims: false } },
    { inputs: [{ shape: [4, 3, 2] }], params: { axes: [0], keepdims: true }, label: "leading" },
  ],
});

/** Index of the maximum along one axis (i32, first on ties); not differentiable. */
export const argmaxOp: KernelOp<{ readonly axis: number }, "argmax"> = defineOp<
  { readonly axis: number },
  "argmax"
>({
  name: "argmax",
  infer: ([x], p) => [{ shape: x.shape.filter((_, i) => i !== p.axis), dtype: "i32" }],
  cpu: ([x], [y], { inputs, params }) => {
    const shape = inputs[0].shape;
    const n = shape[params.axis];
    let inner = 1;
    for (let i = params.axis + 1; i < shape.length; i++) inner *= shape[i];
    const outer = sizeOf(shape) / Math.max(1, n * inner);
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < inner; j++) {
        let best = -Infinity, bi = 0;
        for (let i = 0; i < n; i++) {
          const v = x[(o * n + i) * inner + j];
          if (v > best) {
            best = v;
            bi = i;
          }
        }
        y[o * inner + j] = bi;
      }
    }
  },
  wgsl: ({ inputs: [x], params }) => {
    const shape = x.shape;
    const n = shape[params.axis];
    let inner = 1, outer = 1;
    for (let i = params.axis + 1; i < shape.length; i++) inner *= shape[i];
    for (let i = 0; i < params.axis; i++) outer *= shape[i];
    const t = wgslType(x.dtype);
    const code = `@group(0) @binding(0) var<storage, read> x: array<${t}>;
@group(0) @binding(1) var<storage, read_write> y: array<i32>;
struct U { count: u32, n: u32, inner: u32, _p: u32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let i = ${gridIndex(64)};
  if (i >= u.count) { return; }
  let o = i / u.inner;
  let j = i % u.inner;
  var best = ${reduceInit("max", t)};
  var bi = 0u;
  for (var k = 0u; k < u.n; k++) {
    let v = x[(o * u.n + k) * u.inner + j];
    if (v > best) { best = v; bi = k; }
  }
  y[i] = i32(bi);
}`;
    return [{ code, workgroups: grid(outer * inner, 64), uniforms: [outer * inner, n, inner, 0] }];
  },
  vjp: NONDIFF,
  examples: [{ inputs: [{ shape: [3, 7] }], params: { axis: 1 } }, {
    inputs: [{ shape: [4, 3] }],
    params: { axis: 0 },
  }],
});

/**
 * Sum over `axes` (all when omitted).
 *
 * @param x input
 * @param axes axis or axes (negative counts from the end)
 * @param keepdims keep reduced axes as size 1
 * @returns the sum
 */
export function sum(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  return apply1(sumOp, [x], { axes: normAxes(axes, x.rank), keepdims });
}

/**
 * Sum of squares over `axes` (all when omitted): `sum(square(x))` in one pass, without the x²
 * tensor.
 *
 * @param x float input
 * @param axes axis or axes (negative counts from the end)
 * @param keepdims keep reduced axes as size 1
 * @returns Σx²
 * @example
 * ```ts
 * import { sumSquares, tensor } from "@minimind/ts";
 * await sumSquares(tensor([3, 4])).item(); // 25
 * ```
 */
export function sumSquares(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  return apply1(sumSquaresOp, [x], { axes: normAxes(axes, x.rank), keepdims });
}

/**
 * Maximum over `axes` (all when omitted).
 *
 * @param x input
 * @param axes axis or axes
 * @param keepdims keep reduced axes as size 1
 * @returns the maximum
 */
export function max(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  return apply1(maxOp, [x], { axes: normAxes(axes, x.rank), keepdims });
}

/**
 * Mean over `axes` (all when omitted), composed from `sum`.
 *
 * @param x input
 * @param axes axis or axes
 * @param keepdims keep reduced axes as size 1
 * @returns the mean
 */
export function mean(x: Tensor, axes?: number | readonly number[], keepdims = false): Tensor {
  if (!isFloat(x.dtype)) throw new Error(`Cannot take the mean of a ${x.dtype} tensor`);
  const ax = normAxes(axes, x.rank);
  let n = 1;
  for (const a of ax) n *= x.shape[a];
  return affine(sum(x, ax, keepdims), 1 / n);
}

/**
 * Index of the maximum along `axis` (i32).
 *
 * @param x input
 * @param axis axis (default last)
 * @returns indices
 */
export function argmax(x: Tensor, axis = -1): Tensor {
  return apply1(argmaxOp, [x], { axis: normAxis(axis, x.rank) });
}
