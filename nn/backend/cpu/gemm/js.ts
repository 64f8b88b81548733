/**
 * The plain TypeScript matmul: the reference every other path is tested against, and the fallback
 * where neither BLAS nor WebAssembly SIMD is available (~3-5 GFLOP/s on one core).
 *
 * @module
 */

import { handleTrivial, resolveArgs, type Resolved, type SgemmArgs } from "./types.ts";

/**
 * Plain TypeScript `C = beta*C + op(A)·op(B)` (see {@linkcode SgemmArgs}); each element's sum over k
 * runs in f64 and is rounded to f32 once.
 *
 * @example
 * ```ts
 * const a = Float32Array.of(1, 2, 3, 4), b = Float32Array.of(5, 6, 7, 8), c = new Float32Array(4);
 * sgemmJs({ transA: false, transB: false, m: 2, n: 2, k: 2, a, lda: 2, b, ldb: 2, c, ldc: 2 });
 * // c = [19, 22, 43, 50]
 * ```
 */
export function sgemmJs(args: SgemmArgs): void {
  const r = resolveArgs(args);
  if (handleTrivial(r)) return;
  for (let bi = 0; bi < r.batch; bi++) {
    sgemmJsOne(r, r.aOff + bi * r.strideA, r.bOff + bi * r.strideB, r.cOff + bi * r.strideC);
  }
}

/** Columns of C (rows of A) whose operand slices are made contiguous at a time. */
const JB = 64, IB = 64;
/**
 * One matrix of a resolved call (k > 0) at the given element offsets. Columns of op(B) and, when
 * transposed, rows of op(A) are first copied contiguous along k in blocks of 64, so every variant
 * becomes 2×4 blocks of dot products summed in f64 registers (6 loads per 16 flops).
 */
export function sgemmJsOne(r: Resolved, ao: number, bo: number, co: number): void {
  const { m, n, k, a, lda, b, ldb, c, ldc } = r;
  // Rows of op(B)ᵀ (= columns of op(B)) and rows of op(A) contiguous along k, JB/IB at a time.
  const bt = new Float32Array(Math.min(JB, n) * k);
  const at = r.transA ? new Float32Array(Math.min(IB, m) * k) : undefined;
  for (let j0 = 0; j0 < n; j0 += JB) {
    const nj = Math.min(JB, n - j0);
    let bs: Float32Array, bOff: number, bStride: number;
    if (r.transB) {
      bs = b, bOff = bo + j0 * ldb, bStride = ldb;
    } else {
      for (let p = 0; p < k; p++) {
        const s = bo + p * ldb + j0;
        for (let j = 0; j < nj; j++) bt[j * k + p] = b[s + j];
      }
      bs = bt, bOff = 0, bStride = k;
    }
    for (let i0 = 0; i0 < m; i0 += IB) {
      const mi = Math.min(IB, m - i0);
      let as: Float32Array, aOff: number, aStride: number;
      if (at) {
        for (let p = 0; p < k; p++) {
          const s = ao + p * lda + i0;
          for (let i = 0; i < mi; i++) at[i * k + p] = a[s + i];
        }
        as = at, aOff = 0, aStride = k;
      } else {
        as = a, aOff = ao + i0 * lda, aStride = lda;
      }
      block(as, aOff, aStride, bs, bOff, bStride, c, co + i0 * ldc + j0, ldc, mi, nj, k, r.beta);
    }
  }
}

/** C[m,n] (+)= A[m,k] · B[n,k]ᵀ with both operands row-major along k. */
function block(
  a: Float32Array,
  ao: number,
  lda: number,
  b: Float32Array,
  bo: number,
  ldb: number,
  c: Float32Array,
  co: number,
  ldc: number,
  m: number,
  n: number,
  k: number,
  beta: number,
) {
  let i = 0;
  for (; i + 2 <= m; i += 2) {
    const a0 = ao + i * lda, a1 = a0 + lda, c0 = co + i * ldc, c1 = c0 + ldc;
    let j = 0;
    for (; j + 4 <= n; j += 4) {
      const b0 = bo + j * ldb, b1 = b0 + ldb, b2 = b1 + ldb, b3 = b2 + ldb;
      let s00 = 0, s01 = 0, s02 = 0, s03 = 0, s10 = 0, s11 = 0, s12 = 0, s13 = 0;
      for (let p = 0; p < k; p++) {
        const x0 = a[a0 + p], x1 = a[a1 + p];
        const y0 = b[b0 + p], y1 = b[b1 + p], y2 = b[b2 + p], y3 = b[b3 + p];
        s00 += x0 * y0;
        s01 += x0 * y1;
        s02 += x0 * y2;
        s03 += x0 * y3;
        s10 += x1 * y0;
        s11 += x1 * y1;
        s12 += x1 * y2;
        s13 += x1 * y3;
      }
      if (beta) {
        c[c0 + j] += s00;
        c[c0 + j + 1] += s01;
        c[c0 + j + 2] += s02;
        c[c0 + j + 3] += s03;
        c[c1 + j] += s10;
        c[c1 + j + 1] += s11;
        c[c1 + j + 2] += s12;
        c[c1 + j + 3] += s13;
      } else {
        c[c0 + j] = s00;
        c[c0 + j + 1] = s01;
        c[c0 + j + 2] = s02;
        c[c0 + j + 3] = s03;
        c[c1 + j] = s10;
        c[c1 + j + 1] = s11;
        c[c1 + j + 2] = s12;
        c[c1 + j + 3] = s13;
      }
    }
    for (; j < n; j++) {
      const bj = bo + j * ldb;
      let s0 = 0, s1 = 0;
      for (let p = 0; p < k; p++) {
        const y = b[bj + p];
        s0 += a[a0 + p] * y;
        s1 += a[a1 + p] * y;
      }
      c[c0 + j] = beta ? c[c0 + j] + s0 : s0;
      c[c1 + j] = beta ? c[c1 + j] + s1 : s1;
    }
  }
  for (; i < m; i++) {
    const a0 = ao + i * lda, c0 = co + i * ldc;
    for (let j = 0; j < n; j++) {
      const bj = bo + j * ldb;
      let s = 0;
      for (let p = 0; p < k; p++) s += a[a0 + p] * b[bj + p];
      c[c0 + j] = beta ? c[c0 + j] + s : s;
    }
  }
}
