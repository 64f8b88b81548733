/**
 * Verifiable rewards and grading of tool-use episodes, after MiniMind's `trainer/train_agent.py`
 * (its `calculate_rewards`): tag balance, the gap between valid calls and expected answers, the
 * share of expected answers found in the final text (scored only when tools were called, as in
 * MiniMind; `correct` counts it either way, numbers as whole numbers only), an unfinished penalty
 * and the trigram repetition penalty, clipped to [−3, 3]. There is no reward model here (MiniMind adds an
 * RM score to answers given without a tool call); that term is 0.
 * @module
 */
import {
  type AgentResult,
  checkArguments,
  type JsonSchema,
  type ToolSchema,
} from "../serve/tools.ts";
import type { AgentTask } from "./tasks.ts";

function numbersIn(text: string): number[] {
  const out: number[] = [];
  for (const m of text.replace(/(\d),(?=\d{3})/g, "$1").matchAll(/-?\d+(\.\d+)?([eE][+-]?\d+)?/g)) {
    out.push(Number(m[0]));
  }
  return out;
}

/**
 * Whether an expected answer occurs in a text: a case-insensitive substring, or (for a number) a
 * number in the text within 1e-6 of it, thousands commas removed. That is MiniMind's "found" (the
 * reward's rule). With `exact`, a numeric answer counts only as a whole number of the text, so
 * `66666` does not contain `666` (the rule `correct` and the reported accuracy use).
 *
 * @param text the final answer
 * @param expected one `gt` item
 * @param exact numbers match whole numbers only (default false: MiniMind's substring rule)
 * @returns found or not
 * @example
 * ```ts
 * import { answerFound } from "./reward.ts";
 * answerFound("答案是66666。", "666"); // true: MiniMind's substring rule
 * answerFound("答案是66666。", "666", true); // false
 * answerFound("答案是1,234。", "1234", true); // true
 * ```
 */
export function answerFound(text: string, expected: string, exact = false): boolean {
  const want = Number(expected.replaceAll(",", ""));
  const numeric = expected.trim() !== "" && Number.isFinite(want);
  if (!(exact && numeric) && text.toLowerCase().includes(expected.toLowerCase())) return true;
  if (!numeric) return false;
  return numbersIn(text).some((v) => Math.abs(v - want) <= 1e-6);
}

/**
 * MiniMind's repetition penalty: min(0.5, duplicate trigrams · 0.5 · 2 / trigrams) over the
 * lower-cased `\w+|[^\w\s]` tokens.
 *
 * @param text the answer
 * @returns the penalty in [0, 0.5]
 */
export function repetitionPenalty(text: string): number {
  const toks = text.toLowerCase().match(/\w+|[^\w\s]/gu) ?? [];
  if (toks.length < 3) return 0;
  const seen = new Set<string>();
  let dup = 0;
  for (let i = 0; i + 2 < toks.length; i++) {
    const g = toks[i] + "\u0000" + toks[i + 1] + "\u0000" + toks[i + 2];
    if (seen.has(g)) dup++;
    else seen.add(g);
  }
  return Math.min(0.5, dup * 0.5 * 2 / (toks.length - 2));
}

/** The score of one episode. */
export interface EpisodeScore {
  /** The shaped reward in [−3, 3]. */
  reward: number;
  /** Every expected answer is in the final text, numbers as whole numbers (`answerFound`'s exact). */
  correct: boolean;
  /** Expected answers found. */
  found: number;
  /** Well-formed calls. */
  calls: number;
  /** Calls of an offered tool with arguments that fit its schema. */
  valid: number;
  /** `<tool_call>` blocks that were not JSON calls. */
  malformed: number;
}

function count(s: string, sub: string): number {
  return s.split(sub).length - 1;
}

/**
 * How the reward finds an expected answer: `substring` is MiniMind's rule (any substring, so a
 * model is paid in full for `答案是3611` when the answer is 361 — measured: agentic RL learnt to
 * append digits with it), `exact` counts numbers as whole numbers only ({@link answerFound}).
 */
export type AnswerMatch = "exact" | "substring";

/**
 * Scores an episode against its task (MiniMind §4.10, with the answer rule `match`).
 *
 * @param result the loop's result
 * @param task the task (offered tools and `gt`)
 * @param match how the reward's "found" term matches numbers (default exact)
 * @returns reward, correctness and call counts
 */
export function scoreEpisode(
  result: AgentResult,
  task: Pick<AgentTask, "tools" | "gt">,
  match: AnswerMatch = "exact",
): EpisodeScore {
  let r = 0;
  for (const t of result.turns) {
    r -= 0.5 * Math.abs(count(t.text, "<tool_call>") - count(t.text, "</tool_call>"));
  }
  const byName = new Map<string, JsonSchema>(
    task.tools.map((s: ToolSchema) => [s.function.name, s.function.parameters]),
  );
  let valid = 0;
  for (const t of result.turns) {
    for (const o of t.outcomes) {
      if (!o.call) continue;
      const schema = byName.get(o.call.function.name);
      if (!schema) continue;
      let args: unknown;
      try {
        args = JSON.parse(o.call.function.arguments);
      } catch {
        continue;
      }
      if (checkArguments(schema, args) === null) valid++;
    }
  }
  const final = result.unfinished ? "" : result.final;
  const found = task.gt.filter((g) => answerFound(final, g, match === "exact")).length;
  const attempts = result.calls + result.malformed;
  if (attempts === 0) {
    const n = final.trim().length;
    r += n >= 5 && n <= 800 ? 0.5 : -0.5;
  } else {
    const gap = Math.abs(valid - task.gt.length) + (attempts - valid);
    r += gap === 0 ? 0.5 : -0.5 * gap;
    if (task.gt.length) r += 2.5 * found / task.gt.length;
  }
  if (result.unfinished) r -= 0.5;
  r -= repetitionPenalty(final);
  return {
    reward: Math.max(-3, Math.min(3, r)),
    correct: task.gt.length > 0 && task.gt.every((g) => answerFound(final, g, true)),
    found,
    calls: result.calls,
    valid,
    malformed: result.malformed,
  };
}
