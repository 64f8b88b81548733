/**
 * Kernel benchmark cases (matmul, attention forward/backward, softmax, cross-entropy, rms norm,
 * sampling, elementwise, AdamW) on any backend, shared by `webgpu_bench.ts` and `cpu_bench.ts`
 * (deno bench) and `webgpu_table.ts` (the one table `gpu_check.sh` prints). Sizes follow the
 * device: MiniMind2-Small shapes on a real GPU, small ones on the CPU and the software adapter
 * (llvmpipe runs ~10 GFLOP/s).
 * @module
 */
// B = batch, T = time, NH = heads, NKV = kv heads, HD = head dim, V = vocab, H = hidden
import type { WebGpuBackend } from "../nn/backend/webgpu/mod.ts";
import type { Backend } from "../nn/backend/backend.ts";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import { key, normalArray, uniformArray } from "../nn/random.ts";
import { scope } from "../nn/scope.ts";
import { vjp } from "../nn/autodiff.ts";
import {
  adamwUpdate,
  add,
  attention,
  crossEntropy,
  matmul,
  rmsNorm,
  sample,
  softmax,
  swiglu,
} from "../nn/ops/mod.ts";

/** One benchmark case: `run` records one call (inside a scope); `work` is per call. */
export interface GpuCase {
  /** Family (table section). */
  family: string;
  /** Row label. */
  name: string;
  /** FLOPs per call (0 when bandwidth-bound). */
  flops: number;
  /** Bytes moved per call (reads + writes). */
  bytes: number;
  /** Records one call. */
  run: () => void;
  /** Frees the inputs. */
  dispose: () => void;
}

function randn(b: Backend, shape: number[], seed: number, scale = 1): Tensor {
  const n = shape.reduce((a, c) => a * c, 1);
  return tensor(Float32Array.from(normalArray(key(seed), n), (v) => v * scale), shape, "f32", {
    backend: b,
  });
}

/** The cases for this adapter (big sizes on a real GPU). */
export function gpuCases(b: WebGpuBackend): GpuCase[] {
  return kernelCases(b, !b.software);
}

/**
 * The cases on backend `b`: MiniMind2-Small-sized when `big`, else small enough for a CPU or a
 * software adapter.
 */
export function kernelCases(b: Backend, big: boolean): GpuCase[] {
  const out: GpuCase[] = [];
  // matmul: forward x·Wᵀ and both backward products of a linear layer, plus a square one
  const mm = big ? [4096, 4096, 4096] : [384, 384, 384];
  const [tok, hin, hout] = big ? [8192, 512, 1408] : [512, 128, 352];
  const mmCases: [string, number[], number[], boolean, boolean][] = [
    [`square ${mm[0]}³ NN`, [mm[0], mm[2]], [mm[2], mm[1]], false, false],
    [`x·Wᵀ ${tok}×${hin}→${hout} (NT)`, [tok, hin], [hout, hin], false, true],
    [`dx = g·W (NN)`, [tok, hout], [hout, hin], false, false],
    [`dW = gᵀ·x (TN)`, [tok, hout], [tok, hin], true, false],
  ];
  for (const [name, sa, sb, ta, tb] of mmCases) {
    const a = randn(b, sa, 1), w = randn(b, sb, 2);
    const m = ta ? sa[1] : sa[0], k = ta ? sa[0] : sa[1], n = tb ? sb[0] : sb[1];
    out.push({
      family: "matmul",
      name,
      flops: 2 * m * n * k,
      bytes: 4 * (m * k + k * n + m * n),
      run: () => void matmul(a, w, { transA: ta, transB: tb }),
      dispose: () => (a.dispose(), w.dispose()),
    });
  }
  // the square product again on f16 operands (the float16 precision), where the adapter has them
  const gpu = b.name === "webgpu" ? b as WebGpuBackend : null;
  if (gpu?.device.features.has("shader-f16")) {
    const a = randn(b, [mm[0], mm[2]], 1), w = randn(b, [mm[2], mm[1]], 2);
    out.push({
      family: "matmul",
      name: `square ${mm[0]}³ NN, f16 operands`,
      flops: 2 * mm[0] * mm[1] * mm[2],
      bytes: 4 * (mm[0] * mm[2] + mm[2] * mm[1] + mm[0] * mm[1]),
      run: () => {
        gpu.setMatmulPrecision("float16");
        try {
          void matmul(a, w);
        } finally {
          gpu.setMatmulPrecision("float32");
        }
      },
      dispose: () => (a.dispose(), w.dispose()),
    });
  }
  // attention (causal GQA): QKᵀ and PV are 2·T²·HD each per head, halved by the mask
  const [ab, at, anh, ankv, ahd] = big ? [8, 512, 8, 2, 64] : [1, 128, 4, 2, 32];
  {
    const q = randn(b, [ab, at, anh, ahd], 3), k = randn(b, [ab, at, ankv, ahd], 4);
    const v = randn(b, [ab, at, ankv, ahd], 5), ct = randn(b, [ab, at, anh, ahd], 6);
    const fl = 2 * 2 * ab * anh * at * at * ahd / 2;
    out.push({
      family: "attention",
      name: `forward B${ab} T${at} NH${anh}/${ankv} HD${ahd}`,
      flops: fl,
      bytes: 4 * (2 * q.size + 2 * k.size),
      run: () => void attention(q, k, v),
      dispose: () => {},
    });
    out.push({
      family: "attention",
      name: `forward+backward`,
      flops: fl * 3.5,
      bytes: 4 * (5 * q.size + 4 * k.size),
      run: () => {
        const [, back] = vjp((x: Tensor, y: Tensor, z: Tensor) => attention(x, y, z), q, k, v);
        back(ct);
      },
      dispose: () => [q, k, v, ct].forEach((t) => t.dispose()),
    });
  }
  // row kernels on logits / activations
  const [rows, vocab, hid] = big ? [4096, 6400, 512] : [256, 6400, 128];
  {
    const logits = randn(b, [rows, vocab], 7);
    const targets = tensor(
      Int32Array.from(uniformArray(key(8), rows), (u) => Math.floor(u * vocab)),
      [rows],
      "i32",
      { backend: b },
    );
    out.push({
      family: "rows",
      name: `softmax [${rows}, ${vocab}]`,
      flops: 0,
      bytes: 4 * 2 * rows * vocab,
      run: () => void softmax(logits),
      dispose: () => {},
    });
    out.push({
      family: "rows",
      name: `cross-entropy fwd+bwd [${rows}, ${vocab}]`,
      flops: 0,
      bytes: 4 * 3 * rows * vocab,
      run: () => {
        const [, back] = vjp((l: Tensor) => crossEntropy(l, targets), logits);
        back(tensor([1], [], "f32", { backend: b }));
      },
      dispose: () => (logits.dispose(), targets.dispose()),
    });
    const x = randn(b, [rows * 2, hid], 9), w = randn(b, [hid], 10);
    out.push({
      family: "rows",
      name: `rmsNorm [${rows * 2}, ${hid}]`,
      flops: 0,
      bytes: 4 * 2 * x.size,
      run: () => void rmsNorm(x, w),
      dispose: () => (x.dispose(), w.dispose()),
    });
    const u = randn(b, [4], 11);
    const lg = randn(b, [4, vocab], 12);
    const un = tensor(uniformArray(key(13), 4), [4], "f32", { backend: b });
    out.push({
      family: "rows",
      name: `sample top-k 50 top-p 0.85 [4, ${vocab}]`,
      flops: 0,
      bytes: 4 * 4 * vocab,
      run: () => void sample(lg, un, { topK: 50, topP: 0.85 }),
      dispose: () => [u, lg, un].forEach((t) => t.dispose()),
    });
  }
  // elementwise and the optimizer: bandwidth
  const n = big ? 1 << 24 : 1 << 20;
  {
    const x = randn(b, [n], 14), y = randn(b, [n], 15);
    out.push({
      family: "elementwise",
      name: `add ${n / 1048576}M`,
      flops: 0,
      bytes: 12 * n,
      run: () => void add(x, y),
      dispose: () => {},
    });
    out.push({
      family: "elementwise",
      name: `swiglu ${n / 1048576}M`,
      flops: 0,
      bytes: 12 * n,
      run: () => void swiglu(x, y),
      dispose: () => {},
    });
    const m = randn(b, [n], 16, 0.1), v = randn(b, [n], 17, 0.1);
    const vv = scope(() => add(v, 2));
    out.push({
      family: "elementwise",
      name: `adamw ${n / 1048576}M params`,
      flops: 0,
      bytes: 28 * n,
      run: () =>
        void adamwUpdate(x, y, m, vv, {
          lr: 1e-3,
          beta1: 0.9,
          beta2: 0.999,
          eps: 1e-8,
          weightDecay: 0.01,
          step: 10,
        }),
      dispose: () => [x, y, m, v, vv].forEach((t) => t.dispose()),
    });
  }
  return out;
}

/** Seconds per call of `run`, with the fixed sync cost removed (median of 3 timed batches). */
export async function timeGpu(b: WebGpuBackend, run: () => void, minMs = 200): Promise<number> {
  scope(run);
  await b.sync(); // compile + warm
  const syncMs = await emptySyncMs(b);
  let reps = 1;
  for (;;) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) scope(run);
    await b.sync();
    const dt = performance.now() - t0;
    if (dt >= minMs || reps >= 1 << 14) break;
    reps *= Math.min(16, Math.max(2, Math.ceil(minMs / Math.max(dt, 1))));
  }
  const ts: number[] = [];
  for (let k = 0; k < 3; k++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) scope(run);
    await b.sync();
    ts.push((performance.now() - t0 - syncMs) / reps);
  }
  ts.sort((x, y) => x - y);
  return Math.max(ts[1], 1e-6) / 1000;
}

/** Milliseconds of one `sync()` with nothing pending (Deno's polling latency). */
export async function emptySyncMs(b: WebGpuBackend): Promise<number> {
  const ts: number[] = [];
  for (let i = 0; i < 5; i++) {
    const t0 = performance.now();
    await b.sync();
    ts.push(performance.now() - t0);
  }
  ts.sort((x, y) => x - y);
  return ts[2];
}

/** µs per tiny dispatch (recording + execution), from batches of 100 dependent 4-element adds. */
export async function dispatchUs(b: WebGpuBackend): Promise<number> {
  const x = tensor([1, 2, 3, 4], [4], "f32", { backend: b });
  const s = await timeGpu(b, () => {
    let h = x;
    for (let i = 0; i < 100; i++) h = add(h, x);
  });
  x.dispose();
  return (s / 100) * 1e6;
}

/** ms of a 4-byte readback (a submit + mapAsync round trip). */
export async function readbackMs(b: WebGpuBackend): Promise<number> {
  const x = tensor([1], [1], "f32", { backend: b });
  const ts: number[] = [];
  for (let i = 0; i < 7; i++) {
    const t0 = performance.now();
    await x.data();
    ts.push(performance.now() - t0);
  }
  x.dispose();
  ts.sort((p, q) => p - q);
  return ts[3];
}
