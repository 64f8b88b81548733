import assert from "node:assert/strict";
import { join } from "node:path";
import { tensor } from "../nn/creation.ts";
import { valueAndGrad } from "../nn/autodiff.ts";
import { key, normalArray, uniformArray } from "../nn/random.ts";
import { flatten, mapTree } from "../nn/tree.ts";
import { Tensor } from "../nn/tensor.ts";
import { affine } from "../nn/ops/mod.ts";
import type { Tree } from "../nn/tree.ts";
import { init, paramsFromFlat } from "../nn/model/minimind.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { RLAIFDataset } from "../data/datasets.ts";
import { DataLoader } from "../data/loader.ts";
import { runTraining } from "../train/loop.ts";
import { loadWeights, saveWeights } from "../train/checkpoint.ts";
import { MetricsWriter } from "../train/metrics.ts";
import { Progress } from "../train/progress.ts";
import { fixture } from "../tests/_util.ts";
import { actorObjective, RlTrainer } from "./trainer.ts";
import type { RlAlgorithm, RlBatch, RlMinibatch, RlSettings } from "./trainer.ts";
import { policyLogProbs } from "./rollout.ts";
import { criticValues } from "./critic.ts";
import type { CriticParams } from "./critic.ts";
import { RewardError } from "./rewards.ts";
import type { RewardFunction } from "./rewards.ts";

Deno.test("GRPO: the step's gradient equals the finite-difference gradient of its objective (f64)", () => {
  const cfg = config("minimind2-small", {
    hiddenSize: 16,
    numHiddenLayers: 1,
    numAttentionHeads: 2,
    numKeyValueHeads: 1,
    vocabSize: 32,
  });
  const params = init(cfg, key(5), { dtype: "f64" });
  const ref = init(cfg, key(6), { dtype: "f64" });
  // 3 rows: left-padded prompts (P = 3), responses of 3, 4 and 2 tokens (R = 4)
  const ids = [0, 4, 9, 3, 8, 1, 7, 0, 0, 0, 5, 6, 2, 11, 6, 3, 12, 30, 2, 19, 0];
  const att = [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1];
  const resp = [3, 8, 1, 7, 2, 11, 6, 3, 30, 2, 19, 0];
  const mask = [1, 1, 1, 0, 1, 1, 1, 1, 1, 1, 0, 0];
  const f64 = (a: number[], shape: number[]) => tensor(a, shape, "f64");
  const base = {
    ids: tensor(ids, [3, 7], "i32"),
    attention: f64(att, [3, 7]),
    response: tensor(resp, [3, 4], "i32"),
    mask: f64(mask, [3, 4]),
  };
  const lp0 = policyLogProbs(cfg, params, base).logp.dataSync();
  const noise = normalArray(key(7), 12);
  const b: RlMinibatch = {
    ...base,
    oldLogp: f64([...lp0].map((x, i) => x + 0.05 * noise[i]), [3, 4]), // ratios ≈ 1 ± 0.05
    refLogp: policyLogProbs(cfg, ref, base).logp,
    advantages: f64([0.7, -1.2, 0.4], [3]),
  };
  const s = {
    algorithm: "grpo" as const,
    cfg,
    lossType: "grpo" as const,
    beta: 0.1,
    clipEpsilon: 0.2,
    epsilonHigh: 5,
    earlyStopKl: 0.25,
    valueClip: 0.2,
  };
  const J = (p: Tree) => actorObjective(s, p as unknown as MiniMindParams, b)[0];
  const [, g] = valueAndGrad(J)(params as unknown as Tree);
  const grads = flatten(g as Tree), flat = flatten(params as unknown as Tree);
  const names = Object.keys(flat).sort();
  const u = uniformArray(key(8), 48);
  let checked = 0;
  for (let k = 0; k < 24; k++) {
    const name = names[Math.floor(u[2 * k] * names.length)];
    const t = flat[name];
    const i = Math.floor(u[2 * k + 1] * t.size);
    const at = (d: number) => {
      const v = Float64Array.from(t.dataSync());
      v[i] += d;
      const p = paramsFromFlat(cfg, { ...flat, [name]: tensor(v, t.shape, "f64") });
      return J(p as unknown as Tree).dataSync()[0];
    };
    const h = 1e-5;
    const fd = (at(h) - at(-h)) / (2 * h);
    const an = grads[name].dataSync()[i];
    assert.ok(
      Math.abs(fd - an) <= 1e-7 + 1e-5 * Math.abs(fd),
      `${name}[${i}]: autodiff ${an} vs finite differences ${fd}`,
    );
    if (an !== 0) checked++;
  }
  assert.ok(checked >= 12, `only ${checked} non-zero gradients checked`);
});

// ---------------------------------------------------------------------------------------------
// the trainers on the loop: resume continues bit-exactly; a bad reward stops the run

const tok = await Tokenizer.fromFile(fixture("minimind/minimind2"));
const tiny = config("minimind2-small", {
  hiddenSize: 32,
  numHiddenLayers: 1,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: tok.vocabSize,
});
const RECORDS = Array.from({ length: 8 }, (_, i) => ({
  conversations: [
    { role: "user", content: `写一首五言绝句，题为《题${i}》。` },
    { role: "assistant", content: "无" },
  ],
  form: { name: "五言绝句", lines: 4, chars_per_line: 5 },
}));
/** A reward with spread: the response's length mod 3. */
const LENGTH_REWARD: RewardFunction = {
  name: "length",
  range: [0, 2],
  score: (xs) =>
    xs.map((x) => {
      const v = [...x.response].length % 3;
      return { total: v, components: { length: v } };
    }),
};

/** The algorithms under test: the three, plus V2's sequence-level PPO. */
type Variant = RlAlgorithm | "ppo-sequence";

function settings(variant: Variant, reward: RewardFunction): RlSettings {
  const algorithm = variant === "ppo-sequence" ? "ppo" : variant;
  return {
    ...(variant === "ppo-sequence" ? { ppoLossType: "sequence", updateOldActorFreq: 2 } : {}),
    algorithm,
    cfg: tiny,
    tokenizer: tok,
    reward,
    maxSeqLen: 64,
    maxGenLen: 5,
    temperature: 1,
    topP: 1,
    topK: 0,
    learningRate: 3e-3,
    criticLearningRate: 3e-3,
    totalUpdates: 12,
    criticTotalUpdates: 12,
    accumulationSteps: algorithm === "spo" ? 2 : 1,
    gradClip: 1,
    numGenerations: 2,
    lossType: "cispo",
    beta: 0.05,
    clipEpsilon: 0.2,
    epsilonHigh: 5,
    ppoUpdateIters: 2,
    ppoMinibatch: 2,
    earlyStopKl: 0.25,
    valueClip: 0.2,
    gamma: 1,
    lambda: 0.95,
    seed: 3,
  };
}

async function train(
  algorithm: Variant,
  dir: string,
  opts: { stopAfter?: number; resume?: boolean; reward?: RewardFunction } = {},
) {
  return await runTraining({
    trainer: new RlTrainer(settings(algorithm, opts.reward ?? LENGTH_REWARD)),
    params: init(tiny, key(0)) as unknown as Tree,
    stem: `${algorithm}_32`,
    saveDir: join(dir, "out"),
    checkpointDir: join(dir, "ck"),
    loader: new DataLoader(new RLAIFDataset(RECORDS, tok, { thinkingRatio: 0 }), {
      batchSize: 2,
      seed: 1,
    }),
    toBatch: (b) => b as unknown as RlBatch,
    epochs: 1,
    learningRate: 3e-3,
    logInterval: 1,
    saveInterval: 100,
    resume: opts.resume ?? false,
    seed: 1,
    maxSteps: 3,
    stopAfter: opts.stopAfter,
    saveWeights: (p, path) => saveWeights(path, p),
    progress: new Progress({ tty: false, write: () => {} }),
    handleSigint: false,
  });
}

for (const algo of ["grpo", "ppo", "spo", "ppo-sequence"] as const) {
  Deno.test(`${algo}: a resumed run continues bit-exactly (weights, rewards, KL)`, async () => {
    const dir = await Deno.makeTempDir();
    const straight = await train(algo, join(dir, "a"));
    const first = await train(algo, join(dir, "b"), { stopAfter: 1 });
    assert.equal(first.interrupted, true);
    const second = await train(algo, join(dir, "b"), { resume: true });
    assert.equal(second.steps, 3);
    const wa = (await loadWeights(straight.files.weights)).tensors;
    const wb = (await loadWeights(second.files.weights)).tensors;
    let moved = false;
    const w0 = flatten(init(tiny, key(0)) as unknown as Tree);
    for (const [k, t] of Object.entries(wa)) {
      assert.deepEqual(wb[k].dataSync(), t.dataSync(), `${k} differs after resume`);
      if (w0[k].dataSync().some((x, i) => x !== t.dataSync()[i])) moved = true;
    }
    assert.ok(moved, "training changed no weight");
    // every scalar but the wall-clock timings
    const rec = (f: string) =>
      MetricsWriter.read(f).map((r) => {
        const { rollout_tokens_per_s: _a, update_s: _b, ...rest } = r.scalars ?? {};
        return rest;
      });
    const ra = rec(straight.files.metrics), rb = rec(second.files.metrics);
    assert.equal(rb.length, 3);
    assert.deepEqual(rb, ra);
    for (const r of ra) {
      for (
        const k of ["reward", "reward_std", "reward_length", "kl", "entropy", "response_length"]
      ) {
        assert.ok(Number.isFinite(r?.[k]), `${k} = ${r?.[k]}`);
      }
    }
    if (algo.startsWith("ppo")) assert.ok(ra.every((r) => Number.isFinite(r?.value_loss)));
    if (algo === "spo") assert.ok(ra.every((r) => Number.isFinite(r?.baseline)));
    await Deno.remove(dir, { recursive: true });
  });
}

Deno.test("a reward that returns NaN or throws stops the run, naming the prompt", async () => {
  const dir = await Deno.makeTempDir();
  const nan: RewardFunction = {
    name: "broken",
    score: (xs) => xs.map((_, i) => ({ total: i === 1 ? NaN : 0, components: {} })),
  };
  await assert.rejects(
    () => train("grpo", join(dir, "nan"), { reward: nan }),
    (e: Error) =>
      e instanceof RewardError && /total = NaN/.test(e.message) && /题\d》/.test(e.message),
  );
  const throws: RewardFunction = {
    name: "throws",
    score: () => {
      throw new Error("judge offline");
    },
  };
  await assert.rejects(
    () => train("ppo", join(dir, "throw"), { reward: throws }),
    (e: Error) =>
      e instanceof RewardError && /judge offline/.test(e.message) && /题\d》/.test(e.message),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("V2 sequence PPO: the objective by hand, A = r − V(last token), the old actor synced every 2 steps", async () => {
  const s = settings("ppo-sequence", LENGTH_REWARD);
  const trainer = new RlTrainer(s);
  let state = trainer.init(init(tiny, key(0)) as unknown as Tree);
  const batch: RlBatch = {
    prompt: RECORDS.slice(0, 3).map((r) =>
      tok.applyChatTemplate(r.conversations.slice(0, 1), { addGenerationPrompt: true })
    ),
  };
  const flat = (t: Tree | undefined) =>
    Object.entries(flatten(t as Tree)).map(([k, v]) => [k, [...v.dataSync()]]);
  const actorBefore = flat(state.actor.params);
  const seen: { old: unknown; actor: unknown }[] = [];
  for (let k = 1; k <= 3; k++) {
    // the critic's value at each row's last token, before this step's update
    const critic = mapTree(
      state.critic!.params,
      (t) => t instanceof Tensor ? affine(t, 1) : t,
    ) as unknown as CriticParams;
    const [next, out, report] = await trainer.run(state, batch);
    const r = report.rollout, W = r.promptWidth + r.responseWidth;
    const v = criticValues(tiny, critic, tensor(r.ids, [r.rows, W], "i32"), {
      attentionMask: tensor(r.attention, [r.rows, W], "f32"),
    }).dataSync();
    report.rewards.forEach((x, i) => {
      const want = x.total - v[i * W + r.promptWidth + r.lengths[i] - 1];
      assert.ok(Math.abs(report.advantages![i] - want) < 1e-5, `${k}/${i}: A ≠ r − V(last)`);
    });
    const sc = Object.fromEntries(
      await Promise.all(Object.entries(out.scalars!).map(async ([n, t]) => [n, await t.item()])),
    );
    assert.ok(Number.isFinite(sc.value_loss) && Number.isFinite(sc.approx_kl), `${k}: ${sc}`);
    assert.equal(report.rewards.length, 3);
    seen.push({ old: flat(next.oldActor), actor: flat(next.actor.params) });
    state = next;
  }
  // V2 syncs after step k when (k + 1) % freq == 0: after steps 1 and 3, not after step 2
  assert.deepEqual(seen[0].old, seen[0].actor);
  assert.deepEqual(seen[1].old, seen[0].actor);
  assert.notDeepEqual(seen[1].actor, seen[0].actor);
  assert.deepEqual(seen[2].old, seen[2].actor);
  assert.notDeepEqual(seen[0].actor, actorBefore);

  // the actor's objective on a hand-made minibatch equals V2's loss computed here in f64
  const params = init(tiny, key(4)), ref = init(tiny, key(5));
  const ids = [0, 4, 9, 3, 8, 1, 7, 5, 5, 6, 2, 11, 6, 3];
  const base = {
    ids: tensor(ids, [2, 7], "i32"),
    attention: tensor([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [2, 7], "f32"),
    response: tensor([3, 8, 1, 7, 11, 6, 3, 0], [2, 4], "i32"),
    mask: tensor([1, 1, 1, 1, 1, 1, 1, 0], [2, 4], "f32"),
  };
  const lp = [...policyLogProbs(tiny, params, base).logp.dataSync()];
  const refLp = [...policyLogProbs(tiny, ref, base).logp.dataSync()];
  const old = lp.map((x, i) => x + [0.03, -0.02, 0.05, 0.1, -0.04, 0.02, 0.06, 0][i]);
  const mask = [1, 1, 1, 1, 1, 1, 1, 0];
  const seq = (a: number[]) =>
    [0, 1].map((b) => a.slice(4 * b, 4 * b + 4).reduce((x, y, j) => x + y * mask[4 * b + j], 0));
  const A = [0.8, -0.5], V = [0.3, 1.1], rw = [1.1, 0.6];
  const mb: RlMinibatch = {
    ...base,
    oldLogp: tensor(old, [2, 4], "f32"),
    refLogp: tensor(refLp, [2, 4], "f32"),
    advantages: tensor(A, [2], "f32"),
    values: tensor(V, [2], "f32"),
    rewards: tensor(rw, [2], "f32"),
  };
  const [loss] = actorObjective({ ...s, clipEpsilon: 0.1, beta: 0.02 }, params, mb);
  const sl = seq(lp), so = seq(old), sr = seq(refLp);
  let policy = 0, value = 0, kl = 0;
  for (let b = 0; b < 2; b++) {
    const ratio = Math.exp(sl[b] - so[b]);
    policy -= Math.min(ratio * A[b], Math.min(1.1, Math.max(0.9, ratio)) * A[b]) / 2;
    value += (V[b] - rw[b]) ** 2 / 2;
    kl += (sl[b] - sr[b]) / 2;
  }
  const want = policy + 0.5 * value + 0.02 * kl;
  const got = (await loss.data())[0];
  assert.ok(Math.abs(got - want) < 1e-5 * Math.max(1, Math.abs(want)), `${got} vs ${want}`);
});

Deno.test("PPO critic warm-up: the first steps move only the critic, then both learn", async () => {
  for (const ppoLossType of ["token", "sequence"] as const) {
    const trainer = new RlTrainer({
      ...settings("ppo", LENGTH_REWARD),
      ppoLossType,
      criticWarmupSteps: 2,
    });
    let state = trainer.init(init(tiny, key(0)) as unknown as Tree);
    const batch: RlBatch = {
      prompt: RECORDS.slice(0, 2).map((r) =>
        tok.applyChatTemplate(r.conversations.slice(0, 1), { addGenerationPrompt: true })
      ),
    };
    const flat = (t: Tree) =>
      JSON.stringify(Object.entries(flatten(t)).map(([k, v]) => [k, [...v.dataSync()]]));
    const actor0 = flat(state.actor.params);
    const moved: [boolean, boolean][] = [];
    for (let k = 0; k < 3; k++) {
      const a = flat(state.actor.params), c = flat(state.critic!.params);
      const [next] = await trainer.run(state, batch);
      moved.push([flat(next.actor.params) !== a, flat(next.critic!.params) !== c]);
      state = next;
    }
    assert.deepEqual(moved, [[false, true], [false, true], [true, true]], ppoLossType);
    assert.equal(state.actor.updates > 0, true);
    assert.notEqual(flat(state.actor.params), actor0);
  }
});
