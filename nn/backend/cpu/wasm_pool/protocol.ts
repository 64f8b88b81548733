/**
 * How the calling thread and the worker threads of a {@linkcode WasmPool} share one kernel call,
 * through a control block at the start of the shared wasm memory (Int32 word indices below; the
 * call's arguments are f64 slots, so i32 offsets and f32 scalars both pass exactly).
 *
 * A job is "call export `fn` with these arguments, once per chunk of the range [lo, hi)": chunk c
 * replaces argument slots `loSlot` and `hiSlot` by its own sub-range [lo + c·per, lo + (c+1)·per).
 * The caller writes the job, publishes a claim word `gen:12 | chunks:10 | next:10`, bumps `seq` and
 * wakes the workers. Every thread, the caller included, then claims chunks with compare-and-swap
 * until none are left, and counts each finished chunk in `finished`. A worker that wakes late finds
 * nothing left (or a newer `gen`) and claims nothing, so a descheduled worker costs at most the chunk
 * it holds, never a stall: on a busy machine the caller simply does the work itself.
 *
 * @module
 */

/** Bytes reserved for the control block at the start of the memory; kernels' data starts after. */
export const CTRL_BYTES = 4096;

/** Word indices, each hot word on its own 64-byte line. */
export const CTRL = {
  /** Job sequence number: workers sleep on it. */
  seq: 16,
  /** The claim word `gen << 20 | chunks << 10 | next`. */
  claim: 32,
  /** Chunks completed in the current job. */
  finished: 48,
  /** Set to 1 (then `seq` bumped) to make workers return. */
  quit: 64,
  /** The job: fn, nargs, lo, hi, per, loSlot, hiSlot (see {@linkcode runChunks}). */
  job: 80,
} as const;

/** Index (in f64 units) of the first argument slot: byte 1024. */
export const ARGS = 128;

/** Most arguments one kernel call may have. */
export const MAX_ARGS = 64;

/** Most chunks one job may have (10 bits of the claim word). */
export const MAX_CHUNKS = 1023;

/** A wasm export as the pool calls it: numbers in, nothing out. */
export type KernelFn = (...args: number[]) => void;

/**
 * Claims and runs chunks of job `gen` until none are left, calling `fns[fn]` for each (see the
 * module comment). Returns the number of chunks this thread ran.
 */
export function runChunks(
  i32: Int32Array,
  f64: Float64Array,
  fns: readonly KernelFn[],
  gen: number,
): number {
  let ran = 0;
  for (;;) {
    const cur = Atomics.load(i32, CTRL.claim);
    if (cur >>> 20 !== gen) return ran;
    const chunks = (cur >>> 10) & 0x3ff, next = cur & 0x3ff;
    if (next >= chunks) return ran;
    if (Atomics.compareExchange(i32, CTRL.claim, cur, cur + 1) !== cur) continue;
    // The job cannot change while one of its chunks is unfinished, so these reads are stable.
    const j = CTRL.job;
    const nargs = i32[j + 1], hi = i32[j + 3], per = i32[j + 4];
    const args = Array.from(f64.subarray(ARGS, ARGS + nargs));
    const lo = i32[j + 2] + next * per;
    args[i32[j + 5]] = lo;
    args[i32[j + 6]] = Math.min(hi, lo + per);
    fns[i32[j]](...args);
    ran++;
    if (Atomics.add(i32, CTRL.finished, 1) + 1 === chunks) Atomics.notify(i32, CTRL.finished);
  }
}

/**
 * A worker's loop: waits for jobs (polling `seq` for `spin` iterations, then sleeping in
 * `Atomics.wait`), runs its share of each with {@linkcode runChunks}, and returns when `quit` is
 * set. `ready` is called once the loop is listening (jobs published after it are served);
 * `beforeJob` runs when a job arrives, before any chunk is claimed.
 */
export function serveJobs(
  i32: Int32Array,
  f64: Float64Array,
  fns: readonly KernelFn[],
  spin: number,
  ready: () => void,
  beforeJob?: () => void,
): void {
  let last = Atomics.load(i32, CTRL.seq);
  ready();
  for (;;) {
    let s = Atomics.load(i32, CTRL.seq);
    for (let n = 0; s === last && n < spin; n++) s = Atomics.load(i32, CTRL.seq);
    if (s === last) {
      Atomics.wait(i32, CTRL.seq, last);
      continue;
    }
    last = s;
    if (Atomics.load(i32, CTRL.quit)) return;
    beforeJob?.();
    runChunks(i32, f64, fns, s & 0xfff);
  }
}

/** First (and only) message a worker receives. */
export interface WorkerInit {
  /** The compiled kernels (shared-memory variant). */
  module: WebAssembly.Module;
  /** The shared memory holding the control block and the kernels' data. */
  memory: WebAssembly.Memory;
  /** The exports jobs may call, by index. */
  exports: string[];
  /** Spin iterations before sleeping in `Atomics.wait`. */
  spin: number;
}
