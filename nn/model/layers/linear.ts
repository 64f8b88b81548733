/**
 * A Linear layer that may carry a LoRA adapter, as MiniMind's `model/model_lora.py` patches it:
 * `{weight, lora: {A, B}}` computes W·x + B(A(x)) (no scaling, no dropout). `apply` puts adapters
 * beside their Linears (unmerged) and `check` validates adapters against a model's params; the
 * rest of LoRA (init, merge, split) is `../lora.ts`.
 * @module
 */
// r = rank, in/out = the Linear's features
import type { Tensor } from "../../tensor.ts";
import { fmt } from "../../shape.ts";
import { flatten, unflatten } from "../../tree.ts";
import type { Tree } from "../../tree.ts";
import { add } from "../../ops/binary.ts";
import { matmul } from "../../ops/matmul.ts";

/** One adapter pair of a Linear [out, in]: A [r, in], B [out, r]. */
export type LoraPair = {
  /** Down-projection, A.weight [r, in], N(0, 0.02) at init. */
  readonly A: { readonly weight: Tensor };
  /** Up-projection, B.weight [out, r], zero at init. */
  readonly B: { readonly weight: Tensor };
};

/** A Linear's parameters, optionally carrying an unmerged adapter. */
export type LinearParams = {
  /** Weight [out, in]. */
  readonly weight: Tensor;
  /** The adapter (present on adapted Linears after `lora.apply`). */
  readonly lora?: LoraPair;
};

/**
 * y = x·Wᵀ, plus B(A(x)) when the Linear carries an adapter (MiniMind's patched forward).
 *
 * @param p the Linear's weight [out, in] and optional adapter
 * @param x input (..., in)
 * @returns (..., out)
 */
export function linear(p: LinearParams, x: Tensor): Tensor {
  const y = matmul(x, p.weight, { transB: true }); // (..., out)
  if (!p.lora) return y;
  const down = matmul(x, p.lora.A.weight, { transB: true }); // (..., r)
  return add(y, matmul(down, p.lora.B.weight, { transB: true })); // (..., out)
}

/**
 * Checks adapters against a model's params: every key is `<Linear>.lora.{A,B}.weight` of a Linear
 * the params have, with A [r, in] and B [out, r]. Errors name the first mismatching key and both
 * shapes.
 *
 * @param params the base params
 * @param adapters the adapter tree (or its flat record)
 * @param source where the adapters came from (for messages)
 * @returns the rank
 */
export function check(
  params: Tree,
  adapters: Tree | Record<string, Tensor>,
  source = "LoRA weights",
): number {
  const base = flatten(params as Tree);
  const flat = flatten(adapters as Tree);
  let rank = -1;
  // in the model's state-dict order, so "the first mismatching key" is the first in the model
  const order = new Map(Object.keys(base).map((k, i) => [k, i]));
  const pos = (k: string) => order.get(k.replace(/\.lora\.[AB]\.weight$/, ".weight")) ?? -1;
  const keys = Object.keys(flat).sort((a, b) => pos(a) - pos(b) || (a < b ? -1 : 1));
  for (const k of keys) {
    const t = flat[k];
    const m = /^(.*)\.lora\.(A|B)\.weight$/.exec(k);
    if (!m) {
      throw new Error(`Cannot use ${source}: ${k} is not a LoRA key (<module>.lora.A.weight)`);
    }
    const w = base[`${m[1]}.weight`];
    if (!w || w.rank !== 2) {
      throw new Error(
        `Cannot use ${source}: ${k} adapts ${m[1]}, which the model has no Linear of`,
      );
    }
    const [out, inF] = w.shape;
    const r = m[2] === "A" ? t.shape[0] : t.shape[1];
    const want = m[2] === "A" ? [rank < 0 ? r : rank, inF] : [out, rank < 0 ? r : rank];
    if (t.rank !== 2 || t.shape[0] !== want[0] || t.shape[1] !== want[1]) {
      throw new Error(
        `Cannot use ${source}: ${k} has shape ${fmt(t.shape)} but this model needs ${fmt(want)} (${
          m[1]
        }.weight is ${fmt(w.shape)})`,
      );
    }
    rank = r;
    const other = `${m[1]}.lora.${m[2] === "A" ? "B" : "A"}.weight`;
    if (!flat[other]) throw new Error(`Cannot use ${source}: ${k} has no partner ${other}`);
  }
  if (rank < 0) throw new Error(`Cannot use ${source}: it holds no LoRA weights`);
  return rank;
}

/**
 * One tree in which each adapted Linear carries its adapter (`{weight, lora: {A, B}}`); the
 * forward then computes W·x + B(A(x)) there (unmerged). Tensors are shared, not copied.
 *
 * @param params base params
 * @param adapters adapter tree (`lora.init`, `lora.load`)
 * @returns the applied tree
 */
export function apply<P>(params: P, adapters: Tree): P {
  check(params as Tree, adapters);
  return unflatten({ ...flatten(params as Tree), ...flatten(adapters) }) as unknown as P;
}
