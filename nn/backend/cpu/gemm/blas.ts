/**
 * BLAS `cblas_sgemm` through Deno FFI, found at run time: `MINIMIND_BLAS`, then the usual OpenBLAS
 * (pthread build) locations on Linux, then Accelerate on macOS. OpenMP builds of OpenBLAS are refused:
 * their thread pool crashes Deno at process exit.
 *
 * @module
 */

import { handleTrivial, resolveArgs, type SgemmArgs } from "./types.ts";
import type { Gemm } from "./types.ts";

const CblasRowMajor = 101;
const CblasNoTrans = 111;
const CblasTrans = 112;

/** The tail both level-2/3 products share: A, lda, B (x), ldb (incx), beta, C (y), ldc (incy). */
const OPERANDS = ["buffer", "i32", "buffer", "i32", "f32", "buffer", "i32"] as const;

const SYMBOLS = {
  // order, transA, transB, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc
  cblas_sgemm: {
    parameters: ["i32", "i32", "i32", "i32", "i32", "i32", "f32", ...OPERANDS],
    result: "void",
  },
  // order, trans, M, N, alpha, A, lda, x, incx, beta, y, incy: y = alpha·op(A)·x + beta·y
  cblas_sgemv: {
    parameters: ["i32", "i32", "i32", "i32", "f32", ...OPERANDS],
    result: "void",
    optional: true,
  },
  // n, x, incx, y, incy: Σ x·y of f32 vectors accumulated in f64
  cblas_dsdot: {
    parameters: ["i32", "buffer", "i32", "buffer", "i32"],
    result: "f64",
    optional: true,
  },
  // n, alpha, x, incx, y, incy: y += alpha·x
  cblas_saxpy: {
    parameters: ["i32", "f32", "buffer", "i32", "buffer", "i32"],
    result: "void",
    optional: true,
  },
  openblas_get_parallel: { parameters: [], result: "i32", optional: true },
  openblas_get_config: { parameters: [], result: "pointer", optional: true },
  openblas_get_corename: { parameters: [], result: "pointer", optional: true },
  openblas_get_num_threads: { parameters: [], result: "i32", optional: true },
  openblas_set_num_threads: { parameters: ["i32"], result: "void", optional: true },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

/** Why no BLAS was loaded: `"permission"` (no `--allow-ffi`), `"unavailable"` or `"unsupported"`. */
export interface BlasMiss {
  reason: "permission" | "unavailable" | "unsupported";
  /** One line per candidate tried, with what went wrong. */
  tried: string[];
}

const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";

function envGet(name: string): string | undefined {
  try {
    return isDeno ? Deno.env.get(name) : undefined;
  } catch {
    return undefined; // no --allow-env
  }
}

/** Candidate libraries in search order for this OS and CPU. */
export function blasCandidates(): string[] {
  const out: string[] = [];
  const fromEnv = envGet("MINIMIND_BLAS");
  if (fromEnv) out.push(fromEnv);
  const { os, arch } = Deno.build;
  if (os === "darwin") {
    out.push(
      "/System/Library/Frameworks/Accelerate.framework/Accelerate",
      "/opt/homebrew/opt/openblas/lib/libopenblas.dylib",
      "/usr/local/opt/openblas/lib/libopenblas.dylib",
    );
  } else if (os === "windows") {
    out.push("libopenblas.dll", "openblas.dll");
  } else {
    const triplet = arch === "aarch64" ? "aarch64-linux-gnu" : "x86_64-linux-gnu";
    out.push(
      `/usr/lib/${triplet}/openblas-pthread/libopenblas.so.0`,
      `/usr/lib64/libopenblasp.so.0`, // Fedora's pthread build
      "libopenblas.so.0",
      "libopenblas.so",
      "libcblas.so.3",
    );
  }
  return out;
}

function cString(p: Deno.PointerValue | undefined): string {
  return p ? Deno.UnsafePointerView.getCString(p) : "";
}

/** FFI-backed {@linkcode Gemm}. The library stays loaded for the life of the process. */
class BlasGemm implements Gemm {
  readonly kind = "blas" as const;
  readonly detail: string;
  readonly #sgemm: Lib["symbols"]["cblas_sgemm"];
  readonly #sgemv: Lib["symbols"]["cblas_sgemv"];
  readonly sumSquares?: (x: Float32Array) => number;
  readonly addInPlace?: (x: Float32Array, y: Float32Array) => void;

  constructor(lib: Lib, path: string) {
    this.#sgemm = lib.symbols.cblas_sgemm;
    this.#sgemv = lib.symbols.cblas_sgemv;
    const { cblas_dsdot: dsdot, cblas_saxpy: saxpy } = lib.symbols;
    // one call per 2^30 elements at most (the i32 length)
    const CHUNK = 2 ** 30;
    if (dsdot) {
      this.sumSquares = (x) => {
        let s = 0;
        for (let i = 0; i < x.length; i += CHUNK) {
          const part = x.subarray(i, Math.min(x.length, i + CHUNK));
          s += dsdot(part.length, part, 1, part, 1);
        }
        return s;
      };
    }
    if (saxpy) {
      this.addInPlace = (x, y) => {
        for (let i = 0; i < x.length; i += CHUNK) {
          const end = Math.min(x.length, i + CHUNK);
          saxpy(end - i, 1, x.subarray(i, end), 1, y.subarray(i, end), 1);
        }
      };
    }
    const s = lib.symbols;
    const { openblas_get_num_threads: get, openblas_set_num_threads: set } = s;
    if (get && set) {
      this.setThreads = (n) => {
        const before = get();
        if (n !== before) set(n);
        return before;
      };
    }
    const config = cString(s.openblas_get_config?.()).trim();
    const core = cString(s.openblas_get_corename?.());
    const threads = s.openblas_get_num_threads?.();
    this.detail = [
      config || "cblas_sgemm",
      core && `core ${core}`,
      threads !== undefined && `${threads} threads`,
      path,
    ].filter(Boolean).join(", ");
  }

  /** Sets OpenBLAS's thread count (process-wide); returns the previous one. */
  readonly setThreads?: (n: number) => number;

  sgemm(args: SgemmArgs): void {
    const r = resolveArgs(args);
    if (handleTrivial(r)) return;
    const ta = r.transA ? CblasTrans : CblasNoTrans;
    const tb = r.transB ? CblasTrans : CblasNoTrans;
    const f = this.#sgemm, gemv = this.#sgemv;
    for (let bi = 0; bi < r.batch; bi++) {
      const ao = r.aOff + bi * r.strideA,
        bo = r.bOff + bi * r.strideB,
        co = r.cOff + bi * r.strideC;
      const a = ao === 0 ? r.a : r.a.subarray(ao),
        b = bo === 0 ? r.b : r.b.subarray(bo),
        c = co === 0 ? r.c : r.c.subarray(co);
      // one row or one column of C (a decode step's x·Wᵀ is one row): a matrix-vector product
      // reads the matrix once, where sgemm first packs all of it (2.5× slower, 1408×512 weight)
      if (gemv && r.m === 1) {
        // y = op(B)ᵀ·x, B stored [n,k] (transB) or [k,n]
        const [rows, cols] = r.transB ? [r.n, r.k] : [r.k, r.n];
        const t = r.transB ? CblasNoTrans : CblasTrans, incX = r.transA ? r.lda : 1;
        gemv(CblasRowMajor, t, rows, cols, 1, b, r.ldb, a, incX, r.beta, c, 1);
        continue;
      }
      if (gemv && r.n === 1) {
        // y = op(A)·b, A stored [k,m] (transA) or [m,k]
        const [rows, cols] = r.transA ? [r.k, r.m] : [r.m, r.k];
        gemv(CblasRowMajor, ta, rows, cols, 1, a, r.lda, b, r.transB ? 1 : r.ldb, r.beta, c, r.ldc);
        continue;
      }
      f(
        CblasRowMajor,
        ta,
        tb,
        r.m,
        r.n,
        r.k,
        1,
        a,
        r.lda,
        b,
        r.ldb,
        r.beta,
        c,
        r.ldc,
      );
    }
  }

  dispose(): void {
    // Nothing to release: unloading a threaded BLAS while the process runs is not safe.
  }
}

const cache = new Map<string, Lib>();

/** Opens `path` (once per process) or returns why not; refuses OpenMP builds of OpenBLAS. */
function load(path: string): Lib | string {
  const hit = cache.get(path);
  if (hit) return hit;
  if (/openblas-openmp|openblaso/i.test(path)) {
    return "skipped, an OpenMP build of OpenBLAS (crashes Deno at exit)";
  }
  const lib = Deno.dlopen(path, SYMBOLS); // throws NotCapable without --allow-ffi
  if (lib.symbols.openblas_get_parallel?.() === 2) {
    lib.close();
    return "skipped, OpenBLAS built with OpenMP (crashes Deno at exit)";
  }
  cache.set(path, lib);
  return lib;
}

/**
 * Loads the first usable BLAS among {@linkcode blasCandidates} (or `paths`), or says why none could
 * be loaded. `threads`, when given, sets OpenBLAS's thread count (process-wide).
 */
export function openBlas(opts: { paths?: string[]; threads?: number } = {}): Gemm | BlasMiss {
  if (!isDeno || typeof Deno.dlopen !== "function") {
    return { reason: "unsupported", tried: ["Deno.dlopen is not available"] };
  }
  const tried: string[] = [];
  for (const path of opts.paths ?? blasCandidates()) {
    let lib: Lib | string;
    try {
      lib = load(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
        return { reason: "permission", tried: [`${path}: ${(e as Error).message}`] };
      }
      lib = (e as Error).message.split("\n")[0];
    }
    if (typeof lib === "string") {
      tried.push(`${path}: ${lib}`);
      continue;
    }
    if (opts.threads !== undefined && opts.threads > 0) {
      lib.symbols.openblas_set_num_threads?.(Math.floor(opts.threads));
    }
    return new BlasGemm(lib, path);
  }
  return { reason: "unavailable", tried };
}
