import assert from "node:assert/strict";
import type { TypedArray } from "../../../dtype.ts";
import type { KernelOp, Meta } from "../../../op.ts";
import { adamwOp } from "../../../ops/adamw.ts";
import { rmsNormBackwardOp, rmsNormOp } from "../../../ops/rms_norm.ts";
import { ropeOp } from "../../../ops/rope.ts";
import { swigluBackwardOp, swigluOp } from "../../../ops/swiglu.ts";
import { mapUnary, rowExp, rowStats } from "../simd/ops.ts";
import { embeddingBackwardOp } from "../../../ops/gather.ts";
import { attentionBackwardOp, attentionOp } from "../../../ops/attention.ts";
import { matmulOp } from "../../../ops/matmul.ts";
import { getGemm } from "../gemm/mod.ts";
import {
  add,
  initKernelThreads,
  KernelPool,
  kernelThreads,
  pooledAttention,
  pooledMatmul,
  setKernelThreadsEnabled,
  sharedArray,
  sharedArraysOn,
  sumOfSquares,
  workerChunks,
} from "./mod.ts";
import { KERNELS, rmsNormBackwardRows } from "./kernels.ts";
import { cpuArray, cpuBackend, sharedCapacity } from "../mod.ts";

/** A shared f32 array of `n` values from a fixed pseudo-random sequence (positive: `abs`). */
function values(n: number, seed: number, abs = false): Float32Array {
  const a = sharedArray("f32", n) as Float32Array;
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    const v = (s / 2 ** 32 - 0.5) * 2;
    a[i] = abs ? Math.abs(v) + 1e-3 : v;
  }
  return a;
}

function meta(shape: number[], dtype: Meta["dtype"] = "f32"): Meta {
  return { shape, dtype };
}

/**
 * Runs `op`'s CPU kernel on copies of `ins` into fresh shared outputs, once split over the pool and
 * once on this thread only, asserts that every output has the same bits, and returns them.
 */
function sameBits<P>(
  op: KernelOp<P>,
  ins: TypedArray[],
  inMetas: Meta[],
  outMetas: Meta[],
  params: P,
): TypedArray[] {
  const run = (pooled: boolean) => {
    setKernelThreadsEnabled(pooled);
    try {
      const copies = ins.map((a) => {
        const c = a.buffer instanceof SharedArrayBuffer
          ? sharedArray(dtypeOf(a), a.length)
          : new (a.constructor as Float32ArrayConstructor)(a.length);
        c.set(a as never);
        return c;
      });
      const outs = outMetas.map((m) => sharedArray(m.dtype, m.shape.reduce((x, y) => x * y, 1)));
      op.cpu(copies, outs, { inputs: inMetas, outputs: outMetas, params });
      return outs;
    } finally {
      setKernelThreadsEnabled(true);
    }
  };
  const before = workerChunks();
  const pooled = run(true);
  const single = run(false);
  for (const [i, a] of pooled.entries()) {
    const b = single[i];
    const bits = (x: TypedArray) => new Uint32Array(x.buffer, x.byteOffset, x.length);
    const d = bits(a).findIndex((v, j) => v !== bits(b)[j]);
    assert.equal(d, -1, `${op.name} output ${i}: element ${d} is ${a[d]} pooled, ${b[d]} not`);
  }
  if (kernelThreads() > 1) {
    assert.ok(workerChunks() >= before, "worker chunk count never decreases");
  }
  return pooled;
}

function dtypeOf(a: TypedArray): Meta["dtype"] {
  return a instanceof Float32Array ? "f32" : a instanceof Int32Array ? "i32" : "f64";
}

/** The threads the pool should have here: the env's choice, else one per core (at most 8). */
function expectedThreads(env: (name: string) => string | undefined): number {
  for (const name of ["MINIMIND_CPU_THREADS", "OPENBLAS_NUM_THREADS"]) {
    const n = Number(env(name));
    if (Number.isInteger(n) && n >= 1) return n;
  }
  return Math.min(8, navigator.hardwareConcurrency);
}

Deno.test("kernel pool: on by default where workers can start, with one thread per core", async () => {
  const threads = await initKernelThreads();
  const want = expectedThreads((n) => Deno.env.get(n));
  assert.equal(sharedArraysOn(), want > 1);
  assert.equal(threads, want);
  const s = cpuBackend.alloc("f32", 1 << 16);
  assert.equal(cpuArray(s).buffer instanceof SharedArrayBuffer, want > 1, "large arrays shared");
  cpuBackend.free(s);
  const small = cpuBackend.alloc("f32", 16);
  assert.ok(cpuArray(small).buffer instanceof ArrayBuffer, "small arrays stay plain");
  cpuBackend.free(small);
});

Deno.test("kernel pool: AdamW split over threads has the bits of one thread", async () => {
  await initKernelThreads();
  const n = 300_001; // not a multiple of any piece size
  const [p, g, m] = [values(n, 1), values(n, 2), values(n, 3)];
  const v = values(n, 4, true);
  const params = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 7 };
  const metas = [0, 1, 2, 3].map(() => meta([n]));
  sameBits(adamwOp, [p, g, m, v], metas, metas.slice(0, 3), params);
  // clipped (scale input), and the in-place form the train step uses
  const scale = new Float32Array([0.37]);
  sameBits(adamwOp, [p, g, m, v, scale], [...metas, meta([])], metas.slice(0, 3), params);
  const inPlace = (pooled: boolean) => {
    setKernelThreadsEnabled(pooled);
    const arrs = [p, g, m, v].map((a) => {
      const c = sharedArray("f32", n);
      c.set(a);
      return c;
    });
    adamwOp.cpu(arrs, [arrs[0], arrs[2], arrs[3]], {
      inputs: metas,
      outputs: metas.slice(0, 3),
      params: { ...params, inPlace: true },
    });
    setKernelThreadsEnabled(true);
    return arrs;
  };
  const a = inPlace(true), b = inPlace(false);
  for (const i of [0, 2, 3]) assert.deepEqual(a[i], b[i]);
});

Deno.test("kernel pool: RMSNorm forward and backward split over threads have the bits of one thread", async () => {
  await initKernelThreads();
  const rows = 1000, h = 192;
  const x = values(rows * h, 5), w = new Float32Array(values(h, 6)); // w small and not shared
  const eps = 1e-5;
  sameBits(rmsNormOp, [x, w], [meta([rows, h]), meta([h])], [meta([rows, h]), meta([rows])], {
    eps,
  });
  const ct = values(rows * h, 7), rstd = values(rows, 8, true);
  sameBits(
    rmsNormBackwardOp,
    [ct, x, w, rstd],
    [meta([rows, h]), meta([rows, h]), meta([h]), meta([rows])],
    [meta([rows, h]), meta([h])],
    {},
  );
  // the 16 pieces' f64 partials of dw against one f64 pass over every row, and dx against the
  // one-piece kernel
  const dx = sharedArray("f32", rows * h), dw = new Float32Array(h);
  rmsNormBackwardOp.cpu([ct, x, w, rstd], [dx, dw], {
    inputs: [meta([rows, h]), meta([rows, h]), meta([h]), meta([rows])],
    outputs: [meta([rows, h]), meta([h])],
    params: {},
  });
  const dx1 = new Float32Array(rows * h), dw1 = new Float64Array(h);
  rmsNormBackwardRows(ct, x, w, rstd, dx1, dw1, h, 0, rows, 0);
  assert.deepEqual(new Float32Array(dx), dx1);
  for (let i = 0; i < h; i++) {
    assert.ok(Math.abs(dw[i] - dw1[i]) <= 1e-6 * (1 + Math.abs(dw1[i])), `dw[${i}]`);
  }
});

Deno.test("kernel pool: RoPE (positions or offset, both directions) split over threads has the bits of one thread", async () => {
  await initKernelThreads();
  const [b, t, nh, hd, P] = [4, 130, 4, 64, 600];
  const x = values(b * t * nh * hd, 9), c = values(P * hd, 10), s = values(P * hd, 11);
  const xm = meta([b, t, nh, hd]), tm = meta([P, hd]);
  for (const inverse of [false, true]) {
    sameBits(ropeOp, [x, c, s], [xm, tm, tm], [xm], { offset: 3, inverse });
    const pos = new Int32Array(b * t).map((_, i) => (i * 7) % P);
    sameBits(ropeOp, [x, c, s, pos], [xm, tm, tm, meta([b, t], "i32")], [xm], {
      offset: 0,
      inverse,
    });
  }
  // a bad position throws before any thread starts
  const pos = new Int32Array(b * t).fill(P);
  assert.throws(
    () =>
      ropeOp.cpu([x, c, s, pos], [sharedArray("f32", x.length)], {
        inputs: [xm, tm, tm, meta([b, t], "i32")],
        outputs: [xm],
        params: { offset: 0, inverse: false },
      }),
    /position 600: the table has 600 rows/,
  );
});

Deno.test("kernel pool: SIMD maps (SwiGLU forward and backward, SiLU) split over threads have the bits of one thread", async () => {
  await initKernelThreads();
  const n = 70_001 * 3; // rounds and pieces end mid-vector
  const g = values(n, 14), u = values(n, 15), ct = values(n, 16);
  const m = meta([n]);
  sameBits(swigluOp, [g, u], [m, m], [m], {});
  sameBits(swigluBackwardOp, [ct, g, u], [m, m, m], [m, m], {});
  const silu = (pooled: boolean) => {
    setKernelThreadsEnabled(pooled);
    const y = sharedArray("f32", n);
    assert.ok(mapUnary("silu", g, y));
    setKernelThreadsEnabled(true);
    return y;
  };
  assert.deepEqual(silu(true), silu(false));
});

Deno.test("kernel pool: embedding backward split over threads (by columns) has the bits of one thread", async () => {
  await initKernelThreads();
  const tokens = 700, h = 128, vocab = 50;
  const ct = values(tokens * h, 17);
  const ids = new Int32Array(tokens).map((_, i) => (i * 13) % vocab); // repeated ids accumulate
  sameBits(embeddingBackwardOp, [ct, ids], [meta([tokens, h]), meta([tokens], "i32")], [
    meta([vocab, h]),
  ], { vocab });
});

Deno.test("kernel pool: cross-entropy's SIMD row kernels (row stats, row exp) split over threads have the bits of one thread", async () => {
  await initKernelThreads();
  const rows = 37, n = 6401;
  const x = values(rows * n, 20);
  const both = <T>(f: () => T): [T, T] => {
    const a = f();
    setKernelThreadsEnabled(false);
    try {
      return [a, f()];
    } finally {
      setKernelThreadsEnabled(true);
    }
  };
  const [s1, s2] = both(() => rowStats(x, rows, n)!);
  assert.deepEqual(s1, s2);
  const c = Array.from({ length: rows }, (_, r) => s1[2 * r] + Math.log(s1[2 * r + 1]));
  const g = Array.from({ length: rows }, (_, r) => 1 / (r + 3));
  const [y1, y2] = both(() => {
    const y = sharedArray("f32", rows * n);
    assert.ok(rowExp(x, y, rows, n, c, g, (r) => r % 5 === 2));
    return y;
  });
  assert.deepEqual(y1, y2);
  assert.equal(y1[2 * n + 7], 0, "a skipped row is 0");
});

Deno.test("kernel pool: attention forward and backward by (batch, KV group) units have the bits of one thread, decode steps and time-major K/V too", async () => {
  await initKernelThreads();
  const hd = 64;
  // [b, t, s, nh, nkv, masked, causal]: 2·4·130·130·64 multiply-adds and up, all pooled; the last
  // is a decode step (T = 1, 4 query heads per KV group: the grouped products)
  const cases = [
    [2, 130, 130, 4, 2, false, true],
    [2, 130, 150, 4, 2, true, true],
    [2, 130, 130, 4, 2, false, false],
    [8, 1, 1024, 8, 2, true, true],
  ] as const;
  for (const [b, t, s, nh, nkv, masked, causal] of cases) {
    const q = values(b * t * nh * hd, 21), k = values(b * s * nkv * hd, 22);
    const v = values(b * s * nkv * hd, 23), dout = values(b * t * nh * hd, 24);
    const mask = new Float32Array(b * s).map((_, i) => (i % 7 === 3 ? 0 : 1));
    const qm = meta([b, t, nh, hd]), km = meta([b, s, nkv, hd]), lm = meta([b, nh, t]);
    const params = { causal, scale: 1 / Math.sqrt(hd) };
    const ins = masked ? [q, k, v, mask] : [q, k, v];
    const inMetas = masked ? [qm, km, km, meta([b, s])] : [qm, km, km];
    const outs = sameBits(attentionOp, ins, inMetas, [qm, lm], params);
    // over time-major K and V ([S, B, NKV, HD], a KV cache's layout): the same bits again
    const w = nkv * hd;
    const timeMajor = (x: Float32Array) => {
      const y = sharedArray("f32", x.length);
      for (let bi = 0; bi < b; bi++) {
        for (let si = 0; si < s; si++) {
          y.set(x.subarray((bi * s + si) * w, (bi * s + si + 1) * w), (si * b + bi) * w);
        }
      }
      return y;
    };
    const tmm = meta([s, b, nkv, hd]), kt = timeMajor(k), vt = timeMajor(v);
    const tmOuts = sameBits(
      attentionOp,
      masked ? [q, kt, vt, mask] : [q, kt, vt],
      masked ? [qm, tmm, tmm, meta([b, s])] : [qm, tmm, tmm],
      [qm, lm],
      { ...params, kvTimeMajor: true },
    );
    // the same values (a decode step's batched products may add in another order per layout)
    tmOuts.forEach((x, i) => {
      for (let j = 0; j < x.length; j++) {
        const want = outs[i][j];
        if (!(Math.abs(x[j] - want) <= 1e-5 * Math.max(1, Math.abs(want)))) {
          assert.fail(`time-major K/V: output ${i}[${j}] is ${x[j]}, batch-major ${want}`);
        }
      }
    });
    if (kernelThreads() > 1) {
      const o = sharedArray("f32", q.length), l = new Float32Array(b * nh * t);
      const d = { b, t, s, nh, nkv, hd };
      assert.ok(pooledAttention(q, d, params, [q, k, v, o, l], masked ? mask : null, false));
    }
    // the backward from the forward's out and lse
    const out = sharedArray("f32", q.length), lse = new Float32Array(b * nh * t);
    attentionOp.cpu(ins, [out, lse], { inputs: inMetas, outputs: [qm, lm], params });
    const bins = [q, k, v, out, lse, dout, ...(masked ? [mask] : [])];
    const bmetas = [qm, km, km, qm, lm, qm, ...(masked ? [meta([b, s])] : [])];
    sameBits(attentionBackwardOp, bins, bmetas, [qm, km, km], params);
  }
});

Deno.test("kernel pool: matrix products split by rows or columns match the unsplit product, bit-stable", async () => {
  await initKernelThreads();
  // 300×200 (split by rows) and 100×600 (by columns), K = 400: 24M multiply-adds, pooled
  for (const [m, n, k] of [[300, 200, 400], [100, 600, 400]]) {
    for (const transA of [false, true]) {
      for (const transB of [false, true]) {
        const a = values(m * k, m + k), b = values(k * n, n + k);
        const am = meta(transA ? [k, m] : [m, k]), bm = meta(transB ? [n, k] : [k, n]);
        const run = (pooled: boolean) => {
          setKernelThreadsEnabled(pooled);
          try {
            const c = sharedArray("f32", m * n) as Float32Array;
            matmulOp.cpu([a, b], [c], {
              inputs: [am, bm],
              outputs: [meta([m, n])],
              params: { transA, transB },
            });
            return c;
          } finally {
            setKernelThreadsEnabled(true);
          }
        };
        const [p1, p2, one] = [run(true), run(true), run(false)];
        assert.deepEqual(p1, p2, "the same pieces, the same bits");
        let worst = 0;
        for (let i = 0; i < m * n; i++) worst = Math.max(worst, Math.abs(p1[i] - one[i]));
        assert.ok(worst < 1e-4, `m=${m} n=${n} tA=${transA} tB=${transB}: ${worst}`);
        if (kernelThreads() > 1 && getGemm().kind === "blas") {
          const c = sharedArray("f32", m * n);
          const lda = transA ? m : k, ldb = transB ? k : n;
          assert.ok(pooledMatmul(transA, transB, m, n, k, a, lda, b, ldb, c, n));
          assert.ok(!pooledMatmul(transA, transB, 8, 8, 8, a, 8, b, 8, c, 8), "too small");
        }
      }
    }
  }
  // outside the matmul op's products OpenBLAS stays on one thread while the pool is on
  const g = getGemm();
  if (kernelThreads() > 1 && g.kind === "blas" && g.setThreads) assert.equal(g.setThreads(1), 1);
});

Deno.test("kernel pool: add and the global norm's Σx² in pieces: exact, and the same bits pooled or not", async () => {
  await initKernelThreads();
  const n = 300_001;
  const a = values(n, 31), b = values(n, 32);
  const y = sharedArray("f32", n) as Float32Array;
  assert.ok(add(a, b, y));
  for (let i = 0; i < n; i++) assert.equal(y[i], Math.fround(a[i] + b[i]));
  const pooled = sumOfSquares(a);
  setKernelThreadsEnabled(false);
  let single: number;
  try {
    single = sumOfSquares(a);
  } finally {
    setKernelThreadsEnabled(true);
  }
  assert.equal(pooled, single);
  let exact = 0;
  for (let i = 0; i < n; i++) exact += a[i] * a[i];
  assert.ok(Math.abs(pooled - exact) <= 1e-9 * exact, `${pooled} vs ${exact}`);
  assert.ok(!add(a, b, b), "y aliasing b takes the op's loop");
});

Deno.test("kernel pool: workers take part in large calls", async () => {
  const threads = await initKernelThreads();
  if (threads < 2) return; // one core: nothing to share (asserted by the first test)
  const n = 1 << 20;
  const [p, g, m] = [values(n, 1), values(n, 2), values(n, 3)];
  const v = values(n, 4, true);
  const params = { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1, step: 1 };
  const metas = [0, 1, 2, 3].map(() => meta([n]));
  const before = workerChunks();
  // a busy machine may leave the worker asleep for a call or two: the calling thread then does it
  for (let i = 0; i < 200 && workerChunks() === before; i++) {
    adamwOp.cpu([p, g, m, v], [p, m, v], { inputs: metas, outputs: metas.slice(0, 3), params });
  }
  assert.ok(workerChunks() > before, "a worker ran pieces of a call");
});

Deno.test("kernel pool: a pool without workers runs every piece on the calling thread", () => {
  const pool = new KernelPool();
  assert.equal(pool.threads, 1);
  const rows = 64, h = 32;
  const x = values(rows * h, 12);
  const w = new Float32Array(values(h, 13)); // through scratch memory
  const y = sharedArray("f32", rows * h), rstd = new Float32Array(rows);
  assert.ok(pool.call("rms_norm", [x, w, y, rstd], [h, 1e-6], 0, rows, 5));
  const y2 = new Float32Array(rows * h), rstd2 = new Float32Array(rows);
  KERNELS.rms_norm.run([x, w, y2, rstd2], [h, 1e-6], 0, rows);
  assert.deepEqual(new Float32Array(y), y2);
  assert.deepEqual(rstd, rstd2, "a small output comes back from scratch memory");
  assert.equal(pool.workerChunks, 0);
  // a large array that is not shared cannot reach workers: the call declines
  const big = new Float32Array(1 << 19);
  assert.equal(pool.call("rms_norm", [big, w, big, rstd], [h, 1e-6], 0, 16, 4), false);
});

Deno.test("kernel pool: MINIMIND_CPU_THREADS=1 turns it off, and idle workers never hold the process", async () => {
  const code = `
    import { initKernelThreads, sharedArraysOn } from ${
    JSON.stringify(import.meta.resolve("./mod.ts"))
  };
    import { cpuArray, cpuBackend } from ${JSON.stringify(import.meta.resolve("../mod.ts"))};
    const threads = await initKernelThreads();
    const s = cpuBackend.alloc("f32", 1 << 16);
    console.log(JSON.stringify({ threads, on: sharedArraysOn(), shared: cpuArray(s).buffer instanceof SharedArrayBuffer }));
  `;
  const envs: Record<string, string>[] = [
    { MINIMIND_CPU_THREADS: "", OPENBLAS_NUM_THREADS: "" },
    { MINIMIND_CPU_THREADS: "1", OPENBLAS_NUM_THREADS: "" },
    { MINIMIND_CPU_THREADS: "", OPENBLAS_NUM_THREADS: "1" },
  ];
  for (const env of envs) {
    const t0 = performance.now();
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      env,
      stdout: "piped",
      stderr: "inherit",
    }).output();
    const ms = performance.now() - t0;
    assert.equal(out.code, 0);
    const r = JSON.parse(new TextDecoder().decode(out.stdout));
    const want = expectedThreads((n) => env[n]);
    assert.deepEqual(r, { threads: want, on: want > 1, shared: want > 1 }, JSON.stringify(env));
    assert.ok(ms < 20000, `the process exited by itself (${ms.toFixed(0)} ms)`);
  }
});

Deno.test("shared arrays: 64-byte aligned; a freed buffer is reused for sizes of its capacity, zeroed; none past the limit", async () => {
  if ((await initKernelThreads()) < 2) return; // one core: no shared arrays
  const n = 100_000; // 400,000 bytes: capacity 425,984 (13 × 32,768)
  assert.equal(sharedCapacity(n * 4), 13 * 32768);
  assert.equal(sharedCapacity(65536), 65536);
  for (const b of [65537, 1e6, 3e8]) {
    const c = sharedCapacity(b);
    assert.ok(c >= b && c <= b * 1.125 + 8 && c % 8 === 0, `${b} → ${c}`);
  }
  const a = cpuBackend.alloc("f32", n);
  const at = (x: ArrayBufferView) => BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(x)));
  assert.equal(at(cpuArray(a)) % 64n, 0n, "the array starts on a 64-byte boundary");
  const buf = cpuArray(a).buffer;
  cpuArray(a).fill(5);
  cpuBackend.free(a);
  const { free } = cpuBackend.sharedBytes;
  assert.ok(free >= 13 * 32768);
  const b = cpuBackend.alloc("i32", n + 1000); // another dtype, a nearby size: the same capacity
  assert.equal(cpuArray(b).buffer, buf, "the freed buffer comes back");
  assert.equal(cpuArray(b).length, n + 1000);
  assert.equal(at(cpuArray(b)) % 64n, 0n);
  assert.ok(cpuArray(b).every((x) => x === 0), "zeroed");
  assert.equal(cpuBackend.sharedBytes.free, free - 13 * 32768);
  cpuBackend.free(b);
  const limit = cpuBackend.sharedLimitBytes;
  cpuBackend.sharedLimitBytes = cpuBackend.sharedBytes.total; // no new buffer fits
  try {
    const c = cpuBackend.alloc("f32", 3 * n);
    assert.ok(cpuArray(c).buffer instanceof ArrayBuffer, "past the limit: a plain array");
    cpuBackend.free(c);
  } finally {
    cpuBackend.sharedLimitBytes = limit;
  }
});
