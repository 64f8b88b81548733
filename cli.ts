/**
 * Every command of the repository in one entry, for a user of the published package who has no
 * `deno task`: `deno run -A jsr:@minimind/ts/cli pretrain --hidden_size 256`, and likewise `sft`,
 * `eval`, `demo` and `serve` (also `jsr:@minimind/ts/serve` directly). Flags are the commands' own.
 *
 * ```sh
 * deno run -A cli.ts demo --quick
 * deno run -A cli.ts serve --load_from out/demo/full_sft_192.safetensors
 * ```
 * @module
 */
import { runMain } from "./train/cli.ts";
import { main as pretrain } from "./train/pretrain.ts";
import { main as sft } from "./train/sft.ts";
import { main as evaluate } from "./train/eval.ts";
import { main as demo } from "./demo.ts";
import { main as serve } from "./serve.ts";

/** The commands, each taking its own flags and resolving to an exit code. */
export const COMMANDS: Readonly<Record<string, (argv: string[]) => Promise<number>>> = {
  pretrain,
  sft,
  eval: evaluate,
  demo,
  serve: async (argv) => (await serve(argv), 0),
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
  return await runMain(() => command(rest), `cli.ts ${name}`);
}

if (import.meta.main) Deno.exit(await main(Deno.args));
