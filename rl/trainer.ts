/**
 * The RL step of MiniMind's PPO (HEAD, token level with a critic and GAE), GRPO/CISPO (HEAD) and
 * SPO (V2): per batch of prompts, rollout → rewards → advantages → loss → update, over a state
 * that holds everything a resume needs — the actor's and the critic's params and AdamW states,
 * the frozen reference model, SPO's value tracker and the rollout counter (which seeds the
 * sampling) — so a resumed run continues bit-exactly.
 *
 * Learning rates follow MiniMind's `CosineAnnealingLR(T_max, eta_min = lr/10)` stepped per
 * optimizer update (the same curve as `get_lr`, indexed by updates from 0).
 * @module
 */
// N = rollout rows, R = response width
import type { Tensor } from "../nn/tensor.ts";
import { scalar, tensor } from "../nn/creation.ts";
import { keep, scope } from "../nn/scope.ts";
import { stopGradient } from "../nn/autodiff.ts";
import { foldIn, key as makeKey, permutation } from "../nn/random.ts";
import type { Tree } from "../nn/tree.ts";
import { dispose, mapTree } from "../nn/tree.ts";
import { Tensor as TensorClass } from "../nn/tensor.ts";
import { add, affine, mean, mul, reshape, sliceAxis, square, sub, sum } from "../nn/ops/mod.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import { forward } from "../nn/model/minimind.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import type { GenerateTokenizer } from "../nn/model/generate.ts";
import { adamw } from "../train/optim.ts";
import { getLr } from "../train/schedule.ts";
import { makeTrainStep } from "../train/step.ts";
import { asTrainState, savedField } from "../train/trainer.ts";
import type { AsyncTrainer } from "../train/trainer.ts";
import type { LossScaleOptions, StepOutput, TrainState, TrainStep } from "../train/step.ts";
import { gae, groupAdvantages, SpoTracker } from "./advantages.ts";
import {
  entropy,
  grpoLoss,
  maskedMean,
  ppoSequenceLoss,
  ppoTokenLoss,
  ppoValueLoss,
  responseLogProbs,
  spoLoss,
} from "./losses.ts";
import { criticValues, initValueHead } from "./critic.ts";
import type { CriticParams } from "./critic.ts";
import { rollout, rolloutTensors, scoreLogProbs } from "./rollout.ts";
import type { Rollout, RolloutTensors } from "./rollout.ts";
import { scoreRewards } from "./rewards.ts";
import type { RewardFunction, RewardScore } from "./rewards.ts";

/** Which algorithm. */
export type RlAlgorithm = "ppo" | "grpo" | "spo";

/** Settings of an RL run (MiniMind's flags, camelCased). */
export interface RlSettings {
  /** ppo, grpo or spo. */
  algorithm: RlAlgorithm;
  /** Model config (actor, reference and critic share it). */
  cfg: MiniMindConfig;
  /** Tokenizer (encode prompts, decode responses). */
  tokenizer: GenerateTokenizer & { encode(text: string): number[] };
  /** The reward. */
  reward: RewardFunction;
  /** Prompt tokens kept (the last `maxSeqLen`). */
  maxSeqLen: number;
  /** Most generated tokens per response. */
  maxGenLen: number;
  /** Sampling temperature (0.8), top-p (0.85), top-k (50). */
  temperature: number;
  /** Nucleus mass. */
  topP: number;
  /** Top-k. */
  topK: number;
  /** Actor learning rate (peak of the cosine). */
  learningRate: number;
  /** Critic learning rate (PPO). */
  criticLearningRate: number;
  /** Optimizer updates the cosine spans (T_max). */
  totalUpdates: number;
  /** Critic updates the critic's cosine spans (PPO). */
  criticTotalUpdates: number;
  /** Micro-batches (PPO: minibatches) per update. */
  accumulationSteps: number;
  /** Global-norm clip per model (0 = off). */
  gradClip: number;
  /** Dynamic loss scaling of both models' steps (`--dtype float16`; default off). */
  lossScale?: LossScaleOptions | null;
  /** GRPO completions per prompt. */
  numGenerations: number;
  /** GRPO loss type. */
  lossType: "grpo" | "cispo";
  /** KL weight: GRPO β (0.1), SPO β (0.02), PPO kl_coef (0.02). */
  beta: number;
  /** Ratio clip ε (PPO and GRPO: 0.2). */
  clipEpsilon: number;
  /** CISPO's IS-weight truncation (5.0). */
  epsilonHigh: number;
  /** PPO passes over a rollout (2). */
  ppoUpdateIters: number;
  /** PPO minibatch rows (MiniMind: min(2, B)). */
  ppoMinibatch: number;
  /** PPO early stop on approx KL (0.25). */
  earlyStopKl: number;
  /** PPO value clip (0.2). */
  valueClip: number;
  /** GAE γ (1.0) and λ (0.95). */
  gamma: number;
  /** GAE λ. */
  lambda: number;
  /** Seed of rollouts and minibatch orders. */
  seed: number;
  /**
   * PPO's objective: "token" (HEAD: per-token clipped loss on GAE advantages, passes ×
   * minibatches; the default) or "sequence" (V2: summed response log-probs, advantage = reward −
   * V(last token), one update per rollout against an old actor synced every
   * `updateOldActorFreq` steps).
   */
  ppoLossType?: "token" | "sequence";
  /** GRPO/CISPO's averaging of per-token losses (`grpoLoss`'s `aggregation`; default "sequence"). */
  lossAggregation?: "sequence" | "token";
  /** Value-loss weight (HEAD's fixed 0.5; V2 `--vf_coef` 0.5). */
  vfCoef?: number;
  /** V2 sequence PPO: steps between old-actor syncs (`--update_old_actor_freq` 4). */
  updateOldActorFreq?: number;
  /** PPO: steps at the start during which only the critic learns (default 0). */
  criticWarmupSteps?: number;
}

/** The state carried from step to step (a tree: the resume checkpoint stores it whole). */
export type RlState = {
  /** Actor params, AdamW state, counters. */
  actor: TrainState;
  /** Critic (PPO) or null. */
  critic: TrainState | null;
  /** Frozen reference model. */
  ref: Tree;
  /** SPO's tracker (α, β, last mean log-prob) or null. */
  tracker: { alpha: number; beta: number; lastMeanLogprob: number | null } | null;
  /** Rollouts done (seeds the next one). */
  rollouts: number;
  /** V2 sequence PPO only: the old actor (a copy of the actor, synced every few steps). */
  oldActor?: Tree;
};

/** A batch: the rendered prompts and their records. */
export interface RlBatch {
  /** Chat-template prompts. */
  prompt: readonly string[];
  /** Source records (the poetry reward reads `form`). */
  record?: readonly Record<string, unknown>[];
}

/** What one RL step reports besides the loss. */
export interface RlReport {
  /** Rollout of this step (texts, lengths). */
  rollout: Rollout;
  /** Reward per row. */
  rewards: RewardScore[];
  /** The prompt of each row. */
  prompts?: string[];
  /**
   * The advantages the update used: one per row (GRPO, SPO, sequence PPO) or per response token,
   * (N, R) row-major (token PPO).
   */
  advantages?: Float32Array;
}

const copyTree = (t: Tree): Tree =>
  mapTree(t, (x) => (x instanceof TensorClass ? keep(affine(x, 1)) : x));

/** Mean and population std. */
function meanStd(xs: readonly number[]): [number, number] {
  const m = xs.reduce((a, b) => a + b, 0) / Math.max(xs.length, 1);
  const v = xs.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(xs.length, 1);
  return [m, Math.sqrt(v)];
}

/**
 * The RL trainer: `init` around the starting weights (the reference is a frozen copy; PPO's critic
 * starts from them plus a fresh value head), `restore` from a checkpoint tree, and the async
 * `step` (rollout → rewards → advantages → update).
 */
export class RlTrainer implements AsyncTrainer<RlState, RlBatch> {
  /** Marks the asynchronous step (rollouts and rewards read values back). */
  readonly async = true as const;
  /** The settings. */
  readonly settings: RlSettings;
  readonly #actorStep: TrainStep<RlMinibatch, Tree>;
  readonly #criticStep: TrainStep<RlMinibatch, Tree> | null;

  /** @param settings the run's settings */
  constructor(settings: RlSettings) {
    this.settings = settings;
    const s = settings;
    // both models step alike: the run's accumulation, clip and loss scaling
    const stepOptions = {
      accumulationSteps: s.accumulationSteps,
      gradClip: s.gradClip,
      hasAux: true,
      lossScale: s.lossScale,
    };
    const actorLr = (c: number) => getLr(c, Math.max(1, s.totalUpdates), s.learningRate);
    this.#actorStep = makeTrainStep<RlMinibatch, Tree>(
      (p, b) => actorObjective(s, p as MiniMindParams, b),
      adamw({ lr: actorLr }),
      stepOptions,
    );
    const criticLr = (c: number) =>
      getLr(c, Math.max(1, s.criticTotalUpdates), s.criticLearningRate);
    this.#criticStep = s.algorithm === "ppo"
      ? makeTrainStep<RlMinibatch, Tree>(
        (p, b) => criticObjective(s, p as unknown as CriticParams, b),
        adamw({ lr: criticLr }),
        stepOptions,
      )
      : null;
  }

  /**
   * A fresh state around the starting weights (takes ownership of `params`): the reference is a
   * frozen copy; PPO's critic starts from the same weights plus a fresh value head (MiniMind
   * loads full_sft into the critic).
   *
   * @param params actor params
   * @returns the state
   */
  init(params: Tree): RlState {
    const s = this.settings;
    const critic = this.#criticStep
      ? scope(() => ({
        ...(copyTree(params) as object),
        value_head: keep(initValueHead(s.cfg, foldIn(makeKey(s.seed), -1))),
      }))
      : null;
    return {
      actor: this.#actorStep.init(params),
      critic: this.#criticStep && critic ? this.#criticStep.init(critic as unknown as Tree) : null,
      ref: scope(() => copyTree(params)),
      tracker: s.algorithm === "spo" ? { ...new SpoTracker(this.#trackerOptions()).state } : null,
      rollouts: 0,
      ...(this.#sequence() ? { oldActor: scope(() => copyTree(params)) } : {}),
    };
  }

  /** V2's sequence-level PPO? */
  #sequence(): boolean {
    return this.settings.algorithm === "ppo" && this.settings.ppoLossType === "sequence";
  }

  /**
   * The state from a resume checkpoint's tree.
   *
   * @param saved the checkpoint's state tree
   * @param path the checkpoint (for messages)
   * @returns the state
   */
  restore(saved: Tree, path: string): RlState {
    const s = this.settings;
    const critic = savedField(saved, "critic", path);
    const tracker = savedField(saved, "tracker", path) as RlState["tracker"];
    if ((s.algorithm === "ppo") !== (critic !== null)) {
      throw new Error(
        `Cannot resume ${s.algorithm} from ${path}: it ${critic ? "has" : "lacks"} a critic`,
      );
    }
    if ((s.algorithm === "spo") !== (tracker !== null)) {
      throw new Error(
        `Cannot resume ${s.algorithm} from ${path}: it ${tracker ? "has" : "lacks"} an SPO tracker`,
      );
    }
    return {
      actor: asTrainState(savedField(saved, "actor", path), path),
      critic: critic === null ? null : asTrainState(critic, path),
      ref: savedField(saved, "ref", path),
      tracker: tracker ? { ...tracker } : null,
      rollouts: Number(savedField(saved, "rollouts", path)),
      ...(this.#sequence() ? { oldActor: savedField(saved, "oldActor", path) } : {}),
    };
  }

  /**
   * The loop's step (see {@link RlTrainer.run}); the rollout and rewards go to `onReport`.
   *
   * @param state the state
   * @param batch prompts and records
   * @returns the next state and the report
   */
  async step(state: RlState, batch: RlBatch): Promise<[RlState, StepOutput<Tensor>]> {
    const [next, out, report] = await this.run(state, batch);
    this.onReport?.(report);
    return [next, out];
  }

  /** Called after each step with its rollout and rewards (e.g. to print a sample). */
  onReport?: (report: RlReport) => void;

  /** @param state the state @returns the actor's params (the weights a run writes) */
  weights(state: RlState): Tree {
    return state.actor.params;
  }

  /** @param state the state @returns the actor's optimizer updates */
  updates(state: RlState): number {
    return state.actor.updates;
  }

  #trackerOptions() {
    return { rewardRange: this.settings.reward.range ?? ([-3, 3] as const) };
  }

  /** Prompt ids: the last `maxSeqLen` tokens of each prompt, repeated per generation (GRPO). */
  #promptIds(batch: RlBatch): { ids: number[][]; rows: number[] } {
    const s = this.settings;
    const g = s.algorithm === "grpo" ? s.numGenerations : 1;
    const ids: number[][] = [], rows: number[] = [];
    batch.prompt.forEach((p, i) => {
      const t = s.tokenizer.encode(p);
      const kept = t.slice(Math.max(0, t.length - s.maxSeqLen));
      for (let k = 0; k < g; k++) ids.push(kept), rows.push(i);
    });
    return { ids, rows };
  }

  /**
   * One step: rollout, rewards, advantages, update(s). Async (rollouts and rewards read back).
   *
   * @param state the state (its replaced tensors are disposed)
   * @param batch prompts and records
   * @returns the next state, the step's report tensors, and the rollout and rewards
   */
  async run(state: RlState, batch: RlBatch): Promise<[RlState, StepOutput<Tensor>, RlReport]> {
    const s = this.settings;
    const { cfg } = s;
    const actor = state.actor.params as MiniMindParams;
    // 1. rollout with the current policy (the seed follows the rollout count: resumable)
    const { ids, rows } = this.#promptIds(batch);
    const t0 = performance.now();
    const r = await rollout({ cfg, params: actor, tokenizer: s.tokenizer }, ids, {
      maxNewTokens: s.maxGenLen,
      temperature: s.temperature,
      topP: s.topP,
      topK: s.topK,
      seed: foldIn(makeKey(s.seed), state.rollouts)[0],
    });
    // 2. rewards (a throw or NaN stops the run naming the prompt)
    const rewards = await scoreRewards(
      s.reward,
      r.texts.map((response, i) => ({
        prompt: batch.prompt[rows[i]],
        response,
        record: batch.record?.[rows[i]],
      })),
    );
    const total = rewards.map((x) => x.total);
    const t1 = performance.now();
    // 3. reference log-probs, then the algorithm's advantages and update(s)
    const all = Array.from({ length: r.rows }, (_, i) => i);
    const refLogp = await scoreLogProbs(cfg, state.ref as unknown as MiniMindParams, r);
    const scalars: Record<string, number> = {};
    const log: Record<AuxName, number>[] = [];
    let next: RlState, advantages: Float32Array;
    if (this.#sequence()) {
      [next, advantages] = await this.#ppoSequenceUpdate(state, r, refLogp, total, log);
    } else if (s.algorithm === "ppo") {
      [next, advantages] = await this.#ppoUpdate(state, r, refLogp, total, log);
      scalars.early_stop = log.length < s.ppoUpdateIters * Math.ceil(r.rows / this.#mb(r)) ? 1 : 0;
    } else {
      const tracker = s.algorithm === "spo"
        ? new SpoTracker(this.#trackerOptions(), state.tracker!)
        : null;
      const adv = tracker ? tracker.advantages(total) : groupAdvantages(total, s.numGenerations);
      advantages = adv;
      if (tracker) scalars.baseline = tracker.baseline();
      const [actorNext, a] = await updateOnRows(this.#actorStep, state.actor, r, all, {
        refLogp: [refLogp, r.responseWidth],
        advantages: [adv, 0],
      });
      log.push(a);
      if (tracker) scalars.rho = tracker.update(total, a.meanLogp);
      next = { ...state, actor: actorNext, tracker: tracker ? { ...tracker.state } : null };
    }
    next.rollouts = state.rollouts + 1;
    // 4. the report
    const avg = (k: AuxName) => meanStd(log.map((x) => x[k]))[0];
    Object.assign(scalars, {
      kl: avg("kl"),
      clip_fraction: avg("clip"),
      entropy: avg("entropy"),
      ...(s.algorithm === "ppo" ? { approx_kl: avg("approxKl"), value_loss: avg("value") } : {}),
    });
    const [rm, rs] = meanStd(total);
    scalars.reward = rm;
    scalars.reward_std = rs;
    for (const k of Object.keys(rewards[0]?.components ?? {})) {
      scalars[`reward_${k}`] = meanStd(rewards.map((x) => x.components[k]))[0];
    }
    scalars.response_length = meanStd(r.lengths)[0];
    // timings (wall clock: not reproducible, unlike every other scalar)
    scalars.rollout_tokens_per_s = r.lengths.reduce((x, y) => x + y, 0) / ((t1 - t0) / 1000);
    scalars.update_s = (performance.now() - t1) / 1000;
    scalars.actor_lr = getLr(
      Math.max(0, next.actor.updates - 1),
      Math.max(1, s.totalUpdates),
      s.learningRate,
    );
    const out: StepOutput<Tensor> = {
      loss: scalar(avg("loss")),
      aux: scalar(avg("aux")),
      gradNorm: null,
      updated: next.actor.updates > state.actor.updates,
      scalars: Object.fromEntries(Object.entries(scalars).map(([k, v]) => [k, scalar(v)])),
    };
    const prompts = rows.map((i) => batch.prompt[i]);
    return [next, out, { rollout: r, rewards, prompts, advantages }];
  }

  #mb(r: Rollout): number {
    return Math.max(1, Math.min(this.settings.ppoMinibatch, r.rows));
  }

  /** The actor's objective on rows `idx` without an update (PPO's critic warm-up). */
  async #evaluate(
    state: TrainState,
    r: Rollout,
    idx: readonly number[],
    extras: Readonly<Record<string, readonly [Float32Array, number]>>,
  ): Promise<Record<AuxName, number>> {
    const s = this.settings;
    const out = scope(() => {
      const mb = {
        ...rolloutTensors(r, idx),
        ...Object.fromEntries(
          Object.entries(extras).map(([k, [a, w]]) => [k, rowsOf(a, w, idx)]),
        ),
      } as RlMinibatch;
      const [loss, aux] = actorObjective(s, state.params as MiniMindParams, mb);
      return keep({ loss, aux } as unknown as Tree) as unknown as StepOutput<Tree>;
    });
    return await readAux(out);
  }

  /**
   * V2 sequence-level PPO: advantage = reward − V(last token) (the critic before this step's
   * update), old log-probs from the old actor, one actor and one critic update over the whole
   * rollout, then the old actor is synced every `updateOldActorFreq` steps (after step k when
   * (k + 1) is a multiple, k counted from 1, as V2's loop).
   */
  async #ppoSequenceUpdate(
    state: RlState,
    r: Rollout,
    refLogp: Float32Array,
    rewards: readonly number[],
    log: Record<AuxName, number>[],
  ): Promise<[RlState, Float32Array]> {
    const s = this.settings;
    const n = r.rows, R = r.responseWidth, W = r.promptWidth + r.responseWidth;
    const oldLogp = await scoreLogProbs(s.cfg, state.oldActor as unknown as MiniMindParams, r);
    // one-hot of each row's last token (the last prompt token when nothing was generated)
    const last = new Float32Array(n * W);
    r.lengths.forEach((len, i) => (last[i * W + r.promptWidth + len - 1] = 1));
    const critic = state.critic!.params as unknown as CriticParams;
    const values = await readBack(() => {
      const x = rolloutTensors(r);
      const v = criticValues(s.cfg, critic, x.ids, { attentionMask: x.attention }); // (N, W)
      return sum(mul(v, tensor(last, [n, W], "f32")), 1); // (N)
    });
    const total = Float32Array.from(rewards);
    const adv = Float32Array.from(total, (x, i) => x - values[i]);
    const all = Array.from({ length: n }, (_, i) => i);
    const common = { refLogp: [refLogp, R], oldLogp: [oldLogp, R], rewards: [total, 0] } as const;
    const warmup = state.rollouts < (s.criticWarmupSteps ?? 0);
    const actorExtras = { ...common, advantages: [adv, 0], values: [values, 0] } as const;
    const [actor, a] = warmup
      ? [state.actor, await this.#evaluate(state.actor, r, all, actorExtras)]
      : await updateOnRows(this.#actorStep, state.actor, r, all, actorExtras);
    const [critic2, c] = await updateOnRows(this.#criticStep!, state.critic!, r, all, {
      ...common,
      last: [last, W],
    });
    log.push({ ...a, value: c.value });
    let oldActor: Tree | undefined = state.oldActor;
    const k = state.rollouts + 1, freq = Math.max(1, s.updateOldActorFreq ?? 4);
    if ((k + 1) % freq === 0) {
      oldActor = scope(() => copyTree(actor.params));
      scope(() => dispose(state.oldActor!));
    }
    return [{ ...state, actor, critic: critic2, oldActor }, adv];
  }

  /** HEAD PPO: GAE on the critic's values, then passes × minibatches of actor + critic updates. */
  async #ppoUpdate(
    state: RlState,
    r: Rollout,
    refLogp: Float32Array,
    rewards: readonly number[],
    log: Record<AuxName, number>[],
  ): Promise<[RlState, Float32Array]> {
    const s = this.settings;
    const n = r.rows, R = r.responseWidth, P = r.promptWidth;
    const critic = state.critic!.params as unknown as CriticParams;
    const oldValues = await readBack(() => {
      const x = rolloutTensors(r);
      const v = criticValues(s.cfg, critic, x.ids, { attentionMask: x.attention }); // (N, P+R)
      return mul(sliceAxis(v, 1, P - 1, P + R - 1), x.mask); // (N, R)
    });
    const tokenRewards = new Float32Array(n * R);
    r.lengths.forEach((len, i) => (tokenRewards[i * R + Math.max(0, len - 1)] = rewards[i]));
    const g = gae(tokenRewards, oldValues, r.mask, n, { gamma: s.gamma, lambda: s.lambda });
    let actor = state.actor, critic2 = state.critic!;
    const mb = this.#mb(r);
    const warmup = state.rollouts < (s.criticWarmupSteps ?? 0);
    for (let pass = 0; pass < s.ppoUpdateIters; pass++) {
      const order = permutation(foldIn(foldIn(makeKey(s.seed + 1), state.rollouts), pass), n);
      for (let start = 0; start < n; start += mb) {
        const idx = [...order.subarray(start, start + mb)];
        const extras = { refLogp: [refLogp, R], advantages: [g.advantages, R] } as const;
        const [aNext, a] = warmup
          ? [actor, await this.#evaluate(actor, r, idx, extras)]
          : await updateOnRows(this.#actorStep, actor, r, idx, extras);
        actor = aNext;
        // past the early-stop bound the whole minibatch loss is zeroed: the critic's too
        const stop = a.approxKl > s.earlyStopKl;
        const [cNext, c] = await updateOnRows(this.#criticStep!, critic2, r, idx, {
          returns: [g.returns, R],
          oldValues: [oldValues, R],
          scale: [new Float32Array(idx.length).fill(stop ? 0 : 1), 0],
        });
        critic2 = cNext;
        log.push({ ...a, value: c.value });
        if (stop) return [{ ...state, actor, critic: critic2 }, g.advantages];
      }
    }
    return [{ ...state, actor, critic: critic2 }, g.advantages];
  }
}

/** The settings the objectives read. */
export type ObjectiveSettings = Pick<
  RlSettings,
  | "algorithm"
  | "cfg"
  | "lossType"
  | "beta"
  | "clipEpsilon"
  | "epsilonHigh"
  | "earlyStopKl"
  | "valueClip"
  | "ppoLossType"
  | "lossAggregation"
  | "vfCoef"
>;

/**
 * The actor's objective of a step — what the trainer differentiates: one forward over prompt +
 * response, the algorithm's loss (GRPO/CISPO, SPO or PPO's clipped loss) plus the MoE aux loss.
 *
 * @param s algorithm and its coefficients
 * @param params actor params
 * @param b the minibatch
 * @returns [loss + aux, {aux, entropy, meanLogp, kl, clip?, approxKl?}]
 */
export function actorObjective(
  s: ObjectiveSettings,
  params: MiniMindParams,
  b: RlMinibatch,
): [Tensor, Record<string, Tensor>] {
  const r = b.response.shape[1];
  const { logits, auxLoss } = forward(s.cfg, params, b.ids, {
    attentionMask: b.attention,
    logitsToKeep: r + 1,
    train: true,
  });
  const lp = responseLogProbs(logits, b.response);
  const ent = maskedMean(entropy(stopGradient(sliceAxis(logits, 1, 0, r))), b.mask);
  const meanLogp = maskedMean(stopGradient(lp), b.mask);
  const x = { logp: lp, oldLogp: b.oldLogp, refLogp: b.refLogp, advantages: b.advantages };
  let loss: Tensor, more: Record<string, Tensor>;
  if (s.algorithm === "grpo") {
    const o = grpoLoss({ ...x, mask: b.mask }, {
      lossType: s.lossType,
      beta: s.beta,
      clipEpsilon: s.clipEpsilon,
      epsilonHigh: s.epsilonHigh,
      aggregation: s.lossAggregation,
    });
    loss = o.loss, more = { kl: o.kl, clip: o.clipFraction };
  } else if (s.algorithm === "spo") {
    const o = spoLoss({ ...x, mask: b.mask }, s.beta);
    loss = o.loss, more = { kl: o.kl };
  } else if (s.ppoLossType === "sequence") {
    const seq = (t: Tensor) => sum(mul(t, b.mask), 1); // (N): Σ over the response
    const o = ppoSequenceLoss({
      logp: seq(lp),
      oldLogp: seq(b.oldLogp),
      refLogp: seq(b.refLogp),
      advantages: b.advantages,
      values: b.values!,
      rewards: b.rewards!,
    }, { clipEpsilon: s.clipEpsilon, klCoef: s.beta, vfCoef: s.vfCoef ?? 0.5 });
    const approxKl = mean(stopGradient(sub(seq(lp), seq(b.oldLogp))));
    loss = o.loss, more = { kl: o.kl, clip: o.clipFraction, approxKl };
  } else {
    const o = ppoTokenLoss({ ...x, mask: b.mask }, {
      clipEpsilon: s.clipEpsilon,
      klCoef: s.beta,
      earlyStopKl: s.earlyStopKl,
    });
    loss = o.loss, more = { kl: o.kl, clip: o.clipFraction, approxKl: o.approxKl };
  }
  return [add(loss, auxLoss), { aux: auxLoss, entropy: ent, meanLogp, ...more }];
}

/**
 * PPO's critic objective: 0.5 · the clipped value loss (MiniMind's loss = policy + 0.5·value),
 * times the minibatch's early-stop scale.
 *
 * @param s model config and value clip
 * @param params critic params
 * @param b the minibatch (with returns, old values and scale)
 * @returns [loss, {value}]
 */
export function criticObjective(
  s: ObjectiveSettings,
  params: CriticParams,
  b: RlMinibatch,
): [Tensor, Record<string, Tensor>] {
  const r = b.response.shape[1], p = b.ids.shape[1] - r;
  const v = criticValues(s.cfg, params, b.ids, { attentionMask: b.attention });
  if (s.ppoLossType === "sequence") {
    // V2: vf_coef · MSE(V(last token), reward)
    const vl = mean(square(sub(sum(mul(v, b.last!), 1), b.rewards!)));
    return [affine(vl, s.vfCoef ?? 0.5), { value: vl }];
  }
  const values = sliceAxis(v, 1, p - 1, p + r - 1); // (N, R)
  const vl = ppoValueLoss(
    { values, oldValues: b.oldValues!, returns: b.returns!, mask: b.mask },
    s.valueClip,
  );
  return [mul(affine(vl, s.vfCoef ?? 0.5), reshape(sliceAxis(b.scale!, 0, 0, 1), [])), {
    value: vl,
  }];
}

/**
 * One train-step call on rows `idx` of a rollout plus per-row extras (each a row-major array and
 * its width, 0 for one value per row); reads its loss and aux scalars back.
 *
 * @param step the train step
 * @param state the trained params and optimizer state
 * @param r the rollout
 * @param idx the rows of this minibatch
 * @param extras per-row inputs of the objective (refLogp, advantages, …)
 * @returns the next state and the step's scalars
 */
export async function updateOnRows(
  step: TrainStep<RlMinibatch, Tree>,
  state: TrainState,
  r: Rollout,
  idx: readonly number[],
  extras: Readonly<Record<string, readonly [Float32Array, number]>>,
): Promise<[TrainState, Record<AuxName, number>]> {
  const mb = scope(() =>
    keep({
      ...rolloutTensors(r, idx),
      ...Object.fromEntries(Object.entries(extras).map(([k, [a, w]]) => [k, rowsOf(a, w, idx)])),
    }) as RlMinibatch
  );
  try {
    const [next, out] = scope(() => step(state, mb));
    return [next, await readAux(out)];
  } finally {
    for (const t of Object.values(mb)) (t as Tensor).dispose();
  }
}

/** Runs `fn` in a scope and reads its tensor back (then frees it). */
async function readBack(fn: () => Tensor): Promise<Float32Array> {
  const t = scope(fn);
  try {
    return Float32Array.from(await t.data());
  } finally {
    t.dispose();
  }
}

/** One update's inputs (rollout tensors plus the algorithm's). */
export interface RlMinibatch extends RolloutTensors {
  /** Reference log-probs (N, R). */
  refLogp: Tensor;
  /** Advantages: (N) per sequence (GRPO, SPO) or (N, R) per token (PPO). */
  advantages: Tensor;
  /** PPO: GAE returns (N, R). */
  returns?: Tensor;
  /** PPO: values at rollout time (N, R). */
  oldValues?: Tensor;
  /** PPO: 1, or 0 once approx KL passed the early-stop bound. */
  scale?: Tensor;
  /** V2 sequence PPO: the critic's values at the last token before the update (N). */
  values?: Tensor;
  /** V2 sequence PPO: the sequence rewards (N). */
  rewards?: Tensor;
  /** V2 sequence PPO: one-hot of each row's last token over prompt + response (N, P + R). */
  last?: Tensor;
}

/** Rows `idx` of a row-major (N, w) array as a (|idx|, w) f32 tensor; w = 0: (N) → (|idx|). */
function rowsOf(a: Float32Array, w: number, idx: readonly number[]): Tensor {
  const k = Math.max(w, 1);
  const out = new Float32Array(idx.length * k);
  idx.forEach((row, i) => out.set(a.subarray(row * k, (row + 1) * k), i * k));
  return tensor(out, w === 0 ? [idx.length] : [idx.length, w], "f32");
}

/** Reads a step's loss and aux scalars, disposing them. */
async function readAux(out: StepOutput<Tree>): Promise<Record<AuxName, number>> {
  const a = out.aux as Partial<Record<AuxName, Tensor>>;
  const res = { loss: await out.loss.item() } as Record<AuxName, number>;
  for (const k of AUX_NAMES) if (k !== "loss") res[k] = a[k] ? await a[k]!.item() : 0;
  out.loss.dispose();
  for (const t of Object.values(a)) t?.dispose();
  out.gradNorm?.dispose();
  return res;
}

const AUX_NAMES = [
  "loss",
  "aux",
  "kl",
  "clip",
  "entropy",
  "meanLogp",
  "approxKl",
  "value",
] as const;
/** The scalars an RL step reports. */
export type AuxName = typeof AUX_NAMES[number];
