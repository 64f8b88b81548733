import assert from "node:assert/strict";
import { alignedU16, cpuHasBf16, openBf16Gemm, toBf16 } from "./bf16.ts";
import { matmulPrecision, setMatmulPrecision } from "../gemm_adapter.ts";
import { tensor } from "../../../creation.ts";
import type { Tensor } from "../../../tensor.ts";
import { matmul } from "../../../ops/matmul.ts";
import { mul, neg } from "../../../ops/arith.ts";
import { sum } from "../../../ops/reduce.ts";
import { grad } from "../../../autodiff.ts";
import { key, normalArray } from "../../../random.ts";
import { init } from "../../../model/minimind.ts";
import { config } from "../../../model/minimind_config.ts";
import { lmLoss } from "../../../../train/lm.ts";
import { adamw } from "../../../../train/optim.ts";
import { disposeState, makeTrainStep } from "../../../../train/step.ts";

/** bf16 bits back to f32. */
function fromBf16(h: Uint16Array): Float32Array {
  return new Float32Array(Uint32Array.from(h, (v) => v << 16).buffer);
}

Deno.test("toBf16 rounds to nearest even and keeps NaN and infinities", () => {
  const x = new Float32Array([
    1,
    1 + 2 ** -8,
    1 + 3 * 2 ** -8,
    1 + 2 ** -9,
    -2.5,
    Infinity,
    NaN,
    0,
  ]);
  const h = new Uint16Array(x.length);
  toBf16(x, 0, x.length, h);
  const y = fromBf16(h);
  // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1)
  assert.deepEqual([...y.slice(0, 6)], [1, 1, 1 + 2 ** -6, 1, -2.5, Infinity]);
  assert.ok(Number.isNaN(y[6]));
  assert.equal(y[7], 0);
});

Deno.test("bfloat16 matmul: bf16 products with f32 accumulation, or float32 with the reason", () => {
  const [m, k, n] = [37, 64, 29];
  const a = Float32Array.from(normalArray(key(1), m * k));
  const b = Float32Array.from(normalArray(key(2), n * k));
  const ta = tensor(a, [m, k]), tb = tensor(b, [n, k]);
  const f32 = matmul(ta, tb, { transB: true }).dataSync();
  const why = setMatmulPrecision("bfloat16");
  try {
    const got = matmul(ta, tb, { transB: true }).dataSync();
    const g = openBf16Gemm();
    assert.equal(why === null, typeof g !== "string");
    if (why !== null) {
      // no native bf16 here: the reason says so and the product stays float32, bit for bit
      assert.equal(why, g);
      assert.equal(matmulPrecision(), "float32");
      assert.deepEqual(got, f32);
      assert.equal(why.startsWith("this CPU"), !cpuHasBf16());
      return;
    }
    assert.equal(matmulPrecision(), "bfloat16");
    // the reference: f32 products of the bf16-rounded operands
    const [ha, hb] = [new Uint16Array(a.length), new Uint16Array(b.length)];
    toBf16(a, 0, a.length, ha);
    toBf16(b, 0, b.length, hb);
    const ra = fromBf16(ha), rb = fromBf16(hb);
    let worstRef = 0, worstF32 = 0;
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) s += ra[i * k + p] * rb[j * k + p];
        worstRef = Math.max(worstRef, Math.abs(got[i * n + j] - s) / (1 + Math.abs(s)));
        worstF32 = Math.max(worstF32, Math.abs(got[i * n + j] - f32[i * n + j]));
      }
    }
    assert.ok(worstRef < 1e-5, `bf16 gemm vs f32 products of bf16 inputs: ${worstRef}`);
    assert.ok(worstF32 > 1e-4, "the operands really were rounded to bf16");
  } finally {
    setMatmulPrecision("float32");
    ta.dispose();
    tb.dispose();
  }
});

Deno.test("a bf16 product reuses the previous product's rounding of an operand only when nothing can have changed it", () => {
  const g = openBf16Gemm();
  if (typeof g === "string") {
    // no bf16 gemm on this machine (the reason is the gemm test's)
    assert.ok(g.length > 0);
    return;
  }
  setMatmulPrecision("bfloat16");
  const [m, k, n] = [48, 40, 16]; // more than 32 rows: not the packed decode products
  const x = tensor(Float32Array.from(normalArray(key(4), m * k)), [m, k]);
  const w1 = tensor(Float32Array.from(normalArray(key(5), n * k)), [n, k]);
  const w2 = tensor(Float32Array.from(normalArray(key(6), n * k)), [n, k]);
  try {
    const reused = () => g.stats.reused;
    // x·w1ᵀ then x·w2ᵀ, nothing between: x's rounding is the first product's
    let r0 = reused();
    const y1 = matmul(x, w1, { transB: true }), y2 = matmul(x, w2, { transB: true });
    assert.equal(reused() - r0, m * k);
    // another kernel between (any dispatch may write an array): rounded again, the same bits
    r0 = reused();
    const z = neg(w1);
    const y2again = matmul(x, w2, { transB: true });
    assert.equal(reused() - r0, 0);
    assert.deepEqual(y2again.dataSync(), y2.dataSync());
    // a tensor made between (a write outside kernels, maybe into a recycled array): rounded again
    matmul(x, w1, { transB: true }).dispose();
    r0 = reused();
    const t = tensor(new Float32Array(m * k).fill(1), [m, k]);
    matmul(x, w2, { transB: true }).dispose();
    assert.equal(reused() - r0, 0);
    // a linear layer's backward: dX = dY·W and dW = dYᵀ·X both read dY, one right after the other
    r0 = reused();
    const loss = (a: Tensor, b: Tensor) => sum(mul(matmul(a, b, { transB: true }), y1));
    const [dx, dw] = grad(loss, { argnums: [0, 1] })(x, w1) as [Tensor, Tensor];
    assert.ok(reused() - r0 >= m * n, `dY's rounding reused: ${reused() - r0}`);
    // and the gradients are those of fresh roundings (dY = y1: dX = y1·w1, dW = y1ᵀ·x)
    const want = [matmul(y1, w1), matmul(neg(neg(y1)), x, { transA: true })];
    assert.deepEqual(dx.dataSync(), want[0].dataSync());
    assert.deepEqual(dw.dataSync(), want[1].dataSync());
    for (const a of [y1, y2, z, y2again, t, dx, dw, ...want]) a.dispose();
  } finally {
    setMatmulPrecision("float32");
    for (const a of [x, w1, w2]) a.dispose();
  }
});

Deno.test("oneDNN's native rounding gives toBf16's bits, but f32 subnormals become zero", () => {
  const g = openBf16Gemm();
  if (typeof g === "string") {
    // no bf16 gemm on this machine: nothing native to compare (the reason is the gemm test's)
    assert.ok(g.length > 0);
    return;
  }
  const special = [1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, -(1 + 2 ** -9), 2 ** -130, 3.4e38, -Infinity];
  const x = Float32Array.from([...special, NaN, ...normalArray(key(3), 5000).map((v) => v * 1e3)]);
  const [js, native] = [new Uint16Array(x.length - 3), new Uint16Array(x.length - 3)];
  // an offset into x and a length no other test uses (a fresh reorder primitive)
  toBf16(x, 3, x.length, js);
  g.toBf16(x, 3, x.length, native);
  assert.ok(Number.isNaN(fromBf16(native.subarray(4, 5))[0]), "NaN stays NaN");
  // the hardware conversion (vcvtneps2bf16) reads subnormal inputs as zero: 2^-130 → +0
  assert.equal(js[1], 8);
  assert.equal(native[1], 0);
  native[4] = js[4] = 0; // NaN payloads may differ
  native[1] = js[1] = 0;
  assert.deepEqual(native, js);
});

Deno.test("bfloat16 training follows the float32 loss curve (tiny MiniMind, 15 AdamW steps)", async () => {
  const cfg = config("minimind2-small", {
    hiddenSize: 64,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    vocabSize: 128,
  });
  // a learnable sequence: each row counts up by a row-specific step
  const ids = tensor(
    Int32Array.from({ length: 4 * 32 }, (_, i) => (Math.floor(i / 32) * 3 + (i % 32) * 5) % 128),
    [4, 32],
    "i32",
  );
  const curve = async (precision: "float32" | "bfloat16") => {
    const why = setMatmulPrecision(precision);
    const step = makeTrainStep(lmLoss(cfg), adamw({ lr: 3e-3 }), { hasAux: true, gradClip: 1 });
    let s = step.init(init(cfg, key(0)) as never);
    const losses: number[] = [];
    try {
      for (let i = 0; i < 15; i++) {
        const [n, out] = step(s, { ids, labels: ids });
        s = n;
        losses.push(await out.loss.item());
        out.loss.dispose();
        out.aux?.dispose();
        out.gradNorm?.dispose();
      }
    } finally {
      setMatmulPrecision("float32");
      disposeState(s);
    }
    return { losses, why };
  };
  const f32 = await curve("float32");
  const bf16 = await curve("bfloat16");
  ids.dispose();
  const start = f32.losses[0], end = f32.losses[14];
  assert.ok(end < start - 2, `fp32 learns: ${start} → ${end}`);
  if (bf16.why !== null) {
    // no bf16 here: the run is float32, bit for bit
    assert.deepEqual(bf16.losses, f32.losses);
    return;
  }
  const gaps = f32.losses.map((l, i) => Math.abs(l - bf16.losses[i]));
  assert.ok(gaps.some((g) => g > 0), "bf16 really rounded something");
  // within noise: the gaps measured were at most 0.006 over a drop of 5.1 → 0.8
  assert.ok(Math.max(...gaps) < 0.03, `fp32 ${f32.losses}\nbf16 ${bf16.losses}`);
});

Deno.test("bf16 gemm: every transpose pair, padded leading dimensions, batches, offsets", () => {
  const g = openBf16Gemm();
  if (typeof g === "string") {
    assert.ok(g.length > 0); // no bf16 gemm here: the products test checks the fallback
    return;
  }
  const [m, n, k, batch, pad, off] = [19, 23, 37, 3, 5, 7];
  for (const transA of [false, true]) {
    for (const transB of [false, true]) {
      const lda = (transA ? m : k) + pad, ldb = (transB ? k : n) + pad, ldc = n + pad;
      const [sA, sB, sC] = [(transA ? k : m) * lda, (transB ? n : k) * ldb, m * ldc];
      const a = Float32Array.from(normalArray(key(4), off + batch * sA));
      const b = Float32Array.from(normalArray(key(5), off + batch * sB));
      const c = new Float32Array(off + batch * sC).fill(-7);
      g.sgemm({
        ...{ transA, transB, m, n, k, a, aOffset: off, lda, b, bOffset: off, ldb },
        ...{ c, cOffset: off, ldc, batch, strideA: sA, strideB: sB, strideC: sC },
      });
      const [ha, hb] = [new Uint16Array(a.length), new Uint16Array(b.length)];
      toBf16(a, 0, a.length, ha);
      toBf16(b, 0, b.length, hb);
      const ra = fromBf16(ha), rb = fromBf16(hb);
      let worst = 0;
      for (let q = 0; q < batch; q++) {
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < n; j++) {
            let s = 0;
            for (let p = 0; p < k; p++) {
              const av = ra[off + q * sA + (transA ? p * lda + i : i * lda + p)];
              const bv = rb[off + q * sB + (transB ? j * ldb + p : p * ldb + j)];
              s += av * bv;
            }
            worst = Math.max(
              worst,
              Math.abs(c[off + q * sC + i * ldc + j] - s) / (1 + Math.abs(s)),
            );
          }
          // the padding between rows of C is left alone
          for (let j = n; j < ldc && i < m - 1; j++) {
            assert.equal(c[off + q * sC + i * ldc + j], -7);
          }
        }
      }
      assert.ok(worst < 1e-5, `transA=${transA} transB=${transB}: ${worst}`);
      assert.equal(c[off - 1], -7);
    }
  }
});

Deno.test("the OpenMP settings made for oneDNN stay out of environmentAsStarted (benchmarks' PyTorch)", async () => {
  // a fresh process, started without them, loads oneDNN and reports both environments
  const code = `
    import { environmentAsStarted, openDnnl } from ${
    JSON.stringify(new URL("./bf16.ts", import.meta.url).href)
  };
    const loaded = typeof openDnnl() !== "string";
    console.log(JSON.stringify({ loaded, now: Deno.env.toObject(), started: environmentAsStarted() }));`;
  const env = Deno.env.toObject();
  for (const k of ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"]) delete env[k];
  env.OPENBLAS_NUM_THREADS = "2";
  env.MINIMIND_PROBE = "kept";
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["eval", code],
    env,
    clearEnv: true,
  }).output();
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  const { loaded, now, started } = JSON.parse(new TextDecoder().decode(out.stdout));
  if (!loaded) return; // no oneDNN here: nothing was set
  assert.equal(now.OMP_WAIT_POLICY, "PASSIVE");
  assert.equal(now.GOMP_SPINCOUNT, "10000");
  assert.equal(now.OMP_NUM_THREADS, "2");
  for (const k of ["OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS"]) {
    assert.ok(!(k in started), `${k} leaked into environmentAsStarted()`);
  }
  assert.equal(started.MINIMIND_PROBE, "kept");
  assert.equal(started.OPENBLAS_NUM_THREADS, "2");
});

Deno.test("alignedU16: zeroed, the length asked for, on a 64-byte boundary", () => {
  for (const n of [0, 1, 7, 1000, 100_003, 1 << 20]) {
    const a = alignedU16(n);
    assert.equal(a.length, n);
    assert.ok(a.every((v) => v === 0));
    if (n > 0) assert.equal(BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(a))) % 64n, 0n);
  }
});
