/**
 * A whole tiny-MiniMind train step on WebGPU: equal to the CPU step to float32 rounding, a
 * handful of submits and at most one readback per step, and pool memory flat over 50 steps.
 * Runs on the software adapter in CI (fails with a message when no adapter exists).
 */
import assert from "node:assert/strict";
import { forward, init, lossFromLogits } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { key, split, uniformArray } from "../nn/random.ts";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import type { Tree } from "../nn/tree.ts";
import { leaves, mapTree } from "../nn/tree.ts";
import { scope } from "../nn/scope.ts";
import type { Backend } from "../nn/backend/backend.ts";
import { cpuBackend } from "../nn/backend/cpu/mod.ts";
import { defaultBackend, useBackend } from "../nn/backend/select.ts";
import { adamw } from "../train/optim.ts";
import { disposeState, makeTrainStep } from "../train/step.ts";
import type { TrainState } from "../train/step.ts";
import { compare } from "./_util.ts";
import { openWebGpuForTests } from "./_webgpu.ts";

const gpu = await openWebGpuForTests();

const CFG: MiniMindConfig = config("minimind2-small", {
  hiddenSize: 64,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: 96,
  intermediateSize: 176,
});
const B = 2, T = 12;

interface Batch {
  ids: Int32Array;
  labels: Int32Array;
}

function batch(seed: number): Batch {
  const u = uniformArray(key(seed), B * T);
  const ids = Int32Array.from(u, (x) => Math.floor(x * CFG.vocabSize));
  const labels = ids.slice();
  labels[3] = -100; // an ignored target
  return { ids, labels };
}

function lossFn(params: Tree, b: Batch): Tensor {
  const be = leaves(params)[0] as Tensor;
  const ids = tensor(b.ids, [B, T], "i32", { backend: be.backend });
  const labels = tensor(b.labels, [B, T], "i32", { backend: be.backend });
  const { logits } = forward(CFG, params as ReturnType<typeof init>, ids, { train: true });
  return lossFromLogits(logits, labels);
}

/** Runs `fn` with `b` as the default backend (creation inside the model follows it). */
function on<T>(b: Backend, fn: () => T): T {
  const prev = defaultBackend();
  useBackend(b);
  try {
    return fn();
  } finally {
    useBackend(prev);
  }
}

async function copyTo(tree: Tree, b: Backend): Promise<Tree> {
  const ls = leaves(tree);
  const vals = await Promise.all(ls.map((t) => (t as Tensor).data()));
  let i = 0;
  return mapTree(tree, (t) => {
    const x = t as Tensor;
    return tensor(vals[i++], x.shape, x.dtype, { backend: b });
  });
}

async function flatValues(s: TrainState): Promise<Float32Array[]> {
  return await Promise.all(
    leaves(s.params).map(async (t) => Float32Array.from(await (t as Tensor).data())),
  );
}

Deno.test("a tiny MiniMind train step on WebGPU equals the CPU step to f32 rounding", async () => {
  const params = on(cpuBackend, () => init(CFG, split(key(1), 2)[0]));
  const gParams = await copyTo(params, gpu);
  const step = makeTrainStep(lossFn, adamw({ lr: 1e-3 }), { gradClip: 1 });
  let cs = step.init(params), gs = step.init(gParams);
  for (let k = 0; k < 3; k++) {
    const b = batch(100 + k);
    const [nc, oc] = on(cpuBackend, () => step(cs, b));
    const [ng, og] = on(gpu, () => step(gs, b));
    cs = nc;
    gs = ng;
    const lc = await oc.loss.item(), lg = await og.loss.item();
    assert.ok(Math.abs(lc - lg) <= 1e-4 * Math.abs(lc), `step ${k}: loss cpu ${lc} webgpu ${lg}`);
    for (const o of [oc, og]) {
      o.loss.dispose();
      o.gradNorm?.dispose();
    }
  }
  const a = await flatValues(cs), g = await flatValues(gs);
  a.forEach((x, i) => {
    const r = compare(g[i], x, { atol: 2e-5, rtol: 1e-3, label: `param leaf ${i}` });
    assert.ok(r.ok, r.message);
  });
  disposeState(cs);
  disposeState(gs);
});

Deno.test("WebGPU train steps: few submits, one readback, flat memory over 50 steps", async () => {
  const params = on(gpu, () => init(CFG, key(2)));
  const step = makeTrainStep(lossFn, adamw({ lr: 1e-3 }), { gradClip: 1 });
  let s = step.init(params);
  const b = batch(7);
  const inUse: number[] = [], allocated: number[] = [];
  let pending: Promise<number> | null = null;
  let last = 0;
  const perStep: { submits: number; syncs: number; dispatches: number }[] = [];
  for (let k = 0; k < 50; k++) {
    const c0 = { ...gpu.counters };
    const [n, out] = on(gpu, () => scope(() => step(s, b)));
    s = n;
    // read step k−1's loss after step k is encoded: the sync overlaps the GPU's work
    if (pending) last = await pending;
    const lossT = out.loss;
    pending = lossT.item().then((v) => (lossT.dispose(), v)); // sync point
    out.gradNorm?.dispose();
    perStep.push({
      submits: gpu.counters.submits - c0.submits,
      syncs: gpu.counters.syncs - c0.syncs,
      dispatches: gpu.counters.dispatches - c0.dispatches,
    });
    inUse.push(gpu.counters.bytesInUse);
    allocated.push(gpu.counters.bytesAllocated);
  }
  last = await pending!;
  assert.ok(Number.isFinite(last), `final loss ${last}`);
  const steady = perStep.slice(5);
  const maxSubmits = Math.max(...steady.map((p) => p.submits));
  const maxSyncs = Math.max(...steady.map((p) => p.syncs));
  console.log(
    `per step: ${steady[0].dispatches} dispatches, ${maxSubmits} submits, ${maxSyncs} syncs; ` +
      `bytes in use ${inUse.at(-1)}, allocated ${allocated.at(-1)}`,
  );
  assert.ok(maxSubmits <= 4, `a step issued ${maxSubmits} submits`);
  assert.ok(maxSyncs <= 1, `a step issued ${maxSyncs} readbacks`);
  // live bytes equal from step to step; no new device memory after the warm-up steps
  assert.equal(inUse.at(-1), inUse[5], `bytes in use grew: ${inUse[5]} → ${inUse.at(-1)}`);
  assert.equal(
    allocated.at(-1),
    allocated[5],
    `allocated grew: ${allocated[5]} → ${allocated.at(-1)}`,
  );
  disposeState(s);
});

Deno.test("step.warmup() compiles a step's pipelines up front and leaves the state untouched", async () => {
  // a config no other test uses, so its kernels are not compiled yet
  const cfg = config("minimind2-small", {
    hiddenSize: 48,
    numHiddenLayers: 1,
    numAttentionHeads: 3,
    numKeyValueHeads: 1,
    vocabSize: 80,
    intermediateSize: 112,
  });
  const ids = Int32Array.from({ length: 2 * 7 }, (_, i) => (i * 13) % 80);
  const loss = (params: Tree, b: Int32Array): Tensor => {
    const x = tensor(b, [2, 7], "i32", { backend: gpu });
    return lossFromLogits(
      forward(cfg, params as ReturnType<typeof init>, x, { train: true }).logits,
      x,
    );
  };
  const step = makeTrainStep(loss, adamw({ lr: 1e-3 }), { gradClip: 1 });
  let s = step.init(on(gpu, () => init(cfg, key(5))));
  const before = await flatValues(s);
  const prepared = await on(gpu, () => step.warmup(s, ids));
  assert.ok(prepared > 0, "warm-up compiled no pipeline");
  assert.deepEqual(await flatValues(s), before, "warm-up changed the parameters");
  const compiled = gpu.stats.pipelines;
  const [n, out] = on(gpu, () => scope(() => step(s, ids)));
  s = n;
  assert.ok(Number.isFinite(await out.loss.item()));
  out.loss.dispose();
  out.gradNorm?.dispose();
  assert.equal(gpu.stats.pipelines, compiled, "the first real step still compiled pipelines");
  disposeState(s);
});
