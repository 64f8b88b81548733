/**
 * Long-context decode: tokens/s of `decodeStep` (the server's and `generate`'s step) from a 64-token
 * prompt to `--to` tokens, for one stream and for a batch of streams, with the CPU backend's
 * in-place KV cache appends on and off (`CpuBackend.extendInPlace`). Both
 * settings alternate within each repeat, and the logits of each pair of runs are compared: they
 * must be the same bits. Weights are random: speed does not depend on them.
 *
 * ```sh
 * deno run -A bench/long_decode_bench.ts                       # MiniMind2-Small, 1 stream to 2048
 * deno run -A bench/long_decode_bench.ts --streams 1,8 --to 512
 * ```
 * @module
 */
import { init } from "../nn/model/minimind.ts";
import { config, type ConfigOverrides } from "../nn/model/minimind_config.ts";
import { DEMO_MODEL } from "../demo.ts";
import { key } from "../nn/random.ts";
import { tensor } from "../nn/creation.ts";
import { decodeStep, type GenerateModel } from "../nn/model/generate.ts";
import { disposeCache, type KvCache } from "../nn/model/layers/kv_cache.ts";
import { cpuBackend } from "../nn/backend/cpu/mod.ts";
import { parseFlags, runMain, usage } from "../cli.ts";
import type { FlagTable } from "../cli.ts";

const FLAGS = {
  streams: { type: "string", default: "1", help: "comma-separated batch sizes" },
  to: { type: "int", default: 2048, min: 65, help: "context length reached (prompt: 64 tokens)" },
  hidden_size: { type: "int", default: 512, min: 8, help: "model width (MiniMind2-Small: 512)" },
  num_hidden_layers: { type: "int", default: 8, min: 1, help: "blocks (MiniMind2-Small: 8)" },
  repeat: { type: "int", default: 2, min: 1, help: "runs per setting (the best is kept)" },
} satisfies FlagTable;

const COMMAND = "deno run -A bench/long_decode_bench.ts";
const PROMPT = 64;

/** Random weights of MiniMind2-Small's architecture with `size`'s overrides. */
function makeModel(size: ConfigOverrides): GenerateModel {
  const cfg = config("minimind2-small", size);
  return { cfg, params: init(cfg, key(0)) };
}

/**
 * Decodes `streams` rows from a 64-token prompt to `to` tokens with appends in place or not;
 * returns new tokens/s and the sum of every step's first logit (the runs' fingerprint).
 */
function run(model: GenerateModel, streams: number, to: number, inPlace: boolean) {
  cpuBackend.extendInPlace = inPlace;
  const vocab = model.cfg.vocabSize;
  const state: { cache: KvCache | null } = { cache: null };
  let fingerprint = 0;
  try {
    const prompt = Int32Array.from({ length: streams * PROMPT }, (_, i) => (i * 31) % vocab);
    decodeStep(model, state, tensor(prompt, [streams, PROMPT], "i32")).dispose();
    const t = performance.now();
    for (let s = PROMPT; s < to; s++) {
      const ids = Int32Array.from({ length: streams }, (_, r) => (s * 7 + r) % vocab);
      const logits = decodeStep(model, state, tensor(ids, [streams, 1], "i32"));
      fingerprint += logits.dataSync()[0];
      logits.dispose();
    }
    return { tokensPerS: streams * (to - PROMPT) / ((performance.now() - t) / 1000), fingerprint };
  } finally {
    disposeCache(state.cache);
    cpuBackend.extendInPlace = true;
  }
}

function main(argv: readonly string[]): number {
  const { values: a, help } = parseFlags(argv, FLAGS, COMMAND);
  if (help) {
    console.log(
      usage(COMMAND, "Long-context decode tokens/s, KV appends in place or copied.", FLAGS),
    );
    return 0;
  }
  const model = makeModel({ hiddenSize: a.hidden_size, numHiddenLayers: a.num_hidden_layers });
  console.log(
    `model hidden ${a.hidden_size}, ${a.num_hidden_layers} layers; ${PROMPT}-token prompt to ` +
      `${a.to} tokens; best of ${a.repeat} (shared machine: figures vary with load)`,
  );
  console.log("streams | appends in place tok/s | cache copied tok/s | ratio");
  for (const streams of a.streams.split(",").map(Number)) {
    let inPlace = 0, copied = 0;
    for (let rep = 0; rep < a.repeat; rep++) {
      const order = rep % 2 ? [false, true] : [true, false];
      const [x, y] = order.map((on) => run(model, streams, a.to, on));
      if (x.fingerprint !== y.fingerprint) {
        throw new Error(
          `in-place and copied caches gave other logits at ${streams} streams: ` +
            `${x.fingerprint} vs ${y.fingerprint}`,
        );
      }
      const [on, off] = rep % 2 ? [y, x] : [x, y];
      inPlace = Math.max(inPlace, on.tokensPerS);
      copied = Math.max(copied, off.tokensPerS);
    }
    console.log(
      `${String(streams).padStart(7)} | ${inPlace.toFixed(1).padStart(22)} | ${
        copied.toFixed(1).padStart(18)
      } | ${(inPlace / copied).toFixed(2)}`,
    );
    console.log(
      JSON.stringify({ streams, to: a.to, inPlaceTokensPerS: inPlace, copiedTokensPerS: copied }),
    );
  }
  return 0;
}

// `deno bench bench/long_decode_bench.ts`: the demo's model, one stream to 512 tokens. A
// first case runs both ways once: whichever way ran first was otherwise ~10% slower (the heap and
// the backend's free lists settle on the first run), which flipped the comparison with the order
const benchModel = import.meta.main ? null : makeModel(DEMO_MODEL);
Deno.bench({
  name: "warm-up: both ways once (not a measurement)",
  ignore: import.meta.main,
  n: 1,
  warmup: 0,
  fn() {
    for (const inPlace of [true, false]) run(benchModel!, 1, 512, inPlace);
  },
});
for (const inPlace of [true, false]) {
  Deno.bench({
    name: `demo model, 1 stream from 64 to 512 tokens, appends ${inPlace ? "in place" : "copied"}`,
    group: "long decode",
    baseline: !inPlace,
    ignore: import.meta.main,
    n: 4,
    warmup: 1,
    fn() {
      run(benchModel!, 1, 512, inPlace);
    },
  });
}

if (import.meta.main) Deno.exit(await runMain(() => Promise.resolve(main(Deno.args)), COMMAND));
