/**
 * Worker threads for the CPU backend's kernels (`kernels.ts`: AdamW, RMSNorm, RoPE, the embedding
 * gradient, the SIMD maps and row kernels, attention by (batch, KV group) units). The backend
 * allocates its large arrays on `SharedArrayBuffer`s while this pool is on
 * ({@linkcode sharedArraysOn}), so workers can read and write them in place; a kernel call is
 * split into pieces over rows, elements or units that the calling thread and the workers claim
 * through a control block (`../wasm_pool/protocol.ts`, the protocol of the wasm pools). The calling
 * thread always takes part, so a call finishes even when no worker is ready, awake or started.
 *
 * Workers learn about a shared buffer the first time a call uses it: the calling thread posts it
 * on each worker's `MessagePort`, and the worker takes it with `receiveMessageOnPort` (synchronous,
 * so a worker blocked in `Atomics.wait` needs no event loop). Once the calling thread's buffer is
 * garbage-collected, the workers are told to drop theirs. Arrays that are not shared (small ones,
 * like a norm's weight) travel through a scratch shared buffer; large ones that are not shared
 * (adopted by the backend) make the call run on the calling thread.
 *
 * Off with `MINIMIND_CPU_THREADS=1` (then the backend allocates plain `ArrayBuffer`s, as before
 * this pool existed); the default is `OPENBLAS_NUM_THREADS` when set, else one thread per core (at
 * most 8). Needs `node:worker_threads` (Deno, Node); elsewhere, and without read permission on the
 * worker's file, it is off.
 *
 * @module
 */

import {
  byteSize,
  type DType,
  dtypeOfArray,
  DTYPES,
  type TypedArray,
  viewArray,
} from "../../../dtype.ts";
import type { AttnShape } from "../../../ops/attention/wgsl.ts";
import { CTRL_BYTES, type KernelFn } from "../wasm_pool/protocol.ts";
import {
  canSpawn,
  ChunkPool,
  hasNodeWorkers,
  type PoolWorker,
  spawnWorker,
} from "../wasm_pool/chunk_pool.ts";
import { KERNEL_NAMES, type KernelName, KERNELS } from "./kernels.ts";
import { privateSimd, simd } from "../simd/mod.ts";
import {
  addF32,
  bf16Dnnl,
  blasThreadsForProductsOnly,
  matmulPrecision,
  singleThreadedGemm,
} from "../gemm_adapter.ts";
import { canPinOmp } from "../gemm/bf16.ts";

export { KERNEL_NAMES, type KernelName } from "./kernels.ts";

const WORKER_URL = new URL("./worker.ts", import.meta.url);

/** Word of the control block a worker sets when a kernel threw (the call then throws). */
export const ERROR_WORD = 96;

/**
 * A view of `length` elements at byte `offset` of `b`, of the kind a job's descriptor names: the
 * dtype's index in `DTYPES`.
 */
export function arrayView(
  kind: number,
  b: SharedArrayBuffer,
  offset: number,
  length: number,
): TypedArray {
  return viewArray(DTYPES[kind], b, offset, length);
}

function kindOf(a: TypedArray): number {
  return DTYPES.indexOf(dtypeOfArray(a));
}

/** Numbers per array descriptor in a job's arguments: buffer id, kind, byte offset, length. */
export const DESC = 4;

/** Bytes of non-shared arrays one call may copy through scratch memory (else: calling thread). */
const SCRATCH_MAX = 1 << 20;

/** Spin iterations of an idle worker before it sleeps: none (see `../simd/mod.ts`). */
const WORKER_SPIN = 0;

/** First message a kernel worker receives. */
export interface KernelWorkerInit {
  /** The control block. */
  ctrl: SharedArrayBuffer;
  /** Where shared buffers are announced: `[id, buffer]` to add, `[-id]` to drop. */
  port: MessagePort;
  /** Spin iterations before sleeping. */
  spin: number;
}

/** The calling thread's side of the kernel pool. */
export class KernelPool extends ChunkPool {
  protected readonly workerName = "kernel worker";
  readonly #ctrl: SharedArrayBuffer;
  readonly #i32: Int32Array;
  /** Each worker's port (this side). */
  readonly #ports: MessagePort[] = [];
  /** Ids of the buffers announced to workers. */
  readonly #ids = new WeakMap<SharedArrayBuffer, number>();
  /** Announced buffers by id, for workers that start later. */
  readonly #live = new Map<number, WeakRef<SharedArrayBuffer>>();
  #nextId = 1;
  readonly #gone = new FinalizationRegistry<number>((id) => {
    this.#live.delete(id);
    for (const p of this.#ports) p.postMessage([-id]);
  });
  /** The arrays of the call in progress (the calling thread's kernels read them directly). */
  #current: TypedArray[] = [];
  #scratch = new Float64Array(new SharedArrayBuffer(64 * 1024));

  /** A pool with no workers yet ({@linkcode ChunkPool.start} adds them). */
  constructor() {
    const ctrl = new SharedArrayBuffer(CTRL_BYTES);
    const fns: KernelFn[] = KERNEL_NAMES.map((name) => {
      const k = KERNELS[name];
      return (...a: number[]) => {
        const n = a.length;
        k.run(this.#current, a.slice(k.arrays * DESC, n - 2), a[n - 2], a[n - 1]);
      };
    });
    super(new Int32Array(ctrl), new Float64Array(ctrl), fns);
    this.#ctrl = ctrl;
    this.#i32 = new Int32Array(ctrl);
  }

  protected async startWorker(webWorker: boolean): Promise<PoolWorker> {
    if (webWorker || !hasNodeWorkers) {
      throw new Error("kernel workers need node:worker_threads (receiveMessageOnPort)");
    }
    const { MessageChannel } = await import("node:worker_threads");
    const { port1, port2 } = new MessageChannel();
    for (const [id, ref] of this.#live) {
      const b = ref.deref();
      if (b) port1.postMessage([id, b]);
    }
    const init: KernelWorkerInit = {
      ctrl: this.#ctrl,
      port: port2 as unknown as MessagePort,
      spin: WORKER_SPIN,
    };
    const w = await spawnWorker(WORKER_URL, init, false, [port2]);
    this.#ports.push(port1 as unknown as MessagePort);
    (port1 as unknown as { unref?(): void }).unref?.();
    return w;
  }

  /** The id of `b`, announcing it to the workers the first time. */
  #idOf(b: SharedArrayBuffer): number {
    let id = this.#ids.get(b);
    if (id === undefined) {
      id = this.#nextId++;
      this.#ids.set(b, id);
      this.#live.set(id, new WeakRef(b));
      this.#gone.register(b, id);
      for (const p of this.#ports) p.postMessage([id, b]);
    }
    return id;
  }

  /**
   * Runs kernel `name` on `arrays` and `scalars` over [lo, hi) in pieces of `per`, shared with the
   * workers; returns false (and runs nothing) when an array is large and not shared.
   */
  call(
    name: KernelName,
    arrays: TypedArray[],
    scalars: number[],
    lo: number,
    hi: number,
    per: number,
  ): boolean {
    const k = KERNELS[name];
    // non-shared arrays go through scratch memory (the same array twice shares one copy)
    const copies = new Map<TypedArray, TypedArray>();
    let bytes = 0;
    for (const a of arrays) {
      if (a.buffer instanceof SharedArrayBuffer || copies.has(a)) continue;
      bytes += (a.byteLength + 63) & ~63;
      if (bytes > SCRATCH_MAX) return false;
      copies.set(a, a);
    }
    if (copies.size) {
      if (this.#scratch.byteLength < bytes) {
        this.#scratch = new Float64Array(new SharedArrayBuffer(Math.max(bytes, SCRATCH_MAX)));
      }
      let at = 0;
      for (const a of copies.keys()) {
        const c = arrayView(kindOf(a), this.#scratch.buffer as SharedArrayBuffer, at, a.length);
        c.set(a as never);
        copies.set(a, c);
        at += (a.byteLength + 63) & ~63;
      }
    }
    const used = arrays.map((a) => copies.get(a) ?? a);
    const args: number[] = [];
    for (const a of used) {
      args.push(this.#idOf(a.buffer as SharedArrayBuffer), kindOf(a), a.byteOffset, a.length);
    }
    args.push(...scalars, 0, 0);
    this.#current = used;
    try {
      this.run(KERNEL_NAMES.indexOf(name), args, args.length - 2, args.length - 1, lo, hi, per);
    } finally {
      this.#current = [];
    }
    if (Atomics.load(this.#i32, ERROR_WORD)) {
      Atomics.store(this.#i32, ERROR_WORD, 0);
      throw new Error(`kernel pool: ${name} failed on a worker thread (its error is on stderr)`);
    }
    for (const i of k.writes) {
      const c = copies.get(arrays[i]);
      if (c) arrays[i].set(c as never);
    }
    return true;
  }
}

/** Reads an environment variable only when already allowed: asking would prompt for nothing. */
function envGet(name: string): string | undefined {
  const d = (globalThis as { Deno?: typeof Deno }).Deno;
  if (d) {
    try {
      if (d.permissions.querySync({ name: "env", variable: name }).state !== "granted") return;
      return d.env.get(name)?.trim();
    } catch {
      return undefined;
    }
  }
  return (globalThis as { process?: { env: Record<string, string | undefined> } }).process?.env
    ?.[name]?.trim();
}

/**
 * Threads wanted: `MINIMIND_CPU_THREADS`, else `OPENBLAS_NUM_THREADS` (the matrix products' threads:
 * a data-parallel run with one per process stays at one), else the cores (at most 8).
 */
function wantedThreads(): number {
  for (const name of ["MINIMIND_CPU_THREADS", "OPENBLAS_NUM_THREADS"]) {
    const env = Number(envGet(name));
    if (Number.isInteger(env) && env >= 1) return env;
  }
  const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
  return Math.max(1, Math.min(8, nav?.hardwareConcurrency ?? 1));
}

let pool: KernelPool | null | undefined;
let dispatch = true;
let starting: Promise<void> = Promise.resolve();

/** The pool, created (and its workers started in the background) on first use; null when off. */
function thePool(): KernelPool | null {
  if (pool !== undefined) return pool;
  const threads = wantedThreads();
  if (
    threads <= 1 || !hasNodeWorkers || typeof SharedArrayBuffer === "undefined" ||
    !canSpawn(WORKER_URL)
  ) {
    return pool = null;
  }
  pool = new KernelPool();
  blasThreadsForProductsOnly(threads);
  const p = pool;
  starting = starting.then(() => p.start(threads)).catch(() => {});
  return pool;
}

/**
 * Whether the CPU backend should allocate its large arrays on `SharedArrayBuffer`s: the kernel
 * pool is on (more than one thread wanted, workers can start). Decided on first call.
 */
export function sharedArraysOn(): boolean {
  return thePool() !== null;
}

/** A zeroed typed array of `size` elements of `dtype` on a new `SharedArrayBuffer`. */
export function sharedArray(dtype: DType, size: number): TypedArray {
  return viewArray(dtype, new SharedArrayBuffer(size * byteSize(dtype)), 0, size);
}

/**
 * Runs kernel `name` over [lo, hi): split in pieces of at least `grain` (about four per thread)
 * over the pool's threads when the pool is on and the range is worth splitting, else in one call
 * on this thread. Either way the results are the same bits.
 *
 * @param name the kernel (`kernels.ts`)
 * @param arrays its typed arrays, in its order
 * @param scalars its numbers, in its order
 * @param lo first element or row
 * @param hi end of the range
 * @param grain fewest elements or rows one piece is worth (a handoff costs microseconds)
 */
export function parallel(
  name: KernelName,
  arrays: TypedArray[],
  scalars: number[],
  lo: number,
  hi: number,
  grain: number,
): void {
  const p = dispatch ? thePool() : null;
  if (p && p.threads > 1 && hi - lo >= 2 * grain) {
    const per = Math.max(grain, Math.ceil((hi - lo) / (4 * p.threads)));
    if (p.call(name, arrays, scalars, lo, hi, per)) return;
  }
  KERNELS[name].run(arrays, scalars, lo, hi);
}

/**
 * Runs an attention call (forward, or backward with `backward`) by whole (batch, KV group) units
 * per thread of the pool. In the bfloat16 precision with T > 1 (see {@linkcode bf16Attention}) each
 * unit's products are bf16 through oneDNN on the thread that runs it (`../attention_bf16.ts`),
 * all units on this thread when the pool has none. Otherwise (f32) each thread's products run on
 * one BLAS thread (OpenBLAS is set to one thread for the call) and its softmax on its own SIMD
 * instance (`../attention_heads.ts`). `arrays` are the op's outputs' and inputs' arrays in the unit
 * kernels' order. False (nothing done) in f32 when the pool has one thread, the call has fewer
 * than two units or too little work (a decode step), or the arrays are not f32, SIMD is off or the
 * products are not OpenBLAS's: the op then runs its loop.
 */
export function pooledAttention(
  q: TypedArray,
  d: AttnShape,
  params: { causal: boolean; scale: number },
  arrays: TypedArray[],
  mask: TypedArray | null,
  backward: boolean,
): boolean {
  const units = d.b * d.nkv;
  const bf16 = bf16Attention(q, d);
  if (
    !bf16 &&
    (!(q instanceof Float32Array) || units < 2 ||
      d.b * d.nh * d.t * d.s * d.hd < ATTENTION_MIN || kernelThreads() < 2 || !simd())
  ) return false;
  const restore = bf16 ? () => {} : singleThreadedGemm();
  if (!restore) return false;
  try {
    const name = `attention_${backward ? "backward" : "forward"}${bf16 ? "_bf16" : ""}${
      mask ? "_masked" : ""
    }` as KernelName;
    const { b, t, s, nh, nkv, hd } = d;
    const scalars = [
      b,
      t,
      s,
      nh,
      nkv,
      hd,
      params.causal ? 1 : 0,
      params.scale,
      d.kvTimeMajor ? 1 : 0,
    ];
    parallel(name, mask ? [...arrays, mask] : arrays, scalars, 0, units, 1);
  } finally {
    restore();
  }
  return true;
}

/**
 * Most scores one unit of the bf16 attention holds ([REP·T, S] f32 in a thread's SIMD memory, and
 * as much again for dP): 16 MiB, what the f32 kernels hold per head at T = S = 2,048. Past it the
 * f32 kernels run (T = S = 1,024 with 4 query heads per KV group is the largest that fits).
 */
const BF16_UNIT_SCORES = 1 << 22;

/**
 * Whether attention of this shape can run its products in bf16 (`../attention_bf16.ts`): the
 * bfloat16 precision is in effect on oneDNN 2.x, T > 1 (not a decode step), a unit has at most
 * `BF16_UNIT_SCORES` scores, SIMD is available and oneDNN's OpenMP threads can be set per thread.
 */
export function bf16AttentionFits(d: Pick<AttnShape, "t" | "s" | "nh" | "nkv">): boolean {
  return d.t > 1 && (d.nh / d.nkv) * d.t * d.s <= BF16_UNIT_SCORES && bf16Dnnl() !== null &&
    privateSimd() !== null && canPinOmp();
}

/**
 * Whether an attention call runs its products in bf16: f32 arrays where it fits
 * ({@linkcode bf16AttentionFits}), and always for bf16 arrays (the bfloat16 precision's
 * activations), which nothing else multiplies: throws where they do not fit.
 */
export function bf16Attention(q: TypedArray, d: AttnShape): boolean {
  if (q instanceof Uint16Array) {
    if (bf16AttentionFits(d)) return true;
    throw new Error(
      `Cannot attend over bf16 q [${d.b}, ${d.t}, ${d.nh}, ${d.hd}] with ${d.s} keys: bf16 attention needs T > 1, at most ${BF16_UNIT_SCORES} scores a KV group (${
        (d.nh / d.nkv) * d.t * d.s
      } here), and the bfloat16 precision on oneDNN 2.x`,
    );
  }
  return q instanceof Float32Array && bf16AttentionFits(d);
}

/**
 * Runs an f32 matrix product C = op(A)·op(B) (beta 0, row-major) on the pool: one piece per
 * thread, each one OpenBLAS call on one thread, over C's rows (when M ≥ N) or columns. OpenBLAS's
 * own threads would do the same split, but they spin for a while after every product, and on a
 * machine with as many threads as cores they then take the cores from the pool's next kernels
 * (measured on MiniMind2-Small's step: the non-product kernels took 569 ms with OpenBLAS's
 * threads beside the pool, 434 ms with OpenBLAS on one thread). False (nothing done) when the
 * pool has one thread, the product is small, the matmul precision is bf16, the products are not
 * OpenBLAS's, or a large array is not shared: the caller then runs its gemm.
 */
export function pooledMatmul(
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
): boolean {
  const p = dispatch ? thePool() : null;
  if (
    !p || p.threads < 2 || m * n * k < MATMUL_MIN || !(a instanceof Float32Array) ||
    !(b instanceof Float32Array) || !(c instanceof Float32Array) || matmulPrecision() !== "float32"
  ) return false;
  const restore = singleThreadedGemm();
  if (!restore) return false;
  try {
    const parts = p.threads;
    const scalars = [transA ? 1 : 0, transB ? 1 : 0, m, n, k, lda, ldb, ldc, m >= n ? 1 : 0, parts];
    return p.call("sgemm", [a, b, c], scalars, 0, parts, 1);
  } finally {
    restore();
  }
}

/**
 * y = a + b for same-length arrays by `addF32` (BLAS's native copy and `saxpy`), split over the
 * pool in pieces of at least 64K elements when the arrays are long enough; false where `addF32`
 * does not apply (other dtypes, short arrays, y aliasing b, no BLAS: the op then runs its loop).
 */
export function add(a: TypedArray, b: TypedArray, y: TypedArray): boolean {
  if (
    !(y instanceof Float32Array) || y.length < 2 * ADD_GRAIN ||
    (y.buffer === b.buffer && y.byteOffset === b.byteOffset)
  ) return addF32(a, b, y);
  parallel("add", [a, b, y], [], 0, y.length, ADD_GRAIN);
  return true;
}

/** Fewest elements of one piece of a pooled add or sum of squares. */
const ADD_GRAIN = 1 << 16;

/**
 * Σx² of a whole f32 array as f64: in pieces fixed by its length (at most 16, each BLAS's `dsdot`
 * where it applies), on the pool's threads when it is on, the pieces' sums added in order — the
 * same bits with any number of threads.
 */
export function sumOfSquares(x: Float32Array): number {
  const parts = Math.max(1, Math.min(16, Math.floor(x.length / ADD_GRAIN)));
  const out = new Float64Array(parts);
  parallel("sum_squares", [x, out], [parts], 0, parts, 1);
  let s = 0;
  for (let p = 0; p < parts; p++) s += out[p];
  return s;
}

/** Fewest multiply-adds of a product worth splitting over the pool (~1 ms on one core). */
const MATMUL_MIN = 1 << 24;

/** Fewest multiply-adds of QKᵀ (B·NH·T·S·HD) worth splitting an attention call (~1 ms of work). */
const ATTENTION_MIN = 1 << 22;

/** Threads sharing pooled kernel calls now (1 while off or before the workers are ready). */
export function kernelThreads(): number {
  return (dispatch ? thePool()?.threads : 1) ?? 1;
}

/** Chunks of pooled calls that workers (not the calling thread) ran so far. */
export function workerChunks(): number {
  return pool?.workerChunks ?? 0;
}

/**
 * Creates the pool if it is on and resolves once its workers are ready (or failed to start: then
 * calls run on the calling thread). Optional: the first pooled call starts them in the background.
 */
export async function initKernelThreads(): Promise<number> {
  thePool();
  await starting;
  return kernelThreads();
}

/**
 * Turns splitting calls over the pool on or off for this process (tests compare the two paths;
 * arrays already shared stay shared).
 *
 * @param on false: every kernel call runs on the calling thread
 */
export function setKernelThreadsEnabled(on: boolean): void {
  dispatch = on;
}
