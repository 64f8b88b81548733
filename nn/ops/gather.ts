/**
 * Indexing ops: `takeAlongAxis` (gather) and its VJP `scatterAdd`, `embedding` (row gather)
 * and its VJP `embeddingBackward`, and `topk` (not differentiable).
 * @module
 */
// V = vocab rows, H = row width
import { isFloat } from "../dtype.ts";
import type { KernelOp, Meta, WgslKernel } from "../op.ts";
import { defineOp, NONDIFF, STATUS_BINDING } from "../op.ts";
import { apply, apply1 } from "../apply.ts";
import { fmt, normAxis } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { zeros } from "../creation.ts";
import { kernelThreads, parallel } from "../backend/cpu/threads/mod.ts";
import {
  grid,
  GRID_ARGS,
  gridIndex,
  NEG_INF,
  ROW_INDEX,
  rowGrid,
  statusDecl,
  wgslType,
} from "../backend/webgpu/wgsl.ts";

// WGSL: ids are checked on the GPU; a bad one writes 0 and is reported through the status
// buffer, which the next read turns into an error.

/** out[(o, j, i)] = x[(o, idx, i)]: one invocation per output element. */
function gatherKernel(outer: number, n: number, m: number, inner: number, it: string): WgslKernel {
  return {
    code: `@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read> idx: array<${it}>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
${statusDecl(3)}
struct U { count: u32, n: u32, m: u32, inner: u32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let q = ${gridIndex(256)};
  if (q >= u.count) { return; }
  let i = q % u.inner;
  let o = q / (u.m * u.inner);
  let k = i32(idx[q]);
  if (k < 0 || u32(k) >= u.n) { report(1u, k, u.n); y[q] = 0u; return; }
  y[q] = x[(o * u.n + u32(k)) * u.inner + i];
}`,
    workgroups: grid(outer * m * inner),
    uniforms: [outer * m * inner, n, m, inner],
    bindings: [0, 1, 2, STATUS_BINDING],
  };
}

function isInt(m: Meta): boolean {
  return m.dtype === "i32" || m.dtype === "u32";
}

/** outer × n × inner decomposition of `shape` around `axis`. */
function around(shape: readonly number[], axis: number): [number, number, number] {
  let outer = 1, inner = 1;
  for (let i = 0; i < axis; i++) outer *= shape[i];
  for (let i = axis + 1; i < shape.length; i++) inner *= shape[i];
  return [outer, shape[axis], inner];
}

function checkIndexShape(name: string, x: Meta, idx: Meta, axis: number): void {
  if (!isInt(idx)) {
    throw new Error(`Cannot ${name} with ${idx.dtype} indices: they must be i32 or u32`);
  }
  if (
    idx.shape.length !== x.shape.length || idx.shape.some((d, i) => i !== axis && d !== x.shape[i])
  ) {
    throw new Error(
      `Cannot ${name} shape ${fmt(x.shape)} with indices ${
        fmt(idx.shape)
      } along axis ${axis}: other axes must match`,
    );
  }
}

/** Params of the axis ops. */
export interface AxisParams {
  /** The indexed axis (non-negative). */
  readonly axis: number;
}

/** out[..., j, ...] = x[..., idx[..., j, ...], ...] along `axis`. */
export const takeAlongAxisOp: KernelOp<AxisParams, "take_along_axis"> = defineOp<
  AxisParams,
  "take_along_axis"
>({
  name: "take_along_axis",
  infer: ([x, idx], { axis }) => {
    checkIndexShape("takeAlongAxis", x, idx, axis);
    return [{ shape: idx.shape, dtype: x.dtype }];
  },
  cpu: ([x, idx], [y], { inputs, params }) => {
    const [outer, n, inner] = around(inputs[0].shape, params.axis);
    const m = inputs[1].shape[params.axis];
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < m; j++) {
        for (let i = 0; i < inner; i++) {
          const q = (o * m + j) * inner + i;
          const k = idx[q];
          if (k < 0 || k >= n) throw new Error(`Cannot take index ${k} along an axis of size ${n}`);
          y[q] = x[(o * n + k) * inner + i];
        }
      }
    }
  },
  wgsl: ({ inputs: [x, idx], params }) => {
    const [outer, n, inner] = around(x.shape, params.axis);
    return [gatherKernel(outer, n, idx.shape[params.axis], inner, wgslType(idx.dtype))];
  },
  // d gather = scatter-add of ct into zeros
  vjp: (ct, ctx) => {
    const x = ctx.inMetas[0];
    const z = zeros(x.shape, x.dtype, { backend: ct[0]!.backend });
    return [scatterAdd(z, ctx.inputs[1]!, ct[0]!, ctx.params.axis), null];
  },
  saves: { inputs: [1] },
  examples: [
    {
      inputs: [{ shape: [3, 5] }, { shape: [3, 2], kind: "int", high: 5, dtype: "i32" }],
      params: { axis: 1 },
    },
    {
      inputs: [{ shape: [4, 3] }, { shape: [6, 3], kind: "int", high: 4, dtype: "i32" }],
      params: { axis: 0 },
      label: "repeats",
    },
  ],
});

/** out = base; out[..., idx[..., j, ...], ...] += upd[..., j, ...] along `axis`. */
export const scatterAddOp: KernelOp<AxisParams, "scatter_add"> = defineOp<
  AxisParams,
  "scatter_add"
>({
  name: "scatter_add",
  infer: ([base, idx, upd], { axis }) => {
    checkIndexShape("scatterAdd", base, idx, axis);
    if (
      upd.shape.length !== idx.shape.length || upd.shape.some((d, i) => d !== idx.shape[i]) ||
      upd.dtype !== base.dtype
    ) {
      throw new Error(
        `Cannot scatterAdd updates ${upd.dtype} ${fmt(upd.shape)} with indices ${
          fmt(idx.shape)
        } into ${base.dtype} ${fmt(base.shape)}`,
      );
    }
    return [{ shape: base.shape, dtype: base.dtype }];
  },
  cpu: ([base, idx, upd], [y], { inputs, params }) => {
    y.set(base);
    const [outer, n, inner] = around(inputs[0].shape, params.axis);
    const m = inputs[1].shape[params.axis];
    for (let o = 0; o < outer; o++) {
      for (let j = 0; j < m; j++) {
        for (let i = 0; i < inner; i++) {
          const q = (o * m + j) * inner + i;
          const k = idx[q];
          if (k < 0 || k >= n) {
            throw new Error(`Cannot scatter to index ${k} along an axis of size ${n}`);
          }
          y[(o * n + k) * inner + i] += upd[q];
        }
      }
    }
  },
  // copy base, then one invocation per (outer, inner) column adds its m updates in order: no
  // two invocations touch one element, so no atomics and a deterministic sum
  wgsl: ({ inputs: [base, idx], params }) => {
    const [outer, n, inner] = around(base.shape, params.axis);
    const m = idx.shape[params.axis];
    const copy = `@group(0) @binding(0) var<storage, read> x: array<u32>;
@group(0) @binding(1) var<storage, read_write> y: array<u32>;
struct U { count: u32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let q = ${gridIndex(256)};
  if (q < u.count) { y[q] = x[q]; }
}`;
    const add = `@group(0) @binding(0) var<storage, read> idx: array<${wgslType(idx.dtype)}>;
@group(0) @binding(1) var<storage, read> upd: array<f32>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${statusDecl(3)}
struct U { count: u32, n: u32, m: u32, inner: u32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let c = ${gridIndex(64)};
  if (c >= u.count) { return; }
  let o = c / u.inner;
  let i = c % u.inner;
  for (var j = 0u; j < u.m; j++) {
    let q = (o * u.m + j) * u.inner + i;
    let k = i32(idx[q]);
    if (k < 0 || u32(k) >= u.n) { report(1u, k, u.n); continue; }
    let t = (o * u.n + u32(k)) * u.inner + i;
    y[t] = y[t] + upd[q];
  }
}`;
    const total = outer * n * inner;
    return [
      { code: copy, workgroups: grid(total), uniforms: [total], bindings: [0, 3] },
      {
        code: add,
        workgroups: grid(outer * inner, 64),
        uniforms: [outer * inner, n, m, inner],
        bindings: [1, 2, 3, STATUS_BINDING],
      },
    ];
  },
  // d base = ct; d upd = gather(ct)
  vjp: (ct, ctx) => [ct[0], null, takeAlongAxis(ct[0]!, ctx.inputs[1]!, ctx.params.axis)],
  saves: { inputs: [1] },
  examples: [
    {
      inputs: [{ shape: [3, 5] }, { shape: [3, 4], kind: "int", high: 5, dtype: "i32" }, {
        shape: [3, 4],
      }],
      params: { axis: 1 },
    },
  ],
});

/**
 * Gathers along `axis` (NumPy `take_along_axis`): indices have x's rank, equal sizes off-axis.
 *
 * @param x source
 * @param indices i32/u32 indices
 * @param axis the axis (default last)
 * @returns gathered values, shaped like `indices`
 */
export function takeAlongAxis(x: Tensor, indices: Tensor, axis = -1): Tensor {
  return apply1(takeAlongAxisOp, [x, indices], { axis: normAxis(axis, x.rank) });
}

/**
 * Adds `updates` into a copy of `base` at `indices` along `axis` (duplicates accumulate).
 *
 * @param base destination values
 * @param indices i32/u32 indices, shaped like `updates`
 * @param updates values to add
 * @param axis the axis (default last)
 * @returns the updated copy
 */
export function scatterAdd(base: Tensor, indices: Tensor, updates: Tensor, axis = -1): Tensor {
  return apply1(scatterAddOp, [base, indices, updates], { axis: normAxis(axis, base.rank) });
}

/** Params of `embedding`. */
export type EmbeddingParams = Record<string, never>;

/** Row lookup: w [V, H], ids [...] → [..., H]. */
export const embeddingOp: KernelOp<EmbeddingParams, "embedding"> = defineOp<
  EmbeddingParams,
  "embedding"
>({
  name: "embedding",
  infer: ([w, ids]) => {
    if (w.shape.length !== 2 || !isInt(ids)) {
      throw new Error(
        `Cannot look up ${ids.dtype} ids ${fmt(ids.shape)} in a table of shape ${fmt(w.shape)}`,
      );
    }
    return [{ shape: [...ids.shape, w.shape[1]], dtype: w.dtype }];
  },
  cpu: ([w, ids], [y], { inputs }) => {
    const [v, h] = inputs[0].shape;
    for (let i = 0; i < ids.length; i++) {
      const id = ids[i];
      if (id < 0 || id >= v) {
        throw new Error(`Cannot embed token id ${id}: the table has ${v} rows`);
      }
      y.set(w.subarray(id * h, id * h + h), i * h);
    }
  },
  wgsl: ({ inputs: [w, ids] }) => {
    const [v, h] = w.shape;
    let n = 1;
    for (const d of ids.shape) n *= d;
    // a row gather is a gather along axis 0 of [V, H] with ids repeated over H: index ids[q / H]
    return [{
      code: `@group(0) @binding(0) var<storage, read> w: array<u32>;
@group(0) @binding(1) var<storage, read> ids: array<${wgslType(ids.dtype)}>;
@group(0) @binding(2) var<storage, read_write> y: array<u32>;
${statusDecl(3)}
struct U { count: u32, v: u32, h: u32, _p: u32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(256)
fn main(${GRID_ARGS}) {
  let q = ${gridIndex(256)};
  if (q >= u.count) { return; }
  let t = q / u.h;
  let k = i32(ids[t]);
  if (k < 0 || u32(k) >= u.v) { report(1u, k, u.v); y[q] = 0u; return; }
  y[q] = w[u32(k) * u.h + q % u.h];
}`,
      workgroups: grid(n * h),
      uniforms: [n * h, v, h, 0],
      bindings: [0, 1, 2, STATUS_BINDING],
    }];
  },
  // d table = scatter-add rows of ct at ids
  vjp: (ct, ctx) => [embeddingBackward(ct[0]!, ctx.inputs[1]!, ctx.inMetas[0].shape[0]), null],
  saves: { inputs: [1] },
  examples: [
    {
      inputs: [{ shape: [11, 4] }, { shape: [2, 5], kind: "int", high: 11, dtype: "i32" }],
      params: {},
    },
  ],
});

/** Params of `embeddingBackward`. */
export interface EmbeddingBackwardParams {
  /** Table rows. */
  readonly vocab: number;
}

/** Gradient of `embedding`: ct [..., H], ids [...] → [V, H] (duplicates accumulate). */
export const embeddingBackwardOp: KernelOp<EmbeddingBackwardParams, "embedding_backward"> =
  defineOp<EmbeddingBackwardParams, "embedding_backward">({
    name: "embedding_backward",
    infer: (
      [ct, _ids],
      { vocab },
    ) => [{ shape: [vocab, ct.shape[ct.shape.length - 1]], dtype: ct.dtype }],
    writesAll: true,
    cpu: ([ct, ids], [y], { inputs }) => {
      const h = inputs[0].shape[inputs[0].shape.length - 1];
      // split by columns: every element still sums its tokens in order (threads/kernels.ts)
      const threads = ct.length >= 65536 && h >= 64 ? kernelThreads() : 1;
      const parts = threads > 1 ? 2 * threads : 1;
      parallel("embedding_backward", [ct, ids, y], [h, parts], 0, parts, 1);
    },
    // one invocation per (column, vocab block) walks every token in order and adds the rows whose
    // id falls in its block: deterministic, no atomics; blocks add parallelism when H is small
    wgsl: ({ inputs: [ct, ids], params }) => {
      const h = ct.shape[ct.shape.length - 1];
      let n = 1;
      for (const d of ids.shape) n *= d;
      const blocks = Math.max(1, Math.min(64, Math.ceil(16384 / Math.max(h, 1)), params.vocab));
      const per = Math.ceil(params.vocab / blocks);
      return {
        kernels: [{
          code: `@group(0) @binding(0) var<storage, read> ct: array<f32>;
@group(0) @binding(1) var<storage, read> ids: array<${wgslType(ids.dtype)}>;
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
${statusDecl(3)}
struct U { count: u32, ntok: u32, h: u32, v: u32, per: u32 }
@group(1) @binding(0) var<uniform> u: U;
@compute @workgroup_size(64)
fn main(${GRID_ARGS}) {
  let c = ${gridIndex(64)};
  if (c >= u.count) { return; }
  let col = c % u.h;
  let lo = (c / u.h) * u.per;
  let hi = min(lo + u.per, u.v);
  for (var t = 0u; t < u.ntok; t++) {
    let k = i32(ids[t]);
    if (k < 0 || u32(k) >= u.v) {
      if (lo == 0u) { report(1u, k, u.v); }
      continue;
    }
    if (u32(k) >= lo && u32(k) < hi) {
      let o = u32(k) * u.h + col;
      y[o] = y[o] + ct[t * u.h + col];
    }
  }
}`,
          workgroups: grid(h * blocks, 64),
          uniforms: [h * blocks, n, h, params.vocab, per],
          bindings: [0, 1, 2, STATUS_BINDING],
        }],
        zero: [0],
      };
    },
    vjp: NONDIFF,
    examples: [{
      inputs: [{ shape: [2, 5, 4] }, { shape: [2, 5], kind: "int", high: 7, dtype: "i32" }],
      params: { vocab: 7 },
    }],
  });

/**
 * Looks up rows of `weight` (token embedding).
 *
 * @param weight table [V, H]
 * @param ids integer ids [...]
 * @returns [..., H]
 */
export function embedding(weight: Tensor, ids: Tensor): Tensor {
  return apply1(embeddingOp, [weight, ids], {});
}

/**
 * Scatter-adds rows of `ct` into a zero [vocab, H] table at `ids` (embedding's VJP).
 *
 * @param ct gradients [..., H]
 * @param ids integer ids [...]
 * @param vocab table rows
 * @returns [vocab, H]
 */
export function embeddingBackward(ct: Tensor, ids: Tensor, vocab: number): Tensor {
  return apply1(embeddingBackwardOp, [ct, ids], { vocab });
}

/** Params of `topk`. */
export interface TopkParams {
  /** How many. */
  readonly k: number;
}

/** The k largest along the last axis, sorted descending (lower index first on ties). */
export const topkOp: KernelOp<TopkParams, "topk"> = defineOp<TopkParams, "topk">({
  name: "topk",
  infer: ([x], { k }) => {
    const n = x.shape[x.shape.length - 1];
    if (!isFloat(x.dtype) || k < 1 || k > n) {
      throw new Error(`Cannot take top-${k} of ${x.dtype} ${fmt(x.shape)}`);
    }
    const s = [...x.shape.slice(0, -1), k];
    return [{ shape: s, dtype: x.dtype }, { shape: s, dtype: "i32" }];
  },
  cpu: ([x], [vals, idx], { inputs, params }) => {
    const n = inputs[0].shape[inputs[0].shape.length - 1];
    const k = params.k;
    const rows = n === 0 ? 0 : x.length / n;
    const order = new Int32Array(n);
    for (let r = 0; r < rows; r++) {
      const base = r * n;
      for (let i = 0; i < n; i++) order[i] = i;
      // partial selection sort: k is small (MoE k ≤ 8, sampling k ≤ 100)
      for (let j = 0; j < k; j++) {
        let best = j;
        for (let i = j + 1; i < n; i++) {
          const a = x[base + order[i]], b = x[base + order[best]];
          if (a > b || (a === b && order[i] < order[best])) best = i;
        }
        const t = order[j];
        order[j] = order[best];
        order[best] = t;
        vals[r * k + j] = x[base + order[j]];
        idx[r * k + j] = order[j];
      }
    }
  },
  // one workgroup per row; pass j finds the largest (value, -index) key strictly below the
  // previous pass's key, so nothing is marked or sorted
  wgsl: ({ inputs: [x], params }) => {
    const n = x.shape[x.shape.length - 1];
    let rows = 1;
    for (let i = 0; i < x.shape.length - 1; i++) rows *= x.shape[i];
    return [{
      code: `@group(0) @binding(0) var<storage, read> x: array<f32>;
@group(0) @binding(1) var<storage, read_write> vals: array<f32>;
@group(0) @binding(2) var<storage, read_write> idx: array<i32>;
struct U { rows: u32, n: u32, k: u32, _p: u32 }
@group(1) @binding(0) var<uniform> u: U;
var<workgroup> bv: array<f32, 64>;
var<workgroup> bi: array<u32, 64>;
// key a ranks before key b: larger value, then lower index
fn before(va: f32, ia: u32, vb: f32, ib: u32) -> bool {
  return va > vb || (va == vb && ia < ib);
}
@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {
  let row = ${ROW_INDEX};
  let ok = row < u.rows;
  let base = row * u.n;
  var pv = bitcast<f32>(0x7f800000u); // previous key: +inf, index 0
  var pi = 0u;
  var first = true;
  for (var j = 0u; j < u.k; j++) {
    var cv = ${NEG_INF};
    var ci = 0xffffffffu;
    if (ok) {
      for (var i = lid; i < u.n; i += 64u) {
        let v = x[base + i];
        let below = first || before(pv, pi, v, i);
        if (below && (ci == 0xffffffffu || before(v, i, cv, ci))) { cv = v; ci = i; }
      }
    }
    bv[lid] = cv;
    bi[lid] = ci;
    workgroupBarrier();
    for (var s = 32u; s > 0u; s = s >> 1u) {
      if (lid < s) {
        let ov = bv[lid + s];
        let oi = bi[lid + s];
        if (oi != 0xffffffffu && (bi[lid] == 0xffffffffu || before(ov, oi, bv[lid], bi[lid]))) {
          bv[lid] = ov;
          bi[lid] = oi;
        }
      }
      workgroupBarrier();
    }
    pv = bv[0];
    pi = bi[0];
    first = false;
    if (lid == 0u && ok) {
      vals[row * u.k + j] = pv;
      idx[row * u.k + j] = i32(pi);
    }
    workgroupBarrier();
  }
}`,
      workgroups: rowGrid(rows),
      uniforms: [rows, n, params.k, 0],
    }];
  },
  vjp: NONDIFF,
  examples: [{ inputs: [{ shape: [3, 8] }], params: { k: 2 } }, {
    inputs: [{ shape: [5] }],
    params: { k: 5 },
  }],
});

/**
 * The `k` largest values along the last axis and their indices (not differentiable; gather with
 * `takeAlongAxis` for a differentiable selection).
 *
 * @param x input
 * @param k how many
 * @returns `[values, indices]`, sorted descending
 */
export function topk(x: Tensor, k: number): [Tensor, Tensor] {
  const [v, i] = apply(topkOp, [x], { k });
  return [v, i];
}
