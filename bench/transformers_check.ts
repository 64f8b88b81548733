/**
 * Do our HF exports load in transformers itself? Writes a MiniMind2 model in Llama layout and
 * minimind-3 models in Qwen3 and Qwen3-MoE layout (f32, with the tokenizer and chat template),
 * our logits for a prompt, our token ids for a few texts, and a MiniMind `.pth`, then runs
 * `bench/transformers_check.py` on them: `AutoModelForCausalLM` logits must equal ours to float32
 * rounding, `AutoTokenizer` ids must equal ours, `torch.load(weights_only=True)` must read the
 * `.pth`. Skips (exit 0, says so) when `python3 -c "import transformers"` fails.
 *
 *   deno run -A bench/transformers_check.ts [--dir DIR] [--write_only]
 *   python3 bench/transformers_check.py DIR        # where transformers is (e.g. a GPU machine)
 * @module
 */
import { join } from "node:path";
import { saveModel, saveModelPth } from "../convert/hf.ts";
import { init } from "../nn/model/minimind.ts";
import { forward } from "../nn/model/minimind.ts";
import { config, type MiniMindConfig } from "../nn/model/minimind_config.ts";
import { tensor } from "../nn/creation.ts";
import { key } from "../nn/random.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import type { HfLayout } from "../convert/layouts.ts";
import { fixture } from "../tests/_util.ts";

const TEXTS = [
  "你好，世界！",
  "Hello world, it's 2025.",
  "😀 emoji 🚀 混合",
  "<|im_start|>user\nhi<|im_end|>\n",
];

/**
 * Writes the exports and what we compute for them into `dir`.
 *
 * @param dir output folder
 * @returns when written
 */
export async function writeExports(dir: string): Promise<void> {
  const cases: [string, HfLayout, MiniMindConfig, string][] = [
    [
      "llama",
      "llama",
      config("minimind2-small", {
        hiddenSize: 128,
        numHiddenLayers: 2,
        numAttentionHeads: 4,
        numKeyValueHeads: 2,
      }),
      "minimind2",
    ],
    [
      "qwen3",
      "qwen3",
      config("minimind3", {
        hiddenSize: 128,
        numHiddenLayers: 2,
        numAttentionHeads: 4,
        numKeyValueHeads: 2,
      }),
      "minimind-3",
    ],
    [
      "qwen3_moe",
      "qwen3",
      config("minimind3-moe", {
        hiddenSize: 128,
        numHiddenLayers: 2,
        numAttentionHeads: 4,
        numKeyValueHeads: 2,
        numExpertsPerTok: 2,
        moeIntermediateSize: 96,
      }),
      "minimind-3",
    ],
  ];
  const expected: Record<string, unknown> = {};
  for (const [name, layout, cfg, tokName] of cases) {
    const tok = await Tokenizer.fromFile(fixture(`minimind/${tokName}`));
    const params = init(cfg, key(21));
    await saveModel(join(dir, name), { cfg, params, tokenizer: tok }, { layout, dtype: "f32" });
    const ids = tok.encode(
      tok.applyChatTemplate([{ role: "user", content: "介绍一下你自己" }], {
        addGenerationPrompt: true,
      }),
    );
    const logits = forward(cfg, params, tensor([ids], [1, ids.length], "i32")).logits.dataSync();
    expected[name] = {
      ids,
      logits: Array.from(logits),
      tokens: Object.fromEntries(TEXTS.map((t) => [t, tok.encode(t)])),
    };
    if (name === "llama") await saveModelPth(join(dir, "full_sft_128.pth"), { cfg, params }, "f16");
  }
  await Deno.writeTextFile(join(dir, "expected.json"), JSON.stringify(expected));
}

if (import.meta.main) {
  const args = Deno.args;
  const at = args.indexOf("--dir");
  const dir = at >= 0 ? args[at + 1] : await Deno.makeTempDir({ prefix: "mm-hf-" });
  await Deno.mkdir(dir, { recursive: true });
  await writeExports(dir);
  console.log(`wrote the exports and our logits to ${dir}`);
  if (args.includes("--write_only")) Deno.exit(0);
  const probe = await new Deno.Command("python3", {
    args: ["-c", "import transformers"],
    stderr: "null",
  })
    .output().catch(() => null);
  if (!probe?.success) {
    console.log(
      'skipped: python3 -c "import transformers" fails here (transformers is not installed)',
    );
    Deno.exit(0);
  }
  const run = await new Deno.Command("python3", {
    args: [new URL("./transformers_check.py", import.meta.url).pathname, dir],
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  Deno.exit(run.code);
}
