/**
 * LoRA as MiniMind's `model/model_lora.py` does it, as pure functions over parameter trees. An
 * adapter pair sits beside a Linear's weight under the key `lora`: `{weight, lora: {A, B}}` with
 * `A.weight` [r, in] and `B.weight` [out, r], so `tree.flatten` gives MiniMind's `save_lora` names
 * (`model.layers.0.self_attn.q_proj.lora.A.weight`). The model's linear computes W·x + B(A(x))
 * for such a leaf (no alpha/rank scaling, no dropout, as the reference). Default targets are the
 * square Linears (V2 `apply_lora`): q_proj and o_proj for MiniMind2/minimind-3 shapes.
 * @module
 */
// r = rank, in/out = the Linear's features
import type { Tensor } from "../tensor.ts";
import { tensor, zeros } from "../creation.ts";
import { foldIn, normalArray } from "../random.ts";
import type { Key } from "../random.ts";
import { flatten, unflatten } from "../tree.ts";
import type { Tree } from "../tree.ts";
import { add } from "../ops/binary.ts";
import { matmul } from "../ops/matmul.ts";
import { paramShapes } from "./minimind.ts";
import type { MiniMindParams } from "./minimind.ts";
import type { MiniMindConfig } from "./minimind_config.ts";
import { check } from "./layers/linear.ts";

export { apply, check, linear } from "./layers/linear.ts";
export type { LinearParams, LoraPair } from "./layers/linear.ts";

/**
 * The adapter tree: nested like the model's params, holding only `….lora.{A,B}.weight` leaves
 * (`tree.flatten` gives MiniMind's `save_lora` keys).
 */
export type LoraParams = Tree;

/** Options of {@link init}. */
export interface LoraInitOptions {
  /** Rank r (MiniMind: 16; V2: 8). */
  rank: number;
  /**
   * Which Linears get an adapter: module names such as `q_proj` or full module paths
   * (`model.layers.0.self_attn.q_proj`); default every square Linear (V2 `apply_lora`).
   */
  targets?: readonly string[];
}

/** The Linear modules of a config: `[module path, [out, in]]`, in state-dict order. */
export function linearModules(cfg: MiniMindConfig): [string, number[]][] {
  return paramShapes(cfg)
    .filter(([k, s]) => s.length === 2 && /_proj\.weight$/.test(k))
    .map(([k, s]) => [k.slice(0, -".weight".length), s]);
}

function selected(path: string, shape: number[], targets?: readonly string[]): boolean {
  if (!targets) return shape[0] === shape[1];
  const name = path.slice(path.lastIndexOf(".") + 1);
  return targets.includes(name) || targets.includes(path);
}

/**
 * Fresh adapters: A ~ N(0, 0.02), B = 0 (so the adapted model starts equal to the base).
 * Adapter number i draws from `foldIn(key, i)` in state-dict order.
 *
 * @param cfg model config
 * @param key PRNG key
 * @param options rank and targets
 * @returns the adapter tree
 * @example
 * ```ts
 * import { config, lora, random, tree } from "@minimind/ts";
 * const cfg = config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2 });
 * const ad = lora.init(cfg, random.key(0), { rank: 4 });
 * Object.keys(tree.flatten(ad))[0]; // "model.layers.0.self_attn.q_proj.lora.A.weight"
 * ```
 */
export function init(cfg: MiniMindConfig, key: Key, options: LoraInitOptions): LoraParams {
  const r = options.rank;
  if (!(Number.isInteger(r) && r >= 1)) {
    throw new Error(`Cannot init LoRA with rank ${r}: it must be an integer ≥ 1`);
  }
  const mods = linearModules(cfg).filter(([p, s]) => selected(p, s, options.targets));
  if (mods.length === 0) {
    throw new Error(
      `Cannot init LoRA: no Linear matches the targets ${
        JSON.stringify(options.targets ?? "square")
      } (Linears: ${[...new Set(linearModules(cfg).map(([p]) => p.replace(/.*\./, "")))]})`,
    );
  }
  const flat: Record<string, Tensor> = {};
  mods.forEach(([path, [out, inF]], i) => {
    const z = normalArray(foldIn(key, i), r * inF);
    const a = new Float32Array(r * inF);
    for (let j = 0; j < a.length; j++) a[j] = 0.02 * z[j];
    flat[`${path}.lora.A.weight`] = tensor(a, [r, inF], "f32");
    flat[`${path}.lora.B.weight`] = zeros([out, r], "f32");
  });
  return unflatten(flat);
}

/**
 * The adapted model's params with every adapter folded in: W' = W + B·A (pure: new tensors for
 * the adapted weights, the others shared).
 *
 * @param params base params
 * @param adapters adapter tree
 * @returns merged params (no `lora` keys)
 */
export function merge(params: MiniMindParams, adapters: LoraParams): MiniMindParams {
  check(params, adapters);
  const base = flatten(params as unknown as Tree);
  const flat = flatten(adapters);
  const out: Record<string, Tensor> = { ...base };
  for (const k of Object.keys(flat)) {
    if (!k.endsWith(".lora.A.weight")) continue;
    const mod = k.slice(0, -".lora.A.weight".length);
    const ba = matmul(flat[`${mod}.lora.B.weight`], flat[k]); // (out, in)
    out[`${mod}.weight`] = add(base[`${mod}.weight`], ba);
  }
  return unflatten(out) as unknown as MiniMindParams;
}

/**
 * Splits an applied tree (from {@link apply}) into `[adapters, base]`: the `lora` leaves and
 * everything else. Training differentiates the first half only.
 *
 * @param applied a tree with adapters
 * @returns `[adapters, base]`
 */
export function split(applied: MiniMindParams | Tree): [LoraParams, MiniMindParams] {
  const flat = flatten(applied as Tree);
  const a: Record<string, Tensor> = {}, b: Record<string, Tensor> = {};
  for (const [k, t] of Object.entries(flat)) (/\.lora\./.test(k) ? a : b)[k] = t;
  return [unflatten(a), unflatten(b) as unknown as MiniMindParams];
}

/**
 * Number of adapter parameters.
 *
 * @param adapters adapter tree
 * @returns Σ sizes
 */
export function count(adapters: LoraParams): number {
  let n = 0;
  for (const t of Object.values(flatten(adapters))) n += t.size;
  return n;
}
