/**
 * One PPO and one GRPO step on WebGPU (software adapter in CI) equal the CPU step to float32
 * rounding: the same rollout (sampling, eos, log-probs), rewards and updated weights.
 */
import assert from "node:assert/strict";
import { init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import type { Tree } from "../nn/tree.ts";
import { leaves, mapTree } from "../nn/tree.ts";
import type { Backend } from "../nn/backend/backend.ts";
import { cpuBackend } from "../nn/backend/cpu/mod.ts";
import { defaultBackend, useBackend } from "../nn/backend/select.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { RlTrainer } from "../rl/trainer.ts";
import type { RlAlgorithm, RlSettings } from "../rl/trainer.ts";
import type { RewardFunction } from "../rl/rewards.ts";
import { compare, fixture } from "./_util.ts";
import { openWebGpuForTests } from "./_webgpu.ts";

const gpu = await openWebGpuForTests();
const tok = await Tokenizer.fromFile(fixture("minimind/minimind2"));
const cfg = config("minimind2-small", {
  hiddenSize: 64,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: tok.vocabSize,
});
const REWARD: RewardFunction = {
  name: "length",
  score: (xs) => xs.map((x) => ({ total: [...x.response].length % 4, components: {} })),
};
const PROMPTS = ["写一首五言绝句，题为《春》。", "作一首七言律诗，题目是《夜泊》。"].map((c) =>
  tok.applyChatTemplate([{ role: "user", content: c }], { addGenerationPrompt: true })
);

function settings(algorithm: RlAlgorithm): RlSettings {
  return {
    algorithm,
    cfg,
    tokenizer: tok,
    reward: REWARD,
    maxSeqLen: 64,
    maxGenLen: 6,
    temperature: 1,
    topP: 1,
    topK: 0,
    // Adam's first step moves every weight by about lr·sign(g): with a large lr, rounding in a
    // near-zero gradient shows up as a visible weight difference; the moments are compared too
    learningRate: 1e-4,
    criticLearningRate: 1e-4,
    totalUpdates: 10,
    criticTotalUpdates: 10,
    accumulationSteps: 1,
    gradClip: 1,
    numGenerations: 3,
    lossType: "cispo",
    beta: 0.1,
    clipEpsilon: 0.2,
    epsilonHigh: 5,
    ppoUpdateIters: 2,
    ppoMinibatch: 2,
    earlyStopKl: 0.25,
    valueClip: 0.2,
    gamma: 1,
    lambda: 0.95,
    seed: 7,
  };
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

/** One RL step on backend `b` from the same initial weights. */
async function oneStep(algo: RlAlgorithm, b: Backend) {
  const prev = defaultBackend();
  useBackend(b);
  try {
    const trainer = new RlTrainer(settings(algo));
    const params = await copyTo(init(cfg, key(1)) as unknown as Tree, b);
    const state = trainer.init(params);
    const [next, out, report] = await trainer.run(state, { prompt: PROMPTS });
    const read = (t: Tree) => Promise.all(leaves(t).map((x) => (x as Tensor).data()));
    const weights = await read(next.actor.params);
    const critic = next.critic ? await read(next.critic.params) : [];
    // AdamW's first moment after one update: (1 − β₁)·g, the (clipped) gradient itself
    const grads = await read((next.actor.optState as { mu: Tree }).mu);
    const loss = await out.loss.item();
    return { weights, critic, grads, loss, report };
  } finally {
    useBackend(prev);
  }
}

for (const algo of ["grpo", "ppo"] as const) {
  Deno.test(`one ${algo.toUpperCase()} step on WebGPU equals the CPU step to f32 rounding`, async () => {
    const c = await oneStep(algo, cpuBackend);
    const g = await oneStep(algo, gpu);
    // the same samples and rewards
    assert.deepEqual([...g.report.rollout.response], [...c.report.rollout.response]);
    assert.deepEqual(g.report.rewards, c.report.rewards);
    const lp = compare(g.report.rollout.oldLogp, c.report.rollout.oldLogp, {
      atol: 2e-5,
      rtol: 1e-4,
      label: "rollout log-probs",
    });
    assert.ok(lp.ok, lp.message);
    assert.ok(
      Math.abs(g.loss - c.loss) <= 1e-4 + 1e-3 * Math.abs(c.loss),
      `${g.loss} vs ${c.loss}`,
    );
    const pairs = [["actor", g.weights, c.weights], ["critic", g.critic, c.critic]] as const;
    for (const [name, gw, cw] of pairs) {
      cw.forEach((x, i) => {
        const r = compare(gw[i], x, { atol: 2e-6, rtol: 1e-3, label: `${name} leaf ${i}` });
        assert.ok(r.ok, r.message);
      });
    }
    c.grads.forEach((x, i) => {
      const r = compare(g.grads[i], x, { atol: 1e-7, rtol: 1e-3, label: `gradient leaf ${i}` });
      assert.ok(r.ok, r.message);
    });
    assert.ok(g.weights.length > 0 && (algo === "grpo" || g.critic.length > 0));
    // the gradients compared are far above the tolerance
    let biggest = 0;
    for (const x of c.grads) for (const v of x) biggest = Math.max(biggest, Math.abs(v));
    assert.ok(biggest > 1e-4, `largest gradient moment ${biggest}`);
  });
}
