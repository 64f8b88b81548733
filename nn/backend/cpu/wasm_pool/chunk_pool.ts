/**
 * The calling-thread side of the chunk protocol (protocol.ts), shared by the two kinds of worker
 * pools: {@linkcode WasmPool} (wasm kernels on a shared `WebAssembly.Memory`) and the JS kernel
 * pool of `../threads/` (TypeScript kernels on `SharedArrayBuffer`-backed arrays). A pool owns a
 * control block (Int32 and Float64 views of one shared buffer), the calling thread's kernel
 * functions, and its workers; subclasses say how a worker is started.
 *
 * @module
 */

import { ARGS, CTRL, type KernelFn, MAX_ARGS, MAX_CHUNKS, runChunks } from "./protocol.ts";

/** Spin iterations before sleeping in `Atomics.wait` (~50-100 µs). */
export const SPIN = 20000;
/** Most worker threads one pool starts. */
const MAX_WORKERS = 15;

const isDeno = typeof (globalThis as { Deno?: unknown }).Deno !== "undefined";
const isNode = !isDeno &&
  typeof (globalThis as { process?: { versions?: { node?: string } } }).process?.versions?.node ===
    "string";

/** Whether `node:worker_threads` is there (Deno and Node), so workers can be unref'd. */
export const hasNodeWorkers: boolean = isDeno || isNode;

/** What a pool keeps of a started worker. */
export interface PoolWorker {
  /** Stops the thread. */
  terminate(): void;
}

/**
 * Whether a worker running `url` can be started without a permission prompt or error: Deno needs
 * read access to the worker's file (elsewhere, true).
 */
export function canSpawn(url: URL): boolean {
  if (!isDeno) return true;
  try {
    return Deno.permissions.querySync({ name: "read", path: url }).state === "granted";
  } catch {
    return false;
  }
}

/**
 * Starts one worker running `url`, posts it `init` (with `transfer`), and resolves once it answers
 * (it is ready). `web` forces a web Worker where node:worker_threads would be used (tests of the
 * browser path); `transfer` needs node:worker_threads.
 */
export async function spawnWorker(
  url: URL,
  init: unknown,
  web: boolean,
  transfer: readonly unknown[] = [],
): Promise<PoolWorker> {
  if (hasNodeWorkers && !web) {
    // node:worker_threads can unref() its workers, so an idle pool never keeps the process alive
    // (Deno's web Worker has no unref).
    const wt = await import("node:worker_threads");
    const w = new wt.Worker(url);
    await new Promise<void>((resolve, reject) => {
      w.once("message", () => resolve());
      w.once("error", (e: Error) => reject(e));
      w.once("exit", (code: number) => reject(new Error(`pool worker exited with code ${code}`)));
      // deno-lint-ignore no-explicit-any
      w.postMessage(init, transfer as any);
    });
    w.removeAllListeners();
    w.unref();
    return { terminate: () => void w.terminate() };
  }
  const w = new Worker(url, { type: "module" });
  await new Promise<void>((resolve, reject) => {
    w.onmessage = () => resolve();
    w.onerror = (e) => reject(new Error(`pool worker failed: ${e.message}`));
    w.postMessage(init);
  });
  w.onmessage = null;
  return { terminate: () => w.terminate() };
}

/**
 * Worker threads and the calling thread sharing kernel calls through a control block. The calling
 * thread always takes part, so a pool without workers, or whose workers are busy or asleep, still
 * finishes every call.
 */
export abstract class ChunkPool {
  readonly #fns: KernelFn[];
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;
  #workers: PoolWorker[] = [];
  #seq = 0;
  #workerChunks = 0;
  #canWait = true; // Atomics.wait is not allowed on a browser's main thread

  /**
   * `i32` and `f64` view the control block (protocol.ts's layout); `fns` are the calling thread's
   * kernels, by the index jobs name them with.
   */
  protected constructor(i32: Int32Array, f64: Float64Array, fns: KernelFn[]) {
    this.#i32 = i32;
    this.#f64 = f64;
    this.#fns = fns;
  }

  /** Starts one worker serving this pool; resolves when it is ready. */
  protected abstract startWorker(webWorker: boolean): Promise<PoolWorker>;

  /** What the errors of {@linkcode ChunkPool.start} call a worker ("wasm worker"). */
  protected abstract readonly workerName: string;

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
   * Deno process alive until {@linkcode ChunkPool.dispose}).
   */
  async start(threads: number, { webWorker = false } = {}): Promise<void> {
    const want = Math.min(Math.max(1, Math.floor(threads)) - 1, MAX_WORKERS);
    if (want <= this.#workers.length) return;
    Atomics.store(this.#i32, CTRL.quit, 0);
    const jobs: Promise<PoolWorker>[] = [];
    for (let w = this.#workers.length; w < want; w++) jobs.push(this.startWorker(webWorker));
    const results = await Promise.allSettled(jobs);
    const failed: string[] = [];
    for (const r of results) {
      if (r.status === "fulfilled") this.#workers.push(r.value);
      else failed.push(String(r.reason));
    }
    if (failed.length) {
      throw new Error(
        `started ${results.length - failed.length} of ${results.length} ${this.workerName}s: ${
          failed[0]
        }`,
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
      throw new RangeError(
        `${this.workerName} pool: ${args.length} arguments, at most ${MAX_ARGS}`,
      );
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
