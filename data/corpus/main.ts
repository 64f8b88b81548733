// `deno task corpus`: build (or reuse) the embedded poetry corpus and print where it is.
//
//   deno task corpus [--dir .cache/corpus] [--pretrain_bytes 4000000] [--sft_samples 30000]
//                    [--dpo_pairs 5000] [--rl_prompts 2000] [--heldout 0.02] [--seed 42] [--force]

import { parseArgs } from "node:util";
import { buildCorpus } from "./build.ts";

function num(v: string | undefined, name: string): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isFinite(n) || n < 0) throw new Error(`Invalid --${name} ${JSON.stringify(v)}`);
  return n;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      dir: { type: "string" },
      pretrain_bytes: { type: "string" },
      sft_samples: { type: "string" },
      dpo_pairs: { type: "string" },
      rl_prompts: { type: "string" },
      heldout: { type: "string" },
      seed: { type: "string" },
      source_dir: { type: "string" },
      force: { type: "boolean" },
    },
  });
  const files = await buildCorpus({
    dir: values.dir,
    pretrainBytes: num(values.pretrain_bytes, "pretrain_bytes"),
    sftSamples: num(values.sft_samples, "sft_samples"),
    dpoPairs: num(values.dpo_pairs, "dpo_pairs"),
    rlPrompts: num(values.rl_prompts, "rl_prompts"),
    heldoutFraction: num(values.heldout, "heldout"),
    seed: num(values.seed, "seed"),
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
}
