/**
 * Portable matmul: a WebAssembly SIMD kernel (relaxed-SIMD FMA where the engine has it) over
 * operands packed into panels, optionally sharing the work with Worker threads over a shared
 * `WebAssembly.Memory`. Runs in Deno, Node and browsers; needs no permission.
 *
 * Per matrix: JS packs op(A) into MR-row panels and op(B) into NR-column panels inside wasm memory
 * (this is where the transposes are absorbed: no transposed copy of an operand is ever made), copies C
 * in when accumulating, the kernel computes the padded C, and JS copies the M×N result out.
 *
 * @module
 */

import { handleTrivial, resolveArgs, type Resolved, type SgemmArgs } from "./types.ts";
import type { Gemm } from "./types.ts";
import { sgemmJsOne } from "./js.ts";
import * as K from "./kernel_wasm.ts";
import {
  CTRL_BYTES,
  hasSharedMemory,
  type KernelFn,
  MAX_CHUNKS,
  MAX_WASM_PAGES,
  wasmBytes,
  WasmPool,
} from "../wasm_pool/mod.ts";

/** The kernel's `gemm` export (see build_wasm.ts). */
type GemmFn = (
  pa: number,
  pb: number,
  pc: number,
  mp: number,
  np: number,
  k: number,
  kc: number,
  ip0: number,
  ip1: number,
  jp0: number,
  jp1: number,
  mcp: number,
  beta0: number,
) => void;

const { MR, NR } = K;
/** Depth of a K block: an A micro-panel (KC×MR) and B micro-panel (KC×NR) stay in L1. */
const KC = 256;
/** M panels per block: an A block (MCP·MR × KC floats ≈ 96 KiB) stays in L2. */
const MCP = 32;
/** Below this many multiply-adds, the plain TS kernel beats packing + a wasm call. */
const SMALL = 4096;
/** Below this many multiply-adds, waking workers costs more than it saves. */
const PARALLEL_MIN = 1 << 18;
/** Chunks per thread in a parallel call: enough to even out a late or slow thread. */
const CHUNKS_PER_THREAD = 4;

/** The compiled kernel variant this engine supports, chosen once. */
interface Compiled {
  module: WebAssembly.Module;
  relaxed: boolean;
  shared: boolean;
}

const compiled = new Map<string, Compiled>();

/** Which kernel variant to use; `false` rules a feature out (tests use it to cover the fallbacks). */
export interface KernelOptions {
  /** Allow relaxed-SIMD FMA (default: when the engine validates it). */
  relaxed?: boolean;
  /** Allow shared memory, needed for workers (default: when `SharedArrayBuffer` works). */
  shared?: boolean;
  /**
   * Most wasm memory pages (64 KiB) to use (default 65536 = 4 GiB); larger products are computed in
   * row chunks. Tests set it low to exercise the chunking.
   */
  maxPages?: number;
}

/** Compiles the best allowed kernel variant: relaxed SIMD if it validates, shared memory if available. */
export function compileKernel(opts: KernelOptions = {}): Compiled {
  const key = `${opts.relaxed !== false}/${opts.shared !== false}`;
  const hit = compiled.get(key);
  if (hit) return hit;
  if (typeof WebAssembly === "undefined") {
    throw new Error("wasm gemm: WebAssembly is not available");
  }
  const shared = opts.shared !== false && hasSharedMemory();
  const tries: [string, boolean][] = shared
    ? [[K.WASM_RELAXED_SHARED, true], [K.WASM_SIMD_SHARED, false]]
    : [[K.WASM_RELAXED_PRIVATE, true], [K.WASM_SIMD_PRIVATE, false]];
  const errors: string[] = [];
  for (const [b64, relaxed] of tries) {
    if (relaxed && opts.relaxed === false) continue;
    const bytes = wasmBytes(b64);
    if (!WebAssembly.validate(bytes)) {
      errors.push(`${relaxed ? "relaxed SIMD" : "SIMD"} variant does not validate`);
      continue;
    }
    const c = { module: new WebAssembly.Module(bytes), relaxed, shared };
    compiled.set(key, c);
    return c;
  }
  throw new Error(`wasm gemm: no kernel variant compiles here (${errors.join("; ")})`);
}

/** The wasm {@linkcode Gemm}: single-threaded until {@linkcode WasmGemm.startWorkers} resolves. */
export class WasmGemm implements Gemm {
  readonly kind = "wasm" as const;
  readonly #compiled: Compiled;
  readonly #memory: WebAssembly.Memory;
  readonly #gemm: GemmFn;
  readonly #maxPages: number;
  readonly #pool: WasmPool | null;
  #f32: Float32Array;

  /** Compiles (once per process) and instantiates the kernel; `opts` can rule out features. */
  constructor(opts: KernelOptions = {}) {
    this.#compiled = compileKernel(opts);
    const { shared, module } = this.#compiled;
    this.#maxPages = Math.min(MAX_WASM_PAGES, opts.maxPages ?? MAX_WASM_PAGES);
    this.#memory = new WebAssembly.Memory({
      initial: Math.min(16, this.#maxPages),
      maximum: this.#maxPages,
      shared,
    });
    const inst = new WebAssembly.Instance(module, { env: { memory: this.#memory } });
    this.#gemm = inst.exports.gemm as GemmFn;
    this.#f32 = new Float32Array(this.#memory.buffer);
    this.#pool = shared
      ? new WasmPool(module, this.#memory, ["gemm"], [this.#gemm as KernelFn])
      : null;
  }

  /** Kernel variant and thread count. */
  get detail(): string {
    const { relaxed, shared } = this.#compiled;
    const t = this.threads;
    return `wasm ${relaxed ? "relaxed-SIMD FMA" : "SIMD"} ${MR}×${NR} kernel, ${t} thread${
      t > 1 ? "s" : ""
    }${shared ? "" : " (private memory: no workers)"}`;
  }

  /** Number of threads (this one plus workers) that share large calls. */
  get threads(): number {
    return this.#pool?.threads ?? 1;
  }

  /** Chunks of parallel calls that workers (not the calling thread) have run so far. */
  get workerChunks(): number {
    return this.#pool?.workerChunks ?? 0;
  }

  /**
   * Starts `threads - 1` workers sharing this engine's memory (the shared wasm pool,
   * `../wasm_pool/`). Resolves when they are ready; until then (and if starting fails) calls run on
   * the calling thread only. `webWorker` uses web Workers even in Deno (they keep a Deno process
   * alive until {@linkcode WasmGemm.dispose}).
   */
  async startWorkers(threads: number, { webWorker = false } = {}): Promise<void> {
    try {
      await this.#pool?.start(threads, { webWorker });
    } catch (e) {
      throw new Error(`wasm gemm: ${(e as Error).message}`);
    }
  }

  /** Stops the workers; later calls run on the calling thread. */
  dispose(): void {
    this.#pool?.dispose();
  }

  sgemm(args: SgemmArgs): void {
    const r = resolveArgs(args);
    if (handleTrivial(r)) return;
    const small = r.m * r.n * r.k < SMALL;
    for (let bi = 0; bi < r.batch; bi++) {
      const ao = r.aOff + bi * r.strideA,
        bo = r.bOff + bi * r.strideB,
        co = r.cOff + bi * r.strideC;
      if (small) sgemmJsOne(r, ao, bo, co);
      else this.#one(r, ao, bo, co);
    }
  }

  /** Makes the memory at least `bytes` long and refreshes the views. */
  #ensure(bytes: number): void {
    const have = this.#memory.buffer.byteLength;
    if (bytes > have) {
      const pages = Math.ceil((bytes - have) / 65536);
      try {
        this.#memory.grow(pages);
      } catch (e) {
        throw new RangeError(
          `wasm gemm: cannot grow memory from ${have} to ${bytes} bytes: ${(e as Error).message}`,
        );
      }
    }
    if (this.#f32.buffer.byteLength !== this.#memory.buffer.byteLength) {
      this.#f32 = new Float32Array(this.#memory.buffer);
    }
  }

  /** One matrix: C[m,n] (at co) (+)= op(A) (at ao) · op(B) (at bo). */
  #one(r: Resolved, ao: number, bo: number, co: number): void {
    const { m, n, k } = r;
    const np = Math.ceil(n / NR), Np = np * NR;
    const bBytes = align(k * Np * 4);
    // Rows of C per chunk: all of them unless A, B and C packed would exceed the memory limit.
    const budget = this.#maxPages * 65536 - CTRL_BYTES - bBytes - 64;
    const perPanel = MR * (k + Np) * 4 + 64;
    if (budget < perPanel) {
      throw new RangeError(
        `wasm gemm: B[k=${k},n=${n}] packed (${bBytes} bytes) does not fit in wasm memory`,
      );
    }
    const chunkPanels = Math.max(1, Math.min(Math.ceil(m / MR), Math.floor(budget / perPanel)));
    const pb = CTRL_BYTES;
    let bPacked = false;
    for (let i0 = 0; i0 < m; i0 += chunkPanels * MR) {
      const mc = Math.min(m - i0, chunkPanels * MR);
      const mp = Math.ceil(mc / MR), Mp = mp * MR;
      const pa = pb + bBytes;
      const pc = pa + align(Mp * k * 4);
      this.#ensure(pc + Mp * Np * 4);
      if (!bPacked) {
        packB(this.#f32, pb >> 2, r, bo, np);
        bPacked = true;
      }
      const aChunk = ao + (r.transA ? i0 : i0 * r.lda);
      packA(this.#f32, pa >> 2, r, aChunk, mc, mp);
      const cChunk = co + i0 * r.ldc;
      if (r.beta === 1) copyC(this.#f32, pc >> 2, Np, r.c, cChunk, r.ldc, mc, n, true);
      this.#run(pa, pb, pc, mp, np, k, r.beta === 0 ? 1 : 0);
      copyC(this.#f32, pc >> 2, Np, r.c, cChunk, r.ldc, mc, n, false);
    }
  }

  /**
   * Runs the kernel over all panels. With workers and enough work, C's panels are cut into chunks
   * that every thread (this one included) claims until none are left (the wasm pool's protocol).
   */
  #run(pa: number, pb: number, pc: number, mp: number, np: number, k: number, beta0: number) {
    const flops = mp * MR * np * NR * k;
    const threads = this.threads;
    if (!this.#pool || threads === 1 || flops < PARALLEL_MIN) {
      this.#gemm(pa, pb, pc, mp, np, k, KC, 0, mp, 0, np, MCP, beta0);
      return;
    }
    // Cut the longer side (in panels) into about CHUNKS_PER_THREAD chunks per thread: the chunk's
    // panel range goes to (jp0, jp1), argument slots 9 and 10, or to (ip0, ip1), slots 7 and 8.
    const splitN = np > mp;
    const total = splitN ? np : mp;
    const per = Math.ceil(total / Math.min(MAX_CHUNKS, threads * CHUNKS_PER_THREAD, total));
    const args = [pa, pb, pc, mp, np, k, KC, 0, mp, 0, np, MCP, beta0];
    this.#pool.run(0, args, splitN ? 9 : 7, splitN ? 10 : 8, 0, total, per);
  }
}

function align(bytes: number): number {
  return (bytes + 63) & ~63;
}

/**
 * Packs rows [0, mc) of op(A) (element (i,p) at `a[ao + i*lda + p]`, or `a[ao + p*lda + i]` when
 * transposed) into `mp` panels per K block: panel (kb, ip) holds kcur × MR floats, row-interleaved.
 * Padding rows are zero.
 */
function packA(f: Float32Array, dst0: number, r: Resolved, ao: number, mc: number, mp: number) {
  const { k, a, lda } = r;
  const Mp = mp * MR;
  for (let kb = 0; kb < k; kb += KC) {
    const kcur = Math.min(KC, k - kb);
    const blk = dst0 + kb * Mp;
    for (let ip = 0; ip < mp; ip++) {
      const i0 = ip * MR, rows = Math.min(MR, mc - i0);
      const d0 = blk + ip * kcur * MR;
      if (!r.transA) {
        for (let rr = 0; rr < MR; rr++) {
          const d = d0 + rr;
          if (rr < rows) {
            const s = ao + (i0 + rr) * lda + kb;
            for (let p = 0; p < kcur; p++) f[d + p * MR] = a[s + p];
          } else {
            for (let p = 0; p < kcur; p++) f[d + p * MR] = 0;
          }
        }
      } else if (rows === MR) {
        for (let p = 0; p < kcur; p++) {
          const s = ao + (kb + p) * lda + i0, d = d0 + p * MR;
          f[d] = a[s];
          f[d + 1] = a[s + 1];
          f[d + 2] = a[s + 2];
        }
      } else {
        for (let p = 0; p < kcur; p++) {
          const s = ao + (kb + p) * lda + i0, d = d0 + p * MR;
          for (let rr = 0; rr < MR; rr++) f[d + rr] = rr < rows ? a[s + rr] : 0;
        }
      }
    }
  }
}

/**
 * Packs op(B) (element (p,j) at `b[bo + p*ldb + j]`, or `b[bo + j*ldb + p]` when transposed) into
 * `np` panels per K block: panel (kb, jp) holds kcur × NR floats. Padding columns are zero.
 */
function packB(f: Float32Array, dst0: number, r: Resolved, bo: number, np: number) {
  const { k, n, b, ldb } = r;
  const Np = np * NR;
  for (let kb = 0; kb < k; kb += KC) {
    const kcur = Math.min(KC, k - kb);
    const blk = dst0 + kb * Np;
    for (let jp = 0; jp < np; jp++) {
      const j0 = jp * NR, cols = Math.min(NR, n - j0);
      const d0 = blk + jp * kcur * NR;
      if (r.transB) {
        for (let jj = 0; jj < NR; jj++) {
          const d = d0 + jj;
          if (jj < cols) {
            const s = bo + (j0 + jj) * ldb + kb;
            for (let p = 0; p < kcur; p++) f[d + p * NR] = b[s + p];
          } else {
            for (let p = 0; p < kcur; p++) f[d + p * NR] = 0;
          }
        }
      } else if (cols === NR) {
        for (let p = 0; p < kcur; p++) {
          const s = bo + (kb + p) * ldb + j0, d = d0 + p * NR;
          f[d] = b[s];
          f[d + 1] = b[s + 1];
          f[d + 2] = b[s + 2];
          f[d + 3] = b[s + 3];
          f[d + 4] = b[s + 4];
          f[d + 5] = b[s + 5];
          f[d + 6] = b[s + 6];
          f[d + 7] = b[s + 7];
          f[d + 8] = b[s + 8];
          f[d + 9] = b[s + 9];
          f[d + 10] = b[s + 10];
          f[d + 11] = b[s + 11];
        }
      } else {
        for (let p = 0; p < kcur; p++) {
          const s = bo + (kb + p) * ldb + j0, d = d0 + p * NR;
          for (let jj = 0; jj < NR; jj++) f[d + jj] = jj < cols ? b[s + jj] : 0;
        }
      }
    }
  }
}

/** Copies rows [0, mc) × [0, n) of C between user memory and the padded wasm copy (row stride Np). */
function copyC(
  f: Float32Array,
  pc: number,
  Np: number,
  c: Float32Array,
  co: number,
  ldc: number,
  mc: number,
  n: number,
  toWasm: boolean,
) {
  if (n >= 32) {
    for (let i = 0; i < mc; i++) {
      const w = pc + i * Np, u = co + i * ldc;
      if (toWasm) f.set(c.subarray(u, u + n), w);
      else c.set(f.subarray(w, w + n), u);
    }
  } else {
    for (let i = 0; i < mc; i++) {
      const w = pc + i * Np, u = co + i * ldc;
      if (toWasm) { for (let j = 0; j < n; j++) f[w + j] = c[u + j]; }
      else for (let j = 0; j < n; j++) c[u + j] = f[w + j];
    }
  }
}
