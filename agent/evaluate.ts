/**
 * Tool-use evaluation: run each task through the tool loop and grade the final answer against its
 * `gt` — accuracy, calls per task, malformed-call rate and the mean shaped reward.
 * @module
 */
import { type AgentResult, runAgentLoop, type Tool, type TurnGenerator } from "../serve/tools.ts";
import { type EpisodeScore, scoreEpisode } from "./reward.ts";
import type { AgentTask } from "./tasks.ts";

/** One graded task. */
export interface TaskOutcome extends EpisodeScore {
  /** Task id. */
  id: string;
  /** The question. */
  question: string;
  /** The final answer. */
  final: string;
  /** Turns used. */
  turns: number;
}

/** What an evaluation reports. */
export interface ToolEvalReport {
  /** Tasks run. */
  tasks: number;
  /** Tasks whose every `gt` item is in the final answer. */
  correct: number;
  /** correct / tasks. */
  accuracy: number;
  /** Well-formed calls per task. */
  callsPerTask: number;
  /** Malformed `<tool_call>` blocks / all blocks (0 when there were none). */
  malformedRate: number;
  /** Mean shaped reward. */
  meanReward: number;
  /** Per task. */
  outcomes: TaskOutcome[];
}

/** Options of {@link evaluateToolUse}. */
export interface ToolEvalOptions {
  /** Tools that run when called (a task's call of a tool it was not offered is refused). */
  tools: readonly Tool[];
  /** Most turns per task (default 3). */
  maxTurns?: number;
  /** Tool time limit in ms (default 1000). */
  timeoutMs?: number;
  /** Loops run side by side (their turns batch together; default 16). */
  concurrency?: number;
  /** Called after each task. */
  onTask?: (outcome: TaskOutcome, done: number) => void;
}

/**
 * Runs one task through the loop with only its offered tools executable.
 *
 * @param turn the model
 * @param task the task
 * @param tools all runnable tools
 * @param options max turns, time limit
 * @returns the loop's result
 */
export function runTask(
  turn: TurnGenerator,
  task: AgentTask,
  tools: readonly Tool[],
  options: { maxTurns?: number; timeoutMs?: number } = {},
): Promise<AgentResult> {
  const offered = new Set(task.tools.map((s) => s.function.name));
  return runAgentLoop(turn, task.messages, {
    tools: tools.filter((t) => offered.has(t.name)),
    offered: task.tools,
    maxTurns: options.maxTurns ?? 3,
    timeoutMs: options.timeoutMs,
  });
}

/**
 * Evaluates tool use on a task set.
 *
 * @param turn the model as a turn generator (e.g. `new TurnBatcher(model).turn`)
 * @param tasks the tasks
 * @param options tools, max turns, time limit, concurrency
 * @returns accuracy, calls per task, malformed rate, mean reward and per-task outcomes
 */
export async function evaluateToolUse(
  turn: TurnGenerator,
  tasks: readonly AgentTask[],
  options: ToolEvalOptions,
): Promise<ToolEvalReport> {
  const outcomes: TaskOutcome[] = new Array(tasks.length);
  const width = options.concurrency ?? 16;
  let next = 0, done = 0;
  const worker = async () => {
    while (next < tasks.length) {
      const i = next++;
      const task = tasks[i];
      const r = await runTask(turn, task, options.tools, options);
      outcomes[i] = {
        id: task.id,
        question: String(task.messages.at(-1)?.content ?? ""),
        final: r.final,
        turns: r.turns.length,
        ...scoreEpisode(r, task),
      };
      options.onTask?.(outcomes[i], ++done);
    }
  };
  await Promise.all(Array.from({ length: Math.min(width, tasks.length) }, worker));
  const n = tasks.length;
  const calls = outcomes.reduce((s, o) => s + o.calls, 0);
  const bad = outcomes.reduce((s, o) => s + o.malformed, 0);
  const correct = outcomes.filter((o) => o.correct).length;
  return {
    tasks: n,
    correct,
    accuracy: n ? correct / n : 0,
    callsPerTask: n ? calls / n : 0,
    malformedRate: calls + bad ? bad / (calls + bad) : 0,
    meanReward: n ? outcomes.reduce((s, o) => s + o.reward, 0) / n : 0,
    outcomes,
  };
}
