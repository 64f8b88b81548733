/**
 * The CPU kernels that the kernel pool (`mod.ts`) may split over threads: each runs over a range
 * [lo, hi) of elements or rows, so the calling thread and the workers (`worker.ts`) run the very
 * same function on disjoint pieces. A row's arithmetic never depends on how the range was split
 * (reductions run inside one row, or over all rows of one column), so the results are
 * bit-identical to one call over the whole range. The ops (`nn/ops/`) call these functions for
 * their CPU kernels, pooled or not.
 *
 * @module
 */

import { storeAt, type TypedArray, valueAt } from "../../../dtype.ts";
import { EXPORTS, privateSimd, type SimdKernels } from "../simd/mod.ts";
import type { KernelFn } from "../wasm_pool/protocol.ts";
import { attentionBackwardUnits, attentionForwardUnits, type UnitRun } from "../attention_heads.ts";
import { bf16AttentionBackwardUnits, bf16AttentionForwardUnits } from "../attention_bf16.ts";
import { addF32, gemm, sumSquaresF32 } from "../gemm_adapter.ts";

/** Bounds [i0, i1) of piece `part` of `parts` equal pieces of `len` items. */
function piece(len: number, parts: number, part: number): [number, number] {
  return [Math.floor(len * part / parts), Math.floor(len * (part + 1) / parts)];
}

/** y = a + b over elements [i0, i1) (BLAS's native copy and `saxpy` where it applies). */
export function addRange(
  a: TypedArray,
  b: TypedArray,
  y: TypedArray,
  i0: number,
  i1: number,
): void {
  if (addF32(a.subarray(i0, i1), b.subarray(i0, i1), y.subarray(i0, i1))) return;
  for (let i = i0; i < i1; i++) y[i] = a[i] + b[i];
}

/**
 * Σx² of piece `part` of `parts` of x (f64 sums of f32 products: BLAS's `dsdot` where it
 * applies), stored in `out[part]`.
 */
export function sumSquaresPart(x: TypedArray, out: TypedArray, parts: number, part: number): void {
  const xs = x.subarray(...piece(x.length, parts, part));
  let s = xs instanceof Float32Array && xs.length >= 4096 ? sumSquaresF32(xs) : null;
  if (s === null) {
    s = 0;
    for (let i = 0; i < xs.length; i++) s += xs[i] * xs[i];
  }
  out[part] = s;
}

/**
 * Piece `part` of `parts` of the f32 product C = op(A)·op(B) (row-major, leading dimensions):
 * a slice of C's rows (`byRows`, the rows of op(A)) or of its columns (the columns of op(B)), as
 * one gemm call. Each piece is the same call whichever thread runs it, so a product split into
 * the same pieces always has the same bits.
 */
export function sgemmPart(
  a: Float32Array,
  b: Float32Array,
  c: Float32Array,
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  lda: number,
  ldb: number,
  ldc: number,
  byRows: boolean,
  parts: number,
  part: number,
): void {
  const [i0, i1] = piece(byRows ? m : n, parts, part);
  if (i1 <= i0) return;
  if (byRows) {
    gemm(
      transA,
      transB,
      i1 - i0,
      n,
      k,
      a,
      transA ? i0 : i0 * lda,
      lda,
      b,
      0,
      ldb,
      c,
      i0 * ldc,
      ldc,
    );
  } else {
    gemm(transA, transB, m, i1 - i0, k, a, 0, lda, b, transB ? i0 * ldb : i0, ldb, c, i0, ldc);
  }
}

/**
 * AdamW over elements [i0, i1) of one f32 tensor, in torch's order of operations, for when the wasm
 * SIMD kernels are off (`adamw_simd` below is torch's f32 arithmetic, ~2.5× faster). Each element
 * is computed in double precision and stored (rounded) into the output arrays, as torch stores g
 * (clipped), p, m and v after every in-place op. Typed for Float32Array only, so V8 compiles it for
 * exactly that (sharing it with the f64 path made it 2–3× slower). Outputs may alias p, m, v.
 */
export function adamwF32(
  p: Float32Array,
  g: Float32Array,
  m: Float32Array,
  v: Float32Array,
  po: Float32Array,
  mo: Float32Array,
  vo: Float32Array,
  beta1: number,
  beta2: number,
  eps: number,
  decay: number,
  a1: number,
  a2: number,
  stepSize: number,
  invBc2Sqrt: number,
  gradScale: number,
  i0: number,
  i1: number,
): void {
  for (let i = i0; i < i1; i++) {
    const gi = Math.fround(g[i] * gradScale); // the clipped gradient, g.mul_(coef)
    const mi = m[i] * beta1 + a1 * gi; // exp_avg.mul_(β₁).add_(g, alpha=1−β₁)
    const vi = v[i] * beta2 + a2 * gi * gi; // exp_avg_sq.mul_(β₂).addcmul_(g, g, value=1−β₂)
    const denom = Math.sqrt(vi) * invBc2Sqrt + eps; // (√v / √bc₂).add_(eps), one divide fewer
    po[i] = p[i] * decay + (stepSize * mi) / denom; // p.mul_(1 − lr·λ).addcdiv_(m, denom, −step)
    mo[i] = mi;
    vo[i] = vi;
  }
}

/** RMSNorm forward over rows [r0, r1) of x [rows, h]: y = w ⊙ x · rstd, rstd = 1/√(mean x² + eps). */
export function rmsNormRows(
  x: TypedArray,
  w: TypedArray,
  y: TypedArray,
  rstd: TypedArray,
  h: number,
  eps: number,
  r0: number,
  r1: number,
): void {
  for (let r = r0; r < r1; r++) {
    const base = r * h;
    let ss = 0;
    for (let i = 0; i < h; i++) ss += x[base + i] * x[base + i];
    const rs = 1 / Math.sqrt(ss / h + eps);
    rstd[r] = rs;
    for (let i = 0; i < h; i++) y[base + i] = w[i] * (x[base + i] * rs);
  }
}

/**
 * RMSNorm backward over rows [r0, r1): dx = rstd·w⊙ct − x·rstd³·(Σ w⊙ct⊙x)/h for each row, and
 * these rows' share of dw = Σ_rows ct⊙x·rstd, summed in row order into `dw[off, off + h)` (zeroed
 * first). Writes every element of its rows of dx and of its slice of dw.
 */
export function rmsNormBackwardRows(
  ct: TypedArray,
  x: TypedArray,
  w: TypedArray,
  rstd: TypedArray,
  dx: TypedArray,
  dw: TypedArray,
  h: number,
  r0: number,
  r1: number,
  off: number,
): void {
  dw.fill(0, off, off + h);
  for (let r = r0; r < r1; r++) {
    const base = r * h, rs = rstd[r];
    let dot = 0;
    for (let i = 0; i < h; i++) dot += w[i] * ct[base + i] * x[base + i];
    const c = rs * rs * rs * dot / h;
    for (let i = 0; i < h; i++) {
      dx[base + i] = rs * w[i] * ct[base + i] - x[base + i] * c;
      dw[off + i] += ct[base + i] * x[base + i] * rs;
    }
  }
}

/**
 * RoPE (rotate-half) over rows [q0, q1) of (batch, time) of x [B, T, NH, HD], with positions from
 * `pos` (i32 [B, T]) or `offset + t`; `sg` −1 rotates backwards. Positions must have been checked.
 */
export function ropeRows(
  x: TypedArray,
  c: TypedArray,
  s: TypedArray,
  pos: TypedArray | null,
  y: TypedArray,
  t: number,
  nh: number,
  hd: number,
  offset: number,
  sg: number,
  q0: number,
  q1: number,
): void {
  const half = hd / 2;
  for (let q = q0; q < q1; q++) {
    const p = pos ? pos[q] : offset + q % t;
    const tb = p * hd;
    for (let h = 0; h < nh; h++) {
      const base = (q * nh + h) * hd;
      for (let i = 0; i < half; i++) {
        // bf16 rows (without the SIMD kernels): widened, turned in f64, rounded once
        const x1 = valueAt(x, base + i), x2 = valueAt(x, base + i + half);
        storeAt(y, base + i, x1 * c[tb + i] - x2 * sg * s[tb + i]);
        storeAt(y, base + i + half, x2 * c[tb + i + half] + x1 * sg * s[tb + i + half]);
      }
    }
  }
}

/**
 * Embedding backward, part `part` of `parts` of the columns of y [V, h]: zeroed, then y[ids[i], j]
 * += ct[i, j] for every token i in order, on columns j of this part, so each element sums in the
 * order of one pass. Writes every element of y.
 */
export function embeddingBackwardPart(
  ct: TypedArray,
  ids: TypedArray,
  y: TypedArray,
  h: number,
  parts: number,
  part: number,
): void {
  const [c0, c1] = piece(h, parts, part);
  if (parts === 1) y.fill(0);
  else for (let r = 0; r < y.length; r += h) y.fill(0, r + c0, r + c1);
  for (let i = 0; i < ids.length; i++) {
    const base = ids[i] * h, src = i * h;
    for (let j = c0; j < c1; j++) y[base + j] += ct[src + j];
  }
}

/** Floats per array of one round of a pooled SIMD map (64 KiB: five arrays stay in L2). */
const SIMD_ROUND = 16384;
/** This thread's own SIMD instance (private memory, no pool), its bump allocator reset. */
function localSimd(): SimdKernels {
  const s = privateSimd();
  if (!s) throw new Error("kernel pool: the wasm SIMD kernels are unavailable");
  s.reset();
  return s;
}

/**
 * SIMD map `EXPORTS[map]` (`../simd/mod.ts`) over elements [i0, i1): the `ins` first arrays are
 * inputs, the rest outputs, `scalars` the map's f32 parameters; rounds of {@linkcode SIMD_ROUND}
 * elements are copied into this thread's own wasm memory (bf16 arrays widened to f32), mapped, and
 * copied out (to bf16 arrays rounded to nearest even). Elementwise, so any split gives the same
 * bits.
 */
export function simdMapRange(
  arrays: TypedArray[],
  map: number,
  ins: number,
  i0: number,
  i1: number,
  scalars: readonly number[] = [],
): void {
  const s = localSimd();
  const fn = s.k[EXPORTS[map]] as KernelFn;
  const ptrs = arrays.map(() => s.alloc(SIMD_ROUND * 4));
  const stage = s.alloc(SIMD_ROUND * 2); // bf16 bits on their way in or out
  for (let c = i0; c < i1; c += SIMD_ROUND) {
    const e = Math.min(i1, c + SIMD_ROUND);
    for (let q = 0; q < ins; q++) s.copyIn(arrays[q], c, e, ptrs[q], stage);
    fn(...ptrs, ...scalars, 0, e - c);
    for (let q = ins; q < arrays.length; q++) s.copyOut(ptrs[q], e - c, arrays[q], c, stage);
  }
}

/**
 * RMSNorm forward over rows [r0, r1) of x [rows, h] by the SIMD `rms_fwd` kernel on this thread's
 * own memory, in rounds of rows (y computed in place of the round's copy of x). Row by row, so any
 * split gives the same bits.
 */
export function simdRmsNormRows(
  x: TypedArray,
  w: TypedArray,
  y: TypedArray,
  rstd: TypedArray,
  h: number,
  eps: number,
  r0: number,
  r1: number,
): void {
  const rr = roundRows(h);
  const l = localSimd();
  const xp = l.alloc(rr * h * 4), wp = l.alloc(h * 4), sp = l.alloc(rr * 4);
  l.f32.set(w.subarray(0, h), wp >> 2);
  for (let r = r0; r < r1; r += rr) {
    const e = Math.min(r1, r + rr);
    l.f32.set(x.subarray(r * h, e * h), xp >> 2);
    l.k.rms_fwd(xp, wp, xp, sp, h, eps, 0, e - r);
    (y as Float32Array).set(l.f32.subarray(xp >> 2, (xp >> 2) + (e - r) * h), r * h);
    (rstd as Float32Array).set(l.f32.subarray(sp >> 2, (sp >> 2) + e - r), r);
  }
}

/**
 * RMSNorm backward over rows [r0, r1) by the SIMD `rms_bwd` kernel on this thread's own memory:
 * dx for those rows, and their Σ ct·x·rstd per column (f64) into `dw[off, off + h)`. The
 * arithmetic of {@linkcode rmsNormBackwardRows} with each row's dot product summed in four lanes.
 */
export function simdRmsNormBackwardRows(
  ct: TypedArray,
  x: TypedArray,
  w: TypedArray,
  rstd: TypedArray,
  dx: TypedArray,
  dw: TypedArray,
  h: number,
  r0: number,
  r1: number,
  off: number,
): void {
  const rr = roundRows(h);
  const l = localSimd();
  const cp = l.alloc(rr * h * 4), xp = l.alloc(rr * h * 4), wp = l.alloc(h * 4);
  const sp = l.alloc(rr * 4), dp = l.alloc(h * 8);
  l.f32.set(w.subarray(0, h), wp >> 2);
  l.f64.fill(0, dp >> 3, (dp >> 3) + h);
  for (let r = r0; r < r1; r += rr) {
    const e = Math.min(r1, r + rr);
    l.f32.set(ct.subarray(r * h, e * h), cp >> 2);
    l.f32.set(x.subarray(r * h, e * h), xp >> 2);
    l.f32.set(rstd.subarray(r, e), sp >> 2);
    l.k.rms_bwd(cp, xp, wp, sp, cp, dp, h, 0, e - r);
    (dx as Float32Array).set(l.f32.subarray(cp >> 2, (cp >> 2) + (e - r) * h), r * h);
  }
  (dw as Float64Array).set(l.f64.subarray(dp >> 3, (dp >> 3) + h), off);
}

/**
 * {@linkcode ropeRows} by the SIMD `rope` kernel on this thread's own memory: rounds of rows of x
 * are copied in (bf16 widened) with each row's cos and sin rows, rotated in place and copied out
 * (to bf16 rounded). The same f64 arithmetic, so the same bits, on any split.
 */
export function simdRopeRows(
  x: TypedArray,
  c: TypedArray,
  s: TypedArray,
  pos: TypedArray | null,
  y: TypedArray,
  t: number,
  nh: number,
  hd: number,
  offset: number,
  sg: number,
  q0: number,
  q1: number,
): void {
  const w = nh * hd, rr = roundRows(w);
  const l = localSimd();
  const xp = l.alloc(rr * w * 4), cp = l.alloc(rr * hd * 4), sp = l.alloc(rr * hd * 4);
  const stage = l.alloc(rr * w * 2); // bf16 bits on their way in or out
  const f = l.f32;
  for (let q = q0; q < q1; q += rr) {
    const e = Math.min(q1, q + rr);
    l.copyIn(x, q * w, e * w, xp, stage);
    // each row's table rows; runs of consecutive positions (a batch row's steps) in one copy
    for (let r = q; r < e;) {
      const p = pos ? pos[r] : offset + r % t;
      let n = 1;
      while (r + n < e && (pos ? pos[r + n] : offset + (r + n) % t) === p + n) n++;
      const at = (cp >> 2) + (r - q) * hd;
      f.set(c.subarray(p * hd, (p + n) * hd), at);
      f.set(s.subarray(p * hd, (p + n) * hd), at - (cp >> 2) + (sp >> 2));
      r += n;
    }
    l.k.rope(xp, cp, sp, xp, nh, hd, sg, 0, e - q);
    l.copyOut(xp, (e - q) * w, y, q * w, stage);
  }
}

/** Rows of `n` values per round of a pooled SIMD row kernel (about 64 Ki values, at least 1). */
function roundRows(n: number): number {
  return Math.max(1, Math.floor(65536 / n));
}

/**
 * Runs `kernel` over rows [r0, r1) of x [rows, n] in rounds: each round's rows of x are copied to
 * `xp` in this thread's SIMD memory, with `extra` bytes a row reserved at `ep`.
 */
function rowRounds(
  x: TypedArray,
  n: number,
  r0: number,
  r1: number,
  extra: number,
  kernel: (l: SimdKernels, xp: number, ep: number, r: number, e: number) => void,
): void {
  const rr = roundRows(n);
  const l = localSimd();
  const xp = l.alloc(rr * n * 4), ep = l.alloc(rr * extra);
  for (let r = r0; r < r1; r += rr) {
    const e = Math.min(r1, r + rr);
    l.f32.set(x.subarray(r * n, e * n), xp >> 2);
    kernel(l, xp, ep, r, e);
  }
}

/**
 * Max and Σ exp(x − max) (f64) of rows [r0, r1) of x [rows, n] into `out` (f64 pairs), by the SIMD
 * `row_stats` kernel on this thread's own memory. Row by row, so any split gives the same bits.
 */
export function simdRowStats(
  x: TypedArray,
  out: TypedArray,
  n: number,
  r0: number,
  r1: number,
): void {
  rowRounds(x, n, r0, r1, 16, (l, xp, op, r, e) => {
    l.k.row_stats(xp, n, n, op, 0, e - r);
    out.set(l.f64.subarray(op >> 3, (op >> 3) + 2 * (e - r)), 2 * r);
  });
}

/**
 * y = exp((x − hi) − lo)·g on rows [r0, r1) of x [rows, n], zero from each row's `lim` on, by the
 * SIMD `row_exp` kernel on this thread's own memory; `prm` holds each row's block (f32 hi, lo, g,
 * then lim as i32 bits), 4 values a row. Row by row, so any split gives the same bits.
 */
export function simdRowExp(
  x: TypedArray,
  y: TypedArray,
  prm: TypedArray,
  n: number,
  r0: number,
  r1: number,
): void {
  rowRounds(x, n, r0, r1, 16, (l, xp, pp, r, e) => {
    l.f32.set(prm.subarray(4 * r, 4 * e), pp >> 2);
    l.k.row_exp(xp, xp, n, n, pp, 0, e - r);
    (y as Float32Array).set(l.f32.subarray(xp >> 2, (xp >> 2) + (e - r) * n), r * n);
  });
}

/** A kernel the pool can run: its arrays, its scalars, and the range [lo, hi) of one piece. */
export interface RangeKernel {
  /** How many typed arrays it takes. */
  readonly arrays: number;
  /** Which of them it writes (copied back when they had to travel through scratch memory). */
  readonly writes: readonly number[];
  /** Runs the piece [lo, hi). */
  run(a: TypedArray[], s: readonly number[], lo: number, hi: number): void;
}

const f32 = (a: TypedArray) => a as Float32Array;

/** RMSNorm's forward over rows by `rowsFn` (the loop or its SIMD twin): x, w, y, rstd; h, eps. */
function rmsNormKernel(rowsFn: typeof rmsNormRows): RangeKernel {
  return {
    arrays: 4,
    writes: [2, 3],
    run: (a, s, lo, hi) => rowsFn(a[0], a[1], a[2], a[3], s[0], s[1], lo, hi),
  };
}

/**
 * RMSNorm's backward by `rowsFn` (the loop or its SIMD twin) over pieces [lo, hi) of `parts`
 * fixed pieces of rows, piece p writing its dw partial at p·h: ct, x, w, rstd, dx, dw partials
 * (parts × h); rows, h, parts.
 */
function rmsNormBackwardKernel(rowsFn: typeof rmsNormBackwardRows): RangeKernel {
  return {
    arrays: 6,
    writes: [4, 5],
    run: (a, s, lo, hi) => {
      const [rows, h, parts] = s;
      for (let p = lo; p < hi; p++) {
        const [r0, r1] = piece(rows, parts, p);
        rowsFn(a[0], a[1], a[2], a[3], a[4], a[5], h, r0, r1, p * h);
      }
    },
  };
}

/**
 * RoPE over (batch, time) rows by `rowsFn` (the loop or its SIMD twin): x, cos, sin, [pos,] y;
 * t, nh, hd, offset, sign.
 */
function ropeKernel(rowsFn: typeof ropeRows, withPos: boolean): RangeKernel {
  const n = withPos ? 5 : 4;
  return {
    arrays: n,
    writes: [n - 1],
    run: (a, s, lo, hi) =>
      rowsFn(
        a[0],
        a[1],
        a[2],
        withPos ? a[3] : null,
        a[n - 1],
        s[0],
        s[1],
        s[2],
        s[3],
        s[4],
        lo,
        hi,
      ),
  };
}

/**
 * An attention unit kernel over (batch, KV group) units: `arrays` of the call, then the key mask
 * when `masked`; it writes `writes`.
 */
function units(run: UnitRun, arrays: number, writes: number[], masked: boolean): RangeKernel {
  return {
    arrays: arrays + (masked ? 1 : 0),
    writes,
    run: (a, s, lo, hi) => run(a, masked ? a[arrays] : null, s, lo, hi),
  };
}

/** The pooled kernels by name; jobs name them by their index in {@linkcode KERNEL_NAMES}. */
export const KERNELS = {
  /** p, g, m, v, po, mo, vo; β₁, β₂, eps, decay, 1−β₁, 1−β₂, step size, 1/√bc₂, grad scale. */
  adamw: {
    arrays: 7,
    writes: [4, 5, 6],
    run: (a, s, lo, hi) =>
      adamwF32(
        f32(a[0]),
        f32(a[1]),
        f32(a[2]),
        f32(a[3]),
        f32(a[4]),
        f32(a[5]),
        f32(a[6]),
        s[0],
        s[1],
        s[2],
        s[3],
        s[4],
        s[5],
        s[6],
        s[7],
        s[8],
        lo,
        hi,
      ),
  },
  /** As `adamw`, by the wasm SIMD map (f32 arithmetic, each operation rounded as torch's). */
  adamw_simd: {
    arrays: 7,
    writes: [4, 5, 6],
    run: (a, s, lo, hi) => simdMapRange(a, EXPORTS.indexOf("adamw"), 4, lo, hi, s),
  },
  /** x, w, y, rstd; h, eps; rows. */
  rms_norm: rmsNormKernel(rmsNormRows),
  /** As `rms_norm`, by the wasm SIMD kernel (f32 arrays). */
  rms_norm_simd: rmsNormKernel(simdRmsNormRows),
  /** ct, x, w, rstd, dx, dw partials (parts × h); rows, h, parts; parts (one at a time). */
  rms_norm_backward: rmsNormBackwardKernel(rmsNormBackwardRows),
  /** As `rms_norm_backward`, by the wasm SIMD kernel (f32 arrays, f64 partials). */
  rms_norm_backward_simd: rmsNormBackwardKernel(simdRmsNormBackwardRows),
  /** a, b, y; elements. */
  add: {
    arrays: 3,
    writes: [2],
    run: (a, _s, lo, hi) => addRange(a[0], a[1], a[2], lo, hi),
  },
  /** x, out (f64, one per part); parts; parts (one sum each). */
  sum_squares: {
    arrays: 2,
    writes: [1],
    run: (a, s, lo, hi) => {
      for (let p = lo; p < hi; p++) sumSquaresPart(a[0], a[1], s[0], p);
    },
  },
  /** a, b, c; transA, transB, m, n, k, lda, ldb, ldc, by rows, parts; parts (one gemm each). */
  sgemm: {
    arrays: 3,
    writes: [2],
    run: (a, s, lo, hi) => {
      for (let p = lo; p < hi; p++) {
        sgemmPart(
          f32(a[0]),
          f32(a[1]),
          f32(a[2]),
          s[0] === 1,
          s[1] === 1,
          s[2],
          s[3],
          s[4],
          s[5],
          s[6],
          s[7],
          s[8] === 1,
          s[9],
          p,
        );
      }
    },
  },
  /** x, cos, sin, y; t, nh, hd, offset, sign; (batch, time) rows. */
  rope: ropeKernel(ropeRows, false),
  /** x, cos, sin, pos, y; t, nh, hd, 0, sign; (batch, time) rows. */
  rope_pos: ropeKernel(ropeRows, true),
  /** As `rope`, by the wasm SIMD kernel (f32 tables; x and y f32 or bf16). */
  rope_simd: ropeKernel(simdRopeRows, false),
  /** As `rope_pos`, by the wasm SIMD kernel (f32 tables; x and y f32 or bf16). */
  rope_pos_simd: ropeKernel(simdRopeRows, true),
  /** ct, ids, y; h, parts; parts (one at a time). */
  embedding_backward: {
    arrays: 3,
    writes: [2],
    run: (a, s, lo, hi) => {
      for (let p = lo; p < hi; p++) embeddingBackwardPart(a[0], a[1], a[2], s[0], s[1], p);
    },
  },
  /** x (f32), out (f64 pairs); n; rows. */
  simd_row_stats: {
    arrays: 2,
    writes: [1],
    run: (a, s, lo, hi) => simdRowStats(a[0], a[1], s[0], lo, hi),
  },
  /** x, y, prm (f32 rows of hi, lo, g, lim bits); n; rows. */
  simd_row_exp: {
    arrays: 3,
    writes: [1],
    run: (a, s, lo, hi) => simdRowExp(a[0], a[1], a[2], s[0], lo, hi),
  },
  /** q, k, v, out, lse; b, t, s, nh, nkv, hd, causal, scale, time-major; (batch, KV group) units. */
  attention_forward: units(attentionForwardUnits, 5, [3, 4], false),
  /** As attention_forward, then the key mask. */
  attention_forward_masked: units(attentionForwardUnits, 5, [3, 4], true),
  /** q, k, v, o, lse, dout, dq, dk, dv; as attention_forward. */
  attention_backward: units(attentionBackwardUnits, 9, [6, 7, 8], false),
  /** As attention_backward, then the key mask. */
  attention_backward_masked: units(attentionBackwardUnits, 9, [6, 7, 8], true),
  /** As attention_forward, the products in bf16 (`../attention_bf16.ts`). */
  attention_forward_bf16: units(bf16AttentionForwardUnits, 5, [3, 4], false),
  /** As attention_forward_bf16, then the key mask. */
  attention_forward_bf16_masked: units(bf16AttentionForwardUnits, 5, [3, 4], true),
  /** As attention_backward, the products in bf16. */
  attention_backward_bf16: units(bf16AttentionBackwardUnits, 9, [6, 7, 8], false),
  /** As attention_backward_bf16, then the key mask. */
  attention_backward_bf16_masked: units(bf16AttentionBackwardUnits, 9, [6, 7, 8], true),
  /** One input and one output; the map's index, 1. */
  simd_map1: {
    arrays: 2,
    writes: [1],
    run: (a, s, lo, hi) => simdMapRange(a, s[0], 1, lo, hi),
  },
  /** g, u, y (swiglu); its index, 2. */
  simd_map2: {
    arrays: 3,
    writes: [2],
    run: (a, s, lo, hi) => simdMapRange(a, s[0], 2, lo, hi),
  },
  /** ct, g, u, dg, du (swiglu backward); its index, 3. */
  simd_map3: {
    arrays: 5,
    writes: [3, 4],
    run: (a, s, lo, hi) => simdMapRange(a, s[0], 3, lo, hi),
  },
} satisfies Record<string, RangeKernel>;

/** A pooled kernel's name. */
export type KernelName = keyof typeof KERNELS;

/** The kernels' names in job order. */
export const KERNEL_NAMES: readonly KernelName[] = Object.keys(KERNELS) as KernelName[];
