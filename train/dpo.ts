/**
 * `deno task dpo` — MiniMind's train_dpo.py on the shared trainer loop; see `posttrain.ts` for what it
 * trains, its defaults and its files. `deno task dpo --help` lists the flags.
 * @module
 */
import { runMain } from "../cli.ts";
import { postMain } from "./posttrain.ts";

if (import.meta.main) Deno.exit(await runMain(() => postMain("dpo", Deno.args), "deno task dpo"));
