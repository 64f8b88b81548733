/**
 * One table of WebGPU numbers: kernel GFLOP/s and GB/s, dispatch and readback overhead, and a
 * MiniMind train step in tokens/s (MiniMind2-Small on a real GPU, a tiny config on the software
 * adapter). `bench/gpu_check.sh` runs it after the parity suite.
 *
 *   deno run -A bench/webgpu_table.ts [--steps 10]
 */
import { parseArgs } from "node:util";
import { createWebGpuBackend } from "../nn/backend/webgpu/mod.ts";
import { useBackend } from "../nn/backend/select.ts";
import { forward, init, lossFromLogits } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { key, uniformArray } from "../nn/random.ts";
import { tensor } from "../nn/creation.ts";
import type { Tensor } from "../nn/tensor.ts";
import type { Tree } from "../nn/tree.ts";
import { scope } from "../nn/scope.ts";
import { valueAndGrad } from "../nn/autodiff.ts";
import { adamw } from "../train/optim.ts";
import { disposeState, makeTrainStep } from "../train/step.ts";
import { dispatchUs, emptySyncMs, gpuCases, readbackMs, timeGpu } from "./webgpu_cases.ts";

const { values: flags } = parseArgs({ options: { steps: { type: "string", default: "10" } } });
const gpu = await createWebGpuBackend({ allowSoftware: true });
if (!gpu) throw new Error("Cannot run the WebGPU table: no WebGPU adapter is available");
useBackend(gpu);

const rows: [string, string, string][] = [];
const fmt = (x: number, d = 1) => x.toFixed(d);

console.log(`adapter: ${gpu.description}${gpu.software ? " (software)" : ""}`);
for (const c of gpuCases(gpu)) {
  const s = await timeGpu(gpu, c.run);
  const rate = c.flops > 0 ? `${fmt(c.flops / s / 1e9)} GFLOP/s` : `${fmt(c.bytes / s / 1e9)} GB/s`;
  rows.push([c.family, c.name, `${rate} (${fmt(s * 1e3, 3)} ms)`]);
  c.dispose();
}
rows.push(["overhead", "tiny dispatch (record + run)", `${fmt(await dispatchUs(gpu))} µs`]);
rows.push(["overhead", "empty sync (onSubmittedWorkDone)", `${fmt(await emptySyncMs(gpu), 2)} ms`]);
rows.push([
  "overhead",
  "4-byte readback (submit + mapAsync)",
  `${fmt(await readbackMs(gpu), 2)} ms`,
]);

// a whole train step: forward, loss, backward, clip, AdamW; loss read one step late
const cfg: MiniMindConfig = gpu.software
  ? config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2, vocabSize: 512 })
  : config("minimind2-small");
const [B, T] = gpu.software ? [2, 64] : [8, 512];
const ids = Int32Array.from(uniformArray(key(3), B * T), (u) => Math.floor(u * cfg.vocabSize));
const lossFn = (p: Tree, x: Int32Array) => {
  const t = tensor(x, [B, T], "i32");
  return lossFromLogits(forward(cfg, p as ReturnType<typeof init>, t, { train: true }).logits, t);
};
const step = makeTrainStep(lossFn, adamw({ lr: 1e-4 }), { gradClip: 1 });
let state = step.init(init(cfg, key(1)));
const vg = valueAndGrad(lossFn);
const compiled = await gpu.warmup(() => scope(() => vg(state.params, ids)));
const t0 = performance.now();
let [s1, o1] = step(state, ids); // remaining pipelines (optimizer) compile here
state = s1;
await o1.loss.item();
o1.loss.dispose();
o1.gradNorm?.dispose();
const firstMs = performance.now() - t0;
const n = Number(flags.steps);
const c0 = { ...gpu.counters };
const t1 = performance.now();
let pending: Promise<number> | null = null;
let last = 0;
for (let i = 0; i < n; i++) {
  [s1, o1] = step(state, ids);
  state = s1;
  if (pending) last = await pending;
  const l: Tensor = o1.loss;
  pending = l.item().then((v) => (l.dispose(), v)); // sync point, one step late
  o1.gradNorm?.dispose();
}
last = await pending!;
const dt = (performance.now() - t1) / 1000;
const per = (k: keyof typeof c0) => fmt((gpu.counters[k] - c0[k]) / n, 1);
rows.push([
  "train step",
  `${
    gpu.software ? "tiny" : "MiniMind2-Small"
  } (H${cfg.hiddenSize} L${cfg.numHiddenLayers} V${cfg.vocabSize}) B${B} T${T}`,
  `${fmt((B * T * n) / dt, 0)} tokens/s (${fmt((dt / n) * 1e3)} ms/step, loss ${fmt(last, 3)})`,
]);
rows.push([
  "train step",
  "per step: dispatches / submits / syncs",
  `${per("dispatches")} / ${per("submits")} / ${per("syncs")}`,
]);
rows.push([
  "train step",
  "start-up: pipelines compiled by warmup / first step",
  `${compiled} / ${fmt(firstMs, 0)} ms`,
]);
disposeState(state);

const w0 = Math.max(...rows.map((r) => r[0].length)),
  w1 = Math.max(...rows.map((r) => r[1].length));
console.log(`| ${"family".padEnd(w0)} | ${"case".padEnd(w1)} | result |`);
console.log(`| ${"-".repeat(w0)} | ${"-".repeat(w1)} | ------ |`);
for (const r of rows) console.log(`| ${r[0].padEnd(w0)} | ${r[1].padEnd(w1)} | ${r[2]} |`);
