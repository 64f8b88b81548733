/**
 * `deno task agent_data` — writes the embedded tool-use tasks as files in MiniMind's formats, so
 * the usual trainers read them: `agent_sft.jsonl` (tool-call conversations of the train split,
 * for `deno task sft`), `agent_rl.jsonl` (train split, for `deno task agent --data_path`) and
 * `agent_heldout.jsonl` (the held-out split, for `deno task eval_toolcall --data_path`).
 *
 *   deno task agent_data --out_dir out/agent
 * @module
 */
import { join } from "node:path";
import { loadPoems } from "../data/corpus/poetry.ts";
import { atomicWrite } from "../train/checkpoint.ts";
import { parseFlags, runMain, usage } from "../cli.ts";
import type { FlagTable } from "../cli.ts";
import { builtinTools } from "./builtin.ts";
import {
  type AgentTask,
  copyRecords,
  copyTexts,
  embeddedTasks,
  sftConversation,
  taskRecord,
} from "./tasks.ts";

/** The flags. */
export const AGENT_DATA_FLAGS = {
  out_dir: { type: "string", default: "out/agent", help: "where the JSONL files go" },
  count: { type: "int", default: 2000, min: 10, help: "tasks generated before the split" },
  seed: { type: "int", default: 42, help: "task seed" },
  copy_count: { type: "int", default: 20000, min: 0, help: "copy warm-up texts (0 = none)" },
  per_conversation: {
    type: "int",
    default: 1,
    min: 1,
    help: "SFT tasks (of one tool) chained in one conversation",
  },
} satisfies FlagTable;

const COMMAND = "deno task agent_data";

/**
 * Writes the three files.
 *
 * @param outDir the folder
 * @param options task count, seed, SFT tasks per conversation
 * @returns the paths and record counts
 */
export async function writeAgentData(
  outDir: string,
  options: { count?: number; seed?: number; perConversation?: number; copyCount?: number } = {},
): Promise<
  Record<"sft" | "rl" | "heldout" | "copy" | "copy_text", { path: string; records: number }>
> {
  const { poems } = await loadPoems();
  const { train, heldout } = embeddedTasks(poems, options);
  const tools = builtinTools(poems);
  const per = options.perConversation ?? 1;
  const byTool = new Map<string, AgentTask[]>();
  for (const t of train) {
    const k = t.reference?.name ?? "";
    byTool.set(k, [...byTool.get(k) ?? [], t]);
  }
  const groups: AgentTask[][] = [];
  for (const list of byTool.values()) {
    for (let i = 0; i < list.length; i += per) groups.push(list.slice(i, i + per));
  }
  // the generation order (kinds interleaved), by each group's first task
  const order = new Map(train.map((t, i) => [t, i]));
  groups.sort((a, b) => order.get(a[0])! - order.get(b[0])!);
  const sft = await Promise.all(groups.map((g) => sftConversation(g, tools)));
  await Deno.mkdir(outDir, { recursive: true });
  const write = async (name: string, recs: unknown[]) => {
    const path = join(outDir, name);
    const text = recs.map((r) => JSON.stringify(r)).join("\n") + "\n";
    await atomicWrite(path, [new TextEncoder().encode(text)]);
    return { path, records: recs.length };
  };
  return {
    sft: await write("agent_sft.jsonl", sft),
    rl: await write("agent_rl.jsonl", train.map(taskRecord)),
    heldout: await write("agent_heldout.jsonl", heldout.map(taskRecord)),
    copy: await write(
      "agent_copy.jsonl",
      copyRecords(train, options.copyCount ?? 20000, options.seed ?? 42),
    ),
    copy_text: await write(
      "agent_copy_text.jsonl",
      copyTexts(train, options.copyCount ?? 20000, options.seed ?? 42),
    ),
  };
}

/**
 * Runs the command.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, AGENT_DATA_FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "Write the embedded tool-use tasks as JSONL.", AGENT_DATA_FLAGS));
    return 0;
  }
  const r = await writeAgentData(a.out_dir, {
    count: a.count,
    seed: a.seed,
    perConversation: a.per_conversation,
    copyCount: a.copy_count,
  });
  for (const [k, v] of Object.entries(r)) console.log(`${k}: ${v.path} (${v.records} records)`);
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
