/**
 * `deno task merge_lora` — MiniMind's `scripts/convert_model.py::convert_merge_base_lora`: load a
 * base model and LoRA adapters, fold every adapter into its Linear (W + B·A) and write the merged
 * weights (`<save_dir>/merge_<name>_<hidden>.safetensors` for `lora_<name>`, with the config and
 * the tokenizer beside them), loadable by every command without `--lora_weight`.
 *
 *   deno task merge_lora --weight full_sft --lora_weight lora_ci --hidden_size 192 --save_dir out/demo
 * @module
 */
import { dirname, join } from "node:path";
import { flatten } from "../nn/tree.ts";
import { configToHF } from "../nn/model/minimind_config.ts";
import { loadModel } from "./hf.ts";
import * as lora from "./lora.ts";
import { saveSafetensors } from "./safetensors.ts";
import { parseFlags, runMain, usage, UsageError } from "../cli.ts";
import type { FlagTable } from "../cli.ts";

/** The flags (eval_llm.py's names for the base and the adapters). */
export const MERGE_FLAGS = {
  save_dir: {
    type: "string",
    default: "out",
    help: "where the base weights are and the merge goes",
  },
  weight: { type: "string", default: "full_sft", help: "base weight prefix" },
  load_from: { type: "optional", help: "base model file or HF folder (instead of --weight)" },
  lora_weight: { type: "string", default: "lora_ci", help: "adapter name or file" },
  hidden_size: { type: "int", default: 512, min: 8, help: "selects the weight files" },
  use_moe: { type: "bool01", default: false, help: "selects the _moe weight files" },
  out: {
    type: "optional",
    help: "output file (default <save_dir>/merge_<name>_<hidden>.safetensors)",
  },
} satisfies FlagTable;

const COMMAND = "deno task merge_lora";

/** MiniMind's weight file stem: `{name}_{hidden}[_moe]`. */
function stem(name: string, hidden: number, moe: boolean): string {
  return `${name}_${hidden}${moe ? "_moe" : ""}`;
}

/**
 * Merges adapters into their base model and writes the result.
 *
 * @param argv arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, MERGE_FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "Fold LoRA adapters into the base weights.", MERGE_FLAGS));
    return 0;
  }
  const base = a.load_from ??
    join(a.save_dir, `${stem(a.weight, a.hidden_size, a.use_moe)}.safetensors`);
  if (!(await Deno.stat(base).catch(() => null))) {
    throw new UsageError(`Cannot merge: the base model ${base} does not exist`);
  }
  const m = await loadModel(base);
  const path = lora.resolvePath(a.lora_weight, a.save_dir, m.cfg);
  const applied = await lora.applyFile(m.params, path);
  const [adapters, params] = lora.split(applied);
  const merged = lora.merge(params, adapters);
  const name = a.lora_weight.replace(/^.*\//, "").replace(/\.safetensors$/, "")
    .replace(/_\d+(_moe)?$/, "").replace(/^lora_/, "");
  const out = a.out ??
    join(a.save_dir, `${stem(`merge_${name}`, m.cfg.hiddenSize, m.cfg.useMoe)}.safetensors`);
  await saveSafetensors(out, flatten(merged), {
    format: "pt",
    config: JSON.stringify(configToHF(m.cfg)),
  });
  if (m.tokenizer) await m.tokenizer.save(dirname(out));
  console.log(`Merged ${lora.count(adapters)} adapter params from ${path} into ${base} → ${out}`);
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
