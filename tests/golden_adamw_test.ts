/**
 * The `v2_adamw` golden: three optimizer steps exactly as MiniMind V2's train_pretrain.py runs
 * them on CPU (get_lr(s, 10, 5e-4), loss + aux, clip_grad_norm_(1.0), torch AdamW), starting from
 * v2_dense's params. Losses must match within 1e-5, final params within 1e-4 (the README's
 * guidance: Adam is ill-conditioned where gradients are ~0).
 */
import assert from "node:assert/strict";
import { forward, lossFromLogits, paramsFromFlat } from "../nn/model/minimind.ts";
import { config, configFromHF } from "../nn/model/minimind_config.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import { loadSafetensors } from "../convert/safetensors.ts";
import { flatten } from "../nn/tree.ts";
import type { Tree } from "../nn/tree.ts";
import type { Tensor } from "../nn/tensor.ts";
import { add } from "../nn/ops/binary.ts";
import { adamw } from "../train/optim.ts";
import { getLr } from "../train/schedule.ts";
import { makeTrainStep } from "../train/step.ts";
import { fixture } from "./_util.ts";

Deno.test("v2_adamw golden: 3 MiniMind pretrain steps match PyTorch (losses, grad norms, params)", async () => {
  const meta = JSON.parse(await Deno.readTextFile(fixture("golden/v2_adamw.json")));
  const dense = await loadSafetensors(fixture("golden/v2_dense.safetensors"));
  const gold = await loadSafetensors(fixture("golden/v2_adamw.safetensors"));
  const cfg = configFromHF(meta.config, { generation: "minimind2" });
  assert.equal(cfg.hiddenSize, config("minimind2-small", { hiddenSize: 64 }).hiddenSize);
  const flat: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(dense)) if (k.startsWith("param.")) flat[k.slice(6)] = v;
  const params = paramsFromFlat(cfg, flat);

  type Batch = { ids: Tensor; labels: Tensor };
  const loss = (p: Tree, b: Batch): Tensor => {
    const { logits, auxLoss } = forward(cfg, p as unknown as MiniMindParams, b.ids, {
      train: true,
    });
    return add(lossFromLogits(logits, b.labels), auxLoss);
  };
  const step = makeTrainStep(loss, adamw(), { accumulationSteps: 1, gradClip: 1.0 });
  let state = step.init(params as unknown as Tree);
  for (let s = 1; s <= 3; s++) {
    const b = { ids: gold[`batch${s}.input_ids`], labels: gold[`batch${s}.labels`] };
    const lr = getLr(s, 10, 5e-4);
    assert.equal(lr, meta.steps[s - 1].lr);
    const [next, out] = step(state, b, { lr });
    state = next;
    const l = await out.loss.item(), n = await out.gradNorm!.item();
    assert.ok(Math.abs(l - meta.steps[s - 1].loss) <= 1e-5, `step ${s} loss ${l}`);
    assert.ok(
      Math.abs(n - meta.steps[s - 1].grad_norm_before_clip) <= 1e-4 * n,
      `step ${s} grad norm ${n} vs ${meta.steps[s - 1].grad_norm_before_clip}`,
    );
  }
  let worst = 0, worstName = "", over1e6 = 0, total = 0;
  for (const [k, t] of Object.entries(flatten(state.params))) {
    const got = await t.data(), want = await gold[`final.${k}`].data();
    assert.equal(got.length, want.length, k);
    for (let i = 0; i < got.length; i++) {
      const d = Math.abs(got[i] - want[i]);
      if (d > worst) worst = d, worstName = `${k}[${i}]`;
      if (d > 1e-6) over1e6++;
      total++;
    }
  }
  assert.ok(worst <= 1e-4, `final params: max abs diff ${worst} at ${worstName}`);
  assert.ok(over1e6 <= total * 1e-4, `${over1e6} of ${total} elements differ by > 1e-6`);
  // the Adam moments of the norm weights (debugging aid of the golden) agree too
  const mu = flatten((state.optState as { mu: Tree }).mu);
  const nu = flatten((state.optState as { nu: Tree }).nu);
  for (const k of ["model.norm.weight", "model.layers.0.input_layernorm.weight"]) {
    const a = await mu[k].data(), wa = await gold[`adam.exp_avg.${k}`].data();
    const v = await nu[k].data(), wv = await gold[`adam.exp_avg_sq.${k}`].data();
    for (let i = 0; i < a.length; i++) {
      assert.ok(Math.abs(a[i] - wa[i]) <= 1e-6 + 1e-4 * Math.abs(wa[i]), `${k} exp_avg[${i}]`);
      assert.ok(Math.abs(v[i] - wv[i]) <= 1e-9 + 1e-4 * Math.abs(wv[i]), `${k} exp_avg_sq[${i}]`);
    }
  }
  const [, out] = step({ ...state }, {
    ids: gold["batch1.input_ids"],
    labels: gold["batch1.labels"],
  }, { lr: 0 });
  assert.ok(
    Math.abs((await out.loss.item()) - meta.loss_batch1_after_3_steps) <= 1e-5,
    "loss on batch1 after 3 steps",
  );
});
