/**
 * The float16 precision on WebGPU (`shader-f16`, which Mesa's software adapter has, so CI runs
 * it): matmuls on f16-rounded operands with f32 sums in every kernel variant, the train step with
 * dynamic loss scaling against float32, why the scaling is needed, and `--dtype float16` choosing
 * both.
 */
import assert from "node:assert/strict";
import { init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { key, uniformArray } from "../nn/random.ts";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import type { Tree } from "../nn/tree.ts";
import { leaves } from "../nn/tree.ts";
import { matmul } from "../nn/ops/matmul.ts";
import { cpuBackend } from "../nn/backend/cpu/mod.ts";
import { defaultBackend, useBackend } from "../nn/backend/select.ts";
import { adamw } from "../train/optim.ts";
import { disposeOutput, disposeState, makeTrainStep } from "../train/step.ts";
import { applyDtype, lmLoss, lossScaling } from "../train/lm.ts";
import { openWebGpuForTests } from "./_webgpu.ts";

const gpu = await openWebGpuForTests();

/** Runs `fn` on `b` (creation inside follows it), the precision reset after. */
async function on<T>(b: typeof gpu, precision: "float32" | "float16", fn: () => Promise<T>) {
  const prev = defaultBackend();
  useBackend(b);
  b.setMatmulPrecision(precision);
  try {
    return await fn();
  } finally {
    b.setMatmulPrecision("float32");
    useBackend(prev);
  }
}

function values(n: number, seed: number): Float32Array {
  return Float32Array.from(uniformArray(key(seed), n), (u) => (u - 0.5) * 3);
}

/** op(A)·op(B) in f64 over operands rounded by `r`, batched with A's batch stride. */
function reference(
  a: Float32Array,
  b: Float32Array,
  [batch, m, n, k]: number[],
  transA: boolean,
  transB: boolean,
  r: (x: number) => number,
): Float64Array {
  const c = new Float64Array(batch * m * n);
  for (let q = 0; q < batch; q++) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let p = 0; p < k; p++) {
          const x = a[q * m * k + (transA ? p * m + i : i * k + p)];
          const y = b[q * k * n + (transB ? j * k + p : p * n + j)];
          s += r(x) * r(y);
        }
        c[(q * m + i) * n + j] = s;
      }
    }
  }
  return c;
}

Deno.test("matmul in float16 on WebGPU: f16 operands, f32 sums, in every kernel variant", async () => {
  assert.ok(gpu.device.features.has("shader-f16"), "the test adapter has shader-f16");
  // [batch, m, n, k]: decode rows, the blocked kernel's edges, the 64 and the 128 tiles
  const cases = [[1, 3, 40, 33], [2, 37, 29, 21], [1, 70, 50, 45], [1, 130, 129, 67]];
  for (const variant of ["software", "gpu"] as const) {
    gpu.tuning.variant = variant;
    for (const [batch, m, n, k] of cases) {
      for (const [transA, transB] of [[false, false], [true, false], [false, true]]) {
        const a = values(batch * m * k, m + k), b = values(batch * k * n, n + k);
        const shapeA = transA ? [k, m] : [m, k], shapeB = transB ? [n, k] : [k, n];
        const run = (p: "float32" | "float16") =>
          on(gpu, p, async () => {
            const ta = tensor(a, batch > 1 ? [batch, ...shapeA] : shapeA);
            const tb = tensor(b, batch > 1 ? [batch, ...shapeB] : shapeB);
            const c = matmul(ta, tb, { transA, transB });
            const v = Float32Array.from(await c.data());
            for (const t of [ta, tb, c]) t.dispose();
            return v;
          });
        const dims = [batch, m, n, k];
        const want16 = reference(a, b, dims, transA, transB, Math.f16round);
        const want32 = reference(a, b, dims, transA, transB, (x) => x);
        const got16 = await run("float16"), got32 = await run("float32");
        const err = (g: Float32Array, w: Float64Array) =>
          g.reduce((e, x, i) => Math.max(e, Math.abs(x - w[i])), 0);
        const where = `${variant} ${dims} transA ${transA} transB ${transB}`;
        // f32 sums of exact f16 products: within f32 rounding of the f16 operands' product
        const bound = 4 * k * 2 ** -24 * 2.25;
        assert.ok(err(got16, want16) <= bound, `${where}: ${err(got16, want16)} > ${bound}`);
        assert.ok(err(got32, want32) <= bound, `${where} f32: ${err(got32, want32)}`);
        // and the rounding is real: f16 operands move the result far more than f32 sums do
        assert.ok(err(got16, want32) > 50 * err(got16, want16), `${where}: f16 rounding missing`);
      }
    }
  }
  gpu.tuning.variant = "auto";
});

const CFG: MiniMindConfig = config("minimind2-small", {
  hiddenSize: 64,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: 96,
  intermediateSize: 176,
});
const B = 4, T = 16;

/** An LM batch of `ids` on the default backend (the labels are the ids, as pretraining's). */
function batchOf(ids: Int32Array, shape: [number, number]) {
  const x = tensor(ids, shape, "i32");
  return { ids: x, labels: x };
}

Deno.test("training in float16 with loss scaling on WebGPU follows float32's losses", async () => {
  const batches = [0, 1, 2, 3].map((s) =>
    Int32Array.from(uniformArray(key(50 + s), B * T), (u) => Math.floor(u * CFG.vocabSize))
  );
  const losses = async (precision: "float32" | "float16") =>
    await on(gpu, precision, async () => {
      const step = makeTrainStep(lmLoss(CFG), adamw({ lr: 3e-3 }), {
        gradClip: 1,
        hasAux: true,
        lossScale: precision === "float16" ? {} : null,
      });
      let s = step.init(init(CFG, key(9)) as unknown as Tree);
      const out: number[] = [], scales: number[] = [];
      for (let i = 0; i < 12; i++) {
        const x = batchOf(batches[i % 4], [B, T]);
        const [next, o] = step(s, x);
        x.ids.dispose();
        s = next;
        out.push(await o.loss.item());
        if (o.scalars) scales.push(await o.scalars.loss_scale.item());
        disposeOutput(o);
      }
      disposeState(s);
      return { out, scales };
    });
  const f32 = await losses("float32"), f16 = await losses("float16");
  assert.ok(f32.out[11] < f32.out[0] - 0.1, `float32 learns: ${f32.out}`);
  for (let i = 0; i < 12; i++) {
    const d = Math.abs(f16.out[i] - f32.out[i]);
    assert.ok(d < 2e-3 * f32.out[i], `step ${i}: float16 ${f16.out[i]} float32 ${f32.out[i]}`);
  }
  // the first scale is GradScaler's 2^16 and nothing overflowed on this model
  assert.deepEqual(f16.scales, Array(12).fill(65536));
  assert.deepEqual(f32.scales, []);
});

Deno.test("loss scaling keeps a demo-sized batch's f16 gradients out of the subnormals", async () => {
  // vocab 6,400 and B·T = 2,048 (the demo's): most logit gradients are p/(B·T) ≈ 7.6e-8, a
  // subnormal with a bit or two in f16, unless the loss is scaled first
  const cfg = config("minimind2-small", {
    hiddenSize: 64,
    numHiddenLayers: 1,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
  });
  const [b, t] = [16, 128];
  const ids = Int32Array.from(uniformArray(key(2), b * t), (u) => 3 + Math.floor(u * 6397));
  const grads = (precision: "float32" | "float16", scale: number) =>
    on(gpu, precision, async () => {
      // the train step's own gradients of scale · loss, unscaled here
      const step = makeTrainStep(lmLoss(cfg), adamw({ lr: 1e-3 }), {
        hasAux: true,
        lossScale: { initScale: scale },
      });
      const params = init(cfg, key(1)) as unknown as Tree;
      const s = tensor([scale], []);
      const x = batchOf(ids, [b, t]);
      const { loss: l, aux, grads: g } = step.gradients(params, x, s);
      const out = await Promise.all(
        leaves(g).map(async (x) => Float64Array.from(await (x as Tensor).data(), (v) => v / scale)),
      );
      for (const y of [...leaves(g), ...leaves(params), l, aux!, s, x.ids]) (y as Tensor).dispose();
      return out;
    });
  const f32 = await grads("float32", 1);
  // the largest relative L2 error of any gradient tensor against float32
  const worst = (g: Float64Array[]) =>
    Math.max(...g.map((x, i) => {
      let n = 0, d = 0;
      x.forEach((v, j) => (n += (v - f32[i][j]) ** 2, d += f32[i][j] ** 2));
      return Math.sqrt(n / d);
    }));
  const plain = worst(await grads("float16", 1)), scaled = worst(await grads("float16", 2 ** 16));
  // measured: 1.7e-2 unscaled, 8.2e-4 scaled
  assert.ok(scaled < 2e-3, `scaled: ${scaled}`);
  assert.ok(plain > 5 * scaled, `unscaled ${plain} against scaled ${scaled}`);
});

Deno.test("--dtype float16 means f16 matmuls and loss scaling on WebGPU, float32 on the CPU", () => {
  const prev = defaultBackend();
  try {
    useBackend(gpu);
    assert.match(applyDtype("float16", "webgpu"), /^Precision: float16 matmuls/);
    assert.equal(gpu.matmulPrecision, "float16");
    assert.deepEqual(lossScaling(), {});
    assert.match(applyDtype("bfloat16", "webgpu"), /^Precision: float32 .*use float16 on WebGPU/);
    assert.equal(gpu.matmulPrecision, "float32");
    assert.equal(lossScaling(), null);
    useBackend(cpuBackend);
    assert.match(applyDtype("float16", "cpu"), /^Precision: float32 \(--dtype float16 unavailable/);
    assert.equal(lossScaling(), null);
  } finally {
    gpu.setMatmulPrecision("float32");
    useBackend(prev);
  }
});
