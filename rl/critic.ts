/**
 * The critic of PPO and the scorer of a reward model: MiniMind's `CriticModel`, the actor's
 * architecture plus `value_head` = Linear(H, 1) with bias. Its parameter tree is the model's
 * (`model.…`, and `lm_head` when untied) plus `value_head.{weight, bias}`, the state-dict names
 * of MiniMind's critic, so a critic saved here loads there and back.
 *
 * value = value_head(norm(h)) where h is the model's output *after* its final norm: MiniMind
 * applies the final RMSNorm twice, and so does this (spec §4.6).
 * @module
 */
// B = rows, T = positions, H = hidden
import type { Tensor } from "../nn/tensor.ts";
import { tensor } from "../nn/creation.ts";
import { add, matmul, reshape, rmsNorm } from "../nn/ops/mod.ts";
import { uniformArray } from "../nn/random.ts";
import type { Key } from "../nn/random.ts";
import { split } from "../nn/random.ts";
import { forward } from "../nn/model/minimind.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";

/** The value head: Linear(H, 1) with bias. */
export interface ValueHead {
  /** (1, H). */
  weight: Tensor;
  /** (1). */
  bias: Tensor;
}

/** A critic's parameters: the model's tree plus the value head. */
export type CriticParams = MiniMindParams & { value_head: ValueHead };

/**
 * A fresh value head with PyTorch's `nn.Linear` init: weight and bias ~ U(−1/√H, 1/√H).
 *
 * @param cfg model config (H = hiddenSize)
 * @param key PRNG key
 * @returns the head
 */
export function initValueHead(cfg: MiniMindConfig, key: Key): ValueHead {
  const h = cfg.hiddenSize, bound = 1 / Math.sqrt(h);
  const [kw, kb] = split(key);
  const u = (k: Key, n: number) =>
    Float32Array.from(uniformArray(k, n), (x) => (2 * x - 1) * bound);
  return { weight: tensor(u(kw, h), [1, h]), bias: tensor(u(kb, 1), [1]) };
}

/** Options of {@link criticValues}. */
export interface CriticOptions {
  /** 1/0 key mask (B, T) (left padding). */
  attentionMask?: Tensor;
}

/**
 * Values of every position: value_head(norm(final hidden)) → (B, T).
 *
 * @param cfg model config
 * @param critic critic params
 * @param ids i32 token ids (B, T)
 * @param options key mask
 * @returns values (B, T)
 */
export function criticValues(
  cfg: MiniMindConfig,
  critic: CriticParams,
  ids: Tensor,
  options: CriticOptions = {},
): Tensor {
  const [b, t] = ids.shape;
  const { hiddenStates } = forward(cfg, critic, ids, {
    attentionMask: options.attentionMask,
    outputHiddenStates: true,
    logitsToKeep: 1,
  });
  const h = hiddenStates!.at(-1)!; // after the final norm
  const again = rmsNorm(h, critic.model.norm.weight, { eps: cfg.rmsNormEps }); // (B, T, H)
  const v = add(matmul(again, critic.value_head.weight, { transB: true }), critic.value_head.bias);
  return reshape(v, [b, t]);
}
