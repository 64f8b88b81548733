/**
 * Model files in and out. `saveModel` writes an HF folder in MiniMind's layout (config with
 * `auto_map`), Llama's (MiniMind2 dense) or Qwen3's / Qwen3-MoE's (minimind-3), f32/f16/bf16
 * safetensors with the tokenizer files; `saveModelPth` writes a MiniMind `.pth` state dict.
 * `loadModel` reads all of these back, plus sharded checkpoints, `pytorch_model.bin`, bare
 * `.safetensors` and MiniMind's own `.pth` files (config inferred from the shapes and flags).
 * A tied lm_head is stored once in HF folders, as `model.embed_tokens.weight`.
 * @module
 */
import { basename, dirname, join } from "node:path";
import { Tokenizer } from "../data/tokenizer.ts";
import { paramsFromFlat, paramShapes } from "../nn/model/minimind.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import { config as makeConfig, configFromHF, configToHF } from "../nn/model/minimind_config.ts";
import type { ConfigOverrides, MiniMindConfig, PresetName } from "../nn/model/minimind_config.ts";
import type { Tensor } from "../nn/tensor.ts";
import { flatten, type Tree } from "../nn/tree.ts";
import { tensor } from "../nn/creation.ts";
import {
  decodeRaw,
  parseSafetensors,
  type RawTensor,
  saveSafetensors,
  toHalf,
} from "./safetensors.ts";
import { parsePth, savePth } from "./pth.ts";
import { inferConfig, type ModelFlags } from "./infer.ts";
import {
  configFromAnyHF,
  type ExportDType,
  hfConfigFor,
  type HfLayout,
  unfuseExperts,
} from "./layouts.ts";

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
  /** MiniMind's model flags for a `.pth` (which holds no config). */
  flags?: ModelFlags;
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

/** Raw tensors of a folder's weights: one safetensors file, shards listed in the index, or a
 * `pytorch_model.bin` (PyTorch zip) as `convert_torch2transformers_minimind` writes. */
async function loadRawWeights(dir: string): Promise<Record<string, RawTensor>> {
  const single = join(dir, "model.safetensors");
  if (await exists(single)) return parseSafetensors(await Deno.readFile(single), single).tensors;
  const indexPath = join(dir, "model.safetensors.index.json");
  if (await exists(indexPath)) {
    const index = await readJsonFile(indexPath);
    const map = index.weight_map as Record<string, string> | undefined;
    if (!map || typeof map !== "object") {
      throw new Error(`Cannot read ${indexPath}: it has no weight_map`);
    }
    const out: Record<string, RawTensor> = {};
    for (const file of new Set(Object.values(map))) {
      // a shard is a file name inside the folder: nothing absolute, no "..", no subfolders
      if (
        typeof file !== "string" || basename(file) !== file || file.includes("\\") ||
        file === ".." || file === "."
      ) {
        throw new Error(
          `Cannot read ${indexPath}: shard ${
            JSON.stringify(file)
          } is not a file name inside ${dir}`,
        );
      }
      const path = join(dir, file);
      Object.assign(out, parseSafetensors(await Deno.readFile(path), path).tensors);
    }
    return out;
  }
  const bin = join(dir, "pytorch_model.bin");
  if (await exists(bin)) return parsePth(await Deno.readFile(bin), bin).tensors;
  throw new Error(
    `Cannot load a model from ${dir}: it has none of model.safetensors, model.safetensors.index.json, pytorch_model.bin`,
  );
}

/**
 * Compares the config's sizes with the weights before anything is built from the config (a
 * `num_hidden_layers` of 1e7 would otherwise allocate its parameter list first): the layer count
 * and the embedding's shape must match.
 */
function checkSizes(cfg: MiniMindConfig, flat: Record<string, Tensor>, path: string): void {
  let layers = 0;
  for (const k of Object.keys(flat)) {
    const m = /^model\.layers\.(\d+)\./.exec(k);
    if (m) layers = Math.max(layers, Number(m[1]) + 1);
  }
  if (cfg.numHiddenLayers !== layers) {
    throw new Error(
      `Cannot load ${path}: the config says num_hidden_layers ${cfg.numHiddenLayers}, the weights have ${layers} layers`,
    );
  }
  const embed = flat["model.embed_tokens.weight"];
  if (embed && (embed.shape[0] !== cfg.vocabSize || embed.shape[1] !== cfg.hiddenSize)) {
    throw new Error(
      `Cannot load ${path}: the config says vocab_size ${cfg.vocabSize} and hidden_size ${cfg.hiddenSize}, ` +
        `model.embed_tokens.weight is [${embed.shape.join(", ")}]`,
    );
  }
}

function resolveConfig(options: LoadModelOptions): MiniMindConfig | null {
  const c = options.config;
  if (!c) return null;
  return "generation" in c && "headDim" in c && typeof c.headDim === "number" && "ropeTheta" in c
    ? c as MiniMindConfig
    : makeConfig(options.preset ?? "minimind2-small", c as ConfigOverrides);
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Loads a MiniMind model from:
 * - a folder in HF layout — MiniMind's (`model_type` "minimind"), `LlamaForCausalLM`,
 *   `Qwen3ForCausalLM` or `Qwen3MoeForCausalLM` (fused transformers-5 experts included) — with
 *   `model.safetensors`, shards, or `pytorch_model.bin`, plus the tokenizer files when present;
 * - a `.safetensors` file (its config from `options.config`, the file's `config` metadata, or a
 *   `config.json` beside it);
 * - a MiniMind `.pth` state dict (its config inferred from the shapes and `options.flags`, see
 *   {@link inferConfig}; a tokenizer beside it is picked up).
 *
 * @param path a folder, a .safetensors or a .pth file
 * @param options config for bare weight files, model flags for .pth, strictness
 * @returns config, params and (when present) tokenizer
 * @example
 * ```ts ignore
 * import { loadModel } from "@minimind/ts";
 * const { cfg, params, tokenizer } = await loadModel("out/minimind2-small");
 * const pth = await loadModel("out/full_sft_512.pth", { flags: { hidden_size: 512 } });
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
  let dir: string, raw: Record<string, RawTensor>, cfg = resolveConfig(options);
  if (info.isDirectory) {
    dir = path;
    if (!cfg) {
      const cfgPath = join(dir, "config.json");
      if (!(await exists(cfgPath))) {
        throw new Error(`Cannot load a model from ${dir}: config.json is missing`);
      }
      cfg = configFromAnyHF(await readJsonFile(cfgPath), cfgPath);
    }
    raw = unfuseExperts(await loadRawWeights(dir));
  } else if (path.endsWith(".safetensors")) {
    dir = dirname(path);
    const parsed = parseSafetensors(await Deno.readFile(path), path);
    if (!cfg) {
      const meta = parsed.metadata;
      if (meta.config) cfg = configFromHF(JSON.parse(meta.config));
      else if (await exists(join(dir, "config.json"))) {
        cfg = configFromAnyHF(await readJsonFile(join(dir, "config.json")));
      } else {
        throw new Error(
          `Cannot load ${path}: no config (pass options.config, or put a config.json beside it)`,
        );
      }
    }
    raw = parsed.tensors;
  } else if (path.endsWith(".pth") || path.endsWith(".pt") || path.endsWith(".bin")) {
    dir = dirname(path);
    raw = {};
    // DDP (`module.`) and torch.compile (`_orig_mod.`) prefixes, as MiniMind's loaders strip them
    for (const [k, t] of Object.entries(parsePth(await Deno.readFile(path), path).tensors)) {
      raw[k.replace(/^(module\.|_orig_mod\.)+/, "")] = t;
    }
    if (!cfg) {
      const shapes: Record<string, readonly number[]> = {};
      for (const [k, t] of Object.entries(raw)) shapes[k] = t.shape;
      const e = raw["model.embed_tokens.weight"], h = raw["lm_head.weight"];
      cfg = inferConfig(shapes, options.flags, !h || !e || sameBytes(e.data, h.data));
    }
  } else {
    throw new Error(
      `Cannot load a model from ${path}: expected a folder in HF layout, a .safetensors or a .pth file`,
    );
  }
  if (cfg.tieWordEmbeddings) delete raw["lm_head.weight"];
  const flat: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(raw)) {
    const { data, dtype } = decodeRaw(t, name);
    flat[name] = tensor(data, t.shape, dtype);
  }
  let params: MiniMindParams;
  try {
    checkSizes(cfg, flat, path);
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

/** Options of {@link saveModel}. */
export interface SaveModelOptions {
  /**
   * Folder layout: "minimind" (default; MiniMind's config with `auto_map`), "llama"
   * (`LlamaForCausalLM`, MiniMind2 dense) or "qwen3" (`Qwen3ForCausalLM` / `Qwen3MoeForCausalLM`,
   * minimind-3).
   */
  layout?: HfLayout;
  /** Stored weight dtype (default f32). */
  dtype?: ExportDType;
  /**
   * MiniMind's `model_minimind.py` to copy beside the weights (the "minimind" layout's `auto_map`
   * points at it; transformers needs it for `trust_remote_code`).
   */
  modelCode?: string;
}

/**
 * The state dict of a model as raw tensors in `dtype`, in MiniMind's key order. With `withLmHead`
 * a tied lm_head is listed too, sharing the embedding's bytes (as PyTorch's state_dict lists it).
 *
 * @param cfg model config
 * @param params parameters
 * @param dtype stored dtype (default f32)
 * @param withLmHead add `lm_head.weight` when tied (default false)
 * @returns raw tensors by state-dict key
 */
export async function stateDict(
  cfg: MiniMindConfig,
  params: MiniMindParams,
  dtype: ExportDType = "f32",
  withLmHead = false,
): Promise<Record<string, RawTensor>> {
  const flat = flatten(params as unknown as Tree);
  const out: Record<string, RawTensor> = {};
  for (const [name] of paramShapes(cfg)) {
    const t = flat[name];
    const vals = await t.data();
    const f32 = vals instanceof Float32Array ? vals : Float32Array.from(vals);
    out[name] = dtype === "f32"
      ? {
        dtype: "F32",
        shape: t.shape,
        data: new Uint8Array(f32.buffer, f32.byteOffset, f32.byteLength),
      }
      : toHalf(f32, t.shape, dtype === "f16" ? "F16" : "BF16");
  }
  if (withLmHead && cfg.tieWordEmbeddings) out["lm_head.weight"] = out["model.embed_tokens.weight"];
  return out;
}

/**
 * Writes a model as an HF folder: `config.json` for the layout, `model.safetensors` (f32, f16 or
 * bf16, `{"format": "pt"}` metadata; the minimind layout also stores its config there so the file
 * alone loads), `generation_config.json`, and the tokenizer files with the chat template
 * (`tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`, `chat_template.jinja`).
 * Creates `dir` if needed.
 *
 * @param dir output folder
 * @param model config, params and optional tokenizer
 * @param options layout, dtype, model code to copy
 * @returns when every file is written
 * @example
 * ```ts ignore
 * import * as mm from "@minimind/ts";
 * const cfg = mm.config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2 });
 * await mm.saveModel("out/tiny", { cfg, params: mm.init(cfg, mm.random.key(0)) });
 * await mm.saveModel("out/tiny-llama", { cfg, params }, { layout: "llama", dtype: "f16" });
 * ```
 */
export async function saveModel(
  dir: string,
  model: SaveModelInput,
  options: SaveModelOptions = {},
): Promise<void> {
  const layout = options.layout ?? "minimind", dtype = options.dtype ?? "f32";
  const hf = hfConfigFor(model.cfg, layout, dtype);
  await Deno.mkdir(dir, { recursive: true });
  const meta: Record<string, string> = { format: "pt" };
  if (layout === "minimind") meta.config = JSON.stringify(configToHF(model.cfg));
  await saveSafetensors(
    join(dir, "model.safetensors"),
    await stateDict(model.cfg, model.params, dtype),
    meta,
  );
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(hf, null, 2) + "\n");
  const gen = {
    _from_model_config: true,
    bos_token_id: model.cfg.bosTokenId,
    eos_token_id: model.cfg.eosTokenId,
    do_sample: true,
    temperature: 0.85,
    top_p: 0.85,
    top_k: 50,
  };
  await Deno.writeTextFile(
    join(dir, "generation_config.json"),
    JSON.stringify(gen, null, 2) + "\n",
  );
  if (options.modelCode) await Deno.copyFile(options.modelCode, join(dir, "model_minimind.py"));
  if (model.tokenizer) await model.tokenizer.save(dir);
}

/**
 * Writes a model as a MiniMind `.pth` state dict (what MiniMind's trainers save and its scripts
 * `torch.load`): every key of the model's state_dict, a tied lm_head included, in `dtype`
 * (default f16, as MiniMind saves).
 *
 * @param path output file
 * @param model config and params
 * @param dtype stored dtype
 * @returns when the file is written
 */
export async function saveModelPth(
  path: string,
  model: Pick<SaveModelInput, "cfg" | "params">,
  dtype: ExportDType = "f16",
): Promise<void> {
  await savePth(path, await stateDict(model.cfg, model.params, dtype, true));
}
