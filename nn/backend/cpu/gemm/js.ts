/**
 * The plain TypeScript matmul: the reference every other path is tested against, and the fallback
 * where neither BLAS nor WebAssembly SIMD is available. Loop orders keep the innermost loop on
 * contiguous memory for each transpose variant (~5 GFLOP/s per core).
 *
 * @module
 */

import { handleTrivial, resolveArgs, type Resolved, type SgemmArgs } from "./types.ts";

/**
 * Plain TypeScript `C = beta*C + op(A)·op(B)` (see {@linkcode SgemmArgs}); sums run in f64 where the
 * loop order allows (dot-product variants) and in f32 otherwise.
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

/** One matrix of a resolved call (k > 0), at the given element offsets. */
export function sgemmJsOne(r: Resolved, ao: number, bo: number, co: number): void {
  const { m, n, k, a, lda, b, ldb, c, ldc } = r;
  if (r.beta === 0) {
    for (let i = 0; i < m; i++) c.fill(0, co + i * ldc, co + i * ldc + n);
  }
  if (!r.transB) {
    // C[i,:] += A[i,p] * B[p,:]: the inner loop walks a row of B and a row of C.
    const sa = r.transA ? 1 : lda; // step between rows of op(A)
    const sk = r.transA ? lda : 1; // step along k in op(A)
    for (let i = 0; i < m; i++) {
      const ci = co + i * ldc;
      for (let p = 0; p < k; p++) {
        const aip = a[ao + i * sa + p * sk];
        const bp = bo + p * ldb;
        for (let j = 0; j < n; j++) c[ci + j] += aip * b[bp + j];
      }
    }
  } else if (!r.transA) {
    // C[i,j] += dot(A[i,:], B[j,:]): both rows contiguous.
    for (let i = 0; i < m; i++) {
      const ai = ao + i * lda;
      const ci = co + i * ldc;
      for (let j = 0; j < n; j++) {
        const bj = bo + j * ldb;
        let s = 0;
        for (let p = 0; p < k; p++) s += a[ai + p] * b[bj + p];
        c[ci + j] += s;
      }
    }
  } else {
    // Aᵀ·Bᵀ: gather column i of the stored A once, then dot it with rows of B.
    const col = new Float32Array(k);
    for (let i = 0; i < m; i++) {
      for (let p = 0; p < k; p++) col[p] = a[ao + p * lda + i];
      const ci = co + i * ldc;
      for (let j = 0; j < n; j++) {
        const bj = bo + j * ldb;
        let s = 0;
        for (let p = 0; p < k; p++) s += col[p] * b[bj + p];
        c[ci + j] += s;
      }
    }
  }
}
