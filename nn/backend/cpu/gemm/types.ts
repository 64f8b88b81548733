/**
 * Argument types of the matmul module and their validation, shared by the BLAS, wasm and JS paths.
 *
 * @module
 */

/**
 * Arguments of one (optionally batched) single-precision matmul on row-major data:
 * `C[M,N] = beta*C + op(A)[M,K] · op(B)[K,N]`, where `op(X)` is `X` or, when the flag is set, `Xᵀ`.
 *
 * `A` is stored as `[M,K]` (or `[K,M]` when `transA`) with row stride `lda`; likewise `B` as `[K,N]`
 * (or `[N,K]` when `transB`) with `ldb`, and `C` as `[M,N]` with `ldc`. With `batch > 1`, matrix `i`
 * starts at `offset + i*stride`; strides default to one whole matrix (`rows*ld`) and may be 0 for A or
 * B to reuse one matrix across the batch.
 *
 * @example
 * ```ts
 * // y[2,3] = x[2,4] · Wᵀ with W stored [3,4] (a linear layer's forward)
 * const x = new Float32Array(8), w = new Float32Array(12), y = new Float32Array(6);
 * const args = { transA: false, transB: true, m: 2, n: 3, k: 4, a: x, lda: 4, b: w, ldb: 4, c: y, ldc: 3 };
 * ```
 */
export interface SgemmArgs {
  /** Use `Aᵀ`: A is stored `[K,M]`. */
  transA: boolean;
  /** Use `Bᵀ`: B is stored `[N,K]`. */
  transB: boolean;
  /** Rows of `op(A)` and `C`. */
  m: number;
  /** Columns of `op(B)` and `C`. */
  n: number;
  /** Inner dimension. */
  k: number;
  /** Storage of A. */
  a: Float32Array;
  /** Index of A's first element in `a` (default 0). */
  aOffset?: number;
  /** Row stride of A as stored (≥ K, or ≥ M when `transA`). */
  lda: number;
  /** Storage of B. */
  b: Float32Array;
  /** Index of B's first element in `b` (default 0). */
  bOffset?: number;
  /** Row stride of B as stored (≥ N, or ≥ K when `transB`). */
  ldb: number;
  /** Storage of C (written in place). */
  c: Float32Array;
  /** Index of C's first element in `c` (default 0). */
  cOffset?: number;
  /** Row stride of C (≥ N). */
  ldc: number;
  /** 0 (default): overwrite C, its old contents are never read; 1: accumulate into C. */
  beta?: 0 | 1;
  /** Number of independent matmuls (default 1). */
  batch?: number;
  /** Elements between consecutive A matrices (default: one stored matrix). */
  strideA?: number;
  /** Elements between consecutive B matrices (default: one stored matrix). */
  strideB?: number;
  /** Elements between consecutive C matrices (default `M*ldc`). */
  strideC?: number;
}

/** An operand of the bf16 gemm (`bf16.ts`): f32 values, or bf16 bits used as they are. */
export type Bf16Operand = Float32Array | Uint16Array;

/**
 * {@linkcode SgemmArgs} for the bf16 gemm: A and B may hold bf16 bits (not rounded again), and C
 * may be bf16 (the product rounds its f32 accumulator once); `beta` 1 needs an f32 C.
 */
export interface MixedArgs extends Omit<SgemmArgs, "a" | "b" | "c"> {
  /** Storage of A: f32, or bf16 bits. */
  a: Bf16Operand;
  /** Storage of B: f32, or bf16 bits. */
  b: Bf16Operand;
  /** Storage of C: f32, or bf16 bits. */
  c: Bf16Operand;
}

/** A matmul implementation. Every `sgemm` call is synchronous and leaves the result in `args.c`. */
export interface Gemm {
  /** Which path computes: a BLAS library through FFI, the wasm SIMD kernel, or plain TypeScript. */
  readonly kind: "blas" | "wasm" | "js";
  /** Human-readable description: library path and version, kernel variant, thread count. */
  readonly detail: string;
  /** Computes `C = beta*C + op(A)·op(B)` as described by {@linkcode SgemmArgs}. */
  sgemm(args: SgemmArgs): void;
  /**
   * Σx² of a whole array, accumulated in f64 (BLAS `cblas_dsdot`: vectorized and threaded, about
   * 8× the JS loop; OpenBLAS rounds each product to f32, so the sum is within 2^-24 relative of
   * the exact one), where the implementation has it.
   */
  sumSquares?(x: Float32Array): number;
  /** `y += x` (BLAS `cblas_saxpy` with α = 1: each sum rounded once, as the JS loop does). */
  addInPlace?(x: Float32Array, y: Float32Array): void;
  /** Sets the library's thread count (OpenBLAS: process-wide) and returns the previous one. */
  setThreads?(n: number): number;
  /**
   * Releases background resources (worker threads). The object stays usable afterwards, on the
   * calling thread only.
   */
  dispose(): void;
}

/** {@linkcode SgemmArgs} with every default filled in and every bound checked. */
export interface Resolved {
  transA: boolean;
  transB: boolean;
  m: number;
  n: number;
  k: number;
  a: Float32Array;
  aOff: number;
  lda: number;
  b: Float32Array;
  bOff: number;
  ldb: number;
  c: Float32Array;
  cOff: number;
  ldc: number;
  beta: 0 | 1;
  batch: number;
  strideA: number;
  strideB: number;
  strideC: number;
}

function isCount(x: unknown): x is number {
  return typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
}

function shapeOf(args: MixedArgs): string {
  const { transA, transB, m, n, k } = args;
  return `sgemm(transA=${transA}, transB=${transB}, m=${m}, n=${n}, k=${k}, batch=${
    args.batch ?? 1
  })`;
}

/** {@linkcode Resolved} of {@linkcode MixedArgs}. */
export interface MixedResolved extends Omit<Resolved, "a" | "b" | "c"> {
  a: Bf16Operand;
  b: Bf16Operand;
  c: Bf16Operand;
}

/** Checks one operand's leading dimension and that every batch element lies inside its array. */
function checkOperand(
  what: string,
  arr: Bf16Operand,
  off: number,
  ld: number,
  rows: number,
  cols: number,
  batch: number,
  stride: number,
  ctx: string,
  bf16: boolean,
): void {
  if (!(arr instanceof Float32Array) && !(bf16 && arr instanceof Uint16Array)) {
    throw new TypeError(
      `${ctx}: ${what} must be a Float32Array${bf16 ? " or a Uint16Array of bf16 bits" : ""}`,
    );
  }
  if (!isCount(off)) throw new RangeError(`${ctx}: ${what} offset=${off} is not a count`);
  if (!isCount(ld) || ld < Math.max(1, cols)) {
    throw new RangeError(
      `${ctx}: ld${what.toLowerCase()}=${ld} < ${cols} columns of stored ${what}`,
    );
  }
  if (!isCount(stride)) throw new RangeError(`${ctx}: stride${what}=${stride} is not a count`);
  if (rows === 0 || cols === 0 || batch === 0) return;
  const last = off + (batch - 1) * stride + (rows - 1) * ld + cols;
  if (last > arr.length) {
    throw new RangeError(
      `${ctx}: ${what} [${rows},${cols}] (ld=${ld}, offset=${off}, stride=${stride}) needs ${last} elements, array has ${arr.length}`,
    );
  }
}

/** Validates `args` and fills in defaults; throws a RangeError/TypeError naming the bad value. */
export function resolveArgs(args: SgemmArgs): Resolved {
  return resolveAny(args, false) as Resolved;
}

/** {@linkcode resolveArgs} for the bf16 gemm, whose operands may be bf16 bits. */
export function resolveMixed(args: MixedArgs): MixedResolved {
  return resolveAny(args, true);
}

function resolveAny(args: MixedArgs, bf16: boolean): MixedResolved {
  const { transA, transB, m, n, k } = args;
  const batch = args.batch ?? 1;
  const ctx = shapeOf(args);
  for (const [name, v] of [["m", m], ["n", n], ["k", k], ["batch", batch]] as const) {
    if (!isCount(v)) throw new RangeError(`${ctx}: ${name}=${v} is not a non-negative integer`);
  }
  const beta = args.beta ?? 0;
  if (beta !== 0 && beta !== 1) throw new RangeError(`${ctx}: beta=${beta} must be 0 or 1`);
  const [rA, cA] = transA ? [k, m] : [m, k];
  const [rB, cB] = transB ? [n, k] : [k, n];
  const r: MixedResolved = {
    transA: !!transA,
    transB: !!transB,
    m,
    n,
    k,
    a: args.a,
    aOff: args.aOffset ?? 0,
    lda: args.lda,
    b: args.b,
    bOff: args.bOffset ?? 0,
    ldb: args.ldb,
    c: args.c,
    cOff: args.cOffset ?? 0,
    ldc: args.ldc,
    beta,
    batch,
    strideA: args.strideA ?? rA * args.lda,
    strideB: args.strideB ?? rB * args.ldb,
    strideC: args.strideC ?? m * args.ldc,
  };
  checkOperand("A", r.a, r.aOff, r.lda, rA, cA, batch, r.strideA, ctx, bf16);
  checkOperand("B", r.b, r.bOff, r.ldb, rB, cB, batch, r.strideB, ctx, bf16);
  checkOperand("C", r.c, r.cOff, r.ldc, m, n, batch, r.strideC, ctx, bf16);
  return r;
}

/**
 * Handles the calls with nothing to multiply (an empty C, or K = 0 where C = beta*C).
 * Returns true when the call is complete.
 */
export function handleTrivial(r: Resolved | MixedResolved): boolean {
  if (r.m === 0 || r.n === 0 || r.batch === 0) return true;
  if (r.k > 0) return false;
  if (r.beta === 0) {
    for (let bi = 0; bi < r.batch; bi++) {
      for (let i = 0; i < r.m; i++) {
        const o = r.cOff + bi * r.strideC + i * r.ldc;
        r.c.fill(0, o, o + r.n);
      }
    }
  }
  return true;
}
