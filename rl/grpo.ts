/**
 * `deno task grpo`: see `rl/cli.ts` (`--help` lists the flags).
 * @module
 */
import { runMain } from "../train/cli.ts";
import { mainRl } from "./cli.ts";

if (import.meta.main) Deno.exit(await runMain(() => mainRl("grpo", Deno.args), "deno task grpo"));
