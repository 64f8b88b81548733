/**
 * `deno task bench:train` — throughput of one full train step (forward, backward, global-norm
 * clipping, AdamW) on random token ids; prints one JSON line:
 * `{"tokens_per_s", "ms_per_step", "peak_rss_mb", …}`. With `--torch 1` it also runs
 * `bench/torch_train.py` (our PyTorch transcription of the same architecture, Debian
 * `/usr/bin/python3` + `python3-torch`, best of its thread settings) right after, on the same
 * machine, and adds `torch_tokens_per_s` / `torch_ms_per_step` to the line.
 *
 *   deno task bench:train --preset minimind2-small --batch_size 4 --max_seq_len 256 --steps 5
 *   deno task bench:train --hidden_size 256 --num_hidden_layers 4 --batch_size 16 --max_seq_len 128 --torch 1
 * @module
 */
import { defaultBackend } from "../nn/backend/select.ts";
import { countParams, init } from "../nn/model/minimind.ts";
import { config, PRESETS } from "../nn/model/minimind_config.ts";
import type { ConfigOverrides, PresetName } from "../nn/model/minimind_config.ts";
import { key, randint } from "../nn/random.ts";
import { scope } from "../nn/scope.ts";
import type { Tree } from "../nn/tree.ts";
import type { Tensor } from "../nn/tensor.ts";
import { parseFlags, runMain, usage } from "../train/cli.ts";
import type { FlagTable } from "../train/cli.ts";
import { lmLoss, selectDevice } from "../train/lm.ts";
import { adamw } from "../train/optim.ts";
import { disposeState, makeTrainStep } from "../train/step.ts";

/** The benchmark's flags. */
export const BENCH_FLAGS = {
  preset: {
    type: "choice",
    default: "minimind2-small",
    choices: Object.keys(PRESETS),
    help: "architecture",
  },
  hidden_size: { type: "int", default: 0, min: 0, help: "override (0 = preset)" },
  num_hidden_layers: { type: "int", default: 0, min: 0, help: "override (0 = preset)" },
  num_attention_heads: { type: "int", default: 0, min: 0, help: "override (0 = preset)" },
  num_key_value_heads: { type: "int", default: 0, min: 0, help: "override (0 = preset)" },
  batch_size: { type: "int", default: 4, min: 1, help: "sequences per step" },
  max_seq_len: { type: "int", default: 256, min: 2, help: "tokens per sequence" },
  steps: { type: "int", default: 5, min: 1, help: "timed steps" },
  warmup: { type: "int", default: 1, min: 0, help: "untimed steps first" },
  device: {
    type: "choice",
    default: "auto",
    choices: ["auto", "cpu", "webgpu"],
    help: "auto = a real GPU if present, else CPU",
  },
  torch: { type: "bool01", default: false, help: "also run bench/torch_train.py (same machine)" },
} satisfies FlagTable;

const COMMAND = "deno task bench:train";

/**
 * Runs the benchmark.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, BENCH_FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "Tokens/s of a full train step.", BENCH_FLAGS));
    return 0;
  }
  const device = await selectDevice(a.device);
  const o: ConfigOverrides = {};
  if (a.hidden_size) o.hiddenSize = a.hidden_size;
  if (a.num_hidden_layers) o.numHiddenLayers = a.num_hidden_layers;
  if (a.num_attention_heads) o.numAttentionHeads = a.num_attention_heads;
  if (a.num_key_value_heads) o.numKeyValueHeads = a.num_key_value_heads;
  const cfg = config(a.preset as PresetName, o);
  const B = a.batch_size, T = a.max_seq_len;
  const step = makeTrainStep<{ ids: Tensor; labels: Tensor }, Tensor>(
    lmLoss(cfg),
    adamw({ lr: 5e-4 }),
    {
      hasAux: true,
      gradClip: 1,
    },
  );
  let state = step.init(init(cfg, key(0)) as unknown as Tree);
  const ids = randint(key(1), [B, T], 3, cfg.vocabSize);
  const batch = { ids, labels: ids };
  let peak = Deno.memoryUsage().rss;
  const times: number[] = [];
  let prev: Tensor | null = null;
  for (let s = 0; s < a.warmup + a.steps; s++) {
    const t0 = performance.now();
    const [next, out] = scope(() => step(state, batch));
    state = next;
    // read the previous step's loss while this one runs (WebGPU); on CPU it is already done
    if (prev) {
      await prev.item(); // sync point
      prev.dispose();
    }
    prev = out.loss;
    out.aux?.dispose();
    out.gradNorm?.dispose();
    if (s === a.warmup + a.steps - 1) {
      await prev.item(); // the last step: wait for it
      prev.dispose();
      prev = null;
    } else await defaultBackend().sync();
    if (s >= a.warmup) times.push(performance.now() - t0);
    peak = Math.max(peak, Deno.memoryUsage().rss);
  }
  disposeState(state);
  ids.dispose();
  const ms = times.reduce((x, y) => x + y, 0) / times.length;
  const result: Record<string, unknown> = {
    impl: "minimind.ts",
    device,
    preset: a.preset,
    hidden_size: cfg.hiddenSize,
    num_hidden_layers: cfg.numHiddenLayers,
    params: countParams(cfg).total,
    batch_size: B,
    max_seq_len: T,
    steps: a.steps,
    tokens_per_s: Math.round((B * T) / (ms / 1000) * 10) / 10,
    ms_per_step: Math.round(ms * 10) / 10,
    peak_rss_mb: Math.round(peak / 2 ** 20 * 10) / 10,
  };
  if (a.torch) {
    const py = new URL("./torch_train.py", import.meta.url).pathname;
    const out = await new Deno.Command("/usr/bin/python3", {
      args: [
        py,
        "--sweep",
        ...[
          "--hidden_size",
          String(cfg.hiddenSize),
          "--num_hidden_layers",
          String(cfg.numHiddenLayers),
        ],
        ...["--num_attention_heads", String(cfg.numAttentionHeads)],
        ...["--num_key_value_heads", String(cfg.numKeyValueHeads)],
        ...[
          "--intermediate_size",
          String(cfg.intermediateSize),
          "--vocab_size",
          String(cfg.vocabSize),
        ],
        ...["--batch_size", String(B), "--max_seq_len", String(T)],
        ...["--steps", String(a.steps), "--warmup", String(a.warmup)],
      ],
      stderr: "piped",
    }).output().catch((e) => {
      throw new Error(`Cannot run /usr/bin/python3 ${py}: ${(e as Error).message}`);
    });
    if (out.code !== 0) {
      throw new Error(
        `bench/torch_train.py failed (exit ${out.code}): ${
          new TextDecoder().decode(out.stderr).trim().split("\n").pop()
        }`,
      );
    }
    const t = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    result.torch_tokens_per_s = t.tokens_per_s;
    result.torch_ms_per_step = t.ms_per_step;
    result.torch_peak_rss_mb = t.peak_rss_mb;
    result.torch_threads = `torch ${t.threads}, openblas ${t.blas_threads}`;
    result.torch_version = t.torch;
    result.speed_vs_torch = Math.round((result.tokens_per_s as number) / t.tokens_per_s * 100) /
      100;
  }
  console.log(JSON.stringify(result));
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
