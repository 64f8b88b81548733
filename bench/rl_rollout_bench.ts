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

/** The benchmark's model: random weights of the given size, the tokenizer's vocabulary. */
type Model = Parameters<typeof rollout>[0] & { tokenizer: Tokenizer };

/** Sampling as a GRPO rollout and a chat request would use it. */
const SAMPLING = { temperature: 0.8, topP: 0.85, topK: 50, repetitionPenalty: 1 };

/** A random-weight model of `hidden` × `layers` (6 heads at 192, 2 KV heads) over `tokenizerDir`. */
async function makeModel(tokenizerDir: string, hidden: number, layers: number): Promise<Model> {
  const tokenizer = await Tokenizer.fromFile(tokenizerDir);
  const cfg = config("minimind2-small", {
    hiddenSize: hidden,
    numHiddenLayers: layers,
    numAttentionHeads: hidden === 192 ? 6 : undefined,
    numKeyValueHeads: 2,
    vocabSize: tokenizer.vocabSize,
  });
  return { cfg, params: init(cfg, key(0)), tokenizer };
}

/** `n` prompts of `len` random token ids (fixed by the row index). */
function makePrompts(n: number, len: number): number[][] {
  return Array.from(
    { length: n },
    (_, i) => Array.from(uniformArray(key(100 + i), len), (u) => 3 + Math.floor(u * 6000)),
  );
}

/** One `rollout()` of every prompt for `tokens` new tokens (no stop token); tokens generated. */
async function runRollout(
  model: Model,
  prompts: number[][],
  tokens: number,
  seed: number,
): Promise<number> {
  const r = await rollout(model, prompts, { maxNewTokens: tokens, seed, eos: -1, ...SAMPLING });
  return r.lengths.reduce((x, y) => x + y, 0);
}

/**
 * The server's scheduler over its engine, every prompt submitted at once, each reply turned into
 * text as it streams; tokens served.
 */
async function runServer(
  model: Model,
  prompts: number[][],
  tokens: number,
  seed: number,
): Promise<number> {
  const engine = new MiniMindEngine(model);
  const n = prompts.length;
  const sched = new Scheduler(engine, { maxBatch: n, maxQueue: n });
  const jobs = prompts.map((p, i) =>
    sched.submit({
      promptIds: p,
      maxTokens: tokens,
      sampling: SAMPLING,
      seed: seed * 1000 + i,
      stopIds: new Set(),
    })
  );
  let served = 0;
  await Promise.all(jobs.map(async (j) => {
    const text = model.tokenizer.decodeStream({ skipSpecialTokens: true });
    let reply = "";
    for await (const id of j.tokens()) served++, reply += text.push(id);
    reply += text.flush();
  }));
  engine.dispose();
  return served;
}

async function main(argv: readonly string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "RL rollout tokens/s against the server's batched decode.", FLAGS));
    return 0;
  }
  const model = await makeModel(a.tokenizer, a.hidden_size, a.num_hidden_layers);
  const { cfg } = model;
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
    const prompts = makePrompts(n, a.prompt);
    let bestRollout = 0, bestServer = 0, cpuRollout = 0, cpuServer = 0;
    for (let rep = 0; rep < a.repeat; rep++) {
      const rolloutSide = async () => {
        const t = performance.now(), c = cpu();
        const generated = await runRollout(model, prompts, a.tokens, rep);
        bestRollout = Math.max(bestRollout, generated / ((performance.now() - t) / 1000));
        cpuRollout = Math.max(cpuRollout, generated / (cpu() - c));
      };
      const serverSide = async () => {
        const t = performance.now(), c = cpu();
        const served = await runServer(model, prompts, a.tokens, rep);
        bestServer = Math.max(bestServer, served / ((performance.now() - t) / 1000));
        cpuServer = Math.max(cpuServer, served / (cpu() - c));
      };
      // alternate which side runs first: the first run after the other one is measurably slower
      // (garbage from the run before), which at 8 rows is the whole difference
      for (const f of rep % 2 ? [serverSide, rolloutSide] : [rolloutSide, serverSide]) await f();
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

// `deno bench bench/rl_rollout_bench.ts`: the same two sides on the demo model, 8 rows × 16 tokens
const benchSetup = import.meta.main ? null : (async () => {
  const model = await makeModel(FLAGS.tokenizer.default, 192, 4);
  return { model, prompts: makePrompts(8, 24) };
})();
for (const [name, run] of [["rollout", runRollout], ["server", runServer]] as const) {
  Deno.bench({
    name: `${name}: demo model, 8 rows × 16 new tokens`,
    group: "rollout vs server",
    baseline: name === "server",
    ignore: import.meta.main,
    async fn() {
      const { model, prompts } = await benchSetup!;
      await run(model, prompts, 16, 0);
    },
  });
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
