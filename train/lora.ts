/**
 * `deno task lora` — MiniMind's train_lora.py on the shared trainer loop; see `posttrain.ts` for what it
 * trains, its defaults and its files. `deno task lora --help` lists the flags.
 * @module
 */
import { runMain } from "../cli.ts";
import { postMain } from "./posttrain.ts";

if (import.meta.main) Deno.exit(await runMain(() => postMain("lora", Deno.args), "deno task lora"));
