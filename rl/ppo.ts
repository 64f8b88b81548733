/**
 * `deno task ppo`: see `rl/cli.ts` (`--help` lists the flags).
 * @module
 */
import { runMain } from "../train/cli.ts";
import { mainRl } from "./cli.ts";

if (import.meta.main) Deno.exit(await runMain(() => mainRl("ppo", Deno.args), "deno task ppo"));
