/**
 * The post-training losses of MiniMind's trainers as pure functions of logits and log-probs:
 * per-token log-probabilities (`logits_to_log_probs`), the DPO loss (`train_dpo.py`, V2 masked
 * mean and HEAD masked sum) and the distillation KL (`train_distillation.py`).
 * @module
 */
// B = rows, T = time steps, V = vocab, P = preference pairs (B = 2P)
import type { Tensor } from "../tensor.ts";
import { stopGradient } from "../autodiff.ts";
import { fmt } from "../shape.ts";
import { abs, exp, relu } from "../ops/unary.ts";
import { affine, cast, div, log, mul, neg } from "../ops/arith.ts";
import { maximum, sub } from "../ops/binary.ts";
import { mean, sum } from "../ops/reduce.ts";
import { sliceAxis } from "../ops/movement.ts";
import { logSoftmax } from "../ops/softmax.ts";
import { crossEntropy } from "../ops/cross_entropy.ts";

/**
 * log p(targets[b, t] | logits[b, t]) — MiniMind's `logits_to_log_probs`: no shift (the caller
 * passes y = ids[1:] beside logits of x = ids[:−1]). Runs the fused softmax cross-entropy, so
 * the (B, T, V) log-softmax is never materialised. A target of −100 gives 0.
 *
 * @param logits (B, T, V)
 * @param targets i32 (B, T)
 * @returns (B, T) log-probabilities
 * @example
 * ```ts
 * import { tokenLogProbs, tensor, zeros } from "@minimind/ts";
 * tokenLogProbs(zeros([1, 2, 4]), tensor([[0, 3]], [1, 2], "i32")); // [[−ln 4, −ln 4]]
 * ```
 */
export function tokenLogProbs(logits: Tensor, targets: Tensor): Tensor {
  if (
    logits.rank !== 3 || targets.rank !== 2 || logits.shape[0] !== targets.shape[0] ||
    logits.shape[1] !== targets.shape[1]
  ) {
    throw new Error(
      `Cannot compute token log-probs of logits ${fmt(logits.shape)} with targets ${
        fmt(targets.shape)
      }: expected (B, T, V) and (B, T)`,
    );
  }
  return neg(crossEntropy(logits, targets, { reduction: "none" })); // (B, T)
}

/** Inputs of {@link dpoLoss}: rows 0..P−1 are the chosen sequences, P..2P−1 the rejected. */
export interface DpoInputs {
  /** Policy per-token log-probs (2P, T). */
  policyLogps: Tensor;
  /** Reference per-token log-probs (2P, T); gradients never flow into them. */
  refLogps: Tensor;
  /** 1 on response tokens, integer or float (2P, T), as `DPODataset` gives it. */
  mask: Tensor;
}

/** Options of {@link dpoLoss}. */
export interface DpoOptions {
  /** β (V2 default 0.1, HEAD 0.15). */
  beta?: number;
  /**
   * Sequence score: "mean" = Σ logp·mask / max(Σ mask, 1e−8) (V2, default) or "sum" = Σ logp·mask
   * (HEAD).
   */
  reduction?: "mean" | "sum";
}

/** What {@link dpoLoss} returns. */
export interface DpoResult {
  /** mean over pairs of −log σ(β·z) (scalar). */
  loss: Tensor;
  /** z = (π_c − π_r) − (ref_c − ref_r) per pair (P). */
  logits: Tensor;
  /** Policy sequence scores (2P). */
  policyScores: Tensor;
  /** Reference sequence scores (2P). */
  refScores: Tensor;
}

/** log σ(x) = −softplus(−x) = min(x, 0) − log(1 + e^{−|x|}), stable for any x. */
function logSigmoid(x: Tensor): Tensor {
  return sub(neg(relu(neg(x))), log(affine(exp(neg(abs(x))), 1, 1)));
}

/**
 * The DPO loss of MiniMind's `train_dpo.py`: sequence scores of policy and reference, the
 * log-ratio z per pair, and mean(−log σ(β·z)). The reference log-probs go through
 * `stopGradient`.
 *
 * @param inputs policy and reference log-probs and the response mask
 * @param options β and the sequence reduction
 * @returns the loss with its intermediate values
 * @example
 * ```ts
 * import { dpoLoss, zeros, ones } from "@minimind/ts";
 * const lp = zeros([2, 3]);
 * dpoLoss({ policyLogps: lp, refLogps: lp, mask: ones([2, 3]) }).loss; // ln 2
 * ```
 */
export function dpoLoss(inputs: DpoInputs, options: DpoOptions = {}): DpoResult {
  const { policyLogps, mask } = inputs;
  const beta = options.beta ?? 0.1;
  const reduction = options.reduction ?? "mean";
  const [rows, t] = policyLogps.shape;
  for (const [name, x] of [["refLogps", inputs.refLogps], ["mask", mask]] as const) {
    if (x.rank !== 2 || x.shape[0] !== rows || x.shape[1] !== t) {
      throw new Error(
        `Cannot compute the DPO loss: ${name} ${fmt(x.shape)} differs from policyLogps ${
          fmt(policyLogps.shape)
        }`,
      );
    }
  }
  if (policyLogps.rank !== 2 || rows % 2 !== 0 || rows === 0) {
    throw new Error(
      `Cannot compute the DPO loss of ${
        fmt(policyLogps.shape)
      } log-probs: expected (2P, T), chosen rows first, then rejected`,
    );
  }
  const p = rows / 2;
  const m = mask.dtype === policyLogps.dtype ? mask : cast(mask, policyLogps.dtype); // (2P, T)
  const score = (lp: Tensor) => {
    const s = sum(mul(lp, m), 1); // (2P)
    return reduction === "sum" ? s : div(s, maximum(sum(m, 1), 1e-8)); // (2P)
  };
  const policyScores = score(policyLogps);
  const refScores = score(stopGradient(inputs.refLogps));
  const ratio = (s: Tensor) => sub(sliceAxis(s, 0, 0, p), sliceAxis(s, 0, p, rows)); // (P)
  const z = sub(ratio(policyScores), ratio(refScores)); // (P)
  const loss = neg(mean(logSigmoid(affine(z, beta, 0))));
  return { loss, logits: z, policyScores, refScores };
}

/** Options of {@link distillLoss}. */
export interface DistillOptions {
  /** Softmax temperature T (MiniMind: 1.5). */
  temperature?: number;
}

/**
 * MiniMind's `distillation_loss`: T² · KL(softmax(teacher/T) ‖ softmax(student/T)), summed over
 * the vocabulary and averaged over the selected token rows (`kl_div(…, 'batchmean')` over the
 * rows where `mask` is 1). The teacher's logits are sliced to the student's vocabulary and go
 * through `stopGradient`. The trainer combines it with the CE as α·CE + (1 − α)·KD.
 *
 * @param studentLogits (B, T, V)
 * @param teacherLogits (B, T, V') with V' ≥ V
 * @param mask 1/0 per row (B, T), integer or float
 * @param options temperature
 * @returns the scalar loss
 * @example
 * ```ts
 * import { distillLoss, ones, zeros } from "@minimind/ts";
 * distillLoss(zeros([1, 2, 5]), zeros([1, 2, 5]), ones([1, 2])); // 0: same distributions
 * ```
 */
export function distillLoss(
  studentLogits: Tensor,
  teacherLogits: Tensor,
  mask: Tensor,
  options: DistillOptions = {},
): Tensor {
  const temp = options.temperature ?? 1.0;
  const [b, t, v] = studentLogits.shape;
  if (
    studentLogits.rank !== 3 || teacherLogits.rank !== 3 || teacherLogits.shape[0] !== b ||
    teacherLogits.shape[1] !== t || teacherLogits.shape[2] < v || mask.rank !== 2 ||
    mask.shape[0] !== b || mask.shape[1] !== t
  ) {
    throw new Error(
      `Cannot compute the distillation loss of student ${fmt(studentLogits.shape)}, teacher ${
        fmt(teacherLogits.shape)
      } and mask ${fmt(mask.shape)}: expected (B, T, V), (B, T, ≥V), (B, T)`,
    );
  }
  const dt = studentLogits.dtype;
  const teacher = stopGradient(
    teacherLogits.shape[2] > v ? sliceAxis(teacherLogits, 2, 0, v) : teacherLogits,
  );
  const logP = logSoftmax(affine(cast(teacher, dt), 1 / temp, 0)); // (B, T, V)
  const logQ = logSoftmax(affine(studentLogits, 1 / temp, 0)); // (B, T, V)
  const kl = sum(mul(exp(logP), sub(logP, logQ)), 2); // (B, T)
  const m = mask.dtype === dt ? mask : cast(mask, dt);
  const rowsKl = sum(mul(kl, m));
  return affine(div(rowsKl, maximum(sum(m), 1)), temp * temp, 0);
}
