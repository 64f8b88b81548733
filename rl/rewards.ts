/**
 * Rewards of the RL trainers. A {@link RewardFunction} scores a batch of (prompt, response)
 * pairs and reports its total and each component; {@link scoreRewards} runs one and stops the
 * run — naming the prompt — when it throws or returns a non-finite value.
 *
 * - {@link rulesReward}: MiniMind's `calculate_rewards` (length, think block, repetition) plus an
 *   optional reward model's score clipped to ±3.
 * - {@link poetryReward}: the verifiable poetry reward (form, rhyme, tone) of `./poetry.ts`.
 * - {@link ValueHeadRewardModel}: any MiniMind model with a value head as a reward model, scored
 *   the way MiniMind's `LMForRewardModel.get_score` builds its input.
 * @module
 */
// B = rows, T = positions
import { tensor } from "../nn/creation.ts";
import { scope } from "../nn/scope.ts";
import { sliceAxis } from "../nn/ops/movement.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { POEM_FORMS } from "../data/corpus/poetry.ts";
import type { PoemForm } from "../data/corpus/poetry.ts";
import { criticValues } from "./critic.ts";
import type { CriticParams } from "./critic.ts";
import { POETRY_REWARD_RANGE, poetryScore } from "./poetry.ts";

/** One pair to score. */
export interface RewardInput {
  /** The rendered prompt (chat template with the generation prompt). */
  prompt: string;
  /** The decoded response (special tokens dropped). */
  response: string;
  /** The dataset record the prompt came from (e.g. the corpus's requested `form`). */
  record?: Record<string, unknown>;
}

/** A score: the total and its named components. */
export interface RewardScore {
  /** The reward used for training. */
  total: number;
  /** Each component (reported separately in the metrics). */
  components: Record<string, number>;
}

/** A reward: scores a batch of pairs. */
export interface RewardFunction {
  /** Short name (`rules`, `poetry`, `model`). */
  readonly name: string;
  /** Bounds of `total` when known (SPO maps its baseline onto them). */
  readonly range?: readonly [number, number];
  /**
   * Scores every pair.
   * @param inputs the batch
   * @returns one score per input, in order
   */
  score(inputs: readonly RewardInput[]): Promise<RewardScore[]> | RewardScore[];
}

/** A reward function failed or returned a non-finite value. */
export class RewardError extends Error {
  /** @param message names the reward, the prompt and the value */
  constructor(message: string) {
    super(message);
    this.name = "RewardError";
  }
}

function excerpt(s: string, n = 120): string {
  const flat = s.replace(/\n/g, "\\n");
  return flat.length > n ? flat.slice(0, n) + "…" : flat;
}

/**
 * Runs `reward` on a batch and checks every value: a throw, a wrong count or a NaN/±Inf total or
 * component becomes a {@link RewardError} naming the prompt (and its index in the batch).
 *
 * @param reward the reward function
 * @param inputs the batch
 * @returns the scores
 */
export async function scoreRewards(
  reward: RewardFunction,
  inputs: readonly RewardInput[],
): Promise<RewardScore[]> {
  let out: RewardScore[];
  try {
    out = await reward.score(inputs);
  } catch (e) {
    if (e instanceof RewardError) throw e;
    const prompts = inputs.map((x, i) => `[${i}] ${excerpt(x.prompt)}`).join("; ");
    throw new RewardError(
      `Reward "${reward.name}" threw on a batch of ${inputs.length} (${prompts}): ${
        (e as Error).message
      }`,
    );
  }
  if (!Array.isArray(out) || out.length !== inputs.length) {
    throw new RewardError(
      `Reward "${reward.name}" returned ${
        Array.isArray(out) ? out.length : typeof out
      } scores for ${inputs.length} prompts`,
    );
  }
  out.forEach((s, i) => {
    const bad = [["total", s?.total], ...Object.entries(s?.components ?? {})]
      .find(([, v]) => typeof v !== "number" || !Number.isFinite(v));
    if (bad) {
      throw new RewardError(
        `Reward "${reward.name}" gave ${bad[0]} = ${bad[1]} for prompt [${i}] "${
          excerpt(inputs[i].prompt)
        }" (response "${excerpt(inputs[i].response, 60)}")`,
      );
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------------
// MiniMind's calculate_rewards

const WORD = /[\p{L}\p{N}\p{M}_]+|[^\p{L}\p{N}\p{M}_\s]/gu;

/**
 * MiniMind's repetition penalty: over lower-cased `\w+|[^\w\s]` tokens, min(0.5, duplicate
 * trigrams / trigrams).
 *
 * @param text the answer
 * @returns the penalty in [0, 0.5]
 */
export function repetitionPenalty(text: string): number {
  const toks = text.toLowerCase().match(WORD) ?? [];
  const n = toks.length - 2;
  if (n <= 0) return 0;
  const seen = new Set<string>();
  for (let i = 0; i < n; i++) seen.add(`${toks[i]}\u0000${toks[i + 1]}\u0000${toks[i + 2]}`);
  return Math.min(0.5, (n - seen.size) * 0.5 * 2 / n);
}

const len = (s: string) => [...s].length;

/**
 * The rule part of MiniMind's `calculate_rewards` for one response (lengths in code points, as
 * Python's `len`): ±0.5 for 20–800 characters; with a `</think>`: +1.0 for a 20–300-character
 * think block (else −0.5) and ±0.25 for exactly one `</think>`; minus the answer's repetition
 * penalty.
 *
 * @param response the decoded response
 * @returns the components and the answer (for a reward model)
 */
export function ruleComponents(
  response: string,
): { components: Record<string, number>; answer: string } {
  const c: Record<string, number> = {};
  const stripped = response.trim();
  c.length = len(stripped) >= 20 && len(stripped) <= 800 ? 0.5 : -0.5;
  let answer = stripped;
  const at = response.indexOf("</think>");
  if (at >= 0) {
    const think = response.slice(0, at).trim();
    c.think = len(think) >= 20 && len(think) <= 300 ? 1.0 : -0.5;
    c.think_count = response.split("</think>").length - 1 === 1 ? 0.25 : -0.25;
    answer = response.slice(at + "</think>".length).trim();
  }
  c.repetition = 0 - repetitionPenalty(answer);
  return { components: c, answer };
}

/** A message of a prompt: role and text. */
export interface PromptMessage {
  /** system, user or assistant. */
  role: string;
  /** Text. */
  content: string;
  /** (Compatible with the chat template's message type.) */
  [field: string]: unknown;
}

/**
 * The (role, content) messages of a rendered prompt, as MiniMind's reward code parses them
 * (`<|im_start|>(system|user|assistant)\s+(.*?)<|im_end|>`, across lines).
 *
 * @param prompt the chat-template text
 * @returns the messages in order
 */
export function parseChatPrompt(prompt: string): PromptMessage[] {
  const re = /<\|im_start\|>(system|user|assistant)\s+([\s\S]*?)<\|im_end\|>/g;
  return [...prompt.matchAll(re)].map((m) => ({ role: m[1], content: m[2].trim() }));
}

/**
 * The two messages a reward model scores (`LMForRewardModel.get_score`): the history as
 * "role: content" lines, then `以上是对话历史。我的新问题是：` and the last message (just the last
 * message when there is no history), as the user turn; the response as the assistant turn.
 *
 * @param messages the prompt's messages
 * @param response the answer
 * @returns `[user, assistant]`
 */
export function rewardModelMessages(
  messages: readonly PromptMessage[],
  response: string,
): [PromptMessage, PromptMessage] {
  const history = messages.slice(0, -1).map((m) => `${m.role}: ${m.content}`).join("\n");
  const last = messages.at(-1)?.content ?? "";
  const query = history ? `${history}\n以上是对话历史。我的新问题是：\n${last}` : last;
  return [{ role: "user", content: query }, { role: "assistant", content: response }];
}

/** A reward model: one scalar per (prompt messages, response). */
export interface RewardModel {
  /**
   * Scores responses (unclipped; {@link rulesReward} clips to ±3).
   * @param batch prompt messages and response per row
   * @returns one score per row
   */
  score(batch: readonly { messages: PromptMessage[]; response: string }[]): Promise<number[]>;
}

/**
 * MiniMind's `calculate_rewards`: the rule components plus, when a reward model is given, its
 * score of the answer clipped to [−3, 3] (component `model`).
 *
 * @param rm optional reward model
 * @returns the reward function
 */
export function rulesReward(rm?: RewardModel): RewardFunction {
  return {
    name: rm ? "model" : "rules",
    range: rm ? [-4.75, 4.75] : [-1.75, 1.75],
    async score(inputs) {
      const parts = inputs.map((x) => ruleComponents(x.response));
      if (rm) {
        const s = await rm.score(
          inputs.map((x, i) => ({
            messages: parseChatPrompt(x.prompt),
            response: parts[i].answer,
          })),
        );
        parts.forEach((p, i) => (p.components.model = Math.max(-3, Math.min(3, s[i]))));
      }
      return parts.map(({ components }) => ({
        total: Object.values(components).reduce((a, b) => a + b, 0),
        components,
      }));
    },
  };
}

/**
 * The requested form of an RL prompt: the corpus record's `form` ({name, lines,
 * chars_per_line}), else the first form name in the prompt text.
 *
 * @param x the pair
 * @returns the form, or null when none is requested
 */
export function requestedForm(x: RewardInput): PoemForm | null {
  const f = x.record?.form as
    | { name?: unknown; lines?: unknown; chars_per_line?: unknown }
    | undefined;
  if (f && typeof f.lines === "number" && typeof f.chars_per_line === "number") {
    return { name: String(f.name ?? ""), lines: f.lines, charsPerLine: f.chars_per_line };
  }
  const user = parseChatPrompt(x.prompt).filter((m) => m.role === "user").at(-1)?.content ??
    x.prompt;
  return POEM_FORMS.find((p) => user.includes(p.name)) ?? null;
}

/**
 * The verifiable poetry reward (see `./poetry.ts`): total = form + rhyme + tone − repeat, each
 * component reported. A prompt with no requested form is an error naming it.
 *
 * @returns the reward function
 */
export function poetryReward(): RewardFunction {
  return {
    name: "poetry",
    range: POETRY_REWARD_RANGE,
    score(inputs) {
      return inputs.map((x) => {
        const form = requestedForm(x);
        if (!form) throw new Error(`no poem form requested in "${excerpt(x.prompt)}"`);
        const { total, ...components } = poetryScore(x.response, form);
        return { total, components };
      });
    },
  };
}

/** A loaded reward model: a MiniMind model with a value head, and its tokenizer. */
export interface ValueHeadModel {
  /** Config. */
  cfg: MiniMindConfig;
  /** Model + value head. */
  params: CriticParams;
  /** Its tokenizer (for the chat template). */
  tokenizer: Tokenizer;
}

/**
 * A MiniMind model with a value head as a {@link RewardModel}: renders [user: query, assistant:
 * response] with the chat template, runs the critic and reads the value at the last token.
 */
export class ValueHeadRewardModel implements RewardModel {
  readonly #m: ValueHeadModel;

  /** @param model config, params (with `value_head`) and tokenizer */
  constructor(model: ValueHeadModel) {
    this.#m = model;
  }

  /**
   * Scores each row (one forward per row: no padding effects).
   * @param batch messages and response per row
   * @returns values at the last token
   */
  async score(
    batch: readonly { messages: PromptMessage[]; response: string }[],
  ): Promise<number[]> {
    const out: number[] = [];
    for (const row of batch) {
      const text = this.#m.tokenizer.applyChatTemplate(
        rewardModelMessages(row.messages, row.response),
      );
      const ids = this.#m.tokenizer.encode(text);
      const v = scope(() => {
        const x = tensor(Int32Array.from(ids), [1, ids.length], "i32");
        const values = criticValues(this.#m.cfg, this.#m.params, x); // (1, T)
        return sliceAxis(values, 1, ids.length - 1, ids.length);
      });
      out.push(await v.item());
      v.dispose();
    }
    return out;
  }
}
