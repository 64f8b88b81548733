/**
 * The `lora` namespace of the library: the pure functions of `nn/model/lora.ts` (init, apply, merge,
 * split, check) plus adapter files — `save`/`load` with MiniMind's `save_lora` keys in
 * safetensors.
 * @module
 */
import type { Tensor } from "../nn/tensor.ts";
import { flatten, unflatten } from "../nn/tree.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import { apply, check } from "../nn/model/lora.ts";
import type { LoraParams } from "../nn/model/lora.ts";
import { loadSafetensors, saveSafetensors } from "./safetensors.ts";
import { loadPth } from "./pth.ts";

export * from "../nn/model/lora.ts";

/**
 * Saves adapters only, under MiniMind's `save_lora` keys (float32 safetensors).
 *
 * @param path `.safetensors` destination (written atomically)
 * @param adapters adapter tree
 * @param metadata extra string metadata (e.g. the rank, the base model)
 */
export async function save(
  path: string,
  adapters: LoraParams,
  metadata: Record<string, string> = {},
): Promise<void> {
  const flat = flatten(adapters);
  const entries: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(flat)) entries[k] = t;
  await saveSafetensors(path, entries, { format: "pt", ...metadata });
}

/**
 * Loads adapters saved by {@link save} (or any safetensors of `save_lora` keys), or a `.pth`
 * that MiniMind's `save_lora` wrote (read by the whitelisting `.pth` reader); a `module.` prefix
 * is stripped as MiniMind's `load_lora` does. With `params`, checks every key and shape against
 * that model (the error names the first mismatching key and both shapes).
 *
 * @param path `.safetensors` or `.pth` file
 * @param params the model the adapters are for (optional check)
 * @returns the adapter tree
 */
export async function load(path: string, params?: MiniMindParams): Promise<LoraParams> {
  const raw = /\.(pth|pt|bin)$/.test(path) ? await loadPth(path) : await loadSafetensors(path);
  const flat: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(raw)) flat[k.replace(/^module\./, "")] = t;
  const adapters = unflatten(flat);
  if (params) check(params, adapters, path);
  return adapters;
}

/**
 * Where `--lora_weight NAME` points: a `.safetensors` path as given, else the trainer's file
 * `<saveDir>/lora/<NAME>_<hidden>[_moe].safetensors`.
 *
 * @param name a path or an adapter name (e.g. `lora_ci`)
 * @param saveDir the weights folder (`out`)
 * @param cfg the base model's config (width, MoE)
 * @returns the file path
 */
export function resolvePath(
  name: string,
  saveDir: string,
  cfg: { hiddenSize: number; useMoe: boolean },
): string {
  if (name.endsWith(".safetensors") || name.includes("/")) return name;
  return `${saveDir}/lora/${name}_${cfg.hiddenSize}${cfg.useMoe ? "_moe" : ""}.safetensors`;
}

/**
 * Loads adapters for `params` and returns the applied (unmerged) tree; errors name the file, the
 * first mismatching key and both shapes.
 *
 * @param params base params
 * @param path adapter file
 * @returns params carrying the adapters
 */
export async function applyFile(params: MiniMindParams, path: string): Promise<MiniMindParams> {
  if (!(await Deno.stat(path).catch(() => null))) {
    throw new Error(
      `Cannot load LoRA weights ${path}: no such file (train them with deno task lora)`,
    );
  }
  return apply(params, await load(path, params));
}
