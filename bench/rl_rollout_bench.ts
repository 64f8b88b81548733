/**
 * RL rollout throughput against the server's batched decode on the same model: generated tokens/s
 * of `rollout()` (rl/rollout.ts: one left-padded prefill, then one decode step for every row,
 * log-probs read back with the tokens) and of the server's continuous-batching `Scheduler` over
 * `MiniMindEngine` (each prompt prefilled alone, then one decode step for every running request),
 * for the same N prompts and new tokens. Both turn tokens into text as they come (the rollout for
 * its rewards, the server for its replies), and neither stops early (no stop token), so both
 * generate exactly N × tokens. Weights are random: speed does not depend on them. Besides wall-clock
 * tokens/s it reports tokens per CPU-second of the process (all its threads), which a machine
 * shared with other jobs disturbs much less.
 *
 * ```sh
 * deno run -A bench/rl_rollout_bench.ts                      # demo model, N = 8,32, 64 tokens
 * deno run -A bench/rl_rollout_bench.ts --rows 48 --tokens 96
 * ```
 * @module
 */
import process from "node:process";
import { init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import { key, uniformArray } from "../nn/random.ts";
import { MiniMindEngine } from "../serve/engine.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { Scheduler } from "../serve/scheduler.ts";
import { rollout } from "../rl/rollout.ts";
import { parseFlags, runMain, usage } from "../cli.ts";
import type { FlagTable } from "../cli.ts";

const FLAGS = {
  rows: { type: "string", default: "8,32", help: "comma-separated row counts N" },
  tokens: { type: "int", default: 64, min: 1, help: "new tokens per row" },
  prompt: { type: "int", default: 24, min: 1, help: "prompt tokens per row" },
  tokenizer: {
    type: "string",
    default: new URL("../tokenizers/minimind2", import.meta.url).pathname,
    help: "tokenizer folder (vocab 6400)",
  },
  hidden_size: { type: "int", default: 192, min: 8, help: "model width (demo: 192)" },
  num_hidden_layers: { type: "int", default: 4, min: 1, help: "blocks (demo: 4)" },
  repeat: {
    type: "int",
    default: 4,
    min: 1,
    help: "runs per figure (the best is kept; each side first in half)",
  },
} satisfies FlagTable;

const COMMAND = "deno run -A bench/rl_rollout_bench.ts";

async function main(argv: readonly string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "RL rollout tokens/s against the server's batched decode.", FLAGS));
    return 0;
  }
  const cfg = config("minimind2-small", {
    hiddenSize: a.hidden_size,
    numHiddenLayers: a.num_hidden_layers,
    numAttentionHeads: a.hidden_size === 192 ? 6 : undefined,
    numKeyValueHeads: 2,
    vocabSize: (await Tokenizer.fromFile(a.tokenizer)).vocabSize,
  });
  const tokenizer = await Tokenizer.fromFile(a.tokenizer);
  const model = { cfg, params: init(cfg, key(0)), tokenizer };
  const sampling = { temperature: 0.8, topP: 0.85, topK: 50, repetitionPenalty: 1 };
  const rows = a.rows.split(",").map(Number);
  console.log(
    `model hidden ${cfg.hiddenSize}, ${cfg.numHiddenLayers} layers; ${a.prompt}-token prompts, ` +
      `${a.tokens} new tokens; best of ${a.repeat} (shared machine: figures vary with load)`,
  );
  console.log(
    "rows | rollout tok/s | server tok/s | ratio | rollout tok/CPU-s | server tok/CPU-s | ratio",
  );
  const cpu = () => {
    const u = process.cpuUsage();
    return (u.user + u.system) / 1e6;
  };
  for (const n of rows) {
    const prompts = Array.from(
      { length: n },
      (_, i) => Array.from(uniformArray(key(100 + i), a.prompt), (u) => 3 + Math.floor(u * 6000)),
    );
    let bestRollout = 0, bestServer = 0, cpuRollout = 0, cpuServer = 0;
    for (let rep = 0; rep < a.repeat; rep++) {
      const runRollout = async () => {
        const t = performance.now(), c = cpu();
        const r = await rollout(model, prompts, {
          maxNewTokens: a.tokens,
          seed: rep,
          eos: -1,
          ...sampling,
        });
        const generated = r.lengths.reduce((x, y) => x + y, 0);
        bestRollout = Math.max(bestRollout, generated / ((performance.now() - t) / 1000));
        cpuRollout = Math.max(cpuRollout, generated / (cpu() - c));
      };
      const runServer = async () => {
        // the server's scheduler over its engine, all N requests submitted at once
        const engine = new MiniMindEngine(model);
        const sched = new Scheduler(engine, { maxBatch: n, maxQueue: n });
        const t = performance.now(), c = cpu();
        const jobs = prompts.map((p, i) =>
          sched.submit({
            promptIds: p,
            maxTokens: a.tokens,
            sampling,
            seed: rep * 1000 + i,
            stopIds: new Set(),
          })
        );
        let served = 0;
        await Promise.all(jobs.map(async (j) => {
          const text = tokenizer.decodeStream({ skipSpecialTokens: true });
          let reply = "";
          for await (const id of j.tokens()) served++, reply += text.push(id);
          reply += text.flush();
        }));
        bestServer = Math.max(bestServer, served / ((performance.now() - t) / 1000));
        cpuServer = Math.max(cpuServer, served / (cpu() - c));
        engine.dispose();
      };
      // alternate which side runs first: the first run after the other one is measurably slower
      // (garbage from the run before), which at 8 rows is the whole difference
      for (const f of rep % 2 ? [runServer, runRollout] : [runRollout, runServer]) await f();
    }
    const col = (x: number, w: number) => x.toFixed(0).padStart(w);
    console.log(
      `${String(n).padStart(4)} | ${col(bestRollout, 13)} | ${col(bestServer, 12)} | ${
        (bestRollout / bestServer).toFixed(2).padStart(5)
      } | ${col(cpuRollout, 17)} | ${col(cpuServer, 16)} | ${(cpuRollout / cpuServer).toFixed(2)}`,
    );
    console.log(JSON.stringify({
      rows: n,
      rolloutTokensPerS: bestRollout,
      serverTokensPerS: bestServer,
      rolloutTokensPerCpuS: cpuRollout,
      serverTokensPerCpuS: cpuServer,
    }));
  }
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
