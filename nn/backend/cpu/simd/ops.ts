/**
 * The f32 fast paths of the CPU kernels, in the shape the ops need them: each function copies its
 * inputs into the SIMD module's memory a chunk at a time (a chunk of ~256 KiB stays in L2, so the
 * copies cost little next to the exps), runs a kernel, and copies the results out. Each returns
 * false (or null) without touching anything when the SIMD kernels are unavailable or turned off,
 * or the arrays are not f32: the op then runs its TypeScript loop.
 *
 * @module
 */
// N = rows, V = row length

import type { TypedArray } from "../../../dtype.ts";
import { EXPORTS, f32Simd, type KernelName, mapSimd, type SimdKernels } from "./mod.ts";
import { kernelThreads, parallel } from "../threads/mod.ts";

/** Fewest elements per piece of a map on the kernel pool. */
const MAP_GRAIN = 32768;

/** Floats per chunk of each input and thread: 64 Ki floats = 256 KiB. */
const CHUNK = 1 << 16;
/** Fewest elements worth handing to another thread (waking one costs a few µs). */
const MIN_PIECE = 8192;

/** Rows per chunk of rows of n elements: CHUNK floats per thread, at least one row. */
function chunkRows(s: SimdKernels, rows: number, n: number): number {
  return Math.max(1, Math.min(rows, Math.floor((CHUNK * s.threads) / n)));
}

/** Rows per piece of a parallel call: two pieces per thread, each ≥ MIN_PIECE elements. */
function pieceRows(s: SimdKernels, rows: number, n: number): number {
  return Math.max(Math.ceil(MIN_PIECE / n), Math.ceil(rows / (2 * s.threads)));
}

/**
 * Max and Σ exp(x − max) of each row of x [N, V] (f64 accumulation), as (m, s) pairs; null when
 * the fast path does not apply. The max ignores NaN; a row of -Infinity gives m = -Infinity and
 * s = NaN, as the TypeScript loops do.
 */
export function rowStats(x: TypedArray, rows: number, n: number): Float64Array | null {
  const s = f32Simd(x);
  if (!s || n === 0) return null;
  const out = new Float64Array(2 * rows);
  if (rows * n >= 2 * MAP_GRAIN && kernelThreads() > 1) {
    // the kernel pool's threads copy their own rows in (../threads/)
    parallel("simd_row_stats", [x, out], [n], 0, rows, Math.ceil(MAP_GRAIN / n));
    return out;
  }
  const rc = chunkRows(s, rows, n);
  s.reset();
  const xp = s.alloc(rc * n * 4), op = s.alloc(rc * 16);
  for (let r0 = 0; r0 < rows; r0 += rc) {
    const r1 = Math.min(rows, r0 + rc);
    s.f32.set(x.subarray(r0 * n, r1 * n), xp >> 2);
    s.par("row_stats", [xp, n, n, op], 0, r1 - r0, pieceRows(s, r1 - r0, n));
    out.set(s.f64.subarray(op >> 3, (op >> 3) + 2 * (r1 - r0)), 2 * r0);
  }
  return out;
}

/**
 * y = softmax of each row of x [N, V] (one exp per element); false when the fast path does not
 * apply. Rows with nothing but -Infinity (or NaN) become NaN, as exp(x − lse) gives there.
 */
export function rowSoftmax(x: TypedArray, y: TypedArray, rows: number, n: number): boolean {
  const s = f32Simd(x, y);
  if (!s || n === 0) return false;
  const rc = chunkRows(s, rows, n);
  s.reset();
  const xp = s.alloc(rc * n * 4), op = s.alloc(rc * 16);
  for (let r0 = 0; r0 < rows; r0 += rc) {
    const r1 = Math.min(rows, r0 + rc);
    s.f32.set(x.subarray(r0 * n, r1 * n), xp >> 2);
    s.par("row_softmax", [xp, n, n, op], 0, r1 - r0, pieceRows(s, r1 - r0, n));
    (y as Float32Array).set(s.f32.subarray(xp >> 2, (xp >> 2) + (r1 - r0) * n), r0 * n);
    for (let r = r0; r < r1; r++) {
      if (s.f64[(op >> 3) + 2 * (r - r0)] === -Infinity) y.fill(NaN, r * n, (r + 1) * n);
    }
  }
  return true;
}

/** Writes row r's parameter block: shift c split into f32 hi + lo, scale g, limit lim. */
function putRow(s: SimdKernels, at: number, c: number, g: number, lim: number): void {
  const hi = Math.fround(c);
  const f = s.f32, w = at >> 2;
  f[w] = hi;
  f[w + 1] = Number.isFinite(c) ? c - hi : 0;
  f[w + 2] = g;
  s.i32[w + 3] = lim;
}

/**
 * y[r, j] = exp(x[r, j] − c[r])·g[r] for rows of x [N, V] (g = 1 when null), and 0 on rows where
 * `skip(r)`; returns false when the fast path does not apply. c is split into f32 hi + lo
 * ((x − hi) − lo), so it is not rounded to f32 first.
 */
export function rowExp(
  x: TypedArray,
  y: TypedArray,
  rows: number,
  n: number,
  c: ArrayLike<number>,
  g: ArrayLike<number> | null,
  skip?: (r: number) => boolean,
): boolean {
  const s = f32Simd(x, y);
  if (!s || n === 0) return false;
  if (rows * n >= 2 * MAP_GRAIN && kernelThreads() > 1) {
    // the kernel pool's threads copy their own rows in and out (../threads/)
    const prm = new Float32Array(4 * rows), lims = new Int32Array(prm.buffer);
    for (let r = 0; r < rows; r++) {
      const off = skip?.(r), cr = off ? 0 : c[r], hi = Math.fround(cr);
      prm[4 * r] = hi;
      prm[4 * r + 1] = Number.isFinite(cr) ? cr - hi : 0;
      prm[4 * r + 2] = g ? g[r] : 1;
      lims[4 * r + 3] = off ? 0 : n;
    }
    parallel("simd_row_exp", [x, y, prm], [n], 0, rows, Math.ceil(MAP_GRAIN / n));
    return true;
  }
  const rc = chunkRows(s, rows, n);
  s.reset();
  const xp = s.alloc(rc * n * 4), pp = s.alloc(rc * 16);
  for (let r0 = 0; r0 < rows; r0 += rc) {
    const r1 = Math.min(rows, r0 + rc);
    for (let r = r0; r < r1; r++) {
      const off = skip?.(r);
      putRow(s, pp + 16 * (r - r0), off ? 0 : c[r], g ? g[r] : 1, off ? 0 : n);
    }
    s.f32.set(x.subarray(r0 * n, r1 * n), xp >> 2);
    s.par("row_exp", [xp, xp, n, n, pp], 0, r1 - r0, pieceRows(s, r1 - r0, n));
    (y as Float32Array).set(s.f32.subarray(xp >> 2, (xp >> 2) + (r1 - r0) * n), r0 * n);
  }
  return true;
}

/** The elementwise maps of the module with one input and one output. */
export type MapKind = "exp" | "sigmoid" | "silu" | "silu_grad";

/**
 * Runs the map `kernel` (arguments: input and output pointers, then the range) over [0, len) in
 * chunks: `ins` copied in, `outs` copied out; false when the fast path does not apply.
 */
function chunked(kernel: KernelName, ins: TypedArray[], outs: TypedArray[]): boolean {
  const s = mapSimd(...ins, ...outs);
  if (!s) return false;
  const len = ins[0].length;
  if (len >= 2 * MAP_GRAIN && kernelThreads() > 1) {
    // the kernel pool's threads copy their own pieces in and out (../threads/)
    const name = (["simd_map1", "simd_map2", "simd_map3"] as const)[ins.length - 1];
    parallel(name, [...ins, ...outs], [EXPORTS.indexOf(kernel)], 0, len, MAP_GRAIN);
    return true;
  }
  const ch = Math.min(len, CHUNK * s.threads);
  s.reset();
  const ptrs = [...ins, ...outs].map(() => s.alloc(ch * 4));
  const stage = s.alloc(ch * 2); // bf16 bits on their way in or out
  for (let i0 = 0; i0 < len; i0 += ch) {
    const i1 = Math.min(len, i0 + ch);
    ins.forEach((a, q) => s.copyIn(a, i0, i1, ptrs[q], stage));
    s.par(kernel, ptrs, 0, i1 - i0, Math.max(MIN_PIECE, Math.ceil((i1 - i0) / (2 * s.threads))));
    outs.forEach((a, q) => s.copyOut(ptrs[ins.length + q], i1 - i0, a, i0, stage));
  }
  return true;
}

/** y = f(x) elementwise for the exp-based unary rows; false when the fast path does not apply. */
export function mapUnary(kind: MapKind, x: TypedArray, y: TypedArray): boolean {
  return chunked(`map_${kind}`, [x], [y]);
}

/** y = g·σ(g)·u (f32, or bf16 computed in f32); false when the fast path does not apply. */
export function swiglu(g: TypedArray, u: TypedArray, y: TypedArray): boolean {
  return chunked("swiglu", [g, u], [y]);
}

/** dg, du of swiglu for cotangent ct; false when the fast path does not apply. */
export function swigluBackward(
  ct: TypedArray,
  g: TypedArray,
  u: TypedArray,
  dg: TypedArray,
  du: TypedArray,
): boolean {
  return chunked("swiglu_bwd", [ct, g, u], [dg, du]);
}
