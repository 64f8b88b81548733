/**
 * bfloat16 matrix products with f32 accumulation and f32 output (mixed precision, as PyTorch's
 * autocast runs a linear layer), through oneDNN's `dnnl_gemm_bf16bf16f32` by Deno FFI. Used only
 * where the CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16 in `/proc/cpuinfo`): elsewhere
 * oneDNN emulates it and f32 is faster. The f32 operands are rounded to bf16 (round to nearest
 * even) into scratch arrays on every call; the result C is f32.
 *
 * The library is found at run time: `MINIMIND_DNNL`, then Debian's `libdnnl.so.3` / `.so.2`
 * (package libdnnl2/libdnnl3).
 *
 * @module
 */

import { handleTrivial, resolveArgs, type SgemmArgs } from "./types.ts";

const DIM = "i64";
const SYMBOLS = {
  // transa, transb (chars 'N'/'T'), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc: row-major
  dnnl_gemm_bf16bf16f32: {
    parameters: [
      "u8",
      "u8",
      DIM,
      DIM,
      DIM,
      "f32",
      "buffer",
      DIM,
      "buffer",
      DIM,
      "f32",
      "buffer",
      DIM,
    ],
    result: "i32",
  },
} as const;

const N_CHAR = 78, T_CHAR = 84;

/** Rounds f32 `x[from, to)` to bf16 bits in `out[0, to − from)` (round to nearest even). */
export function toBf16(x: Float32Array, from: number, to: number, out: Uint16Array): void {
  const u = new Uint32Array(x.buffer, x.byteOffset + 4 * from, to - from);
  for (let i = 0; i < u.length; i++) {
    const v = u[i];
    // NaN stays NaN (a quiet bit is kept); everything else rounds to nearest even
    out[i] = (v & 0x7fffffff) > 0x7f800000
      ? (v >>> 16) | 0x40
      : (v + 0x7fff + ((v >>> 16) & 1)) >>> 16;
  }
}

/** Whether this CPU multiplies bf16 natively (Linux: AVX512-BF16 or AMX-BF16 in /proc/cpuinfo). */
export function cpuHasBf16(): boolean {
  try {
    return /\b(avx512_bf16|amx_bf16)\b/.test(Deno.readTextFileSync("/proc/cpuinfo"));
  } catch {
    return false;
  }
}

/** A bf16 gemm with f32 accumulation (see the module doc). */
export class Bf16Gemm {
  /** The library loaded. */
  readonly detail: string;
  readonly #f: Deno.DynamicLibrary<typeof SYMBOLS>["symbols"]["dnnl_gemm_bf16bf16f32"];
  #sa = new Uint16Array(0);
  #sb = new Uint16Array(0);

  constructor(lib: Deno.DynamicLibrary<typeof SYMBOLS>, path: string) {
    this.#f = lib.symbols.dnnl_gemm_bf16bf16f32;
    this.detail = `oneDNN dnnl_gemm_bf16bf16f32, ${path}`;
  }

  /** `C = beta·C + op(A)·op(B)` with A and B rounded to bf16, accumulated and stored in f32. */
  sgemm(args: SgemmArgs): void {
    const r = resolveArgs(args);
    if (handleTrivial(r)) return;
    // the spans of a and b the batch reads, rounded once
    const [rA, cA] = r.transA ? [r.k, r.m] : [r.m, r.k];
    const [rB, cB] = r.transB ? [r.n, r.k] : [r.k, r.n];
    const endA = r.aOff + (r.batch - 1) * r.strideA + (rA - 1) * r.lda + cA;
    const endB = r.bOff + (r.batch - 1) * r.strideB + (rB - 1) * r.ldb + cB;
    if (this.#sa.length < endA - r.aOff) this.#sa = new Uint16Array(endA - r.aOff);
    if (this.#sb.length < endB - r.bOff) this.#sb = new Uint16Array(endB - r.bOff);
    toBf16(r.a, r.aOff, endA, this.#sa);
    toBf16(r.b, r.bOff, endB, this.#sb);
    const ta = r.transA ? T_CHAR : N_CHAR, tb = r.transB ? T_CHAR : N_CHAR;
    for (let bi = 0; bi < r.batch; bi++) {
      const ao = bi * r.strideA, bo = bi * r.strideB, co = r.cOff + bi * r.strideC;
      const status = this.#f(
        ta,
        tb,
        BigInt(r.m),
        BigInt(r.n),
        BigInt(r.k),
        1,
        ao === 0 ? this.#sa : this.#sa.subarray(ao),
        BigInt(r.lda),
        bo === 0 ? this.#sb : this.#sb.subarray(bo),
        BigInt(r.ldb),
        r.beta,
        co === 0 ? r.c : r.c.subarray(co),
        BigInt(r.ldc),
      );
      if (status !== 0) {
        throw new Error(
          `dnnl_gemm_bf16bf16f32 failed (status ${status}) on m=${r.m} n=${r.n} k=${r.k}`,
        );
      }
    }
  }
}

let cached: Bf16Gemm | string | null = null;

/**
 * The bf16 gemm, or why there is none: no native bf16 on this CPU (`cpuHasBf16`), no oneDNN
 * library, or no FFI permission. Loaded once per process.
 */
export function openBf16Gemm(): Bf16Gemm | string {
  if (cached !== null) return cached;
  if (!cpuHasBf16()) return cached = "this CPU has no AVX512-BF16 / AMX-BF16";
  let env: string | undefined;
  try {
    env = Deno.env.get("MINIMIND_DNNL");
  } catch {
    env = undefined;
  }
  const tried: string[] = [];
  const paths = [
    ...(env ? [env] : []),
    "/usr/lib/x86_64-linux-gnu/libdnnl.so.3",
    "/usr/lib/x86_64-linux-gnu/libdnnl.so.2",
    "libdnnl.so.3",
    "libdnnl.so.2",
  ];
  for (const path of paths) {
    try {
      return cached = new Bf16Gemm(Deno.dlopen(path, SYMBOLS), path);
    } catch (e) {
      tried.push(`${path}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  return cached = `no oneDNN library with dnnl_gemm_bf16bf16f32 (${tried.join("; ")})`;
}
