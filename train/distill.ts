/**
 * `deno task distill` — MiniMind's train_distillation.py on the shared trainer loop; see `posttrain.ts` for what it
 * trains, its defaults and its files. `deno task distill --help` lists the flags.
 * @module
 */
import { runMain } from "../cli.ts";
import { postMain } from "./posttrain.ts";

if (import.meta.main) {
  Deno.exit(await runMain(() => postMain("distill", Deno.args), "deno task distill"));
}
