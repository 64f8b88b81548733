/**
 * `deno task bench:train` — throughput of one full train step (forward, backward, global-norm
 * clipping, AdamW) on random token ids; prints one JSON line:
 * `{"tokens_per_s", "ms_per_step", "peak_rss_mb", …}`. Under `mpirun -np N` it trains data parallel
 * (`--batch_size` rows per rank, one all-reduce per step), rank 0 prints the line with the
 * tokens/s of all ranks together and `allreduce_ms_per_step`. With `--torch 1` it also runs
 * `bench/torch_train.py` (our PyTorch transcription of the same architecture, Debian
 * `/usr/bin/python3` + `python3-torch`, at its best: the OpenMP OpenBLAS, 1 and N threads) right
 * after, on the same machine, and adds `torch_tokens_per_s` / `torch_ms_per_step` and the
 * configuration that won (`torch_config`) to the line. `cpu_ms_per_step` is the process's CPU time
 * per step (all threads), steadier than wall time on a loaded machine. `--profile 1` prints where
 * a CPU step's time goes, per op (stderr).
 *
 *   deno task bench:train --preset minimind2-small --batch_size 4 --max_seq_len 256 --steps 5
 *   OPENBLAS_NUM_THREADS=1 mpirun -np 2 deno task bench:train --batch_size 2 --max_seq_len 256
 *   deno task bench:train --hidden_size 256 --num_hidden_layers 4 --batch_size 16 --max_seq_len 128 --torch 1
 *   deno task bench:train --mode lora     # a LoRA step (adapters only) vs the full SFT step
 *
 * `--mode lora` times the full step and then the LoRA step of the same model and batch (rank
 * `--lora_rank`, MiniMind's square-Linear targets; the base closed over, AdamW over the adapters
 * only) and adds `lora_ms_per_step`, `lora_vs_full_step_cost` and both optimizer states' bytes.
 * @module
 */
import { DEMO_MODEL } from "../demo.ts";
import { cpuUsage } from "node:process";
import { defaultBackend } from "../nn/backend/select.ts";
import { type CpuBackend, cpuBackend, type OpProfileRow } from "../nn/backend/cpu/mod.ts";
import { environmentAsStarted } from "../nn/backend/cpu/gemm/bf16.ts";
import { countParams, init } from "../nn/model/minimind.ts";
import { config, PRESETS } from "../nn/model/minimind_config.ts";
import type { ConfigOverrides, PresetName } from "../nn/model/minimind_config.ts";
import { key, randint } from "../nn/random.ts";
import { scope } from "../nn/scope.ts";
import * as tree from "../nn/tree.ts";
import { byteSize } from "../nn/dtype.ts";
import type { Tree } from "../nn/tree.ts";
import * as lora from "../convert/lora.ts";
import type { Tensor } from "../nn/tensor.ts";
import { parseFlags, runMain, usage } from "../cli.ts";
import type { FlagTable } from "../cli.ts";
import { applyDtype, lmLoss, lossScaling, selectDevice } from "../train/lm.ts";
import { adamw } from "../train/optim.ts";
import { disposeState, makeTrainStep } from "../train/step.ts";
import type { StepOutput } from "../train/step.ts";
import { dataParallel } from "../train/dist/data_parallel.ts";
import { openCommunicator } from "../train/dist/mpi.ts";
import type { Communicator } from "../train/dist/comm.ts";

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
  mode: {
    type: "choice",
    default: "full",
    choices: ["full", "lora"],
    help: "full = every parameter trained; lora = also a LoRA step, with the cost ratio",
  },
  lora_rank: { type: "int", default: 16, min: 1, help: "adapter rank for --mode lora" },
  dtype: {
    type: "choice",
    default: "float32",
    choices: ["float32", "bfloat16", "float16"],
    help: "bfloat16: our bf16 matmuls (CPU with native bf16), PyTorch under CPU bf16 autocast; " +
      "float16: f16 matmuls and loss scaling (WebGPU with shader-f16; PyTorch's side is CUDA only)",
  },
  profile: {
    type: "bool01",
    default: false,
    help: "CPU: time every kernel of the timed steps by op and print the table (stderr)",
  },
} satisfies FlagTable;

const COMMAND = "deno task bench:train";

/** The CPU backend when it is the one steps run on (per-op profiles are CPU-only). */
function profiledBackend(): CpuBackend {
  if (defaultBackend() !== cpuBackend) {
    throw new Error(
      `Cannot profile on the ${defaultBackend().name} backend: --profile 1 times CPU kernels (use --device cpu)`,
    );
  }
  return cpuBackend;
}

/**
 * A markdown table of where a step's time goes: ms per step in each op's kernels (and in taking
 * their output arrays), its share of the step, and what is left outside kernels (autodiff, tape,
 * dispatch, GC).
 *
 * @param rows the profile (summed over `steps` steps)
 * @param steps timed steps the profile covers
 * @param msPerStep measured wall time of one step
 * @returns the table
 */
export function profileTable(
  rows: readonly OpProfileRow[],
  steps: number,
  msPerStep: number,
): string {
  const f = (x: number) => (x / steps).toFixed(1);
  const pct = (x: number) => (100 * x / steps / msPerStep).toFixed(1) + "%";
  const lines = [
    "| op | calls/step | kernel ms/step | of which gemm | alloc ms/step | share of step |",
    "| --- | ---: | ---: | ---: | ---: | ---: |",
  ];
  let inside = 0;
  for (const r of rows) {
    inside += r.ms + r.allocMs;
    lines.push(
      `| ${r.op} | ${r.calls / steps} | ${f(r.ms)} | ${f(r.gemmMs)} | ${f(r.allocMs)} | ${
        pct(r.ms + r.allocMs)
      } |`,
    );
  }
  const outside = msPerStep * steps - inside;
  lines.push(`| (outside kernels) | | ${f(outside)} | | | ${pct(outside)} |`);
  lines.push(`| **step** | | ${msPerStep.toFixed(1)} | | | 100% |`);
  return lines.join("\n");
}

/** One timed run. */
interface Timing {
  /** Mean ms per timed step. */
  ms: number;
  /** Peak RSS (bytes). */
  peak: number;
  /** Bytes of the optimizer state's tensors (AdamW: two moments per trained value). */
  optBytes: number;
  /** Trained values. */
  trainable: number;
  /** Process CPU ms per timed step (all threads). */
  cpuMs: number;
  /** The per-op profile of the timed steps (with `profile`). */
  profile?: OpProfileRow[];
  /** Data parallel only: mean all-reduce ms per step, without the wait for the other ranks. */
  allreduceMs?: number;
  /** Data parallel only: mean ms per step spent waiting for the other ranks. */
  waitMs?: number;
}

/**
 * Times `steps` train steps of `lossFn` over `trainable` (taken over and freed) after `warmup`
 * untimed ones; with a communicator of several ranks, data parallel (`--batch_size` rows per
 * rank).
 */
async function timeSteps<B>(
  lossFn: (p: Tree, b: B) => [Tensor, Tensor],
  trainable: Tree,
  batch: B,
  warmup: number,
  steps: number,
  comm?: Communicator,
  profile = false,
): Promise<Timing> {
  const step = makeTrainStep<B, Tensor>(lossFn, adamw({ lr: 5e-4 }), {
    hasAux: true,
    gradClip: 1,
    lossScale: lossScaling(),
  });
  const dp = comm && comm.size > 1 ? dataParallel(step, comm) : null;
  let state = dp ? await dp.init(trainable) : step.init(trainable); // owned by the state now
  let peak = Deno.memoryUsage().rss;
  const times: number[] = [], reduceMs: number[] = [], waitMs: number[] = [];
  let prev: Tensor | null = null;
  let cpuMs = 0;
  const profiler = profile ? profiledBackend() : null;
  for (let s = 0; s < warmup + steps; s++) {
    if (s === warmup) profiler?.startProfile();
    const t0 = performance.now();
    const c0 = cpuUsage();
    let out: StepOutput<Tensor>;
    if (dp) {
      const [next, o] = await dp(state, batch);
      if (s >= warmup) reduceMs.push(o.reduceMs), waitMs.push(o.waitMs ?? 0);
      [state, out] = [next, o];
    } else [state, out] = scope(() => step(state, batch));
    // read the previous step's loss while this one runs (WebGPU); on CPU it is already done
    if (prev) {
      await prev.item(); // sync point
      prev.dispose();
    }
    prev = out.loss;
    out.aux?.dispose();
    out.gradNorm?.dispose();
    for (const t of Object.values(out.scalars ?? {})) t.dispose();
    if (s === warmup + steps - 1) {
      await prev.item(); // the last step: wait for it
      prev.dispose();
      prev = null;
    } else await defaultBackend().sync();
    if (s >= warmup) {
      times.push(performance.now() - t0);
      const c = cpuUsage(c0);
      cpuMs += (c.user + c.system) / 1000;
    }
    peak = Math.max(peak, Deno.memoryUsage().rss);
  }
  const bytes = (t: Tree) => tree.tensors(t).reduce((n, x) => n + x.size * byteSize(x.dtype), 0);
  const mean = (x: number[]) => x.reduce((p, q) => p + q, 0) / x.length;
  const timing: Timing = {
    ms: mean(times),
    cpuMs: cpuMs / times.length,
    profile: profiler?.stopProfile(),
    peak,
    optBytes: bytes(state.optState),
    trainable: tree.tensors(state.params).reduce((n, x) => n + x.size, 0),
  };
  if (dp) {
    // the all-reduce itself, and the wait for the other rank before it (load imbalance)
    timing.allreduceMs = mean(reduceMs.map((r, i) => r - waitMs[i]));
    timing.waitMs = mean(waitMs);
  }
  disposeState(state);
  return timing;
}

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
  const precision = applyDtype(a.dtype, device);
  const o: ConfigOverrides = {};
  if (a.hidden_size) o.hiddenSize = a.hidden_size;
  if (a.num_hidden_layers) o.numHiddenLayers = a.num_hidden_layers;
  if (a.num_attention_heads) o.numAttentionHeads = a.num_attention_heads;
  if (a.num_key_value_heads) o.numKeyValueHeads = a.num_key_value_heads;
  const cfg = config(a.preset as PresetName, o);
  const B = a.batch_size, T = a.max_seq_len;
  // under mpirun: data parallel, `--batch_size` rows per rank, tokens/s of all ranks together
  const comm = openCommunicator();
  const ids = randint(key(1 + comm.rank), [B, T], 3, cfg.vocabSize);
  const batch = { ids, labels: ids };
  const params = init(cfg, key(0));
  let loraRun: Timing | null = null;
  if (a.mode === "lora") {
    if (comm.size > 1) {
      throw new Error("bench:train --mode lora runs as one process, not under mpirun");
    }
    // the param split: AdamW and valueAndGrad see the adapters; the base is closed over
    const base = lmLoss(cfg);
    const loss = (ad: Tree, b: { ids: Tensor; labels: Tensor }) =>
      base(lora.apply(params, ad) as unknown as Tree, b);
    const adapters = lora.init(cfg, key(2), { rank: a.lora_rank });
    loraRun = await timeSteps(loss, adapters, batch, a.warmup, a.steps);
  }
  // the full step last: it takes the params over (and frees them)
  const full = await timeSteps(
    lmLoss(cfg),
    params as unknown as Tree,
    batch,
    a.warmup,
    a.steps,
    comm,
    a.profile,
  );
  ids.dispose();
  comm.close();
  if (comm.rank !== 0) return 0;
  const ms = full.ms;
  if (full.profile) console.error(profileTable(full.profile, a.steps, ms));
  const peak = Math.max(full.peak, loraRun?.peak ?? 0);
  const result: Record<string, unknown> = {
    impl: "minimind.ts",
    device,
    preset: a.preset,
    hidden_size: cfg.hiddenSize,
    num_hidden_layers: cfg.numHiddenLayers,
    params: countParams(cfg).total,
    precision,
    world_size: comm.size,
    batch_size: B,
    max_seq_len: T,
    steps: a.steps,
    tokens_per_s: Math.round((comm.size * B * T) / (ms / 1000) * 10) / 10,
    ms_per_step: Math.round(ms * 10) / 10,
    cpu_ms_per_step: Math.round(full.cpuMs * 10) / 10,
    peak_rss_mb: Math.round(peak / 2 ** 20 * 10) / 10,
    blas_threads: Deno.env.get("OPENBLAS_NUM_THREADS") ?? "default",
    opt_state_bytes: full.optBytes,
  };
  if (full.allreduceMs !== undefined) {
    result.allreduce_ms_per_step = Math.round(full.allreduceMs * 10) / 10;
    result.wait_ms_per_step = Math.round((full.waitMs ?? 0) * 10) / 10;
  }
  if (loraRun) {
    result.lora_rank = a.lora_rank;
    result.lora_params = loraRun.trainable;
    result.lora_ms_per_step = Math.round(loraRun.ms * 10) / 10;
    result.lora_tokens_per_s = Math.round((B * T) / (loraRun.ms / 1000) * 10) / 10;
    result.lora_vs_full_step_cost = Math.round(loraRun.ms / full.ms * 1000) / 1000;
    result.lora_opt_state_bytes = loraRun.optBytes;
  }
  if (a.torch && a.dtype === "float16") {
    console.error("PyTorch: skipped (its float16 autocast runs on CUDA: bench/gpu_check.sh)");
  } else if (a.torch) {
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
        ...["--steps", String(a.steps), "--warmup", String(a.warmup), "--dtype", a.dtype],
      ],
      stderr: "piped",
      // PyTorch at its own defaults: not the OpenMP settings made here for oneDNN
      env: environmentAsStarted(),
      clearEnv: true,
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
    result.torch_config = `${t.config} (${t.blas})`;
    result.torch_tried = t.tried;
    result.torch_cpu_ms_per_step = t.cpu_ms_per_step;
    result.torch_version = t.torch;
    result.speed_vs_torch = Math.round((result.tokens_per_s as number) / t.tokens_per_s * 100) /
      100;
  }
  console.log(JSON.stringify(result));
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));

// `deno bench`: one CPU train step of the demo's model on a short batch, and its forward alone
if (!import.meta.main) {
  const cfg = config("minimind2-small", DEMO_MODEL);
  const step = makeTrainStep<{ ids: Tensor; labels: Tensor }, Tensor>(
    lmLoss(cfg),
    adamw({ lr: 5e-4 }),
    { hasAux: true, gradClip: 1 },
  );
  let state = step.init(init(cfg, key(0)) as unknown as Tree);
  const ids = randint(key(1), [4, 64], 3, cfg.vocabSize);
  Deno.bench({ name: "train step, demo model (192×4), B 4 × T 64", group: "train" }, () => {
    const [next, out] = scope(() => step(state, { ids, labels: ids }));
    state = next;
    for (const t of [out.loss, out.aux, out.gradNorm]) t?.dispose();
  });
  Deno.bench({ name: "loss only (forward), same batch", group: "train" }, () => {
    scope(() => void lmLoss(cfg)(state.params, { ids, labels: ids }));
  });
  globalThis.addEventListener("unload", () => (disposeState(state), ids.dispose()));
}
