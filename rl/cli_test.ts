import assert from "node:assert/strict";
import { join } from "node:path";
import { init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { saveModel } from "../convert/hf.ts";
import { UsageError } from "../train/cli.ts";
import { MetricsWriter } from "../train/metrics.ts";
import { Progress } from "../train/progress.ts";
import { fixture } from "../tests/_util.ts";
import { rlFlags, runRl } from "./cli.ts";

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
  assert.equal(grpo.num_generations.default, 6);
  assert.equal(grpo.loss_type.default, "cispo");
  assert.equal(grpo.beta.default, 0.1);
  assert.equal(grpo.learning_rate.default, 3e-7);
  assert.equal(grpo.save_weight.default, "grpo");
  assert.equal(ppo.save_weight.default, "ppo_actor");
  assert.equal(ppo.critic_learning_rate.default, 5e-7);
  assert.equal(ppo.kl_coef.default, 0.02);
  assert.equal(spo.save_weight.default, "spo");
  assert.equal(spo.accumulation_steps.default, 4);
  assert.equal(spo.beta.default, 0.02);
  assert.equal(ppo.num_generations, undefined);
  const { args } = await setup();
  const quiet = { log: () => {} };
  await assert.rejects(() => runRl("grpo", [...args, "--reward", "judge"], quiet), UsageError);
  await assert.rejects(() => runRl("ppo", [...args, "--num_generations", "4"], quiet), UsageError);
  const help: string[] = [];
  assert.equal(await runRl("spo", ["--help"], { log: (m) => help.push(m) }), null);
  assert.match(help.join("\n"), /--beta/);
});
