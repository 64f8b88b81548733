/**
 * Agentic RL (MiniMind HEAD `train_agent.py`, spec §4.10): GRPO/CISPO over whole multi-turn
 * tool-use episodes. Per batch of tasks, each task is played `numGenerations` times:
 *
 * 1. the prompt (chat template with the task's tools) is sampled from; the turn's tokens (eos and
 *    pads dropped) join the episode with loss mask 1 and their rollout log-probs;
 * 2. its `<tool_call>` blocks are run with the built-in tools (time-limited; failures become error
 *    messages); the re-rendered template's new text (the end of the turn, the `<tool_response>`
 *    block and the next generation prompt) joins with mask 0 — tool outputs are never trained on;
 * 3. up to `maxTurns` turns, or until a turn makes no call.
 *
 * Each episode is scored by {@link scoreEpisode} (the verifiable reward), advantages are
 * normalised within each task's group, and the actor is updated with the RL issue's CISPO/GRPO
 * objective (`rl/trainer.ts`'s `actorObjective`: one forward over prompt + episode, the masked
 * per-token loss, k3 KL to the frozen reference). The state is the RL trainers' (`RlState`), so
 * the shared loop resumes it bit-exactly.
 * @module
 */
// N = episodes, P = prompt width, R = episode width after the prompt
import type { Tensor } from "../nn/tensor.ts";
import { scalar } from "../nn/creation.ts";
import { foldIn, key as makeKey } from "../nn/random.ts";
import type { Tree } from "../nn/tree.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import type { ChatMessage } from "../data/chat_template.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { adamw } from "../train/optim.ts";
import { getLr } from "../train/schedule.ts";
import { makeTrainStep } from "../train/step.ts";
import type { LossScaleOptions, StepOutput, TrainStep } from "../train/step.ts";
import type { AsyncTrainer } from "../train/trainer.ts";
import { groupAdvantages } from "../rl/advantages.ts";
import { packRollout, rollout, scoreLogProbs } from "../rl/rollout.ts";
import type { Rollout } from "../rl/rollout.ts";
import { actorObjective, RlTrainer, updateOnRows } from "../rl/trainer.ts";
import type { AuxName, RlMinibatch, RlState } from "../rl/trainer.ts";
import {
  type AgentResult,
  type AgentTurn,
  malformedOutcome,
  parseTurn,
  runToolCall,
  type Tool,
  type ToolOutcome,
} from "../serve/tools.ts";
import { turnPrompt } from "./model.ts";
import { type AnswerMatch, type EpisodeScore, scoreEpisode } from "./reward.ts";
import type { AgentTask } from "./tasks.ts";

/** Settings of an agentic RL run (MiniMind's `train_agent.py` flags, camelCased). */
export interface AgentSettings {
  /** The reward's answer rule (default exact; `substring` = MiniMind's). */
  answerMatch?: AnswerMatch;
  /** Model config. */
  cfg: MiniMindConfig;
  /** Tokenizer with the chat template. */
  tokenizer: Tokenizer;
  /** Tools that run when called. */
  tools: readonly Tool[];
  /** Initial prompt tokens kept (the last ones; MiniMind 1024). */
  maxSeqLen: number;
  /** Most tokens per turn (768). */
  maxGenLen: number;
  /** Longest episode, prompt included (2500). */
  maxTotalLen: number;
  /** Assistant turns per episode (3). */
  maxTurns: number;
  /** Episodes per task (4). */
  numGenerations: number;
  /** Share of prompts opened with a think block (0.1). */
  thinkingRatio: number;
  /** Rollout sampling (0.8, 0.85, 50 as the RL scripts). */
  temperature: number;
  /** Nucleus mass. */
  topP: number;
  /** Top-k. */
  topK: number;
  /** Peak actor lr (cosine to lr/10 over `totalUpdates`). */
  learningRate: number;
  /** Updates the cosine spans. */
  totalUpdates: number;
  /** Micro-batches per update. */
  accumulationSteps: number;
  /** Global-norm clip (1.0). */
  gradClip: number;
  /** Dynamic loss scaling (`--dtype float16`; default off). */
  lossScale?: LossScaleOptions | null;
  /** "cispo" (default) or "grpo". */
  lossType: "grpo" | "cispo";
  /** KL weight β (0.1). */
  beta: number;
  /** GRPO ratio clip (0.2). */
  clipEpsilon: number;
  /** CISPO IS-weight truncation (5.0). */
  epsilonHigh: number;
  /** Tool time limit in ms (1000). */
  toolTimeoutMs: number;
  /** Seed of rollouts and the think-block draw. */
  seed: number;
  /**
   * DAPO's dynamic sampling: update only on the groups whose episodes disagree on correctness
   * (default false, MiniMind's: every group). A group all right or all wrong has no correctness
   * signal, and the std-normalised advantage turns its small shaping differences (repetition
   * penalty, a stray tag) into full-size ±1 advantages — noise the update then follows.
   */
  dynamicSampling?: boolean;
  /** Per-token loss averaging: "sequence" (MiniMind's, default) or "token" (DAPO's). */
  lossAggregation?: "sequence" | "token";
}

/** A batch of tasks. */
export interface AgentBatch {
  /** The tasks (each played `numGenerations` times). */
  tasks: readonly AgentTask[];
}

/** One played episode. */
export interface Episode {
  /** The task. */
  task: AgentTask;
  /** The loop-shaped result (turns, messages, final answer, counts). */
  result: AgentResult;
  /** Its score. */
  score: EpisodeScore;
}

interface Play {
  task: AgentTask;
  openThinking: boolean;
  messages: ChatMessage[];
  prompt: number[];
  after: number[];
  mask: number[];
  logp: number[];
  turns: AgentTurn[];
  calls: number;
  malformed: number;
  final: string;
  unfinished: boolean;
  done: boolean;
}

/**
 * Plays episodes: every task `generations` times, turn by turn, all active episodes of a turn
 * sampled together. Returns the episodes and their training layout (a `Rollout`: left-padded
 * prompt, then every token after it, mask 1 on sampled tokens and 0 on tool observations).
 *
 * @param model policy config, params and tokenizer
 * @param tasks the tasks
 * @param s settings (turns, lengths, sampling, tools, seed)
 * @param round rollout counter (seeds this round)
 * @returns the rollout layout and the scored episodes
 */
export async function playEpisodes(
  model: { cfg: MiniMindConfig; params: MiniMindParams; tokenizer: Tokenizer },
  tasks: readonly AgentTask[],
  s: Omit<AgentSettings, "cfg" | "tokenizer">,
  round: number,
): Promise<{ rollout: Rollout; episodes: Episode[] }> {
  const tok = model.tokenizer;
  const eosText = String(tok.config.eos_token ?? "<|im_end|>") + "\n";
  const base = foldIn(makeKey(s.seed), round);
  const plays: Play[] = [];
  tasks.forEach((task, i) => {
    for (let g = 0; g < s.numGenerations; g++) {
      const r = foldIn(foldIn(base, i), g);
      const openThinking = s.thinkingRatio > 0 && (r[0] >>> 0) / 4294967296 < s.thinkingRatio;
      const text = turnPrompt(tok, task.messages, task.tools, openThinking);
      const ids = tok.encode(text, { addSpecialTokens: false });
      plays.push({
        task,
        openThinking,
        messages: [...task.messages],
        prompt: ids.slice(Math.max(0, ids.length - s.maxSeqLen)),
        after: [],
        mask: [],
        logp: [],
        turns: [],
        calls: 0,
        malformed: 0,
        final: "",
        unfinished: false,
        done: false,
      });
    }
  });
  const skip = new Set([tok.eosId, tok.padId]);
  for (let t = 0; t < s.maxTurns; t++) {
    const active = plays.filter((p) => !p.done);
    if (!active.length) break;
    const r = await rollout(model, active.map((p) => [...p.prompt, ...p.after]), {
      maxNewTokens: s.maxGenLen,
      temperature: s.temperature,
      topP: s.topP,
      topK: s.topK,
      seed: foldIn(base, 1000 + t)[0],
    });
    for (let i = 0; i < active.length; i++) {
      const p = active[i];
      const R = r.responseWidth, len = r.lengths[i];
      const toks: number[] = [], lps: number[] = [];
      for (let j = 0; j < len; j++) {
        const id = r.response[i * R + j];
        if (skip.has(id)) continue;
        toks.push(id);
        lps.push(r.oldLogp[i * R + j]);
      }
      p.after.push(...toks);
      p.mask.push(...toks.map(() => 1));
      p.logp.push(...lps);
      const text = tok.decode(toks, { skipSpecialTokens: true });
      const { assistant, calls, malformed } = parseTurn(text, p.openThinking);
      const offered = new Set(p.task.tools.map((x) => x.function.name));
      const runnable = s.tools.filter((x) => offered.has(x.name));
      const outcomes: ToolOutcome[] = [];
      for (const c of calls) {
        outcomes.push(await runToolCall(runnable, c, { timeoutMs: s.toolTimeoutMs }));
      }
      for (const b of malformed) outcomes.push(malformedOutcome(b));
      p.calls += calls.length;
      p.malformed += malformed.length;
      p.turns.push({ text, assistant, outcomes });
      const before = [...p.messages, assistant];
      p.messages = [...before, ...outcomes.map((o) => o.message)];
      if (!outcomes.length) {
        p.final = String(assistant.content ?? "");
        p.done = true;
        continue;
      }
      if (t === s.maxTurns - 1) {
        p.unfinished = p.done = true;
        continue;
      }
      // the observation: what the template adds after this turn (end of turn, tool responses,
      // the next generation prompt), trained on with mask 0
      const t0 = tok.applyChatTemplate(before, { tools: [...p.task.tools] });
      const t1 = turnPrompt(tok, p.messages, p.task.tools, p.openThinking);
      if (!t1.startsWith(t0)) {
        throw new Error(
          `Cannot extend episode of ${p.task.id}: the chat template is not prefix-stable after a tool turn`,
        );
      }
      const obs = tok.encode(eosText + t1.slice(t0.length), { addSpecialTokens: false });
      p.after.push(...obs);
      p.mask.push(...obs.map(() => 0));
      p.logp.push(...obs.map(() => 0));
      if (p.prompt.length + p.after.length >= s.maxTotalLen) p.unfinished = p.done = true;
    }
  }
  const episodes = plays.map((p) => {
    const result: AgentResult = {
      messages: p.messages,
      turns: p.turns,
      final: p.final,
      unfinished: p.unfinished,
      calls: p.calls,
      malformed: p.malformed,
      pending: [],
    };
    return {
      task: p.task,
      result,
      score: scoreEpisode(result, p.task, s.answerMatch),
    };
  });
  return { rollout: layout(plays, s.maxTotalLen, tok.padId >= 0 ? tok.padId : 0), episodes };
}

/** The episodes as a `Rollout` (left-padded prompts, right-padded tails, cut to maxTotalLen). */
function layout(plays: readonly Play[], maxTotal: number, pad: number): Rollout {
  for (const p of plays) {
    // MiniMind cuts an over-long episode from the left; here the prompt loses its head
    const over = p.prompt.length + p.after.length - maxTotal;
    if (over > 0) p.prompt = p.prompt.slice(Math.min(over, p.prompt.length - 1));
    if (p.prompt.length + p.after.length > maxTotal) {
      const keepN = maxTotal - p.prompt.length;
      p.after.length = p.mask.length = p.logp.length = Math.max(0, keepN);
    }
  }
  return packRollout(
    plays.map((p) => ({
      prompt: p.prompt,
      response: p.after,
      mask: p.mask,
      logp: p.logp,
      text: p.final,
    })),
    pad,
  );
}

function mean(xs: readonly number[]): number {
  return xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0;
}

/**
 * The rows DAPO's dynamic sampling keeps: every episode of each group (`groupSize` consecutive
 * episodes, one task) in which some episodes are correct and some are not.
 *
 * @param correct per episode, grouped by task
 * @param groupSize episodes per task
 * @returns the kept row indices, in order
 * @example
 * ```ts
 * import { informativeRows } from "./trainer.ts";
 * informativeRows([true, true, false, false, true, false], 2); // [4, 5]
 * ```
 */
export function informativeRows(correct: readonly boolean[], groupSize: number): number[] {
  const rows: number[] = [];
  for (let g = 0; g < correct.length; g += groupSize) {
    const group = correct.slice(g, g + groupSize);
    if (group.some((c) => c) && group.some((c) => !c)) {
      for (let i = 0; i < group.length; i++) rows.push(g + i);
    }
  }
  return rows;
}

/** What one step reports besides the loss. */
export interface AgentReport {
  /** The scored episodes. */
  episodes: Episode[];
}

/**
 * The agentic RL trainer: the RL trainers' state (actor, frozen reference, rollout counter) and
 * an async step: play episodes → verifiable rewards → group advantages → one CISPO/GRPO update.
 */
export class AgentTrainer implements AsyncTrainer<RlState, AgentBatch> {
  /** Marks the asynchronous step (episodes are played and read back turn by turn). */
  readonly async = true as const;
  /** The settings. */
  readonly settings: AgentSettings;
  readonly #state: RlTrainer;
  readonly #step: TrainStep<RlMinibatch, Tree>;
  /** Called after each step with its episodes (e.g. to print one). */
  onReport?: (report: AgentReport) => void;

  /** @param settings the run's settings */
  constructor(settings: AgentSettings) {
    this.settings = settings;
    const s = settings;
    const objective = {
      algorithm: "grpo" as const,
      cfg: s.cfg,
      lossType: s.lossType,
      beta: s.beta,
      clipEpsilon: s.clipEpsilon,
      epsilonHigh: s.epsilonHigh,
      earlyStopKl: 0,
      valueClip: 0,
      lossAggregation: s.lossAggregation ?? "sequence",
    };
    this.#step = makeTrainStep<RlMinibatch, Tree>(
      (p, b) => actorObjective(objective, p as MiniMindParams, b),
      adamw({ lr: (c: number) => getLr(c, Math.max(1, s.totalUpdates), s.learningRate) }),
      {
        accumulationSteps: s.accumulationSteps,
        gradClip: s.gradClip,
        hasAux: true,
        lossScale: s.lossScale,
      },
    );
    // the GRPO trainer's state handling (a frozen reference copy, no critic, no tracker)
    this.#state = new RlTrainer({
      ...objective,
      tokenizer: s.tokenizer,
      reward: { name: "agent", score: () => [] },
      maxSeqLen: s.maxSeqLen,
      maxGenLen: s.maxGenLen,
      temperature: s.temperature,
      topP: s.topP,
      topK: s.topK,
      learningRate: s.learningRate,
      criticLearningRate: 0,
      totalUpdates: s.totalUpdates,
      criticTotalUpdates: 1,
      accumulationSteps: s.accumulationSteps,
      gradClip: s.gradClip,
      numGenerations: s.numGenerations,
      ppoUpdateIters: 1,
      ppoMinibatch: 1,
      gamma: 1,
      lambda: 1,
      seed: s.seed,
    });
  }

  /** @param params starting weights (owned) @returns actor + frozen reference */
  init(params: Tree): RlState {
    return this.#state.init(params);
  }

  /** @param saved checkpoint tree @param path checkpoint @returns the state */
  restore(saved: Tree, path: string): RlState {
    return this.#state.restore(saved, path);
  }

  /** @param state the state @returns the actor's params */
  weights(state: RlState): Tree {
    return state.actor.params;
  }

  /** @param state the state @returns updates done */
  updates(state: RlState): number {
    return state.actor.updates;
  }

  /**
   * One step: play every task of the batch `numGenerations` times, score, update.
   *
   * @param state the state (its replaced tensors are disposed)
   * @param batch the tasks
   * @returns the next state and the report tensors
   */
  async step(state: RlState, batch: AgentBatch): Promise<[RlState, StepOutput<Tensor>]> {
    const s = this.settings;
    const actor = state.actor.params as MiniMindParams;
    const { rollout: r, episodes } = await playEpisodes(
      { cfg: s.cfg, params: actor, tokenizer: s.tokenizer },
      batch.tasks,
      s,
      state.rollouts,
    );
    const rewards = episodes.map((e) => e.score.reward);
    const adv = groupAdvantages(rewards, s.numGenerations);
    const rows = s.dynamicSampling
      ? informativeRows(episodes.map((e) => e.score.correct), s.numGenerations)
      : Array.from({ length: r.rows }, (_, i) => i);
    let actorNext = state.actor;
    let aux: Partial<Record<AuxName, number>> = { loss: 0 };
    if (rows.length) {
      // the reference forward on the trained rows only (dynamic sampling drops most of them)
      const R = r.responseWidth,
        kept = await scoreLogProbs(s.cfg, state.ref as unknown as MiniMindParams, r, rows);
      const refLogp = new Float32Array(r.rows * R);
      rows.forEach((row, i) => refLogp.set(kept.subarray(i * R, (i + 1) * R), row * R));
      [actorNext, aux] = await updateOnRows(this.#step, state.actor, r, rows, {
        refLogp: [refLogp, R],
        advantages: [Float32Array.from(adv), 0],
      });
    }
    const next: RlState = { ...state, actor: actorNext, rollouts: state.rollouts + 1 };
    this.onReport?.({ episodes });
    const scores = episodes.map((e) => e.score);
    const scalars: Record<string, number> = {
      reward: mean(rewards),
      accuracy: mean(scores.map((x) => (x.correct ? 1 : 0))),
      calls: mean(scores.map((x) => x.calls)),
      malformed: mean(scores.map((x) => x.malformed)),
      turns: mean(episodes.map((e) => e.result.turns.length)),
      kl: aux.kl ?? 0,
      clip_fraction: aux.clip ?? 0,
      entropy: aux.entropy ?? 0,
      episode_tokens: mean(r.lengths),
      trained_groups: rows.length / s.numGenerations,
      actor_lr: getLr(
        Math.max(0, next.actor.updates - 1),
        Math.max(1, s.totalUpdates),
        s.learningRate,
      ),
    };
    return [next, {
      loss: scalar(aux.loss ?? 0),
      aux: scalar(aux.aux ?? 0),
      gradNorm: null,
      updated: next.actor.updates > state.actor.updates,
      scalars: Object.fromEntries(Object.entries(scalars).map(([k, v]) => [k, scalar(v)])),
    }];
  }
}
