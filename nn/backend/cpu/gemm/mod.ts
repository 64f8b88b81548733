/**
 * Fast single-precision matmul for the CPU backend, self-contained (imports nothing else from the
 * project).
 *
 * Three paths, best first:
 * - `blas`: `cblas_sgemm` of a BLAS library through Deno FFI (OpenBLAS pthread build on Linux,
 *   Accelerate on macOS), found at run time; needs `--allow-ffi`.
 * - `wasm`: a WebAssembly SIMD kernel (relaxed-SIMD FMA where available) over packed panels, with
 *   optional worker threads on a shared memory; works everywhere, ~4× slower than BLAS.
 * - `js`: the plain TypeScript reference ({@linkcode sgemmJs}).
 *
 * Environment: `MINIMIND_GEMM=blas|wasm|js` forces a path (an error if it cannot be had);
 * `MINIMIND_BLAS=/path/to/lib` is tried before the standard locations. When BLAS is not found, one
 * line on stderr says how to get it.
 *
 * @example
 * ```ts
 * import { getGemm } from "./mod.ts";
 * // y[2,3] = x[2,4] · Wᵀ with W stored [3,4]
 * const x = new Float32Array(8).fill(1), w = new Float32Array(12).fill(2), y = new Float32Array(6);
 * getGemm().sgemm({ transA: false, transB: true, m: 2, n: 3, k: 4, a: x, lda: 4, b: w, ldb: 4, c: y, ldc: 3 });
 * // y is all 8
 * ```
 *
 * @module
 */

import type { Gemm } from "./types.ts";
import { type BlasMiss, openBlas } from "./blas.ts";
import { WasmGemm } from "./wasm.ts";
import { sgemmJs } from "./js.ts";

export type { Gemm, SgemmArgs } from "./types.ts";
export { sgemmJs } from "./js.ts";

/** The names of the three implementations, best first. */
export type GemmKind = Gemm["kind"];

/** Options of {@linkcode initGemm}. */
export interface GemmOptions {
  /**
   * Path to try first; later paths are fallbacks (`"blas"` → `"wasm"` → `"js"`). The environment
   * variable `MINIMIND_GEMM` overrides it and allows no fallback.
   */
  prefer?: GemmKind;
  /**
   * Threads for large calls: worker count + 1 for wasm, OpenBLAS's thread count for blas
   * (process-wide). Default: `navigator.hardwareConcurrency` (capped at 8) for wasm, BLAS's own.
   */
  threads?: number;
}

const JS_GEMM: Gemm = {
  kind: "js",
  detail: "plain TypeScript kernel",
  sgemm: sgemmJs,
  dispose() {},
};

let current: Gemm | undefined;
let hinted = false;

function envGet(name: string): string | undefined {
  try {
    return (globalThis as { Deno?: typeof Deno }).Deno?.env.get(name);
  } catch {
    return undefined; // no --allow-env
  }
}

/** `MINIMIND_GEMM`, validated. */
function forcedKind(): GemmKind | undefined {
  const v = envGet("MINIMIND_GEMM")?.trim().toLowerCase();
  if (!v) return undefined;
  if (v === "blas" || v === "wasm" || v === "js") return v;
  throw new RangeError(`MINIMIND_GEMM=${v}: expected one of blas, wasm, js`);
}

function hint(miss: BlasMiss): void {
  if (hinted) return;
  hinted = true;
  const why = miss.reason === "permission"
    ? "BLAS needs --allow-ffi (or -A)"
    : (globalThis as { Deno?: typeof Deno }).Deno?.build.os === "linux"
    ? "no BLAS found (apt-get install libopenblas0-pthread, or set MINIMIND_BLAS=/path/to/libopenblas.so)"
    : "no BLAS found (install OpenBLAS, or set MINIMIND_BLAS=/path/to/the/library)";
  console.error(`minimind: ${why}; using wasm SIMD matmul, ~4x slower`);
}

/** Builds the first implementation that works, starting at `prefer`; `strict` allows no fallback. */
function build(prefer: GemmKind, strict: boolean, threads?: number): Gemm {
  const order: GemmKind[] = prefer === "js"
    ? ["js"]
    : prefer === "wasm"
    ? ["wasm", "js"]
    : ["blas", "wasm", "js"];
  let miss: BlasMiss | undefined;
  for (const kind of strict ? [prefer] : order) {
    if (kind === "blas") {
      const got = openBlas({ threads });
      if ("sgemm" in got) return got;
      miss = got;
      if (strict) {
        throw new Error(
          `MINIMIND_GEMM=blas: no usable BLAS (${got.reason}); tried:\n  ${got.tried.join("\n  ")}`,
        );
      }
    } else if (kind === "wasm") {
      try {
        const g = new WasmGemm();
        if (miss) hint(miss);
        return g;
      } catch (e) {
        if (strict) throw new Error(`MINIMIND_GEMM=wasm: ${(e as Error).message}`);
      }
    } else {
      return JS_GEMM;
    }
  }
  return JS_GEMM;
}

/**
 * The best matmul available now, created on first use (synchronously) and then reused. It never
 * starts worker threads: call {@linkcode initGemm} once at start-up for a multi-threaded wasm path.
 *
 * @example
 * ```ts
 * import { getGemm } from "./mod.ts";
 * const g = getGemm();
 * console.log(g.kind, g.detail); // e.g. "blas", "OpenBLAS 0.3.21 ... 2 threads, /usr/lib/..."
 * ```
 */
export function getGemm(): Gemm {
  if (!current) {
    const forced = forcedKind();
    current = build(forced ?? "blas", forced !== undefined);
  }
  return current;
}

/**
 * Chooses the matmul per `opts` (and `MINIMIND_GEMM`), starts its worker threads if any, installs it
 * as what {@linkcode getGemm} returns and returns it. A previous default with workers is disposed.
 * Workers never keep the process alive; {@linkcode Gemm.dispose} stops them.
 *
 * @example
 * ```ts
 * import { initGemm } from "./mod.ts";
 * const g = await initGemm({ prefer: "wasm", threads: 2 });
 * console.log(g.detail); // "wasm relaxed-SIMD FMA 3×12 kernel, 2 threads"
 * g.dispose();
 * ```
 */
export async function initGemm(opts: GemmOptions = {}): Promise<Gemm> {
  const forced = forcedKind();
  const g = build(forced ?? opts.prefer ?? "blas", forced !== undefined, opts.threads);
  if (g instanceof WasmGemm) {
    const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
    const threads = opts.threads ?? Math.min(8, nav?.hardwareConcurrency ?? 1);
    try {
      await g.startWorkers(threads);
    } catch (e) {
      console.error(`minimind: ${(e as Error).message}; continuing with ${g.threads} thread(s)`);
    }
  }
  if (current && current !== g) current.dispose();
  current = g;
  return g;
}
