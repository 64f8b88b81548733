/**
 * Worker threads for wasm kernels on a shared `WebAssembly.Memory`, used by the wasm matmul
 * (`../gemm/wasm.ts`) and the SIMD elementwise kernels (`../simd/`). Each pool serves one
 * (module, memory) pair: its workers instantiate the same module on the same memory and run chunks
 * of kernel calls that the calling thread publishes in a control block at the start of the memory
 * (protocol.ts). The calling thread always takes part, so a pool without workers, or whose workers
 * are busy or asleep, still finishes every call. Also what both kernel modules need to load:
 * the embedded bytes ({@linkcode wasmBytes}), {@linkcode hasSharedMemory}, the memory ceiling.
 *
 * @example
 * ```ts ignore
 * const pool = new WasmPool(module, memory, ["gemm"], [instance.exports.gemm]);
 * await pool.start(2); // one worker + the calling thread
 * // gemm over N panels [0, np), chunks of 4 panels: slots 9 and 10 get each chunk's range
 * pool.run(0, [pa, pb, pc, mp, np, k, kc, 0, mp, 0, np, mcp, 1], 9, 10, 0, np, 4);
 * pool.dispose();
 * ```
 *
 * @module
 */

import {
  ARGS,
  CTRL,
  CTRL_BYTES,
  type KernelFn,
  MAX_ARGS,
  MAX_CHUNKS,
  runChunks,
  type WorkerInit,
} from "./protocol.ts";

export { CTRL_BYTES, MAX_CHUNKS } from "./protocol.ts";
export type { KernelFn } from "./protocol.ts";

/** Spin iterations before sleeping in `Atomics.wait` (~50-100 µs). */
export const SPIN = 20000;
/** Most worker threads one pool starts. */
const MAX_WORKERS = 15;

const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
const isNode = !isDeno &&
  typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node ===
    "string";

const WORKER_URL = new URL("./worker.ts", import.meta.url);

/** Largest wasm memory a kernel module asks for (pages of 64 KiB): 4 GiB. */
export const MAX_WASM_PAGES = 65536;

/** The bytes of a module embedded as base64 by the build scripts. */
export function wasmBytes(b64: string): Uint8Array<ArrayBuffer> {
  const s = atob(b64);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

/** Whether this engine has shared wasm memory (worker threads need it). */
export function hasSharedMemory(): boolean {
  if (typeof SharedArrayBuffer === "undefined") return false;
  try {
    new WebAssembly.Memory({ initial: 1, maximum: 1, shared: true });
    return true;
  } catch {
    return false;
  }
}

/**
 * Whether a worker can be started without a permission prompt or error: Deno needs read access to
 * the worker's file (elsewhere, true).
 */
export function canSpawnWorkers(): boolean {
  if (!isDeno) return true;
  try {
    return Deno.permissions.querySync({ name: "read", path: WORKER_URL }).state === "granted";
  } catch {
    return false;
  }
}

/**
 * Starts one worker running `worker.ts` and resolves once it has instantiated the kernels; `web`
 * forces a web Worker where node:worker_threads would be used (tests of the browser path).
 */
async function spawn(init: WorkerInit, web: boolean): Promise<{ terminate(): void }> {
  if ((isDeno || isNode) && !web) {
    // node:worker_threads can unref() its workers, so an idle pool never keeps the process alive
    // (Deno's web Worker has no unref).
    const wt = await import("node:worker_threads");
    const w = new wt.Worker(WORKER_URL);
    await new Promise<void>((resolve, reject) => {
      w.once("message", () => resolve());
      w.once("error", (e: Error) => reject(e));
      w.once("exit", (code: number) => reject(new Error(`wasm worker exited with code ${code}`)));
      w.postMessage(init);
    });
    w.removeAllListeners();
    w.unref();
    return { terminate: () => void w.terminate() };
  }
  const w = new Worker(WORKER_URL, { type: "module" });
  await new Promise<void>((resolve, reject) => {
    w.onmessage = () => resolve();
    w.onerror = (e) => reject(new Error(`wasm worker failed: ${e.message}`));
    w.postMessage(init);
  });
  w.onmessage = null;
  return { terminate: () => w.terminate() };
}

/** Worker threads sharing one module and memory with the calling thread. */
export class WasmPool {
  readonly #module: WebAssembly.Module;
  readonly #memory: WebAssembly.Memory;
  readonly #names: string[];
  readonly #fns: KernelFn[];
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;
  readonly #spin: number;
  #workers: { terminate(): void }[] = [];
  #seq = 0;
  #workerChunks = 0;
  #canWait = true; // Atomics.wait is not allowed on a browser's main thread

  /**
   * A pool for `module` instantiated on `memory` (shared), whose first {@linkcode CTRL_BYTES} bytes
   * it owns. Jobs name kernels by their index in `names`; `fns` are the calling thread's instances
   * of them. Idle workers poll for `spin` iterations before sleeping (default {@linkcode SPIN}):
   * a long spin answers back-to-back calls fast, a short one leaves the core to other threads.
   */
  constructor(
    module: WebAssembly.Module,
    memory: WebAssembly.Memory,
    names: string[],
    fns: KernelFn[],
    { spin = SPIN }: { spin?: number } = {},
  ) {
    this.#spin = spin;
    this.#module = module;
    this.#memory = memory;
    this.#names = names;
    this.#fns = fns;
    // The control block is at the start of the memory, so these views stay valid when it grows.
    this.#i32 = new Int32Array(memory.buffer, 0, CTRL_BYTES / 4);
    this.#f64 = new Float64Array(memory.buffer, 0, CTRL_BYTES / 8);
  }

  /** Number of threads (the calling one plus workers) that share calls. */
  get threads(): number {
    return this.#workers.length + 1;
  }

  /** Chunks that workers (not the calling thread) have run so far. */
  get workerChunks(): number {
    return this.#workerChunks;
  }

  /**
   * Starts `threads - 1` workers. Resolves when they are ready; until then (and if starting fails)
   * calls run on the calling thread only. `webWorker` uses web Workers even in Deno (they keep a
   * Deno process alive until {@linkcode WasmPool.dispose}).
   */
  async start(threads: number, { webWorker = false } = {}): Promise<void> {
    const want = Math.min(Math.max(1, Math.floor(threads)) - 1, MAX_WORKERS);
    if (want <= this.#workers.length) return;
    Atomics.store(this.#i32, CTRL.quit, 0);
    const init: WorkerInit = {
      module: this.#module,
      memory: this.#memory,
      exports: this.#names,
      spin: this.#spin,
    };
    const jobs: Promise<{ terminate(): void }>[] = [];
    for (let w = this.#workers.length; w < want; w++) jobs.push(spawn(init, webWorker));
    const results = await Promise.allSettled(jobs);
    const failed: string[] = [];
    for (const r of results) {
      if (r.status === "fulfilled") this.#workers.push(r.value);
      else failed.push(String(r.reason));
    }
    if (failed.length) {
      throw new Error(
        `started ${results.length - failed.length} of ${results.length} wasm workers: ${failed[0]}`,
      );
    }
  }

  /** Stops the workers; later calls run on the calling thread. */
  dispose(): void {
    if (!this.#workers.length) return;
    Atomics.store(this.#i32, CTRL.quit, 1);
    Atomics.store(this.#i32, CTRL.seq, ++this.#seq);
    Atomics.notify(this.#i32, CTRL.seq);
    for (const w of this.#workers) w.terminate();
    this.#workers = [];
  }

  /**
   * Calls kernel `fn` with `args` once per chunk of [lo, hi) (`per` long; at most
   * {@linkcode MAX_CHUNKS} chunks), the chunk's range in slots `loSlot` and `hiSlot`, on every
   * thread; returns when all chunks are done. Without workers the calling thread runs them all.
   */
  run(
    fn: number,
    args: number[],
    loSlot: number,
    hiSlot: number,
    lo: number,
    hi: number,
    per: number,
  ): void {
    if (hi <= lo) return;
    per = Math.max(1, Math.ceil(per), Math.ceil((hi - lo) / MAX_CHUNKS));
    const chunks = Math.ceil((hi - lo) / per);
    if (!this.#workers.length || chunks === 1) {
      const a = args.slice();
      for (let c = lo; c < hi; c += per) {
        a[loSlot] = c;
        a[hiSlot] = Math.min(hi, c + per);
        this.#fns[fn](...a);
      }
      return;
    }
    if (args.length > MAX_ARGS) {
      throw new RangeError(`wasm pool: ${args.length} arguments, at most ${MAX_ARGS}`);
    }
    const i32 = this.#i32, j = CTRL.job;
    const seq = ++this.#seq, gen = seq & 0xfff;
    this.#f64.set(args, ARGS);
    i32[j] = fn;
    i32[j + 1] = args.length;
    i32[j + 2] = lo;
    i32[j + 3] = hi;
    i32[j + 4] = per;
    i32[j + 5] = loSlot;
    i32[j + 6] = hiSlot;
    Atomics.store(i32, CTRL.finished, 0);
    Atomics.store(i32, CTRL.claim, (gen << 20) | (chunks << 10)); // publishes the job above
    Atomics.store(i32, CTRL.seq, seq);
    Atomics.notify(i32, CTRL.seq);
    this.#workerChunks += chunks - runChunks(i32, this.#f64, this.#fns, gen);
    // Wait for chunks other threads still hold: spin first, then sleep.
    for (let s = 0; s < SPIN; s++) if (Atomics.load(i32, CTRL.finished) === chunks) return;
    for (
      let d = Atomics.load(i32, CTRL.finished);
      d !== chunks;
      d = Atomics.load(i32, CTRL.finished)
    ) {
      if (this.#canWait) {
        try {
          Atomics.wait(i32, CTRL.finished, d, 1000);
        } catch {
          this.#canWait = false;
        }
      }
    }
  }
}
