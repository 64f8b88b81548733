/**
 * A wasm pool worker thread: instantiates the kernels on the shared memory, answers one message
 * when ready, then serves jobs through the control block only (spin, then `Atomics.wait`; see
 * protocol.ts). Runs as a `node:worker_threads` worker in Deno and Node (so it can be unref'd) or
 * as a web Worker.
 *
 * @module
 */

import { type KernelFn, serveJobs, type WorkerInit } from "./protocol.ts";

function serve(init: WorkerInit, ready: () => void): void {
  const inst = new WebAssembly.Instance(init.module, { env: { memory: init.memory } });
  const fns = init.exports.map((name) => inst.exports[name] as KernelFn);
  // The control block is at the start of the memory, so these views stay valid when it grows.
  const i32 = new Int32Array(init.memory.buffer, 0, 1024);
  const f64 = new Float64Array(init.memory.buffer, 0, 512);
  serveJobs(i32, f64, fns, init.spin, ready);
}

interface Port {
  once(ev: "message", f: (init: WorkerInit) => void): void;
  postMessage(m: unknown): void;
  close?(): void;
}

const g = globalThis as unknown as {
  Deno?: unknown;
  process?: { versions?: { node?: string } };
  onmessage: ((e: MessageEvent<WorkerInit>) => void) | null;
  postMessage(m: unknown): void;
  close(): void;
};

const port: Port | null | undefined = g.Deno !== undefined || g.process?.versions?.node
  ? (await import("node:worker_threads")).parentPort as Port | null
  : undefined;

if (port) {
  port.once("message", (init) => {
    serve(init, () => port.postMessage("ready"));
    port.close?.();
  });
} else {
  g.onmessage = (e) => {
    g.onmessage = null;
    serve(e.data, () => g.postMessage("ready"));
    g.close();
  };
}
