// CPU kernel benchmarks, one group per kernel family: matmul (the linear layer's three products and
// a square one), causal GQA attention forward and forward+backward, softmax, cross-entropy
// forward+backward, rms norm, sampling, elementwise and AdamW; the same cases as
// `webgpu_bench.ts`, at the small sizes, run synchronously on the CPU backend (OpenBLAS through FFI
// when found, wasm SIMD otherwise).
//
//   deno bench -A bench/cpu_bench.ts

import { cpuBackend } from "../nn/backend/cpu/mod.ts";
import { initGemm } from "../nn/backend/cpu/gemm/mod.ts";
import { scope } from "../nn/scope.ts";
import { kernelCases } from "./webgpu_cases.ts";

await initGemm();
const cases = kernelCases(cpuBackend, false);
for (const c of cases) {
  Deno.bench({ name: c.name, group: c.family }, () => scope(c.run));
}
globalThis.addEventListener("unload", () => cases.forEach((c) => c.dispose()));
