/**
 * The GPU report `bench/gpu_check.sh` prints, as one markdown table: the WebGPU adapter, square
 * matmul GFLOP/s (1024–4096) against the card's fp32 peak, MiniMind2-Small and minimind3 train
 * tokens/s at B 32 × T 512 with dispatches / submits / syncs per step and the model FLOPs
 * utilisation (6·N·tokens/s over the fp32 peak), decode tokens/s at batch 1 / 8 / 64 (a readback
 * per token, as serving does), and the same train step in PyTorch CUDA fp32 eager
 * (`bench/torch_train.py --device cuda`) with our ratio. Where the adapter has `shader-f16`, the
 * float16 precision too: the matmuls with f16 operands, and MiniMind2-Small's step with f16
 * matmuls and dynamic loss scaling beside PyTorch's float16 autocast with a GradScaler.
 *
 * `--tiny 1` shrinks every size so that the whole report runs in seconds on the software adapter
 * (CI runs it that way); PyTorch is then skipped with the reason printed.
 *
 *   deno run -A bench/gpu_report.ts [--tiny 1] [--peak_tflops 67] [--torch 1]
 * @module
 */
import { createWebGpuBackend, type WebGpuBackend } from "../nn/backend/webgpu/mod.ts";
import { useBackend } from "../nn/backend/select.ts";
import { countParams, forward, init, lossFromLogits } from "../nn/model/minimind.ts";
import { config, type MiniMindConfig } from "../nn/model/minimind_config.ts";
import { type DecodeState, decodeStep } from "../nn/model/generate.ts";
import { disposeCache } from "../nn/model/layers/kv_cache.ts";
import { key, randint, uniformArray } from "../nn/random.ts";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import { dispose as disposeTree, type Tree } from "../nn/tree.ts";
import { scope } from "../nn/scope.ts";
import { argmax, matmul, reshape } from "../nn/ops/mod.ts";
import { adamw } from "../train/optim.ts";
import { disposeState, makeTrainStep } from "../train/step.ts";
import { parseFlags, runMain, usage } from "../cli.ts";
import type { FlagTable } from "../cli.ts";
import { timeGpu } from "./webgpu_cases.ts";

/** The report's flags. */
export const REPORT_FLAGS = {
  tiny: { type: "bool01", default: false, help: "tiny sizes (software adapter, CI)" },
  peak_tflops: {
    type: "float",
    default: 0,
    min: 0,
    help: "the card's fp32 peak in TFLOP/s (0 = look the adapter up in a table of known cards)",
  },
  steps: { type: "int", default: 5, min: 1, help: "timed train steps per model" },
  torch: { type: "bool01", default: true, help: "run the PyTorch CUDA side when it can" },
} satisfies FlagTable;

const COMMAND = "deno run -A bench/gpu_report.ts";

/** Dense fp32 (non-tensor-core) peaks in TFLOP/s of cards these checks may run on, by name. */
const FP32_PEAKS: [RegExp, number][] = [
  [/H200/i, 66.9],
  [/H100.*PCIe/i, 51.2],
  [/H100/i, 66.9],
  [/A100/i, 19.5],
  [/L40S/i, 91.6],
  [/L4\b/i, 30.3],
  [/A10G?\b/i, 31.2],
  [/RTX 4090/i, 82.6],
];

/** The fp32 peak of an adapter named `description`, in FLOP/s (0 = unknown). */
export function fp32Peak(description: string, overrideTflops = 0): number {
  if (overrideTflops > 0) return overrideTflops * 1e12;
  for (const [re, tf] of FP32_PEAKS) if (re.test(description)) return tf * 1e12;
  return 0;
}

/** One train-step measurement. */
interface TrainRow {
  name: string;
  cfg: MiniMindConfig;
  b: number;
  t: number;
  tokensPerS: number;
  perStep: { dispatches: number; submits: number; syncs: number };
  loss: number;
}

async function trainRow(
  gpu: WebGpuBackend,
  name: string,
  cfg: MiniMindConfig,
  b: number,
  t: number,
  steps: number,
  float16 = false,
): Promise<TrainRow> {
  // the loss of train/lm.ts, without its data imports (npm packages are not on the GPU machine)
  const lossFn = (p: Tree, x: { ids: Tensor; labels: Tensor }) =>
    lossFromLogits(
      forward(cfg, p as ReturnType<typeof init>, x.ids, { train: true }).logits,
      x.labels,
    );
  const step = makeTrainStep<{ ids: Tensor; labels: Tensor }>(lossFn, adamw({ lr: 1e-4 }), {
    gradClip: 1,
    lossScale: float16 ? {} : null, // as train/lm.ts's lossScaling() for --dtype float16
  });
  let state = step.init(init(cfg, key(1)) as unknown as Tree);
  const ids = tensor(
    Int32Array.from(uniformArray(key(3), b * t), (u) => 3 + Math.floor(u * (cfg.vocabSize - 3))),
    [b, t],
    "i32",
  );
  const batch = { ids, labels: ids };
  await step.warmup(state, batch);
  const one = () => {
    const [next, out] = step(state, batch);
    state = next;
    out.gradNorm?.dispose();
    for (const x of Object.values(out.scalars ?? {})) x.dispose();
    return out.loss;
  };
  const first = one(); // the optimizer's pipelines compile here
  await first.item();
  first.dispose();
  const c0 = { ...gpu.counters };
  const t0 = performance.now();
  let pending: Tensor | null = null;
  let loss = 0;
  for (let i = 0; i < steps; i++) {
    const l = one();
    if (pending) loss = await pending.item(); // the loss is read one step late
    pending?.dispose();
    pending = l;
  }
  loss = await pending!.item();
  pending!.dispose();
  const dt = (performance.now() - t0) / 1000;
  const per = (k: "dispatches" | "submits" | "syncs") => (gpu.counters[k] - c0[k]) / steps;
  disposeState(state);
  ids.dispose();
  return {
    name,
    cfg,
    b,
    t,
    tokensPerS: (b * t * steps) / dt,
    perStep: { dispatches: per("dispatches"), submits: per("submits"), syncs: per("syncs") },
    loss,
  };
}

/** Decode tokens/s at `batch` rows: prefill `prompt` tokens, then `n` greedy steps read back. */
async function decodeRate(cfg: MiniMindConfig, batch: number, prompt: number, n: number) {
  const model = { cfg, params: init(cfg, key(5)) };
  const state: DecodeState = { cache: null };
  const ids = randint(key(6), [batch, prompt], 3, cfg.vocabSize);
  let next = scope(() => reshape(argmax(decodeStep(model, state, ids)), [batch, 1]));
  await next.data();
  const t0 = performance.now();
  for (let i = 0; i < n; i++) {
    const prev = next;
    next = scope(() => reshape(argmax(decodeStep(model, state, prev)), [batch, 1]));
    prev.dispose();
    await next.data(); // a readback per token, as the server's sampler does
  }
  const rate = (batch * n) / ((performance.now() - t0) / 1000);
  next.dispose();
  ids.dispose();
  disposeCache(state.cache);
  disposeTree(model.params as unknown as Tree);
  return rate;
}

/** What PyTorch CUDA did on one model, or why it did not run. */
type TorchResult = { tokensPerS: number; device: string } | { skipped: string };

async function torchCuda(
  cfg: MiniMindConfig,
  b: number,
  t: number,
  steps: number,
  dtype = "float32",
) {
  const py = new URL("./torch_train.py", import.meta.url).pathname;
  const args = [
    py,
    "--device",
    "cuda",
    "--dtype",
    dtype,
    ...[
      "--hidden_size",
      String(cfg.hiddenSize),
      "--num_hidden_layers",
      String(cfg.numHiddenLayers),
    ],
    ...["--num_attention_heads", String(cfg.numAttentionHeads)],
    ...["--num_key_value_heads", String(cfg.numKeyValueHeads)],
    ...["--intermediate_size", String(cfg.intermediateSize), "--vocab_size", String(cfg.vocabSize)],
    ...["--batch_size", String(b), "--max_seq_len", String(t), "--steps", String(steps)],
  ];
  for (const exe of ["python3", "/usr/bin/python3"]) {
    let out: Deno.CommandOutput;
    try {
      out = await new Deno.Command(exe, { args, stdout: "piped", stderr: "piped" }).output();
    } catch {
      continue; // no such interpreter
    }
    const err = new TextDecoder().decode(out.stderr).trim().split("\n").pop() ?? "";
    if (out.code !== 0) return { skipped: `${exe} ${py} failed: ${err}` } as TorchResult;
    const r = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
    return { tokensPerS: r.tokens_per_s, device: r.device_name } as TorchResult;
  }
  return { skipped: "no python3 on this machine" } as TorchResult;
}

/**
 * Runs the report.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, REPORT_FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "The GPU report of bench/gpu_check.sh.", REPORT_FLAGS));
    return 0;
  }
  const gpu = await createWebGpuBackend({ allowSoftware: true });
  if (!gpu) throw new Error("Cannot run the GPU report: no WebGPU adapter is available");
  useBackend(gpu);
  const tiny = a.tiny;
  const peak = fp32Peak(gpu.description, a.peak_tflops);
  const rows: [string, string, string][] = [];
  const f = (x: number, d = 1) => x.toFixed(d);
  const ofPeak = (flops: number) => peak > 0 ? ` = ${f((100 * flops) / peak)}% of fp32 peak` : "";

  const feats = [...gpu.device.features].sort().join(", ") || "none";
  rows.push(["adapter", gpu.description, gpu.software ? "software" : "hardware"]);
  rows.push(["adapter", "features", feats]);
  rows.push([
    "adapter",
    "fp32 peak",
    peak > 0 ? `${f(peak / 1e12)} TFLOP/s` : "unknown (pass --peak_tflops for MFU)",
  ]);

  // square matmuls, in f32 and (with shader-f16) on f16 operands
  const f16 = gpu.device.features.has("shader-f16");
  for (const n of tiny ? [64, 128] : [1024, 2048, 4096]) {
    const [fx, fy] = [n, n + 1].map((s) =>
      tensor(Float32Array.from(uniformArray(key(s), n * n), (u) => u - 0.5), [n, n])
    );
    for (const precision of f16 ? ["float32", "float16"] as const : ["float32"] as const) {
      gpu.setMatmulPrecision(precision);
      const s = await timeGpu(gpu, () => void matmul(fx, fy), tiny ? 20 : 200);
      const fl = 2 * n ** 3 / s;
      const what = precision === "float32" ? "f32" : "f16 operands, f32 sums";
      rows.push(["matmul", `${n}³ ${what} NN`, `${f(fl / 1e9)} GFLOP/s${ofPeak(fl)}`]);
    }
    gpu.setMatmulPrecision("float32");
    fx.dispose();
    fy.dispose();
  }

  // train steps
  const [B, T] = tiny ? [2, 32] : [32, 512];
  const models: [string, MiniMindConfig][] = tiny
    ? [
      ["tiny minimind2", config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2 })],
      ["tiny minimind3", config("minimind3", { hiddenSize: 64, numHiddenLayers: 2 })],
    ]
    : [["MiniMind2-Small", config("minimind2-small")], ["minimind3", config("minimind3")]];
  const steps = tiny ? 2 : a.steps;
  // every model in float32; the first again in float16 where the adapter has shader-f16
  const runs = models.map(([name, cfg]) => [name, cfg, false] as const);
  if (f16) runs.splice(1, 0, [models[0][0], models[0][1], true]);
  for (const [name, cfg, float16] of runs) {
    gpu.setMatmulPrecision(float16 ? "float16" : "float32");
    const r = await trainRow(gpu, name, cfg, B, T, steps, float16);
    gpu.setMatmulPrecision("float32");
    const n = countParams(cfg).total;
    const model = `${name} (H${cfg.hiddenSize} L${cfg.numHiddenLayers}, ${
      f(n / 1e6)
    }M) B${B}×T${T}${float16 ? " float16" : ""}`;
    const mfu = 6 * n * r.tokensPerS;
    rows.push([
      "train",
      model,
      `${f(r.tokensPerS, 0)} tokens/s (loss ${f(r.loss, 3)})${
        peak > 0 ? `, MFU ${f((100 * mfu) / peak)}%` : ""
      }`,
    ]);
    const p = r.perStep;
    rows.push([
      "train",
      "  per step: dispatches / submits / syncs",
      `${f(p.dispatches)} / ${f(p.submits)} / ${f(p.syncs)}`,
    ]);
    let torch: TorchResult;
    if (!a.torch) torch = { skipped: "--torch 0" };
    else if (gpu.software) torch = { skipped: "software adapter: no CUDA device to compare on" };
    else torch = await torchCuda(cfg, B, T, steps, float16 ? "float16" : "float32");
    rows.push([
      "train",
      float16 ? "  PyTorch CUDA float16 autocast + GradScaler" : "  PyTorch CUDA fp32 eager",
      "skipped" in torch
        ? `skipped: ${torch.skipped}`
        : `${f(torch.tokensPerS, 0)} tokens/s on ${torch.device}; ours ${
          f(r.tokensPerS / torch.tokensPerS, 2)
        }×`,
    ]);
  }

  // decode
  const dcfg = tiny ? models[0][1] : config("minimind2-small");
  for (const batch of tiny ? [1, 2, 4] : [1, 8, 64]) {
    const rate = await decodeRate(dcfg, batch, tiny ? 8 : 32, tiny ? 4 : 64);
    rows.push([
      "decode",
      `${tiny ? "tiny" : "MiniMind2-Small"} batch ${batch}`,
      `${f(rate)} tokens/s`,
    ]);
  }

  const w0 = Math.max(...rows.map((r) => r[0].length)),
    w1 = Math.max(...rows.map((r) => r[1].length));
  console.log(`| ${"what".padEnd(w0)} | ${"case".padEnd(w1)} | result |`);
  console.log(`| ${"-".repeat(w0)} | ${"-".repeat(w1)} | ------ |`);
  for (const [x, y, z] of rows) console.log(`| ${x.padEnd(w0)} | ${y.padEnd(w1)} | ${z} |`);
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
