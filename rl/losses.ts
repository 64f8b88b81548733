/**
 * RL objectives as pure, differentiable functions over tensors (spec §4.6–4.8). Shapes: B rows,
 * R response positions; `mask` is the response mask (1 up to and including the first eos), f32.
 *
 * - {@link responseLogProbs}: per-token log-probs of the response under a model.
 * - {@link k3Kl}: the k3 estimator of KL(π ‖ π_ref) per token, exp(ref − new) − (ref − new) − 1.
 * - {@link ppoTokenLoss} / {@link ppoValueLoss}: HEAD PPO's clipped policy and value losses.
 * - {@link ppoSequenceLoss}: V2 PPO's sequence-level clipped objective.
 * - {@link grpoLoss}: GRPO (clipped ratio) and CISPO (stop-gradient truncated IS weight × logp).
 * - {@link spoLoss}: SPO's −logp·A + β·KL.
 * @module
 */
// B = rows, R = response positions, P = prompt positions, V = vocab
import type { Tensor } from "../nn/tensor.ts";
import { stopGradient } from "../nn/autodiff.ts";
import {
  add,
  affine,
  cast,
  crossEntropy,
  div,
  exp,
  lessEqual,
  logsumexp,
  maximum,
  mean,
  minimum,
  mul,
  neg,
  reshape,
  sliceAxis,
  softmax,
  square,
  sub,
  sum,
} from "../nn/ops/mod.ts";

/**
 * Clamps `x` into [lo, hi].
 *
 * @param x values
 * @param lo lower bound
 * @param hi upper bound
 * @returns min(max(x, lo), hi)
 */
export function clamp(x: Tensor, lo: number, hi: number): Tensor {
  return minimum(maximum(x, lo), hi);
}

/**
 * Masked mean over every entry: Σ x·mask / max(Σ mask, 1).
 *
 * @param x values
 * @param mask 1/0 weights shaped like x
 * @returns scalar
 */
export function maskedMean(x: Tensor, mask: Tensor): Tensor {
  return div(sum(mul(x, mask)), maximum(sum(mask), 1));
}

/**
 * Per-row masked mean, then the mean over rows: mean_b(Σ_t x·mask / max(Σ_t mask, 1)).
 *
 * @param x values (B, R)
 * @param mask (B, R)
 * @returns scalar
 */
export function sequenceMean(x: Tensor, mask: Tensor): Tensor {
  return mean(div(sum(mul(x, mask), 1), maximum(sum(mask, 1), 1)));
}

/**
 * Σ x·mask over the whole batch / max(Σ mask, 1): DAPO's token-level mean, every masked token of
 * every row weighing the same.
 *
 * @param x per-token values (B, R)
 * @param mask (B, R)
 * @returns the scalar mean
 */
export function tokenMean(x: Tensor, mask: Tensor): Tensor {
  return div(sum(mul(x, mask)), maximum(sum(mask), 1));
}

/**
 * Log-probs of the response tokens: the logits at position p predict token p + 1, so the R
 * response tokens after P prompt positions read logits P − 1 … P + R − 2.
 *
 * @param logits (B, R + 1, V): the last R + 1 positions (forward with `logitsToKeep: R + 1`)
 * @param response i32 response ids (B, R)
 * @returns log π(token) (B, R)
 */
export function responseLogProbs(logits: Tensor, response: Tensor): Tensor {
  const [b, r] = response.shape;
  if (logits.rank !== 3 || logits.shape[0] !== b || logits.shape[1] !== r + 1) {
    throw new Error(
      `Cannot take response log-probs of logits [${logits.shape}] for response [${response.shape}]: ` +
        `expected logits [${b}, ${r + 1}, V]`,
    );
  }
  const l = sliceAxis(logits, 1, 0, r); // (B, R, V)
  return neg(crossEntropy(l, response, { reduction: "none", ignoreIndex: -1 })); // (B, R)
}

/**
 * Per-token entropy −Σ p log p of the distributions (a metric; no gradient wanted).
 *
 * @param logits (…, V)
 * @returns (…)
 */
export function entropy(logits: Tensor): Tensor {
  const p = softmax(logits);
  return sub(logsumexp(logits), sum(mul(p, logits), -1));
}

/**
 * k3 estimator of KL(π ‖ π_ref) per token (MiniMind's): exp(ref − new) − (ref − new) − 1 ≥ 0.
 *
 * @param logp log π(token) (differentiable)
 * @param refLogp log π_ref(token)
 * @returns (same shape)
 */
export function k3Kl(logp: Tensor, refLogp: Tensor): Tensor {
  const d = sub(refLogp, logp);
  return affine(sub(exp(d), d), 1, -1);
}

/** Inputs of {@link ppoTokenLoss}. */
export interface PpoTokenInput {
  /** New log-probs (B, R). */
  logp: Tensor;
  /** Rollout log-probs (B, R). */
  oldLogp: Tensor;
  /** Reference log-probs (B, R). */
  refLogp: Tensor;
  /** Whitened advantages (B, R). */
  advantages: Tensor;
  /** Response mask (B, R). */
  mask: Tensor;
}

/** Options of {@link ppoTokenLoss}. */
export interface PpoTokenOptions {
  /** Ratio clip ε (default 0.2: clip to [0.8, 1.2]). */
  clipEpsilon?: number;
  /** Weight of the k3 KL to the reference (default 0.02). */
  klCoef?: number;
  /** Zero the loss when approx_kl exceeds this (default 0.25; Infinity = off). */
  earlyStopKl?: number;
}

/** The PPO policy loss and its diagnostics (scalars). */
export interface PpoTokenOutput {
  /** Policy loss (× 0 when approx_kl > earlyStopKl). */
  loss: Tensor;
  /** Masked mean of ½·(new − old)². */
  approxKl: Tensor;
  /** Masked mean k3 KL to the reference. */
  kl: Tensor;
  /** Share of masked tokens whose ratio was clipped. */
  clipFraction: Tensor;
}

/**
 * MiniMind HEAD's token-level PPO policy loss: masked mean of max(−A·ratio, −A·clip(ratio,
 * 1 − ε, 1 + ε)) + klCoef·KL_k3, multiplied by 0 when approx_kl exceeds the early-stop bound.
 *
 * @param x log-probs, advantages, mask
 * @param options ε, KL weight, early stop
 * @returns loss and diagnostics
 */
export function ppoTokenLoss(x: PpoTokenInput, options: PpoTokenOptions = {}): PpoTokenOutput {
  const eps = options.clipEpsilon ?? 0.2, klCoef = options.klCoef ?? 0.02;
  const stopAt = options.earlyStopKl ?? 0.25;
  const logRatio = sub(x.logp, x.oldLogp);
  const approxKl = maskedMean(affine(square(stopGradient(logRatio)), 0.5), x.mask);
  const ratio = exp(logRatio);
  const negA = neg(x.advantages);
  const pg = maximum(mul(negA, ratio), mul(negA, clamp(ratio, 1 - eps, 1 + eps)));
  const kl = maskedMean(k3Kl(x.logp, x.refLogp), x.mask);
  let loss = add(maskedMean(pg, x.mask), mul(kl, klCoef));
  if (Number.isFinite(stopAt)) loss = mul(loss, cast(lessEqual(approxKl, stopAt), loss.dtype));
  return { loss, approxKl, kl, clipFraction: clipShare(ratio, x.mask, eps) };
}

function clipShare(ratio: Tensor, mask: Tensor, eps: number): Tensor {
  const r = stopGradient(ratio);
  const out = cast(maximum(lessEqual(r, 1 - eps - 1e-12), lessEqual(1 + eps + 1e-12, r)), r.dtype);
  return maskedMean(out, mask);
}

/** Inputs of {@link ppoValueLoss}. */
export interface PpoValueInput {
  /** New values (B, R). */
  values: Tensor;
  /** Values at rollout time (B, R). */
  oldValues: Tensor;
  /** GAE returns (B, R). */
  returns: Tensor;
  /** Response mask (B, R). */
  mask: Tensor;
}

/**
 * HEAD PPO's clipped value loss: 0.5 · masked mean of max((V − R)², (clip(V, V_old ± c) − R)²).
 *
 * @param x values, returns, mask
 * @param clipRange c (default 0.2)
 * @returns scalar
 */
export function ppoValueLoss(x: PpoValueInput, clipRange = 0.2): Tensor {
  const clipped = add(x.oldValues, clamp(sub(x.values, x.oldValues), -clipRange, clipRange));
  const l = maximum(square(sub(x.values, x.returns)), square(sub(clipped, x.returns)));
  return affine(maskedMean(l, x.mask), 0.5);
}

/** Inputs of {@link ppoSequenceLoss} (V2 PPO; every tensor (B)). */
export interface PpoSequenceInput {
  /** Σ masked response log-probs under the actor. */
  logp: Tensor;
  /** The same under the old actor. */
  oldLogp: Tensor;
  /** The same under the reference. */
  refLogp: Tensor;
  /** reward − V(last position). */
  advantages: Tensor;
  /** Critic values at the last non-pad position. */
  values: Tensor;
  /** Sequence rewards. */
  rewards: Tensor;
}

/** Options of {@link ppoSequenceLoss} (V2's flags). */
export interface PpoSequenceOptions {
  /** Ratio clip ε (V2 `--clip_epsilon` 0.1). */
  clipEpsilon?: number;
  /** KL-to-reference weight (V2 `--kl_coef` 0.02). */
  klCoef?: number;
  /** Value-loss weight (V2 `--vf_coef` 0.5). */
  vfCoef?: number;
}

/**
 * V2 PPO's sequence-level loss: −mean(min(ratio·A, clip(ratio, 1 ± ε)·A)) + vfCoef·MSE(V, r) +
 * klCoef·mean(logp − ref), ratio = exp(logp − old).
 *
 * @param x sequence log-probs, advantages, values, rewards
 * @param options ε (default 0.1), KL weight (default 0.02), value weight (default 0.5)
 * @returns `{loss, policy, value, kl}` scalars, plus the share of rows whose ratio was clipped
 */
export function ppoSequenceLoss(
  x: PpoSequenceInput,
  options: PpoSequenceOptions = {},
): { loss: Tensor; policy: Tensor; value: Tensor; kl: Tensor; clipFraction: Tensor } {
  const eps = options.clipEpsilon ?? 0.1, klCoef = options.klCoef ?? 0.02;
  const vfCoef = options.vfCoef ?? 0.5;
  const ratio = exp(sub(x.logp, x.oldLogp));
  const surr = minimum(mul(ratio, x.advantages), mul(clamp(ratio, 1 - eps, 1 + eps), x.advantages));
  const policy = neg(mean(surr));
  const value = mean(square(sub(x.values, x.rewards)));
  const kl = mean(sub(x.logp, x.refLogp));
  const loss = add(add(policy, affine(value, vfCoef)), mul(kl, klCoef));
  const r = stopGradient(ratio);
  const clipped = maximum(lessEqual(r, 1 - eps - 1e-12), lessEqual(1 + eps + 1e-12, r));
  return { loss, policy, value, kl, clipFraction: mean(cast(clipped, r.dtype)) };
}

/** Inputs of {@link grpoLoss}. */
export interface GrpoInput {
  /** New log-probs (B, R). */
  logp: Tensor;
  /** Rollout log-probs (B, R). */
  oldLogp: Tensor;
  /** Reference log-probs (B, R). */
  refLogp: Tensor;
  /** One advantage per row, (B). */
  advantages: Tensor;
  /** Completion mask (B, R). */
  mask: Tensor;
}

/** Options of {@link grpoLoss}. */
export interface GrpoOptions {
  /** "cispo" (MiniMind HEAD's default) or "grpo". */
  lossType?: "grpo" | "cispo";
  /** KL weight β (default 0.1). */
  beta?: number;
  /** GRPO ratio clip ε (default 0.2). */
  clipEpsilon?: number;
  /** CISPO's upper truncation of the IS weight (default 5.0). */
  epsilonHigh?: number;
  /**
   * How per-token losses are averaged: "sequence" (MiniMind's: each row's masked mean, then the
   * mean over rows) or "token" (DAPO's token-level loss: Σ over every masked token of the batch /
   * their count). With "token", a prefix that all episodes of a group share gets Σ A = 0 weight,
   * so it is left alone; with "sequence" each row's tokens weigh A/len, and a group's shared
   * tokens are pushed by Σ A_i/len_i ≠ 0 whenever its episodes differ in length.
   */
  aggregation?: "sequence" | "token";
}

/** GRPO/CISPO loss and diagnostics (scalars). */
export interface GrpoOutput {
  /** mean over rows of the masked mean of L_t. */
  loss: Tensor;
  /** Per-row masked mean of the k3 KL, averaged over rows. */
  kl: Tensor;
  /** Share of masked tokens whose ratio was clipped (GRPO) or truncated (CISPO). */
  clipFraction: Tensor;
}

/**
 * MiniMind HEAD's GRPO/CISPO loss. With ratio = exp(new − old) and KL_t the k3 estimate:
 * - grpo:  L_t = −(min(ratio·A, clip(ratio, 1 ± ε)·A) − β·KL_t)
 * - cispo: L_t = −(stopgrad(min(ratio, ε_high))·A·logp − β·KL_t)
 * loss = mean over rows of Σ_t L_t·mask_t / max(Σ_t mask_t, 1).
 *
 * @param x log-probs, advantages, mask
 * @param options loss type, β, ε
 * @returns loss and diagnostics
 */
export function grpoLoss(x: GrpoInput, options: GrpoOptions = {}): GrpoOutput {
  const type = options.lossType ?? "cispo", beta = options.beta ?? 0.1;
  const eps = options.clipEpsilon ?? 0.2, high = options.epsilonHigh ?? 5.0;
  const [b] = x.logp.shape;
  const a = reshape(x.advantages, [b, 1]); // (B, 1)
  const ratio = exp(sub(x.logp, x.oldLogp)); // (B, R)
  const klT = k3Kl(x.logp, x.refLogp); // (B, R)
  let gain: Tensor, clipFraction: Tensor;
  if (type === "grpo") {
    gain = minimum(mul(ratio, a), mul(clamp(ratio, 1 - eps, 1 + eps), a));
    clipFraction = clipShare(ratio, x.mask, eps);
  } else if (type === "cispo") {
    const w = stopGradient(minimum(ratio, high));
    gain = mul(mul(w, a), x.logp);
    clipFraction = maskedMean(cast(lessEqual(high, stopGradient(ratio)), ratio.dtype), x.mask);
  } else {
    throw new Error(`Cannot use loss type ${JSON.stringify(type)}: expected "grpo" or "cispo"`);
  }
  const perToken = neg(sub(gain, mul(klT, beta)));
  const agg = options.aggregation === "token" ? tokenMean : sequenceMean;
  return {
    loss: agg(perToken, x.mask),
    kl: agg(stopGradient(klT), x.mask),
    clipFraction,
  };
}

/** Inputs of {@link spoLoss}. */
export interface SpoInput {
  /** New log-probs (B, R). */
  logp: Tensor;
  /** Reference log-probs (B, R). */
  refLogp: Tensor;
  /** One advantage per row (B), from the tracker. */
  advantages: Tensor;
  /** Response mask (B, R). */
  mask: Tensor;
}

/**
 * V2 SPO's loss: per token −logp·A + β·KL_k3, masked mean per row, then the mean over rows.
 *
 * @param x log-probs, advantages, mask
 * @param beta KL weight (default 0.02)
 * @returns `{loss, kl}` scalars
 */
export function spoLoss(x: SpoInput, beta = 0.02): { loss: Tensor; kl: Tensor } {
  const [b] = x.logp.shape;
  const a = reshape(x.advantages, [b, 1]);
  const klT = k3Kl(x.logp, x.refLogp);
  const perToken = add(neg(mul(x.logp, a)), mul(klT, beta));
  return { loss: sequenceMean(perToken, x.mask), kl: sequenceMean(stopGradient(klT), x.mask) };
}
