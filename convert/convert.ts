/**
 * `deno task convert` — MiniMind's `scripts/convert_model.py` in one command: read a model
 * (MiniMind `.pth`, `.safetensors`, or an HF folder in MiniMind / Llama / Qwen3 / Qwen3-MoE
 * layout), optionally fold LoRA adapters in, and write it as an HF folder (`--to minimind|llama|
 * qwen3`), a MiniMind `.pth`, or a GGUF file for llama.cpp / Ollama.
 *
 *   deno task convert --in out/full_sft_512.pth --out out/MiniMind2-Small --to llama
 *   deno task convert --in out/full_sft_512.safetensors --out minimind.gguf --to gguf --dtype q8_0
 *   deno task convert --in MiniMind2-Small --out out/full_sft_512.pth --to pth
 * @module
 */
import { loadModel, saveModel, saveModelPth } from "./hf.ts";
import type { ModelFlags } from "./infer.ts";
import { exportGguf, type GgufDType } from "./gguf.ts";
import type { ExportDType, HfLayout } from "./layouts.ts";
import * as lora from "./lora.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { countParams, type MiniMindParams } from "../nn/model/minimind.ts";
import { type PresetName, PRESETS } from "../nn/model/minimind_config.ts";
import { parseFlags, runMain, usage, UsageError } from "../cli.ts";
import type { FlagTable } from "../cli.ts";

/** The flags (MiniMind's model flags for a `.pth`, which holds no config). */
export const CONVERT_FLAGS = {
  in: { type: "optional", help: "input: .pth, .safetensors, or an HF folder (required)" },
  out: { type: "optional", help: "output folder (HF layouts) or file (.pth, .gguf) (required)" },
  to: {
    type: "choice",
    default: "minimind",
    choices: ["minimind", "llama", "qwen3", "pth", "gguf"],
    help: "target format",
  },
  dtype: {
    type: "choice",
    default: "f16",
    choices: ["f32", "f16", "bf16", "q8_0"],
    help: "stored weights (q8_0: gguf only; MiniMind's converter writes f16)",
  },
  merge_lora: { type: "optional", help: "LoRA adapters (.safetensors or .pth) to fold in" },
  tokenizer_path: {
    type: "optional",
    help: "folder with tokenizer.json (default: the one beside the input)",
  },
  model_code: {
    type: "optional",
    help: "MiniMind's model_minimind.py to copy (the minimind layout's auto_map needs it)",
  },
  preset: {
    type: "choice",
    default: "auto",
    choices: ["auto", ...Object.keys(PRESETS)],
    help: ".pth: the model family (auto: from the shapes)",
  },
  hidden_size: { type: "int", default: 0, min: 1, help: ".pth: checked against the shapes" },
  num_hidden_layers: { type: "int", default: 0, min: 1, help: ".pth: checked" },
  num_attention_heads: {
    type: "int",
    default: 8,
    min: 1,
    help: ".pth: query heads (MiniMind2 shapes cannot tell them)",
  },
  num_key_value_heads: { type: "int", default: 0, min: 1, help: ".pth: checked" },
  use_moe: { type: "bool01", default: false, help: ".pth: checked against the shapes" },
  intermediate_size: { type: "int", default: 0, min: 1, help: ".pth: checked" },
  num_experts_per_tok: { type: "int", default: 0, min: 1, help: ".pth MoE: experts per token" },
  rope_theta: { type: "float", default: 1e6, min: 0, help: ".pth: RoPE base" },
  max_position_embeddings: { type: "int", default: 32768, min: 1, help: ".pth: RoPE table" },
  rms_norm_eps: { type: "float", default: 0, min: 0, help: ".pth: (default by family)" },
} satisfies FlagTable;

const COMMAND = "deno task convert";

/**
 * Converts one model file or folder.
 *
 * @param argv arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: a, given, help } = parseFlags(argv, CONVERT_FLAGS, COMMAND);
  if (help) {
    console.log(usage(
      COMMAND,
      "Convert MiniMind weights: .pth / safetensors / HF folders in; HF (minimind, llama, qwen3), .pth or GGUF out.",
      CONVERT_FLAGS,
    ));
    return 0;
  }
  if (!a.in) throw new UsageError("Missing --in (a .pth, .safetensors or HF folder)");
  if (!a.out) throw new UsageError("Missing --out (a folder, .pth or .gguf path)");
  if (a.dtype === "q8_0" && a.to !== "gguf") {
    throw new UsageError(`Invalid --dtype q8_0 for --to ${a.to}: Q8_0 exists only in GGUF`);
  }
  const flags: ModelFlags = {};
  for (const k of Object.keys(CONVERT_FLAGS) as (keyof typeof CONVERT_FLAGS)[]) {
    if (!given.has(k) || ["in", "out", "to", "dtype", "merge_lora"].includes(k)) continue;
    if (k === "preset") {
      if (a.preset !== "auto") flags.preset = a.preset as PresetName;
    } else if (k in a && !["tokenizer_path", "model_code"].includes(k)) {
      (flags as Record<string, unknown>)[k] = a[k];
    }
  }
  const t0 = performance.now();
  const m = await loadModel(a.in, { flags }).catch((e: Error) => {
    // a model flag that contradicts the weights is a usage error (exit 2)
    throw e.message.startsWith("Cannot infer the model config") ? new UsageError(e.message) : e;
  });
  let params: MiniMindParams = m.params;
  if (a.merge_lora) {
    const adapters = await lora.load(a.merge_lora, params);
    params = lora.merge(params, adapters);
    console.log(`Merged ${lora.count(adapters)} LoRA params from ${a.merge_lora}`);
  }
  const tokenizer = a.tokenizer_path ? await Tokenizer.fromFile(a.tokenizer_path) : m.tokenizer;
  if (tokenizer && tokenizer.vocabSize > m.cfg.vocabSize) {
    throw new UsageError(
      `The tokenizer has ${tokenizer.vocabSize} tokens but the model's vocab is ${m.cfg.vocabSize}: pass the model's own --tokenizer_path`,
    );
  }
  const cfg = m.cfg;
  if (a.to === "gguf") {
    if (!tokenizer) {
      throw new UsageError(
        `GGUF embeds the tokenizer, and none was found beside ${a.in}: pass --tokenizer_path <folder with tokenizer.json>`,
      );
    }
    await exportGguf(a.out, { cfg, params, tokenizer }, { dtype: a.dtype as GgufDType });
  } else if (a.to === "pth") {
    await saveModelPth(a.out, { cfg, params }, a.dtype as ExportDType);
  } else {
    if (!tokenizer) {
      console.warn(`warning: no tokenizer beside ${a.in}; ${a.out} gets weights and config only`);
    }
    await saveModel(a.out, { cfg, params, tokenizer }, {
      layout: a.to as HfLayout,
      dtype: a.dtype as ExportDType,
      modelCode: a.model_code,
    });
  }
  const n = countParams(cfg);
  console.log(
    `Converted ${a.in} (${cfg.generation}${cfg.useMoe ? " MoE" : ""}, hidden ${cfg.hiddenSize}, ` +
      `${cfg.numHiddenLayers} layers, ${(n.total / 1e6).toFixed(2)}M params) → ${a.out} ` +
      `(${a.to}, ${a.dtype}) in ${((performance.now() - t0) / 1000).toFixed(1)}s`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
