/**
 * How the calling thread and the gemm workers share one kernel call, through a control block at the
 * start of the shared wasm memory (Int32 word indices below).
 *
 * The caller splits the panels of C into chunks, writes the job's parameters, publishes a claim word
 * `gen:12 | chunks:10 | next:10`, bumps `seq` and wakes the workers. Every thread, the caller
 * included, then claims chunks with compare-and-swap until none are left, and counts each finished
 * chunk in `finished`. A worker that wakes late finds nothing left (or a newer `gen`) and claims
 * nothing, so a descheduled worker costs at most the chunk it holds, never a stall: on a busy machine
 * the caller simply does the work itself.
 *
 * @module
 */

/** Bytes reserved for the control block; packed operands start after it. */
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
  /** Job parameters, see {@linkcode runChunks}. */
  params: 80,
} as const;

/** Most chunks one job may have (10 bits of the claim word). */
export const MAX_CHUNKS = 1023;

/** The kernel's `gemm` export (see build_wasm.ts). */
export type GemmFn = (
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

/**
 * Claims and runs chunks of job `gen` until none are left. Params (at `CTRL.params`): pa, pb, pc, mp,
 * np, k, kc, mcp, beta0, splitN (chunks are N panels when 1, M panels when 0), panels per chunk.
 * Returns the number of chunks this thread ran.
 */
export function runChunks(i32: Int32Array, gemm: GemmFn, gen: number): number {
  let ran = 0;
  for (;;) {
    const cur = Atomics.load(i32, CTRL.claim);
    if (cur >>> 20 !== gen) return ran;
    const chunks = (cur >>> 10) & 0x3ff, next = cur & 0x3ff;
    if (next >= chunks) return ran;
    if (Atomics.compareExchange(i32, CTRL.claim, cur, cur + 1) !== cur) continue;
    // The job cannot change while one of its chunks is unfinished, so these reads are stable.
    const p = CTRL.params;
    const mp = i32[p + 3], np = i32[p + 4], per = i32[p + 10];
    const lo = next * per, hi = Math.min(lo + per, i32[p + 9] ? np : mp);
    const [ip0, ip1, jp0, jp1] = i32[p + 9] ? [0, mp, lo, hi] : [lo, hi, 0, np];
    gemm(
      i32[p],
      i32[p + 1],
      i32[p + 2],
      mp,
      np,
      i32[p + 5],
      i32[p + 6],
      ip0,
      ip1,
      jp0,
      jp1,
      i32[p + 7],
      i32[p + 8],
    );
    ran++;
    if (Atomics.add(i32, CTRL.finished, 1) + 1 === chunks) Atomics.notify(i32, CTRL.finished);
  }
}

/** First (and only) message a worker receives. */
export interface WorkerInit {
  /** The compiled kernel (shared-memory variant). */
  module: WebAssembly.Module;
  /** The shared memory holding the control block and the packed operands. */
  memory: WebAssembly.Memory;
  /** Spin iterations before sleeping in `Atomics.wait`. */
  spin: number;
}
