/**
 * A kernel pool worker thread (`mod.ts`): keeps the shared buffers the calling thread announces on
 * its port (taken synchronously with `receiveMessageOnPort` whenever a job arrives), and runs its
 * share of each job's pieces on views of them (`kernels.ts`). A kernel that throws sets the control
 * block's error word instead of ending the thread, so the calling thread never waits for a piece
 * that will not finish. Runs as a `node:worker_threads` worker (Deno, Node).
 *
 * @module
 */

import { parentPort, receiveMessageOnPort } from "node:worker_threads";
import { type KernelFn, serveJobs } from "../wasm_pool/protocol.ts";
import { KERNEL_NAMES, KERNELS } from "./kernels.ts";
import { arrayView, DESC, ERROR_WORD, type KernelWorkerInit } from "./mod.ts";
import type { TypedArray } from "../../../dtype.ts";

/** Tries to find a buffer announced by the calling thread before giving up on a job. */
const FIND_TRIES = 100000;

function serve(init: KernelWorkerInit, ready: () => void): void {
  const i32 = new Int32Array(init.ctrl);
  const f64 = new Float64Array(init.ctrl);
  const port = init.port as unknown as Parameters<typeof receiveMessageOnPort>[0];
  const buffers = new Map<number, SharedArrayBuffer>();
  const drain = () => {
    for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
      const [id, b] = m.message as [number, SharedArrayBuffer?];
      if (id < 0) buffers.delete(-id);
      else buffers.set(id, b!);
    }
  };
  const buffer = (id: number): SharedArrayBuffer => {
    let b = buffers.get(id);
    for (let t = 0; !b && t < FIND_TRIES; t++) {
      drain();
      b = buffers.get(id);
    }
    if (!b) throw new Error(`kernel worker: shared buffer ${id} was never announced`);
    return b;
  };
  const fns: KernelFn[] = KERNEL_NAMES.map((name) => {
    const k = KERNELS[name];
    return (...a: number[]) => {
      try {
        const arrays: TypedArray[] = [];
        for (let i = 0; i < k.arrays; i++) {
          const d = i * DESC;
          arrays.push(arrayView(a[d + 1], buffer(a[d]), a[d + 2], a[d + 3]));
        }
        const n = a.length;
        k.run(arrays, a.slice(k.arrays * DESC, n - 2), a[n - 2], a[n - 1]);
      } catch (e) {
        console.error(`kernel worker: ${name}: ${(e as Error).stack ?? e}`);
        Atomics.store(i32, ERROR_WORD, 1);
      }
    };
  });
  serveJobs(i32, f64, fns, init.spin, ready, drain);
}

parentPort?.once("message", (init: KernelWorkerInit) => {
  serve(init, () => parentPort!.postMessage("ready"));
  parentPort!.close();
});
