import assert from "node:assert/strict";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import type { Tree } from "../nn/tree.ts";
import { key, normalArray, split } from "../nn/random.ts";
import { matmul } from "../nn/ops/matmul.ts";
import { tanh } from "../nn/ops/unary.ts";
import { crossEntropy } from "../nn/ops/cross_entropy.ts";
import { scope } from "../nn/scope.ts";
import { defaultBackend } from "../nn/backend/select.ts";
import { adamw, type AdamwState, clipGrads } from "./optim.ts";
import { valueAndGrad } from "../nn/autodiff.ts";
import { disposeOutput, disposeState, makeTrainStep } from "./step.ts";
import type { TrainState } from "./step.ts";
import { loadResume, saveResume } from "./checkpoint.ts";
import { join } from "node:path";

interface Batch {
  x: Float32Array;
  y: Int32Array;
}

const ks = split(key(7), 4);
const W1 = Float32Array.from(normalArray(ks[0], 4 * 8), (v) => v * 0.5);
const W2 = Float32Array.from(normalArray(ks[1], 8 * 3), (v) => v * 0.5);
const X = Float32Array.from(normalArray(ks[2], 8 * 4));
const Y = Int32Array.from([0, 1, 2, 1, 0, 2, 2, 1]);

function params(): Tree {
  return { w1: tensor(W1, [4, 8]), w2: tensor(W2, [8, 3]) };
}

function loss(p: Tree, b: Batch): Tensor {
  const q = p as { w1: Tensor; w2: Tensor };
  const n = b.y.length;
  const h = tanh(matmul(tensor(b.x, [n, 4]), q.w1)); // (n, 8)
  return crossEntropy(matmul(h, q.w2), tensor(b.y, [n], "i32")); // mean over n
}

function rows(from: number, to: number): Batch {
  return { x: X.slice(from * 4, to * 4), y: Y.slice(from, to) };
}

async function values(s: TrainState): Promise<number[]> {
  const q = s.params as { w1: Tensor; w2: Tensor };
  return [...await q.w1.data(), ...await q.w2.data()];
}

Deno.test("makeTrainStep() with accumulation 2 on half batches equals one full batch", async () => {
  const full = makeTrainStep(loss, adamw({ lr: 0.05 }), { accumulationSteps: 1, gradClip: 1 });
  const half = makeTrainStep(loss, adamw({ lr: 0.05 }), { accumulationSteps: 2, gradClip: 1 });
  let a = full.init(params()), b = half.init(params());
  for (let s = 0; s < 3; s++) {
    const [na, oa] = full(a, rows(0, 8));
    a = na;
    oa.loss.dispose();
    oa.gradNorm?.dispose();
    for (const [lo, hi] of [[0, 4], [4, 8]]) {
      const [nb, ob] = half(b, rows(lo, hi));
      b = nb;
      assert.equal(ob.updated, hi === 8);
      ob.loss.dispose();
      ob.gradNorm?.dispose();
    }
  }
  assert.equal(a.updates, 3);
  assert.equal(b.updates, 3);
  const va = await values(a), vb = await values(b);
  for (let i = 0; i < va.length; i++) assert.ok(Math.abs(va[i] - vb[i]) < 2e-6, `${i}`);
  disposeState(a);
  disposeState(b);
});

Deno.test("clipping fused into adamw's kernel equals clipping the gradients first", async () => {
  // gradClip 0.05 < the gradient norm here: the coefficient really scales
  const fused = makeTrainStep(loss, adamw({ lr: 0.05 }), { gradClip: 0.05 });
  const plain = makeTrainStep(loss, { ...adamw({ lr: 0.05 }), scalesGrads: false }, {
    gradClip: 0.05,
  });
  let a = fused.init(params()), b = plain.init(params());
  for (let s = 0; s < 3; s++) {
    const [na, oa] = fused(a, rows(0, 8));
    const [nb, ob] = plain(b, rows(0, 8));
    [a, b] = [na, nb];
    const [ga, gb] = [await oa.gradNorm!.item(), await ob.gradNorm!.item()];
    assert.ok(ga > 0.05 && Math.abs(ga - gb) < 1e-6 * ga, `norms ${ga} ${gb}`);
    for (const t of [oa.loss, ob.loss, oa.gradNorm!, ob.gradNorm!]) t.dispose();
  }
  const va = await values(a), vb = await values(b);
  for (let i = 0; i < va.length; i++) assert.ok(Math.abs(va[i] - vb[i]) < 1e-7, `${i}`);
  assert.notDeepEqual(va, [...W1, ...W2]);
  disposeState(a);
  disposeState(b);
});

Deno.test("makeTrainStep() reduces the loss, reports the grad norm, flushes partial groups", async () => {
  const step = makeTrainStep(loss, adamw({ lr: 0.05 }), { accumulationSteps: 3 });
  let s = step.init(params());
  const losses: number[] = [];
  for (let i = 0; i < 30; i++) {
    const [n, out] = step(s, rows(0, 8));
    s = n;
    losses.push(await out.loss.item());
    assert.equal(out.gradNorm !== null, out.updated);
    if (out.gradNorm) assert.ok((await out.gradNorm.item()) > 0);
    out.loss.dispose();
    out.gradNorm?.dispose();
  }
  assert.ok(losses[29] < losses[0] * 0.8, `${losses[0]} → ${losses[29]}`);
  assert.equal(s.updates, 10);
  const [n2, out2] = step(s, rows(0, 8));
  out2.loss.dispose();
  assert.equal(n2.micro, 1);
  const [n3, norm] = step.flush(n2);
  assert.equal(n3.updates, 11);
  assert.equal(n3.micro, 0);
  assert.equal(n3.grads, null);
  norm?.dispose();
  const [n4, none] = step.flush(n3);
  assert.equal(n4, n3);
  assert.equal(none, null);
  disposeState(n4);
});

Deno.test("a train step keeps memory flat from step to step", () => {
  const backend = defaultBackend();
  const step = makeTrainStep(loss, adamw({ lr: 0.01 }), { accumulationSteps: 2 });
  let s = step.init(params());
  const used: number[] = [];
  for (let i = 0; i < 12; i++) {
    const [n, out] = scope(() => step(s, rows(0, 8)));
    s = n;
    out.loss.dispose();
    out.gradNorm?.dispose();
    used.push(backend.counters.bytesInUse);
  }
  // after the first group, even and odd steps each hold the same amount
  for (let i = 4; i < 12; i++) assert.equal(used[i], used[i - 2], `step ${i}: ${used}`);
  const before = backend.counters.bytesInUse;
  disposeState(s);
  assert.ok(backend.counters.bytesInUse < before);
});

Deno.test("makeTrainStep() rejects bad options", () => {
  assert.throws(
    () => makeTrainStep(loss, adamw(), { accumulationSteps: 0 }),
    /accumulationSteps 0/,
  );
  assert.throws(() => makeTrainStep(loss, adamw(), { gradClip: -1 }), /gradClip -1/);
});

Deno.test("a MiniMind train step (forward, backward, clip, AdamW) keeps memory flat", async () => {
  const { init } = await import("../nn/model/minimind.ts");
  const { config } = await import("../nn/model/minimind_config.ts");
  const { lmLoss } = await import("./lm.ts");
  const cfg = config("minimind2-small", {
    hiddenSize: 32,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    vocabSize: 128,
  });
  const step = makeTrainStep(lmLoss(cfg), adamw({ lr: 1e-3 }), { hasAux: true });
  let s = step.init(init(cfg, key(0)) as unknown as Tree);
  const ids = tensor(Int32Array.from({ length: 4 * 16 }, (_, i) => (i * 7) % 128), [4, 16], "i32");
  const used: number[] = [];
  for (let i = 0; i < 8; i++) {
    const [n, out] = scope(() => step(s, { ids, labels: ids }));
    s = n;
    out.loss.dispose();
    out.aux?.dispose();
    out.gradNorm?.dispose();
    used.push(defaultBackend().counters.bytesInUse);
  }
  for (let i = 3; i < 8; i++) assert.equal(used[i], used[2], `step ${i}: ${used}`);
  disposeState(s);
  ids.dispose();
});

Deno.test("the train step updates params and moments in place on the CPU, with the same values", async () => {
  const opt = adamw({ lr: 0.05 });
  const step = makeTrainStep(loss, opt, { gradClip: 0.05 });
  let s = step.init(params());
  const w1 = (t: TrainState) => (t.params as { w1: Tensor }).w1;
  for (let i = 0; i < 2; i++) {
    // the functional update of the same state, for reference
    const ref = scope(() => {
      const [, g] = valueAndGrad(loss)(s.params, rows(0, 8));
      const [clipped] = clipGrads(g, 0.05);
      const [p] = opt.update(clipped, s.optState as AdamwState, s.params);
      return (p as { w1: Tensor }).w1.dataSync();
    });
    const before = w1(s).storage;
    const [n, out] = step(s, rows(0, 8));
    out.loss.dispose();
    out.gradNorm?.dispose();
    assert.equal(w1(n).storage, before, "w1 was written into its old buffer");
    assert.deepEqual(await w1(n).data(), ref);
    s = n;
  }
  disposeState(s);
});

Deno.test("loss scaling by powers of two trains bit for bit as without it, and grows the scale", async () => {
  // scaling by 2^k commutes with every f32 rounding: the scaled run must equal the plain one
  const opts = { accumulationSteps: 2, gradClip: 0.05 };
  const plain = makeTrainStep(loss, adamw({ lr: 0.05 }), opts);
  const scaled = makeTrainStep(loss, adamw({ lr: 0.05 }), {
    ...opts,
    lossScale: { initScale: 1024, growthInterval: 2 },
  });
  let a = plain.init(params()), b = scaled.init(params());
  const seen: number[] = [];
  for (let s = 0; s < 12; s++) {
    const batch = rows(s % 2 === 0 ? 0 : 4, s % 2 === 0 ? 4 : 8);
    const [na, oa] = plain(a, batch);
    const [nb, ob] = scaled(b, batch);
    [a, b] = [na, nb];
    assert.equal(await oa.loss.item(), await ob.loss.item(), `loss ${s}`);
    seen.push(await ob.scalars!.loss_scale.item());
    if (oa.updated) assert.equal(await oa.gradNorm!.item(), await ob.gradNorm!.item());
    disposeOutput(oa);
    disposeOutput(ob);
  }
  assert.deepEqual(await values(a), await values(b));
  const mu = (s: TrainState) => (s.optState as AdamwState).mu as { w1: Tensor };
  assert.deepEqual(await mu(a).w1.data(), await mu(b).w1.data());
  // 6 updates, the scale doubling after every 2 finite ones; each micro-batch logs its scale
  assert.deepEqual(seen, [1024, 1024, 1024, 1024, 2048, 2048, 2048, 2048, 4096, 4096, 4096, 4096]);
  assert.equal(await b.lossScale!.scale.item(), 8192);
  assert.equal(a.lossScale, null);
  disposeState(a);
  disposeState(b);
});

Deno.test("an overflowing loss-scaled gradient skips the update and halves the scale", async () => {
  // the scale that makes ‖scale · g‖² just overflow f32 on the first step, not on the second
  const [[, g]] = [valueAndGrad(loss)(params(), rows(0, 8))];
  const norm = Math.hypot(...(await Promise.all(
    Object.values(g as Record<string, Tensor>)
      .map(async (t) => [...await t.data()]),
  )).flat());
  const initScale = 2 ** (64 - Math.floor(Math.log2(norm)));
  const step = makeTrainStep(loss, adamw({ lr: 0.05 }), {
    gradClip: 1,
    lossScale: { initScale, growthInterval: 1000 },
  });
  let s = step.init(params());
  const [s1, o1] = step(s, rows(0, 8));
  s = s1;
  assert.equal(await o1.gradNorm!.item(), Infinity, "the overflow shows in the norm");
  assert.equal(s.updates, 1);
  assert.deepEqual(await values(s), [...W1, ...W2], "params unchanged");
  const st = s.optState as AdamwState;
  assert.ok((await (st.mu as { w1: Tensor }).w1.data()).every((x) => x === 0), "moments unchanged");
  assert.equal(await s.lossScale!.scale.item(), initScale / 2);
  assert.equal(await s.lossScale!.good.item(), 0);
  disposeOutput(o1);
  assert.equal(await s.lossScale!.steps.item(), 0, "the skipped update does not count");
  const [s2, o2] = step(s, rows(0, 8));
  s = s2;
  const n2 = await o2.gradNorm!.item();
  assert.ok(Math.abs(n2 - norm) < 1e-5 * norm, `unscaled norm ${n2} vs ${norm}`);
  assert.equal(await s.lossScale!.scale.item(), initScale / 2);
  assert.equal(await s.lossScale!.good.item(), 1);
  assert.equal(await s.lossScale!.steps.item(), 1);
  disposeOutput(o2);
  // the skip left no trace: this update is bit for bit a plain run's first (AdamW's t = 1)
  const plain = makeTrainStep(loss, adamw({ lr: 0.05 }), { gradClip: 1 });
  const [p1, op] = plain(plain.init(params()), rows(0, 8));
  assert.deepEqual(await values(s), await values(p1));
  disposeOutput(op);
  disposeState(p1);
  // the scale is part of the checkpoint: a resumed run goes on with it
  const dir = await Deno.makeTempDir();
  const path = join(dir, "resume.safetensors");
  await saveResume(path, s, {
    epoch: 0,
    step: 2,
    epochs: 1,
    iters: 2,
    seed: 1,
    tokens: 0,
    elapsedS: 0,
    worldSize: 1,
    extra: {},
  });
  const { state: r } = await loadResume(path);
  assert.equal(await r.lossScale!.scale.item(), initScale / 2);
  assert.equal(await r.lossScale!.good.item(), 1);
  assert.equal(await r.lossScale!.steps.item(), 1);
  await Deno.remove(dir, { recursive: true });
  for (const x of Object.values(g as Record<string, Tensor>)) x.dispose();
  disposeState(r);
  disposeState(s);
});

Deno.test("loss scaling needs an optimizer that scales inside its update", () => {
  assert.throws(
    () => makeTrainStep(loss, { ...adamw({ lr: 0.05 }), scalesGrads: false }, { lossScale: {} }),
    /Cannot use loss scaling with this optimizer/,
  );
  assert.throws(
    () => makeTrainStep(loss, adamw({ lr: 0.05 }), { lossScale: { initScale: Infinity } }),
    /Cannot use loss scale Infinity/,
  );
});
