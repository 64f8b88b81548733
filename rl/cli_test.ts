import assert from "node:assert/strict";
import { join } from "node:path";
import { init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { saveModel } from "../convert/hf.ts";
import { UsageError } from "../cli.ts";
import type { FlagTable } from "../cli.ts";
import { MetricsWriter } from "../train/metrics.ts";
import { Progress } from "../train/progress.ts";
import { fixture } from "../tests/_util.ts";
import { rlFlags, runRl } from "./cli.ts";
import { tensor } from "../nn/creation.ts";
import { affine } from "../nn/ops/mod.ts";
import type { Tree } from "../nn/tree.ts";
import { configToHF } from "../nn/model/minimind_config.ts";
import { saveWeights } from "../train/checkpoint.ts";
import { criticValues, initValueHead } from "./critic.ts";
import type { CriticParams } from "./critic.ts";
import { parseChatPrompt, rewardModelMessages, ruleComponents } from "./rewards.ts";
import { groupAdvantages } from "./advantages.ts";
import type { RlReport } from "./trainer.ts";

const tok = await Tokenizer.fromFile(fixture("minimind/minimind2"));
const cfg = config("minimind2-small", {
  hiddenSize: 32,
  numHiddenLayers: 1,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: tok.vocabSize,
});

async function setup(): Promise<{ dir: string; args: string[] }> {
  const dir = await Deno.makeTempDir();
  await saveModel(join(dir, "sft"), { cfg, params: init(cfg, key(0)), tokenizer: tok });
  const lines = Array.from({ length: 4 }, (_, i) =>
    JSON.stringify({
      conversations: [
        { role: "user", content: `写一首七言绝句，题为《题${i}》。` },
        { role: "assistant", content: "无" },
      ],
    }));
  await Deno.writeTextFile(join(dir, "rl.jsonl"), lines.join("\n") + "\n");
  return {
    dir,
    args: [
      "--from_weight",
      join(dir, "sft"),
      "--data_path",
      join(dir, "rl.jsonl"),
      "--save_dir",
      join(dir, "out"),
      "--checkpoint_dir",
      join(dir, "ck"),
      "--batch_size",
      "2",
      "--max_gen_len",
      "4",
      "--max_steps",
      "2",
      "--thinking_ratio",
      "0",
      "--learning_rate",
      "1e-3",
    ],
  };
}

Deno.test("deno task grpo/ppo/spo: MiniMind's output names, metrics with each reward component, a reward plot", async () => {
  const { dir, args } = await setup();
  const lines: string[] = [];
  for (
    const [algo, stem, extra] of [
      ["grpo", "grpo_32", ["--num_generations", "2", "--reward", "poetry"]],
      ["ppo", "ppo_actor_32", ["--reward", "rules"]],
      ["spo", "spo_32", ["--reward", "poetry", "--accumulation_steps", "1"]],
    ] as const
  ) {
    const r = await runRl(algo, [...args, ...extra], {
      handleSigint: false,
      log: (m) => lines.push(m),
      progress: new Progress({ tty: false, write: (m) => lines.push(m) }),
    });
    assert.ok(r && !r.interrupted);
    assert.equal(r.files.weights, join(dir, "out", `${stem}.safetensors`));
    assert.ok((await Deno.stat(r.files.weights)).isFile);
    assert.ok((await Deno.readTextFile(r.rewardPlot)).startsWith("<svg"));
    const recs = MetricsWriter.read(r.files.metrics);
    assert.equal(recs.length, 2);
    const keys = Object.keys(recs[0].scalars ?? {});
    const components = (extra as readonly string[]).includes("poetry")
      ? ["reward_form", "reward_rhyme", "reward_tone", "reward_repeat"]
      : ["reward_length", "reward_repetition"];
    for (const k of ["reward", "reward_std", "kl", "entropy", "response_length", ...components]) {
      assert.ok(keys.includes(k), `${algo}: ${k} missing from ${keys}`);
    }
    if (algo !== "spo") assert.ok(keys.includes("clip_fraction"));
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("RL flags: MiniMind's per-script names and defaults; bad values are usage errors", async () => {
  const grpo = rlFlags("grpo"), ppo = rlFlags("ppo"), spo = rlFlags("spo");
  const def = (t: FlagTable, k: string) => (t[k] as { default?: unknown }).default;
  assert.equal(def(grpo, "num_generations"), 6);
  assert.equal(def(grpo, "loss_type"), "cispo");
  assert.equal(def(grpo, "beta"), 0.1);
  assert.equal(def(grpo, "learning_rate"), 3e-7);
  assert.equal(def(grpo, "save_weight"), "grpo");
  assert.equal(def(ppo, "save_weight"), "ppo_actor");
  assert.equal(def(ppo, "critic_learning_rate"), 5e-7);
  assert.equal(def(ppo, "kl_coef"), 0.02);
  assert.equal(def(ppo, "loss_type"), "token"); // V2's sequence-level PPO: --loss_type sequence
  assert.equal(def(ppo, "vf_coef"), 0.5);
  assert.equal(def(ppo, "update_old_actor_freq"), 4);
  assert.equal(def(spo, "save_weight"), "spo");
  assert.equal(def(spo, "accumulation_steps"), 4);
  assert.equal(def(spo, "beta"), 0.02);
  assert.equal(ppo.num_generations, undefined);
  const { args } = await setup();
  const quiet = { log: () => {} };
  await assert.rejects(() => runRl("grpo", [...args, "--reward", "judge"], quiet), UsageError);
  await assert.rejects(() => runRl("ppo", [...args, "--num_generations", "4"], quiet), UsageError);
  const help: string[] = [];
  assert.equal(await runRl("spo", ["--help"], { log: (m) => help.push(m) }), null);
  assert.match(help.join("\n"), /--beta/);
});

Deno.test("--reward model:<path>: a saved value-head model's score, clipped to ±3, is the logged reward and reaches the advantages", async () => {
  const { dir, args } = await setup();
  // a tiny reward model: the actor's architecture plus a value head scaled up so that some
  // scores pass ±3 (and get clipped) and some do not
  const h = initValueHead(cfg, key(9));
  const head = { weight: affine(h.weight, 10), bias: affine(h.bias, 1, 2) };
  const rm = { ...init(cfg, key(8)), value_head: head } as unknown as CriticParams;
  const rmPath = join(dir, "rm.safetensors");
  await saveWeights(rmPath, rm as unknown as Tree, { config: JSON.stringify(configToHF(cfg)) });
  const score = (prompt: string, response: string) => {
    const msgs = rewardModelMessages(parseChatPrompt(prompt), ruleComponents(response).answer);
    const ids = tok.encode(tok.applyChatTemplate(msgs));
    const v = criticValues(cfg, rm, tensor(ids, [1, ids.length], "i32")).dataSync();
    return v[ids.length - 1];
  };
  let clipped = 0, inside = 0;
  for (const algo of ["grpo", "ppo"] as const) {
    const reports: RlReport[] = [];
    const extra = algo === "grpo" ? ["--num_generations", "2"] : ["--loss_type", "sequence"];
    const r = await runRl(algo, [...args, ...extra, "--reward", `model:${rmPath}`], {
      handleSigint: false,
      log: () => {},
      progress: new Progress({ tty: false, write: () => {} }),
      onReport: (x) => reports.push(x),
    });
    assert.ok(r && !r.interrupted);
    const recs = MetricsWriter.read(r.files.metrics);
    assert.equal(reports.length, 2);
    reports.forEach((rep, step) => {
      const totals = rep.rewards.map((x, i) => {
        const s = score(rep.prompts![i], rep.rollout.texts[i]);
        const want = Math.max(-3, Math.min(3, s));
        if (Math.abs(s) > 3) clipped++;
        else inside++;
        const got = x.components.model;
        assert.ok(Math.abs(got - want) < 1e-4, `${algo} step ${step} row ${i}: ${got} vs ${want}`);
        const rules = Object.values(ruleComponents(rep.rollout.texts[i]).components);
        const total = rules.reduce((a, b) => a + b, 0) + want;
        assert.ok(Math.abs(x.total - total) < 1e-4, `${algo}: total ${x.total} vs ${total}`);
        return total;
      });
      const mean = (a: number[]) => a.reduce((x, y) => x + y, 0) / a.length;
      const logged = recs[step].scalars!;
      assert.ok(Math.abs(logged.reward - mean(totals)) < 1e-4, `${algo}: logged reward`);
      assert.ok(
        Math.abs(logged.reward_model - mean(rep.rewards.map((x) => x.components.model))) < 1e-4,
      );
      // GRPO: (r − group mean)/(std + 1e-4); sequence PPO: r − V, so A + V = r up to the critic
      if (algo === "grpo") {
        const want = groupAdvantages(totals, 2);
        rep.advantages!.forEach((a, i) => assert.ok(Math.abs(a - want[i]) < 1e-3, `A[${i}]`));
      } else {
        assert.equal(rep.advantages!.length, totals.length);
      }
    });
  }
  assert.ok(clipped > 0 && inside > 0, `clipped ${clipped}, inside ±3 ${inside}`);
  await Deno.remove(dir, { recursive: true });
});
