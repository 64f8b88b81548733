/**
 * Hugging Face folder layout for MiniMind models: `config.json` (the model's `configToHF`),
 * `model.safetensors` (PyTorch state-dict names; a tied lm_head stored once, as
 * `model.embed_tokens.weight`), and the tokenizer files (`tokenizer.json`,
 * `tokenizer_config.json`, `special_tokens_map.json`, `chat_template.jinja`). `loadModel` reads
 * such a folder (sharded checkpoints with `model.safetensors.index.json` included) or a single
 * `.safetensors` file.
 * @module
 */
import { dirname, join } from "node:path";
import { Tokenizer } from "../data/tokenizer.ts";
import { paramsFromFlat } from "../nn/model/minimind.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import { config as makeConfig, configFromHF, configToHF } from "../nn/model/minimind_config.ts";
import type { ConfigOverrides, MiniMindConfig, PresetName } from "../nn/model/minimind_config.ts";
import type { Tensor } from "../nn/tensor.ts";
import { flatten, type Tree } from "../nn/tree.ts";
import { loadSafetensors, readSafetensorsMetadata, saveSafetensors } from "./safetensors.ts";

/** A loaded model: config, parameters, and the tokenizer when the folder has one. */
export interface LoadedModel {
  /** Model config. */
  cfg: MiniMindConfig;
  /** Parameter tree. */
  params: MiniMindParams;
  /** The tokenizer saved beside the weights, if any. */
  tokenizer?: Tokenizer;
}

/** Options of {@link loadModel}. */
export interface LoadModelOptions {
  /**
   * The config when the weights come without a `config.json` (a bare `.safetensors` file not
   * written by `saveModel`): a resolved config, or overrides of the minimind2-small preset.
   */
  config?: MiniMindConfig | ConfigOverrides;
  /** Preset the overrides apply to (default "minimind2-small"). */
  preset?: PresetName;
  /** Accept unknown tensor names (default false). */
  lenient?: boolean;
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function readJsonFile(path: string): Promise<Record<string, unknown>> {
  try {
    return JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new Error(`Cannot read ${path}: ${(e as Error).message}`);
  }
}

/** Every tensor of a folder's weights (one file or shards listed in the index). */
async function loadWeights(dir: string): Promise<Record<string, Tensor>> {
  const single = join(dir, "model.safetensors");
  if (await exists(single)) return await loadSafetensors(single);
  const indexPath = join(dir, "model.safetensors.index.json");
  if (await exists(indexPath)) {
    const index = await readJsonFile(indexPath);
    const map = index.weight_map as Record<string, string> | undefined;
    if (!map || typeof map !== "object") {
      throw new Error(`Cannot read ${indexPath}: it has no weight_map`);
    }
    const out: Record<string, Tensor> = {};
    for (const file of new Set(Object.values(map))) {
      Object.assign(out, await loadSafetensors(join(dir, file)));
    }
    return out;
  }
  throw new Error(
    `Cannot load a model from ${dir}: it has neither model.safetensors nor model.safetensors.index.json`,
  );
}

function resolveConfig(options: LoadModelOptions): MiniMindConfig | null {
  const c = options.config;
  if (!c) return null;
  return "generation" in c && "headDim" in c && typeof c.headDim === "number" && "ropeTheta" in c
    ? c as MiniMindConfig
    : makeConfig(options.preset ?? "minimind2-small", c as ConfigOverrides);
}

/**
 * Loads a MiniMind model: a folder in HF layout (`config.json` + `model.safetensors` or shards,
 * plus the tokenizer files when present), or a `.safetensors` file (its config from
 * `options.config`, from the file's `config` metadata, or from a `config.json` beside it).
 *
 * @param path a folder or a .safetensors file
 * @param options config for bare weight files, strictness
 * @returns config, params and (when present) tokenizer
 * @example
 * ```ts ignore
 * import { loadModel } from "@minimind/ts";
 * const { cfg, params, tokenizer } = await loadModel("out/minimind2-small");
 * ```
 */
export async function loadModel(
  path: string,
  options: LoadModelOptions = {},
): Promise<LoadedModel> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    throw new Error(`Cannot load a model from ${path}: ${(e as Error).message}`);
  }
  let dir: string, flat: Record<string, Tensor>, cfg = resolveConfig(options);
  if (info.isDirectory) {
    dir = path;
    if (!cfg) {
      const cfgPath = join(dir, "config.json");
      if (!(await exists(cfgPath))) {
        throw new Error(`Cannot load a model from ${dir}: config.json is missing`);
      }
      cfg = configFromHF(await readJsonFile(cfgPath));
    }
    flat = await loadWeights(dir);
  } else if (path.endsWith(".safetensors")) {
    dir = dirname(path);
    if (!cfg) {
      const meta = await readSafetensorsMetadata(path);
      if (meta.config) cfg = configFromHF(JSON.parse(meta.config));
      else if (await exists(join(dir, "config.json"))) {
        cfg = configFromHF(await readJsonFile(join(dir, "config.json")));
      } else {
        throw new Error(
          `Cannot load ${path}: no config (pass options.config, or put a config.json beside it)`,
        );
      }
    }
    flat = await loadSafetensors(path);
  } else {
    throw new Error(
      `Cannot load a model from ${path}: expected a folder in HF layout or a .safetensors file`,
    );
  }
  let params: MiniMindParams;
  try {
    params = paramsFromFlat(cfg, flat, { strict: !options.lenient });
  } catch (e) {
    for (const t of Object.values(flat)) t.dispose();
    throw e;
  }
  const used = new Set(Object.values(flatten(params as unknown as Tree)));
  for (const t of Object.values(flat)) if (!used.has(t)) t.dispose();
  const tokenizer = (await exists(join(dir, "tokenizer.json")))
    ? await Tokenizer.fromFile(dir)
    : undefined;
  return tokenizer ? { cfg, params, tokenizer } : { cfg, params };
}

/** What {@link saveModel} writes. */
export interface SaveModelInput {
  /** Model config (→ config.json). */
  cfg: MiniMindConfig;
  /** Parameters (→ model.safetensors). */
  params: MiniMindParams;
  /** Tokenizer (→ tokenizer.json, tokenizer_config.json, …), optional. */
  tokenizer?: Tokenizer;
}

/**
 * Writes a model in HF layout: `config.json`, `model.safetensors` (f32, `{"format": "pt"}`
 * metadata; the config is also stored in the metadata so the file alone can be loaded) and the
 * tokenizer files. Creates `dir` if needed.
 *
 * @param dir output folder
 * @param model config, params and optional tokenizer
 * @returns when every file is written
 * @example
 * ```ts ignore
 * import * as mm from "@minimind/ts";
 * const cfg = mm.config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2 });
 * await mm.saveModel("out/tiny", { cfg, params: mm.init(cfg, mm.random.key(0)) });
 * ```
 */
export async function saveModel(dir: string, model: SaveModelInput): Promise<void> {
  await Deno.mkdir(dir, { recursive: true });
  const hf = configToHF(model.cfg);
  const record = flatten(model.params as unknown as Tree);
  await saveSafetensors(join(dir, "model.safetensors"), record, {
    format: "pt",
    config: JSON.stringify(hf),
  });
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(hf, null, 2) + "\n");
  if (model.tokenizer) await model.tokenizer.save(dir);
}
