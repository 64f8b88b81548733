/**
 * `deno task reason` — MiniMind's MiniMind2's train_reason.py on the shared trainer loop; see `posttrain.ts` for what it
 * trains, its defaults and its files. `deno task reason --help` lists the flags.
 * @module
 */
import { runMain } from "../cli.ts";
import { postMain } from "./posttrain.ts";

if (import.meta.main) {
  Deno.exit(await runMain(() => postMain("reason", Deno.args), "deno task reason"));
}
