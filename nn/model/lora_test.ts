import assert from "node:assert/strict";
import {
  config,
  forward,
  init,
  lora,
  lossFromLogits,
  random,
  scope,
  tensor,
  tree,
  valueAndGrad,
} from "../../mod.ts";
import { cpuBackend } from "../backend/cpu/mod.ts";
import type { MiniMindParams, Tensor } from "../../mod.ts";
import { adamw } from "../../train/optim.ts";
import { makeTrainStep } from "../../train/step.ts";
import { normalArray } from "../random.ts";

const cfg = config("minimind2-small", {
  hiddenSize: 32,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: 50,
});
const ids = tensor([[1, 5, 9, 3, 7, 2], [4, 4, 8, 1, 0, 6]], [2, 6], "i32");

/** Adapters with a random (non-zero) B so they change the output. */
function randomAdapters(seed: number, rank = 3): lora.LoraParams {
  const ad = lora.init(cfg, random.key(seed), { rank });
  const flat = tree.flatten(ad);
  let i = 0;
  for (const [k, t] of Object.entries(flat)) {
    if (!k.endsWith(".B.weight")) continue;
    const z = normalArray(random.key(seed * 100 + i++), t.size);
    flat[k] = tensor(Float32Array.from(z, (v) => 0.05 * v), t.shape, "f32");
  }
  return tree.unflatten(flat);
}

async function maxDiff(a: Tensor, b: Tensor): Promise<number> {
  const x = await a.data(), y = await b.data();
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - y[i]));
  return m;
}

Deno.test("lora.init: MiniMind's keys and shapes, square Linears by default, B zero", async () => {
  const ad = lora.init(cfg, random.key(0), { rank: 4 });
  const flat = tree.flatten(ad);
  assert.deepEqual(Object.keys(flat), [
    "model.layers.0.self_attn.q_proj.lora.A.weight",
    "model.layers.0.self_attn.q_proj.lora.B.weight",
    "model.layers.0.self_attn.o_proj.lora.A.weight",
    "model.layers.0.self_attn.o_proj.lora.B.weight",
    "model.layers.1.self_attn.q_proj.lora.A.weight",
    "model.layers.1.self_attn.q_proj.lora.B.weight",
    "model.layers.1.self_attn.o_proj.lora.A.weight",
    "model.layers.1.self_attn.o_proj.lora.B.weight",
  ]);
  assert.deepEqual(flat["model.layers.0.self_attn.q_proj.lora.A.weight"].shape, [4, 32]);
  assert.deepEqual(flat["model.layers.0.self_attn.q_proj.lora.B.weight"].shape, [32, 4]);
  assert(Math.max(...await flat["model.layers.0.self_attn.o_proj.lora.B.weight"].data()) === 0);
  const a = Array.from(await flat["model.layers.0.self_attn.q_proj.lora.A.weight"].data());
  const sd = Math.sqrt(a.reduce((s, v) => s + v * v, 0) / a.length);
  assert(sd > 0.015 && sd < 0.025, `A std ${sd}`);
  assert.equal(lora.count(ad), 4 * (4 * 32 + 32 * 4));
  // explicit targets: k_proj is 32 → 16 here
  const k = tree.flatten(lora.init(cfg, random.key(0), { rank: 2, targets: ["k_proj"] }));
  assert.deepEqual(k["model.layers.1.self_attn.k_proj.lora.B.weight"].shape, [16, 2]);
  assert.throws(() => lora.init(cfg, random.key(0), { rank: 2, targets: ["nope"] }), /no Linear/);
});

Deno.test("lora: fresh adapters leave the output unchanged; merge then forward = unmerged", async () => {
  const params = init(cfg, random.key(1));
  const base = forward(cfg, params, ids).logits;
  const fresh = forward(cfg, params, ids, { lora: lora.init(cfg, random.key(2), { rank: 4 }) });
  assert.equal(await maxDiff(fresh.logits, base), 0);
  const ad = randomAdapters(3);
  const unmerged = forward(cfg, params, ids, { lora: ad }).logits;
  assert(await maxDiff(unmerged, base) > 1e-3, "random adapters change the logits");
  const merged = forward(cfg, lora.merge(params, ad), ids).logits;
  const d = await maxDiff(merged, unmerged);
  assert(d < 1e-5, `merged vs unmerged ${d}`);
  // merge is pure: the base weights are untouched
  assert.equal(await maxDiff(forward(cfg, params, ids).logits, base), 0);
});

Deno.test("lora.save/load: reloaded adapters give identical logits; wrong shapes are named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const params = init(cfg, random.key(1));
    const ad = randomAdapters(4);
    const path = `${dir}/lora_test_32.safetensors`;
    await lora.save(path, ad);
    const back = await lora.load(path, params);
    assert.deepEqual(Object.keys(tree.flatten(back)).sort(), Object.keys(tree.flatten(ad)).sort());
    const a = await forward(cfg, params, ids, { lora: ad }).logits.data();
    const b = await forward(cfg, params, ids, { lora: back }).logits.data();
    assert.deepEqual(b, a);
    // another model shape: the first mismatching key and both shapes
    const wide = config("minimind2-small", {
      hiddenSize: 48,
      numHiddenLayers: 2,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      vocabSize: 50,
    });
    await assert.rejects(
      () => lora.load(path, init(wide, random.key(0))),
      /model\.layers\.0\.self_attn\.q_proj\.lora\.A\.weight has shape \[3, 32\] but this model needs \[3, 48\]/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("lora training is a param split: grads and AdamW moments for the adapters only", () => {
  scope(() => {
    const params = init(cfg, random.key(1));
    const applied = lora.apply(params, randomAdapters(5, 2));
    const [adapters, base] = lora.split(applied);
    assert.equal(Object.keys(tree.flatten(base)).length, Object.keys(tree.flatten(params)).length);
    const labels = ids;
    const loss = (ad: unknown, b: { ids: Tensor }) =>
      lossFromLogits(forward(cfg, base, b.ids, { lora: ad as lora.LoraParams }).logits, labels);
    const step = makeTrainStep(loss, adamw({ lr: 1e-2 }));
    let state = step.init(adapters);
    const before = tree.flatten(base as unknown as MiniMindParams);
    const baseCopy = Object.fromEntries(
      Object.entries(before).map(([k, t]) => [k, Array.from(t.dataSync())]),
    );
    for (let i = 0; i < 2; i++) [state] = step(state, { ids });
    const n = lora.count(adapters);
    const moments = tree.tensors(state.optState);
    assert.equal(moments.length, 2 * Object.keys(tree.flatten(adapters)).length);
    assert.equal(moments.reduce((s, t) => s + t.size, 0), 2 * n, "mu + nu = 2 × adapter params");
    assert.equal(tree.tensors(state.params).reduce((s, t) => s + t.size, 0), n);
    // the frozen base is never updated
    for (const [k, t] of Object.entries(before)) {
      assert.deepEqual(Array.from(t.dataSync()), baseCopy[k], `${k} changed`);
    }
  });
});

Deno.test("a frozen weight costs no gradient gemm: the matmul VJP skips inputs no tape traces", () => {
  scope(() => {
    const params = init(cfg, random.key(1));
    let gemms = 0;
    const count = (f: () => void) => {
      gemms = 0;
      const run = cpuBackend.run;
      // deno-lint-ignore no-explicit-any
      (cpuBackend as any).run = (op: { name: string }, ...rest: unknown[]) => {
        if (op.name === "matmul") gemms++;
        // deno-lint-ignore no-explicit-any
        return (run as any).call(cpuBackend, op, ...rest);
      };
      try {
        f();
      } finally {
        // deno-lint-ignore no-explicit-any
        (cpuBackend as any).run = run;
      }
      return gemms;
    };
    const fwd = count(() => forward(cfg, params, ids));
    const full = count(() =>
      valueAndGrad((p: MiniMindParams) => lossFromLogits(forward(cfg, p, ids).logits, ids))(params)
    );
    const ad = lora.init(cfg, random.key(2), { rank: 2 });
    const fwdLora = count(() => forward(cfg, params, ids, { lora: ad }));
    const loraGrad = count(() =>
      valueAndGrad((a: lora.LoraParams) =>
        lossFromLogits(forward(cfg, params, ids, { lora: a }).logits, ids)
      )(ad)
    );
    // full training: every forward gemm gets dx and dW gemms
    assert.equal(fwd, 7 * 2 + 1);
    assert.equal(full, 3 * fwd);
    // LoRA, 2 layers: forward 11 per layer (q, k, v, o, 3 MLP, A and B of q and o) + lm_head = 23;
    // backward: layer 0's q/k/v see only frozen inputs (not even recorded), its A gemm needs dA,
    // B both, o/gate/up/down dx only → 11; layer 1 → 15 (q/k/v dx); lm_head dx → 1. No dW of a
    // frozen weight anywhere: 23 + 27 = 50.
    assert.equal(fwdLora, 23);
    assert.equal(loraGrad, 50);
  });
});
