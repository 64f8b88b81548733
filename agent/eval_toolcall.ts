/**
 * `deno task eval_toolcall` — MiniMind's tool-call evaluation (`scripts/eval_toolcall.py` and the
 * README's 20-task light agent test): load a model, run each task through the tool loop with the
 * built-in tools, and report accuracy, calls per task and the malformed-call rate.
 *
 *   deno task eval_toolcall                               # out/full_sft_512.safetensors
 *   deno task eval_toolcall --task_set embedded --limit 100 --weight agent
 *   deno task eval_toolcall --data_path agent_rl.jsonl     # MiniMind's format
 * @module
 */
import { loadPoems } from "../data/corpus/poetry.ts";
import { JsonlFile } from "../data/jsonl.ts";
import { parseFlags, runMain, usage, UsageError } from "../cli.ts";
import type { FlagTable } from "../cli.ts";
import { loadWeightsFor } from "../train/eval_llm.ts";
import { selectDevice } from "../train/lm.ts";
import { builtinTools } from "./builtin.ts";
import { evaluateToolUse, type ToolEvalReport } from "./evaluate.ts";
import { TurnBatcher } from "./model.ts";
import { type AgentTask, embeddedTasks, minimindMathTasks, taskFromRecord } from "./tasks.ts";

/** The flags (eval_toolcall.py's sampling defaults: temperature 0.9, top_p 0.9, 512 tokens). */
export const EVAL_TOOLCALL_FLAGS = {
  load_from: {
    type: "string",
    default: "model",
    help: "'model' = <save_dir>/<weight>_<hidden>.safetensors; else a file or HF folder",
  },
  save_dir: { type: "string", default: "out", help: "where our weights are" },
  weight: { type: "string", default: "full_sft", help: "weight prefix (full_sft, agent, …)" },
  hidden_size: { type: "int", default: 512, min: 8, help: "selects the weight file" },
  use_moe: { type: "bool01", default: false, help: "selects the _moe weight file" },
  tokenizer_path: { type: "optional", help: "tokenizer (default: beside the weights)" },
  task_set: {
    type: "choice",
    default: "all",
    choices: ["minimind", "embedded", "all"],
    help: "minimind = the 20 calculator tasks; embedded = held-out tasks of the embedded data",
  },
  data_path: { type: "optional", help: "agent_rl.jsonl-format tasks instead of --task_set" },
  limit: { type: "int", default: 100, min: 0, help: "most embedded held-out tasks (0 = all)" },
  max_turns: { type: "int", default: 3, min: 1, help: "assistant turns per task" },
  max_new_tokens: { type: "int", default: 512, min: 1, help: "most tokens per turn" },
  temperature: { type: "float", default: 0.9, min: 0, help: "sampling temperature" },
  top_p: { type: "float", default: 0.9, min: 0, help: "nucleus mass" },
  greedy: { type: "bool01", default: false, help: "argmax decoding" },
  batch_size: { type: "int", default: 16, min: 1, help: "tasks decoded together" },
  seed: { type: "int", default: 0, help: "sampling seed" },
  device: {
    type: "choice",
    default: "auto",
    choices: ["auto", "cpu", "webgpu"],
    help: "auto = a real GPU if present, else CPU",
  },
  verbose: { type: "bool01", default: false, help: "print every task's answer" },
} satisfies FlagTable;

const COMMAND = "deno task eval_toolcall";

/**
 * The held-out embedded tasks (the split {@link embeddedTasks} makes with its defaults).
 *
 * @param limit most tasks (0 = all)
 * @returns the tasks
 */
export async function heldoutTasks(limit: number): Promise<AgentTask[]> {
  const { heldout } = embeddedTasks((await loadPoems()).poems);
  return limit > 0 ? heldout.slice(0, limit) : heldout;
}

/**
 * One line of a report: accuracy, calls per task, malformed rate, mean reward.
 *
 * @param name the task set
 * @param r the report
 * @returns the line
 */
export function reportLine(name: string, r: ToolEvalReport): string {
  return `${name}: accuracy ${r.correct}/${r.tasks} = ${(100 * r.accuracy).toFixed(1)}%, ` +
    `calls/task ${r.callsPerTask.toFixed(2)}, malformed ${(100 * r.malformedRate).toFixed(1)}%, ` +
    `mean reward ${r.meanReward.toFixed(3)}`;
}

/**
 * Runs the evaluation.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, EVAL_TOOLCALL_FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "Tool-call evaluation (eval_toolcall.py).", EVAL_TOOLCALL_FLAGS));
    return 0;
  }
  const device = await selectDevice(a.device);
  const { path, model } = await loadWeightsFor(a);
  console.log(`Loaded ${path} on ${device} (hidden ${model.cfg.hiddenSize})`);
  const sets: [string, AgentTask[]][] = [];
  if (a.data_path) {
    const f = JsonlFile.open(a.data_path, { cacheDir: null });
    const tasks: AgentTask[] = [];
    try {
      for (let i = 0; i < f.length; i++) {
        tasks.push(taskFromRecord(f.get(i) as Record<string, unknown>, `${a.data_path}:${i + 1}`));
      }
    } finally {
      f.close();
    }
    sets.push([a.data_path, a.limit > 0 ? tasks.slice(0, a.limit) : tasks]);
  } else {
    if (a.task_set !== "embedded") sets.push(["minimind math (20)", minimindMathTasks()]);
    if (a.task_set !== "minimind") sets.push(["embedded held-out", await heldoutTasks(a.limit)]);
  }
  const tools = builtinTools();
  const turns = new TurnBatcher(model, {
    maxNewTokens: a.max_new_tokens,
    temperature: a.temperature,
    topP: a.top_p,
    greedy: a.greedy,
    seed: a.seed,
    maxBatch: a.batch_size,
  });
  for (const [name, tasks] of sets) {
    if (!tasks.length) throw new UsageError(`No tasks in ${name}`);
    const t0 = performance.now();
    const r = await evaluateToolUse(turns.turn, tasks, {
      tools,
      maxTurns: a.max_turns,
      concurrency: a.batch_size,
      onTask: (o, done) => {
        if (a.verbose) {
          console.log(
            `[${done}/${tasks.length}] ${o.correct ? "✓" : "✗"} ${o.question} → ${
              JSON.stringify(o.final.slice(0, 120))
            } (calls ${o.calls}, malformed ${o.malformed})`,
          );
        }
      },
    });
    console.log(`${reportLine(name, r)} (${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  }
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
