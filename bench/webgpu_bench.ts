// WebGPU kernel benchmarks, one group per kernel family (matmul, attention, rows, elementwise,
// overhead). An iteration records the call 8 times and waits for the GPU once, so each group
// also has the "sync only" baseline: (iteration − baseline) / 8 is the time per call. For
// GFLOP/s and GB/s directly, run `deno run -A bench/webgpu_table.ts`.
//
//   XDG_RUNTIME_DIR=/tmp deno bench -A bench/webgpu_bench.ts

import { createWebGpuBackend } from "../nn/backend/webgpu/mod.ts";
import { tensor } from "../nn/creation.ts";
import { add } from "../nn/ops/mod.ts";
import { scope } from "../nn/scope.ts";
import { gpuCases } from "./webgpu_cases.ts";

const gpu = await createWebGpuBackend({ allowSoftware: true });
if (!gpu) throw new Error("Cannot run the WebGPU benchmarks: no WebGPU adapter is available");
const REPS = 8;

const cases = gpuCases(gpu);
for (const family of new Set(cases.map((c) => c.family))) {
  Deno.bench({
    name: "sync only",
    group: family,
    baseline: true,
    n: 20,
    warmup: 2,
    async fn() {
      await gpu.sync();
    },
  });
}
for (const c of cases) {
  Deno.bench({
    name: c.name,
    group: c.family,
    n: 5,
    warmup: 1,
    async fn(b) {
      b.start();
      for (let i = 0; i < REPS; i++) scope(c.run);
      await gpu.sync();
      b.end();
    },
  });
}

const tiny = tensor([1, 2, 3, 4], [4], "f32", { backend: gpu });
Deno.bench({
  name: "100 dependent tiny adds (recording + execution)",
  group: "overhead",
  n: 20,
  warmup: 2,
  async fn(b) {
    b.start();
    scope(() => {
      let h = tiny;
      for (let i = 0; i < 100; i++) h = add(h, tiny);
    });
    await gpu.sync();
    b.end();
  },
});
Deno.bench({
  name: "100 tiny adds recorded, not submitted (CPU-side encoding)",
  group: "overhead",
  fn() {
    scope(() => {
      let h = tiny;
      for (let i = 0; i < 100; i++) h = add(h, tiny);
    });
  },
});
Deno.bench({
  name: "4-byte readback",
  group: "overhead",
  n: 20,
  warmup: 2,
  async fn() {
    await tiny.data();
  },
});
