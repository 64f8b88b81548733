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
import { adamw } from "./optim.ts";
import { disposeState, makeTrainStep } from "./step.ts";
import type { TrainState } from "./step.ts";

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
