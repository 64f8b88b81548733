/**
 * Serving throughput through the real app (`createApp`, streaming SSE via `app.request`, no
 * sockets): single-stream decode tokens/s, and aggregate tokens/s of 8 concurrent streams against
 * the same 8 requests one after another — the continuous-batching win. With `--torch` it runs
 * `bench/torch_decode.py` (Debian `/usr/bin/python3` + `python3-torch`) on the same architecture
 * and prints PyTorch's decode tokens/s beside ours.
 *
 * ```sh
 * deno run -A bench/serve_bench.ts --model demo --torch    # the demo's model, 2.8M
 * deno run -A bench/serve_bench.ts --model small --tokens 64 --torch   # MiniMind2-Small, 25.8M
 * deno run -A bench/serve_bench.ts --model small --dtype bfloat16 --torch   # both sides in bf16
 * ```
 * Prints one JSON line per model and a table. Weights are random: speed does not depend on them.
 * @module
 */
import { DEMO_MODEL } from "../demo.ts";
import { fileURLToPath } from "node:url";
import { init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { key, randint } from "../nn/random.ts";
import { type DecodeState, decodeStep } from "../nn/model/generate.ts";
import { disposeCache } from "../nn/model/layers/kv_cache.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { initGemm } from "../nn/backend/cpu/gemm/mod.ts";
import { setFastSgemm } from "../nn/backend/cpu/gemm_adapter.ts";
import { applyDtype, decodeDtypeFlag } from "../train/lm.ts";
import { environmentAsStarted } from "../nn/backend/cpu/gemm/bf16.ts";
import { createApp, type ServeApp } from "../serve/mod.ts";
import { parseFlags, runMain, usage, UsageError } from "../cli.ts";
import type { FlagTable } from "../cli.ts";

/** Model sizes by name (heads and KV heads as the preset unless given). */
const MODELS: Record<
  string,
  { hiddenSize: number; numHiddenLayers: number; numAttentionHeads?: number }
> = {
  tiny: { hiddenSize: 64, numHiddenLayers: 2, numAttentionHeads: 4 },
  demo: DEMO_MODEL, // `deno task demo`'s model
  small: { hiddenSize: 512, numHiddenLayers: 8 }, // MiniMind2-Small
};

/** The benchmark's flags. */
const FLAGS = {
  model: {
    type: "string",
    default: "demo,small",
    help: `comma-separated: ${Object.keys(MODELS).join(", ")} (or custom with --hidden_size)`,
  },
  hidden_size: { type: "int", default: 0, min: 0, help: "a custom model's hidden size" },
  num_hidden_layers: { type: "int", default: 8, min: 1, help: "a custom model's layers" },
  tokens: { type: "int", default: 64, min: 2, help: "new tokens per request" },
  streams: { type: "int", default: 8, min: 1, help: "concurrent streams" },
  tokenizer: {
    type: "string",
    default: fileURLToPath(new URL("../tokenizers/minimind-3", import.meta.url)),
    help: "tokenizer folder",
  },
  torch: { type: "switch", default: false, help: "also run bench/torch_decode.py" },
  gemm_threads: { type: "int", default: 0, min: 0, help: "gemm threads (0 = auto)" },
  repeat: { type: "int", default: 3, min: 1, help: "runs per figure (the best is kept)" },
  dtype: decodeDtypeFlag("; the PyTorch side (--torch) casts its model to bf16 (`model.to`)"),
} satisfies FlagTable;

const COMMAND = "deno run -A bench/serve_bench.ts";

interface StreamTiming {
  tokens: number;
  start: number;
  first: number;
  end: number;
}

/** One streaming request; times its first and last token. */
async function stream(app: ServeApp, seed: number, tokens: number): Promise<StreamTiming> {
  const start = performance.now();
  const res = await app.request("/v1/chat/completions", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({
      messages: [{ role: "user", content: "你好" }],
      max_tokens: tokens,
      seed,
      ignore_eos: true,
      stream: true,
      stream_options: { include_usage: true },
    }),
  });
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let first = 0, end = 0, n = 0, buf = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    buf += dec.decode(value, { stream: true });
    let i;
    while ((i = buf.indexOf("\n\n")) >= 0) {
      const data = buf.slice(6, i);
      buf = buf.slice(i + 2);
      if (data === "[DONE]") continue;
      const c = JSON.parse(data);
      if (c.usage) n = c.usage.completion_tokens;
      const ch = c.choices[0];
      if (ch?.delta?.content && !first) first = performance.now();
      if (ch?.finish_reason) end = performance.now();
    }
  }
  return { tokens: n, start, first, end };
}

/** PyTorch's best decode tokens/s per batch size, and the configuration each came from. */
interface TorchDecode {
  /** Tokens/s by batch size. */
  tokensPerS: Record<number, number>;
  /** The configuration used (BLAS build and threads) by batch size. */
  config: Record<number, string>;
}

function torchDecode(cfg: MiniMindConfig, N: number, dtype: string): TorchDecode | null {
  try {
    const out = new Deno.Command("/usr/bin/python3", {
      args: [
        new URL("./torch_decode.py", import.meta.url).pathname,
        "--sweep",
        "--hidden_size",
        String(cfg.hiddenSize),
        "--num_hidden_layers",
        String(cfg.numHiddenLayers),
        "--heads",
        String(cfg.numAttentionHeads),
        "--kv_heads",
        String(cfg.numKeyValueHeads),
        "--tokens",
        String(N),
        "--dtype",
        dtype,
      ],
      stderr: "inherit",
      // PyTorch at its own defaults: not the OpenMP settings made here for oneDNN
      env: environmentAsStarted(),
      clearEnv: true,
    }).outputSync();
    if (!out.success) return null;
    const r: TorchDecode = { tokensPerS: {}, config: {} };
    for (const line of new TextDecoder().decode(out.stdout).trim().split("\n")) {
      const j = JSON.parse(line);
      r.tokensPerS[j.batch] = j.decode_tokens_per_s;
      r.config[j.batch] = `${j.config} (${j.blas})`;
    }
    return r;
  } catch {
    return null;
  }
}

function countM(cfg: MiniMindConfig): number {
  const h = cfg.hiddenSize, i = cfg.intermediateSize, hd = cfg.headDim;
  const layer = h * hd * (cfg.numAttentionHeads * 2 + cfg.numKeyValueHeads * 2) + 3 * h * i + 2 * h;
  return (cfg.vocabSize * h + cfg.numHiddenLayers * layer + h) / 1e6;
}

/**
 * Runs the benchmark.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
async function main(argv: readonly string[]): Promise<number> {
  const { values: v, given, help } = parseFlags(argv, FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "Decode tokens/s through the server app.", FLAGS));
    return 0;
  }
  const names = given.has("model") || !v.hidden_size ? v.model.split(",") : ["custom"];
  for (const name of names) {
    if (name !== "custom" && !MODELS[name]) {
      throw new UsageError(
        `Unknown --model ${name}: expected ${Object.keys(MODELS).join(", ")} or custom`,
      );
    }
    if (name === "custom" && !v.hidden_size) {
      throw new UsageError("--model custom needs --hidden_size");
    }
  }
  const N = v.tokens, S = v.streams;
  const gemm = await initGemm(v.gemm_threads ? { threads: v.gemm_threads } : {});
  setFastSgemm(gemm);
  const precision = applyDtype(v.dtype, "cpu");
  console.log(precision);
  const tok = await Tokenizer.fromFile(v.tokenizer);

  const rows: Record<string, unknown>[] = [];
  for (const name of names) {
    const size = name === "custom"
      ? { hiddenSize: v.hidden_size, numHiddenLayers: v.num_hidden_layers }
      : MODELS[name];
    const cfg = config("minimind2-small", size);
    const app = createApp({
      model: { cfg, params: init(cfg, key(0)) },
      tokenizer: tok,
      scheduler: { maxBatch: S },
      // every stream pays its prefill, as in PyTorch's loop (the same prompts would be reused)
      prefixCacheBytes: 0,
    });
    await stream(app, 0, 8); // warm-up (JIT, RoPE tables)

    // best of R runs each: the machine may be shared, and the best run is the least disturbed
    const R = v.repeat;
    let single = 0, sequential = 0, concurrent = 0;
    for (let r = 0; r < R; r++) {
      // single stream: decode rate from the first token to the last
      const one = await stream(app, 1, N);
      single = Math.max(single, (one.tokens - 1) / ((one.end - one.first) / 1000));
      // S streams one after another, then the same S at once
      let t0 = performance.now(), total = 0;
      for (let s = 0; s < S; s++) total += (await stream(app, 10 + s, N)).tokens;
      sequential = Math.max(sequential, total / ((performance.now() - t0) / 1000));
      t0 = performance.now();
      const all = await Promise.all(Array.from({ length: S }, (_, s) => stream(app, 10 + s, N)));
      const wall = (performance.now() - t0) / 1000;
      concurrent = Math.max(concurrent, all.reduce((a, x) => a + x.tokens, 0) / wall);
    }
    const stats = app.stats();
    await app.close();

    const torch = v.torch ? torchDecode(cfg, N, v.dtype) : null;
    const row = {
      model: name,
      hidden_size: cfg.hiddenSize,
      num_hidden_layers: cfg.numHiddenLayers,
      params_m: +(countM(cfg)).toFixed(2),
      gemm: gemm.kind,
      precision,
      tokens: N,
      streams: S,
      single_stream_tokens_per_s: +single.toFixed(1),
      sequential_aggregate_tokens_per_s: +sequential.toFixed(1),
      concurrent_aggregate_tokens_per_s: +concurrent.toFixed(1),
      largest_batch: stats.maxBatchSeen,
      ...(torch
        ? {
          torch_single_tokens_per_s: torch.tokensPerS[1],
          torch_batch8_tokens_per_s: torch.tokensPerS[8],
          torch_config: torch.config,
        }
        : {}),
    };
    rows.push(row);
    console.log(JSON.stringify(row));
  }

  console.log(
    "\n| model | params | single stream tok/s | " + S + " sequential tok/s | " + S +
      " concurrent tok/s | PyTorch single | PyTorch batch 8 |\n|---|---|---|---|---|---|---|",
  );
  for (const r of rows) {
    console.log(
      `| ${r.model} (${r.hidden_size}×${r.num_hidden_layers}) | ${r.params_m}M | ${r.single_stream_tokens_per_s} | ${r.sequential_aggregate_tokens_per_s} | ${r.concurrent_aggregate_tokens_per_s} | ${
        r.torch_single_tokens_per_s ?? "–"
      } | ${r.torch_batch8_tokens_per_s ?? "–"} |`,
    );
  }
  gemm.dispose();
  return 0;
}

// `deno bench`: one decode step (a token for every row, after a 32-token prefill) of the demo's
// model at batch 1 and 8, without the app around it; the cache is trimmed back every 64 steps
if (!import.meta.main) {
  const cfg = config("minimind2-small", MODELS.demo);
  const model = { cfg, params: init(cfg, key(0)) };
  for (const batch of [1, 8]) {
    const prompt = randint(key(batch), [batch, 32], 3, cfg.vocabSize);
    const next = randint(key(batch + 1), [batch, 1], 3, cfg.vocabSize);
    const state: DecodeState = { cache: null };
    let steps = 0;
    Deno.bench({ name: `decode step, demo model, batch ${batch}`, group: "decode" }, () => {
      if (steps++ % 64 === 0) {
        disposeCache(state.cache);
        state.cache = null;
        decodeStep(model, state, prompt).dispose();
      }
      decodeStep(model, state, next).dispose();
    });
    globalThis.addEventListener("unload", () => (disposeCache(state.cache), prompt.dispose()));
  }
}

// `deno bench` imports every *_bench.ts: run only as a script
if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
