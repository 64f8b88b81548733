/**
 * Every command of the repository in one entry (the package's `./cli` export), for a user of the published package who has no
 * `deno task`: `deno run -A jsr:@minimind/ts/cli pretrain --hidden_size 256`, and likewise `sft`,
 * `lora`, `dpo`, `distill`, `reason`, `ppo`, `grpo`, `spo`, `agent`, `eval`, `eval_toolcall`,
 * `convert`, `merge_lora`, `demo`, `serve` (also `jsr:@minimind/ts/serve` directly), `tokenizer`,
 * `corpus` and the rest of `deno task`'s commands. Flags are the commands' own.
 *
 * ```sh
 * deno run -A commands.ts demo --quick
 * deno run -A commands.ts serve --load_from out/demo/full_sft_192.safetensors
 * ```
 * @module
 */
import { runMain } from "./cli.ts";
import { main as pretrain } from "./train/pretrain.ts";
import { main as sft } from "./train/sft.ts";
import { main as evaluate } from "./train/eval_llm.ts";
import { main as demo } from "./demo.ts";
import { main as serve } from "./serve.ts";
import { main as tokenizer } from "./data/train_tokenizer.ts";
import { main as corpus } from "./data/corpus/main.ts";
import { postMain } from "./train/posttrain.ts";
import { main as mergeLora } from "./train/merge_lora.ts";
import { main as convert } from "./convert/convert.ts";
import { mainRl } from "./rl/cli.ts";
import { main as agent } from "./agent/train_agent.ts";
import { main as evalToolcall } from "./agent/eval_toolcall.ts";
import { main as agentData } from "./agent/data.ts";
import { main as demoPosttrain } from "./demo_posttrain.ts";

/** The commands, each taking its own flags and resolving to an exit code. */
export const COMMANDS: Readonly<Record<string, (argv: string[]) => Promise<number>>> = {
  pretrain,
  sft,
  lora: (argv) => postMain("lora", argv),
  dpo: (argv) => postMain("dpo", argv),
  distill: (argv) => postMain("distill", argv),
  reason: (argv) => postMain("reason", argv),
  merge_lora: mergeLora,
  ppo: (argv) => mainRl("ppo", argv),
  grpo: (argv) => mainRl("grpo", argv),
  spo: (argv) => mainRl("spo", argv),
  agent,
  agent_data: agentData,
  eval: evaluate,
  eval_toolcall: evalToolcall,
  convert,
  demo,
  "demo:posttrain": demoPosttrain,
  serve,
  tokenizer,
  corpus,
};

const USAGE = `Usage: deno run -A jsr:@minimind/ts/cli <command> [flags]

Commands: ${Object.keys(COMMANDS).join(", ")} (each takes --help)`;

/**
 * Runs `argv[0]` with the rest of `argv` as its flags.
 *
 * @param argv the command and its flags
 * @returns the exit code (2 for an unknown or missing command)
 */
export async function main(argv: readonly string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === "-h" || name === "--help") {
    console.log(USAGE);
    return 0;
  }
  const command = name === undefined ? undefined : COMMANDS[name];
  if (!command) {
    console.error(
      `error: ${name === undefined ? "missing command" : `unknown command ${name}`}\n${USAGE}`,
    );
    return 2;
  }
  return await runMain(() => command(rest), `commands.ts ${name}`);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
