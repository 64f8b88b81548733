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

import { CTRL_BYTES, type KernelFn, type WorkerInit } from "./protocol.ts";
import { canSpawn, ChunkPool, type PoolWorker, spawnWorker, SPIN } from "./chunk_pool.ts";

export { CTRL_BYTES, MAX_CHUNKS } from "./protocol.ts";
export type { KernelFn } from "./protocol.ts";
export { SPIN } from "./chunk_pool.ts";

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
  return canSpawn(WORKER_URL);
}

/** Worker threads sharing one module and memory with the calling thread. */
export class WasmPool extends ChunkPool {
  readonly #init: WorkerInit;
  protected readonly workerName = "wasm worker";

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
    // The control block is at the start of the memory, so these views stay valid when it grows.
    super(
      new Int32Array(memory.buffer, 0, CTRL_BYTES / 4),
      new Float64Array(memory.buffer, 0, CTRL_BYTES / 8),
      fns,
    );
    this.#init = { module, memory, exports: names, spin };
  }

  protected startWorker(webWorker: boolean): Promise<PoolWorker> {
    return spawnWorker(WORKER_URL, this.#init, webWorker);
  }
}
