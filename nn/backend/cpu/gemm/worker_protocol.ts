/**
 * Layout of the control block that the main thread and the gemm workers share at the start of the
 * wasm memory (Int32 indices). Each worker owns `CTRL.stride` words: the main thread writes `op` and
 * `params`, then bumps `seq`; the worker runs the job and stores the same number into `done`, which
 * sits on another cache line.
 *
 * @module
 */

/** Bytes reserved for the control block; packed operands start after it. */
export const CTRL_BYTES = 4096;

/** Int32 word offsets inside the control block. */
export const CTRL = {
  /** Word index of worker 0's block (the first 64 bytes are unused). */
  first: 16,
  /** Words per worker (128 bytes). */
  stride: 32,
  /** Job sequence number, written by the main thread. */
  seq: 0,
  /** What to do: {@linkcode OP_GEMM} or {@linkcode OP_QUIT}. */
  op: 1,
  /** The 13 arguments of the kernel's `gemm` export. */
  params: 2,
  /** Last job finished, written by the worker. */
  done: 16,
  /** Most workers the block has room for. */
  maxWorkers: (CTRL_BYTES / 4 - 16) / 32,
} as const;

/** Job: run the kernel's `gemm` with the params. */
export const OP_GEMM = 1;
/** Job: leave the loop and let the worker end. */
export const OP_QUIT = 2;

/** First (and only) message a worker receives. */
export interface WorkerInit {
  /** The compiled kernel (shared-memory variant). */
  module: WebAssembly.Module;
  /** The shared memory holding the control block and the packed operands. */
  memory: WebAssembly.Memory;
  /** Word index of this worker's control block. */
  base: number;
  /** Spin iterations before sleeping in `Atomics.wait`. */
  spin: number;
}
