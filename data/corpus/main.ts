/**
 * `deno task corpus`: build (or reuse) the embedded poetry corpus and print where it is.
 *
 *   deno task corpus [--dir .cache/corpus] [--pretrain_bytes 4000000] [--sft_samples 30000]
 *                    [--dpo_pairs 5000] [--rl_prompts 2000] [--heldout 0.02] [--seed 42] [--force]
 * @module
 */
import { parseFlags, runMain, usage } from "../../cli.ts";
import type { FlagTable } from "../../cli.ts";
import { buildCorpus, CORPUS_DEFAULTS, CORPUS_DIR } from "./build.ts";

const D = CORPUS_DEFAULTS;

/** The flags of `deno task corpus`. */
export const CORPUS_FLAGS = {
  dir: { type: "string", default: CORPUS_DIR, help: "where the corpus goes" },
  pretrain_bytes: { type: "int", default: D.pretrainBytes, min: 0, help: "pretrain text size" },
  sft_samples: { type: "int", default: D.sftSamples, min: 0, help: "SFT conversations" },
  dpo_pairs: { type: "int", default: D.dpoPairs, min: 0, help: "DPO preference pairs" },
  rl_prompts: { type: "int", default: D.rlPrompts, min: 0, help: "RL prompts" },
  heldout: { type: "float", default: D.heldoutFraction, min: 0, help: "held-out poem fraction" },
  seed: { type: "int", default: D.seed, min: 0, help: "sampling seed" },
  source_dir: { type: "optional", help: "a chinese-poetry/dist folder (default: the npm package)" },
  force: { type: "switch", default: false, help: "rebuild even when a matching corpus exists" },
} as const satisfies FlagTable;

const COMMAND = "deno task corpus";

/**
 * Runs the corpus command.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values, help } = parseFlags(argv, CORPUS_FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "Build the embedded classical-poetry corpus.", CORPUS_FLAGS));
    return 0;
  }
  const files = await buildCorpus({
    dir: values.dir,
    pretrainBytes: values.pretrain_bytes,
    sftSamples: values.sft_samples,
    dpoPairs: values.dpo_pairs,
    rlPrompts: values.rl_prompts,
    heldoutFraction: values.heldout,
    seed: values.seed,
    sourceDir: values.source_dir,
    force: values.force,
    log: (m) => console.error(m),
  });
  const m = files.manifest;
  console.log(`corpus ${m.version} in ${files.dir}${files.cached ? " (cached)" : ""}`);
  console.log(`poems: ${m.poems.read} read, ${m.poems.kept} kept, ${m.poems.heldout} held out`);
  for (const [name, f] of Object.entries(m.files)) {
    console.log(
      `  ${name.padEnd(24)} ${String(f.records).padStart(7)} records ${
        (f.bytes / 1e6).toFixed(2).padStart(7)
      } MB`,
    );
  }
  console.log(`built in ${m.seconds}s`);
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
