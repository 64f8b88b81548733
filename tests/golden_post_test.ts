/**
 * Post-training goldens against the PyTorch reference (tests/fixtures/golden, see its README):
 * `v2_lora` (rank-4 adapters on v2_dense: unmerged and merged logits, loss, every adapter
 * gradient, their global norm) and `v2_dpo` (policy and reference log-probs, the V2 masked-mean
 * and HEAD masked-sum losses, their pair log-ratios, the policy gradients) — on the CPU backend
 * and on WebGPU.
 * @module
 */
import assert from "node:assert/strict";
import {
  concat,
  configFromHF,
  dpoLoss,
  forward,
  lora,
  lossFromLogits,
  optim,
  paramsFromFlat,
  setBackend,
  tokenLogProbs,
  tree,
  valueAndGrad,
} from "../mod.ts";
import type { MiniMindConfig, MiniMindParams, Tensor } from "../mod.ts";
import { loadSafetensors } from "../convert/safetensors.ts";
import { compare, fixture } from "./_util.ts";
import { openWebGpuForTests } from "./_webgpu.ts";

const TOL = { atol: 1e-4, rtol: 1e-4 };
/** Gradients: max|Δg| ≤ 1e-4·max|g| + 1e-7 (the fixtures README's float32 guidance). */
const GRAD_REL = 1e-4;

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
  return m;
}

async function close(name: string, got: Tensor, want: Tensor): Promise<void> {
  assert.deepEqual(got.shape, want.shape, `${name} shape`);
  const r = compare(await got.data(), await want.data(), { ...TOL, label: name });
  assert(r.ok, r.message);
}

async function closeGrad(name: string, got: Tensor, want: Tensor): Promise<void> {
  assert.deepEqual(got.shape, want.shape, `${name} shape`);
  const w = await want.data();
  const m = maxAbs(w);
  const r = compare(await got.data(), w, { atol: GRAD_REL * m + 1e-7, rtol: 0, label: name });
  assert(r.ok, `${r.message} (max|g| ${m})`);
}

function near(name: string, got: number, want: number, atol = 1e-5): void {
  assert(Math.abs(got - want) <= atol, `${name}: got ${got} want ${want}`);
}

/** v2_dense's config and params (the base / policy of both cases). */
async function dense(): Promise<{ cfg: MiniMindConfig; params: MiniMindParams }> {
  const meta = JSON.parse(await Deno.readTextFile(fixture("golden/v2_dense.json")));
  const cfg = configFromHF(meta.config);
  const flat = await loadSafetensors(fixture("golden/v2_dense.safetensors"));
  return { cfg, params: paramsFromFlat(cfg, prefixed(flat, "param.")) };
}

function prefixed(flat: Record<string, Tensor>, pre: string): Record<string, Tensor> {
  const out: Record<string, Tensor> = {};
  for (const [k, v] of Object.entries(flat)) if (k.startsWith(pre)) out[k.slice(pre.length)] = v;
  return out;
}

async function loraCase(): Promise<void> {
  const meta = JSON.parse(await Deno.readTextFile(fixture("golden/v2_lora.json")));
  const flat = await loadSafetensors(fixture("golden/v2_lora.safetensors"));
  const { cfg, params } = await dense();
  const adapters = tree.unflatten(prefixed(flat, "lora."));
  assert.deepEqual(Object.keys(tree.flatten(adapters)).sort(), [...meta.lora_keys].sort());
  // MiniMind's apply_lora targets (square Linears) give exactly the golden's keys
  const fresh = lora.init(cfg, [0, 1], { rank: meta.lora_rank });
  assert.deepEqual(Object.keys(tree.flatten(fresh)).sort(), [...meta.lora_keys].sort());
  tree.dispose(fresh);
  const ids = flat.input_ids, labels = flat.labels;

  // unmerged forward: logits, loss and every adapter gradient, differentiating the adapters only
  const f = (ad: lora.LoraParams) => {
    const r = forward(cfg, params, ids, { lora: ad, train: true });
    return [lossFromLogits(r.logits, labels), r.logits] as const;
  };
  const [[loss, logits], grads] = valueAndGrad(f, { hasAux: true })(adapters);
  await close("v2_lora logits (unmerged)", logits, flat.logits);
  near("v2_lora loss", await loss.item(), meta.loss);
  const g = tree.flatten(grads);
  assert.deepEqual(Object.keys(g).sort(), [...meta.lora_keys].sort());
  for (const k of meta.lora_keys as string[]) await closeGrad(`grad ${k}`, g[k], flat[`grad.${k}`]);
  near("lora grad global norm", await optim.globalNorm(grads).item(), meta.lora_grad_global_norm);

  // the explicit applied tree and the merged weights give the same logits
  const applied = forward(cfg, lora.apply(params, adapters), ids).logits;
  await close("v2_lora logits (lora.apply)", applied, flat.logits);
  const merged = lora.merge(params, adapters);
  await close("v2_lora logits (merged)", forward(cfg, merged, ids).logits, flat.logits);
  assert(!Object.keys(tree.flatten(merged)).some((k) => k.includes(".lora.")));
}

async function dpoCase(): Promise<void> {
  const meta = JSON.parse(await Deno.readTextFile(fixture("golden/v2_dpo.json")));
  const flat = await loadSafetensors(fixture("golden/v2_dpo.safetensors"));
  const { cfg, params } = await dense();
  const ref = paramsFromFlat(cfg, prefixed(flat, "ref."));
  const x = concat([flat["dpo.x_chosen"], flat["dpo.x_rejected"]], 0); // (4, 16)
  const y = concat([flat["dpo.y_chosen"], flat["dpo.y_rejected"]], 0);
  const mask = concat([flat["dpo.mask_chosen"], flat["dpo.mask_rejected"]], 0);
  const refLogps = tokenLogProbs(forward(cfg, ref, x).logits, y);
  await close("ref_logps", refLogps, flat.ref_logps);

  for (
    const [label, key, reduction, beta] of [["V2", "v2", "mean", 0.1], [
      "HEAD",
      "head",
      "sum",
      0.15,
    ]] as const
  ) {
    const f = (p: MiniMindParams) => {
      const policyLogps = tokenLogProbs(forward(cfg, p, x, { train: true }).logits, y);
      const r = dpoLoss({ policyLogps, refLogps, mask }, { beta, reduction });
      return [r.loss, { policyLogps, z: r.logits, scores: r.policyScores }] as const;
    };
    const [[loss, aux], grads] = valueAndGrad(f, { hasAux: true })(params);
    await close("policy_logps", aux.policyLogps, flat.policy_logps);
    near(`${label} loss`, await loss.item(), meta[`loss_${key}`]);
    const z = await aux.z.data(), scores = await aux.scores.data();
    meta[key].z.forEach((w: number, i: number) => near(`${label} z[${i}]`, z[i], w, 1e-4));
    meta[key].policy_seq_score.forEach((w: number, i: number) =>
      near(`${label} score[${i}]`, scores[i], w, 1e-4)
    );
    const gf = tree.flatten(grads);
    const keys: string[] = key === "v2" ? meta.stored_param_keys : meta.head_grad_keys;
    if (key === "v2") assert.equal(Object.keys(gf).length, keys.length);
    const pre = key === "v2" ? "grad." : "head.grad.";
    for (const k of keys) await closeGrad(`${label} grad ${k}`, gf[k], flat[`${pre}${k}`]);
    tree.dispose(grads);
  }
}

Deno.test("golden v2_lora on cpu: unmerged and merged logits, loss, every adapter gradient", () =>
  loraCase());
Deno.test("golden v2_dpo on cpu: log-probs, V2 and HEAD losses, policy gradients", () => dpoCase());

for (const [name, fn] of [["v2_lora", loraCase], ["v2_dpo", dpoCase]] as const) {
  Deno.test(`golden ${name} on webgpu`, async () => {
    await openWebGpuForTests(); // clear error when no adapter exists
    await setBackend("webgpu");
    try {
      await fn();
    } finally {
      await setBackend("cpu");
    }
  });
}
