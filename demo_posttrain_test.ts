import assert from "node:assert/strict";
import { join } from "node:path";
import { Tokenizer } from "./data/tokenizer.ts";
import { init } from "./nn/model/minimind.ts";
import { config, configToHF } from "./nn/model/minimind_config.ts";
import { key } from "./nn/random.ts";
import type { Tree } from "./nn/tree.ts";
import { saveWeights } from "./train/checkpoint.ts";
import { fixture } from "./tests/_util.ts";
import { main } from "./demo_posttrain.ts";

Deno.test("deno task demo:posttrain --quick runs LoRA, DPO, distillation and reasoning SFT and reports them", async () => {
  const dir = await Deno.makeTempDir();
  const lines: string[] = [];
  const log = console.log;
  try {
    const tok = await Tokenizer.fromFile(fixture("minimind/minimind2"));
    await tok.save(dir);
    const cfg = config("minimind2-small", {
      hiddenSize: 32,
      numHiddenLayers: 1,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      vocabSize: tok.vocabSize,
    });
    const base = join(dir, "full_sft_32.safetensors");
    await saveWeights(base, init(cfg, key(0)) as unknown as Tree, {
      config: JSON.stringify(configToHF(cfg)),
    });
    console.log = (...a: unknown[]) => lines.push(a.join(" "));
    const code = await main([
      "--quick",
      "--device",
      "cpu",
      "--save_dir",
      dir,
      "--from_weight",
      base,
    ]);
    assert.equal(code, 0);
  } finally {
    console.log = log;
  }
  const text = lines.join("\n");
  assert.match(text, /LoRA: exact tune pattern +\d+\.\d% +\d+\.\d%/);
  assert.match(text, /LoRA: line positions right +\d+\.\d% +\d+\.\d%/);
  assert.match(text, /DPO: held-out preference accuracy +\d+\.\d% +\d+\.\d%/);
  // the policy equals the reference before training: no implicit reward margin is > 0
  assert.match(text, /DPO: implicit reward margin > 0 +0\.0% +\d+\.\d%/);
  assert.match(text, /DPO: KL\(policy‖reference\)\/token +0 +\d\.\d+e[-+]\d+/);
  assert.match(text, /student perplexity \d+\.\d with the teacher vs \d+\.\d on labels only/);
  assert.match(
    text,
    /teacher \(hidden 48, 2 layers, [\d.]+M params\): held-out perplexity \d+\.\d/,
  );
  assert.match(text, /reason: think\/answer format +\d+\.\d% +\d+\.\d%/);
  assert.match(text, /reason: form named right +\d+\.\d% +\d+\.\d%/);
  assert.match(text, /stages: LoRA .+ \(load \d+\.\d\), .*reasoning SFT .+ \(load \d+\.\d\)/);
  assert.match(text, /load average \(1 min\) \d+\.\d at the start, \d+\.\d at the end/);
  for (
    const f of [
      "lora/lora_ci_32.safetensors",
      "dpo_32.safetensors",
      "reason_32.safetensors",
      "teacher_sft_48.safetensors",
      "full_dist_32.safetensors",
    ]
  ) {
    assert.ok(await Deno.stat(join(dir, f)), f);
  }
  await Deno.remove(dir, { recursive: true });
});
