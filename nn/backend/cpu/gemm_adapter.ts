/**
 * One entry point for CPU matrix products used by kernels (matmul, attention): f32 goes to the
 * fast gemm (BLAS through FFI, or wasm SIMD), f64 to plain loops (the gradient-check path).
 * @module
 */
import type { TypedArray } from "../../dtype.ts";
import { getGemm } from "./gemm/mod.ts";
import type { Gemm } from "./gemm/mod.ts";
import { Bf16Gemm, type Dnnl, nativeDnnl, openBf16Gemm } from "./gemm/bf16.ts";
import { packedProduct } from "./gemm/packed.ts";
import type { Bf16Operand, MixedArgs } from "./gemm/types.ts";

type FastGemm = Pick<Gemm, "sgemm" | "sumSquares" | "addInPlace">;
let fast: FastGemm | null = null;

/**
 * Milliseconds spent in `gemm` since the clock was turned on (the CPU backend's profiler reads it
 * around each kernel, to split an op's time into matrix products and the rest).
 */
export const gemmClock: { on: boolean; ms: number } = { on: false, ms: 0 };

/** `f()`, its time added to {@linkcode gemmClock} while the clock is on (one timer per outer call). */
function clocked<T>(f: () => T): T {
  if (!gemmClock.on) return f();
  gemmClock.on = false;
  const t0 = performance.now();
  try {
    return f();
  } finally {
    gemmClock.ms += performance.now() - t0;
    gemmClock.on = true;
  }
}

/**
 * Overrides the fast f32 gemm (`null` restores the default). By default every f32 call uses
 * `getGemm()`: BLAS through FFI when found, else wasm SIMD (`initGemm()` adds wasm worker threads).
 */
export function setFastSgemm(g: FastGemm | null): void {
  fast = g;
}

/**
 * C[m,n] (+)= op(A)[m,k] · op(B)[k,n], row-major with leading dimensions; `beta` 1 accumulates.
 * Batched over `batch` with element strides.
 */
export function gemm(
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  a: TypedArray,
  aOffset: number,
  lda: number,
  b: TypedArray,
  bOffset: number,
  ldb: number,
  c: TypedArray,
  cOffset: number,
  ldc: number,
  beta: 0 | 1 = 0,
  batch = 1,
  strideA = 0,
  strideB = 0,
  strideC = 0,
): void {
  if (m === 0 || n === 0) return;
  if (gemmClock.on) {
    return clocked(() =>
      gemm(
        transA,
        transB,
        m,
        n,
        k,
        a,
        aOffset,
        lda,
        b,
        bOffset,
        ldb,
        c,
        cOffset,
        ldc,
        beta,
        batch,
        strideA,
        strideB,
        strideC,
      )
    );
  }
  if (a instanceof Float32Array && b instanceof Float32Array && c instanceof Float32Array) {
    (fast ?? getGemm()).sgemm({
      transA,
      transB,
      m,
      n,
      k,
      a,
      aOffset,
      lda,
      b,
      bOffset,
      ldb,
      c,
      cOffset,
      ldc,
      beta,
      batch,
      strideA,
      strideB,
      strideC,
    });
    return;
  }
  for (let q = 0; q < batch; q++) {
    const ao = aOffset + q * strideA, bo = bOffset + q * strideB, co = cOffset + q * strideC;
    for (let i = 0; i < m; i++) {
      const crow = co + i * ldc;
      if (beta === 0) { for (let j = 0; j < n; j++) c[crow + j] = 0; }
      for (let p = 0; p < k; p++) {
        const av = transA ? a[ao + p * lda + i] : a[ao + i * lda + p];
        if (av === 0) continue;
        if (transB) { for (let j = 0; j < n; j++) c[crow + j] += av * b[bo + j * ldb + p]; }
        else {
          const brow = bo + p * ldb;
          for (let j = 0; j < n; j++) c[crow + j] += av * b[brow + j];
        }
      }
    }
  }
}

/**
 * Σx² of a whole f32 array by the fast gemm's BLAS (`cblas_dsdot`: f64 sums of f32 products,
 * within 2^-24 relative of the exact sum), or null where the gemm in use has no such routine (wasm,
 * JS, an override without it).
 */
export function sumSquaresF32(x: Float32Array): number | null {
  const g: FastGemm = fast ?? getGemm();
  return g.sumSquares ? g.sumSquares(x) : null;
}

/**
 * `y = a + b` for same-length f32 arrays of at least 4096 elements by the fast gemm's BLAS (a
 * native copy, then `cblas_saxpy`: the same bits as the JS loop); false where it does not apply
 * (other dtypes, short arrays, y aliasing b, no BLAS).
 */
export function addF32(a: TypedArray, b: TypedArray, y: TypedArray): boolean {
  if (
    !(a instanceof Float32Array) || !(b instanceof Float32Array) || !(y instanceof Float32Array) ||
    a.length < 4096 || b.length !== a.length || y.length !== a.length ||
    (y.buffer === b.buffer && y.byteOffset === b.byteOffset)
  ) return false;
  const g: FastGemm = fast ?? getGemm();
  if (!g.addInPlace) return false;
  if (y.buffer !== a.buffer || y.byteOffset !== a.byteOffset) y.set(a);
  g.addInPlace(b, y);
  return true;
}

/**
 * Sets OpenBLAS to one thread (process-wide) and returns what puts it back, so that several
 * threads can each run their own products at once; null where the products are not OpenBLAS's
 * with a settable thread count (wasm or JS gemm, an override).
 */
export function singleThreadedGemm(): (() => void) | null {
  if (fast) return null;
  const g = getGemm();
  if (g.kind !== "blas" || !g.setThreads) return null;
  const before = g.setThreads(1);
  return () => void g.setThreads!(before);
}

/** OpenBLAS's threads inside the matmul op's products while the rest runs on one (0: not split). */
let productThreads = 0;

/**
 * Keeps OpenBLAS on one thread except inside the matmul op's products, which get `threads` (> 1).
 * The CPU kernel pool calls it when it starts: its threads then run the elementwise kernels,
 * attention, the adds and most products, and OpenBLAS's own threads, which spin for a while after
 * each call, are woken only by a product the pool does not take.
 *
 * @param threads OpenBLAS threads for the matmul op's products
 */
export function blasThreadsForProductsOnly(threads: number): void {
  if (fast) return;
  const g = getGemm();
  if (g.kind !== "blas" || !g.setThreads) return;
  productThreads = threads;
  g.setThreads(1);
}

let bf16: Pick<Gemm, "sgemm"> | null = null;

/**
 * C[m,n] = A[m,k]·Wᵀ (dense row-major f32, W stored [n,k]) on W's packed copy (`gemm/packed.ts`:
 * 2–32 rows against a weight used again, as in decoding; in the bfloat16 precision 1–32 rows on a
 * bf16 copy); false where that does not apply (other dtypes, products that are not native
 * (`MINIMIND_GEMM=wasm|js`, no BLAS, a bf16 gemm given by a test), one row in f32 or more than 32,
 * no oneDNN 2.x): the caller multiplies.
 */
export function packedMatmul(
  a: TypedArray,
  w: TypedArray,
  c: TypedArray,
  m: number,
  n: number,
  k: number,
): boolean {
  if (
    (bf16 && !(bf16 instanceof Bf16Gemm)) || !(a instanceof Float32Array) ||
    !(w instanceof Float32Array) || !(c instanceof Float32Array) ||
    getGemm().kind !== "blas" // MINIMIND_GEMM=wasm|js: theirs
  ) return false;
  const rounded = bf16 !== null;
  return gemmClock.on
    ? clocked(() => packedProduct(a, w, c, m, n, k, rounded))
    : packedProduct(a, w, c, m, n, k, rounded);
}

/** The precision of the matmul op's f32 products on the CPU (see `setMatmulPrecision`). */
export function matmulPrecision(): "float32" | "bfloat16" {
  return bf16 ? "bfloat16" : "float32";
}

/**
 * oneDNN 2.x when the bfloat16 precision is in effect on oneDNN's bf16 products (not a bf16 gemm a
 * test gave), else null: what attention's bf16 products (`attention_bf16.ts`) run on.
 */
export function bf16Dnnl(): Dnnl | null {
  return bf16 instanceof Bf16Gemm ? nativeDnnl() : null;
}

/**
 * Mixed precision for the matmul op (linear layers, the LM head) on the CPU: with "bfloat16" its
 * f32 operands are rounded to bf16 and multiplied with f32 accumulation into an f32 result
 * (oneDNN, where the CPU has native bf16), and so are attention's products when T > 1
 * (`attention_bf16.ts`); weights, gradients, optimizer state and every other op stay f32. Returns
 * null when the precision is in effect, or why it stays float32.
 *
 * @param precision "float32" (default) or "bfloat16"
 * @param impl a bf16 gemm to use instead of oneDNN's (tests)
 * @returns null, or the reason bf16 is unavailable
 */
export function setMatmulPrecision(
  precision: "float32" | "bfloat16",
  impl?: Pick<Gemm, "sgemm">,
): string | null {
  if (precision === "float32") {
    bf16 = null;
    return null;
  }
  const g = impl ?? openBf16Gemm();
  if (typeof g === "string") {
    bf16 = null;
    return g;
  }
  bf16 = g;
  return null;
}

/**
 * The bf16 gemm for products of bf16 tensors: the precision's own, else oneDNN's where this CPU
 * has native bf16; throws why not.
 */
function bf16Gemm(): Bf16Gemm {
  if (bf16 instanceof Bf16Gemm) return bf16;
  const g = openBf16Gemm();
  if (typeof g === "string") throw new Error(`Cannot multiply bf16 tensors on the CPU: ${g}`);
  return g;
}

/**
 * Whether the matmul op may store bf16 activations on the CPU: the bfloat16 precision is in effect
 * on oneDNN's native products (`model/layers/` then keep the MLP's and attention's activations in
 * bf16).
 */
export function bf16Activations(): boolean {
  return bf16 instanceof Bf16Gemm && nativeDnnl() !== null;
}

/**
 * `gemm` for the matmul op: in the bfloat16 precision (see `setMatmulPrecision`) f32 products go
 * to the bf16 gemm; otherwise it is `gemm`.
 */
export function matmulGemm(
  transA: boolean,
  transB: boolean,
  m: number,
  n: number,
  k: number,
  a: TypedArray,
  lda: number,
  b: TypedArray,
  ldb: number,
  c: TypedArray,
  ldc: number,
  batch = 1,
  strideA = 0,
  strideB = 0,
  strideC = 0,
): void {
  // bf16 tensors (the bfloat16 precision's activations): only the bf16 gemm multiplies them
  const lowp = a instanceof Uint16Array || b instanceof Uint16Array || c instanceof Uint16Array;
  const g: { sgemm(args: MixedArgs): void } | null = lowp ? bf16Gemm() : bf16;
  if (
    !g || (!lowp && (m === 0 || n === 0 || !(a instanceof Float32Array) ||
      !(b instanceof Float32Array) || !(c instanceof Float32Array)))
  ) {
    const blas = productThreads && !fast ? getGemm() : null;
    blas?.setThreads?.(productThreads);
    try {
      gemm(
        transA,
        transB,
        m,
        n,
        k,
        a,
        0,
        lda,
        b,
        0,
        ldb,
        c,
        0,
        ldc,
        0,
        batch,
        strideA,
        strideB,
        strideC,
      );
    } finally {
      blas?.setThreads?.(1);
    }
    return;
  }
  const t0 = gemmClock.on ? performance.now() : 0;
  const [ma, mb, mc] = [a, b, c] as Bf16Operand[]; // f32, or bf16 bits (checked above)
  g.sgemm({
    transA,
    transB,
    m,
    n,
    k,
    a: ma,
    lda,
    b: mb,
    ldb,
    c: mc,
    ldc,
    batch,
    strideA,
    strideB,
    strideC,
  });
  if (gemmClock.on) gemmClock.ms += performance.now() - t0;
}
