/**
 * A gemm worker thread: instantiates the kernel on the shared memory, answers one message when ready,
 * then serves jobs through the control block only (spin, then `Atomics.wait`). Runs as a
 * `node:worker_threads` worker in Deno and Node (so it can be unref'd) or as a web Worker.
 *
 * @module
 */

import { CTRL, OP_QUIT, type WorkerInit } from "./worker_protocol.ts";

type GemmFn = (...args: number[]) => void;

function serve(init: WorkerInit, ready: () => void): void {
  const inst = new WebAssembly.Instance(init.module, { env: { memory: init.memory } });
  const gemm = inst.exports.gemm as GemmFn;
  // The control block is at the start of the memory, so this view stays valid when it grows.
  const i32 = new Int32Array(init.memory.buffer, 0, 1024);
  const { base, spin } = init;
  const seqAt = base + CTRL.seq, p = base + CTRL.params;
  let last = Atomics.load(i32, seqAt);
  ready();
  for (;;) {
    let s = Atomics.load(i32, seqAt);
    for (let n = 0; s === last && n < spin; n++) s = Atomics.load(i32, seqAt);
    if (s === last) {
      Atomics.wait(i32, seqAt, last);
      continue;
    }
    last = s;
    if (i32[base + CTRL.op] === OP_QUIT) return;
    gemm(
      i32[p],
      i32[p + 1],
      i32[p + 2],
      i32[p + 3],
      i32[p + 4],
      i32[p + 5],
      i32[p + 6],
      i32[p + 7],
      i32[p + 8],
      i32[p + 9],
      i32[p + 10],
      i32[p + 11],
      i32[p + 12],
    );
    Atomics.store(i32, base + CTRL.done, s);
    Atomics.notify(i32, base + CTRL.done);
  }
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
