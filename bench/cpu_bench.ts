// CPU kernel benchmarks, one group per kernel family: matmul (the linear layer's three products and
// a square one), causal GQA attention forward and forward+backward, softmax, cross-entropy
// forward+backward, rms norm, sampling, elementwise and AdamW; the same cases as
// `webgpu_bench.ts`, at the small sizes, run synchronously on the CPU backend (OpenBLAS through FFI
// when found, wasm SIMD otherwise). The row and elementwise cases also run with the kernel pool
// off ("1 kernel thread": every TypeScript and SIMD kernel on the calling thread, attention head
// by head), where it has more than one thread. The matmul and attention cases also run in the
// bfloat16 precision (bf16 products with f32 accumulation) where the CPU has native bf16.
//
//   deno bench -A bench/cpu_bench.ts

import { cpuBackend } from "../nn/backend/cpu/mod.ts";
import { initGemm } from "../nn/backend/cpu/gemm/mod.ts";
import { scope } from "../nn/scope.ts";
import { kernelCases } from "./webgpu_cases.ts";
import { initKernelThreads, setKernelThreadsEnabled } from "../nn/backend/cpu/threads/mod.ts";
import { setMatmulPrecision } from "../nn/backend/cpu/gemm_adapter.ts";

await initGemm();
const threads = await initKernelThreads(); // before the inputs: large ones are then shared
const cases = kernelCases(cpuBackend, false);
const bf16 = setMatmulPrecision("bfloat16") === null; // null: in effect here
setMatmulPrecision("float32");
for (const c of cases) {
  Deno.bench({ name: c.name, group: c.family }, () => scope(c.run));
  if (bf16 && (c.family === "matmul" || c.family === "attention")) {
    Deno.bench({ name: `${c.name}, bfloat16`, group: c.family }, () => {
      setMatmulPrecision("bfloat16");
      try {
        scope(c.run);
      } finally {
        setMatmulPrecision("float32");
      }
    });
  }
  if (threads > 1 && c.family !== "matmul") {
    Deno.bench({ name: `${c.name}, 1 kernel thread`, group: c.family }, () => {
      setKernelThreadsEnabled(false);
      try {
        scope(c.run);
      } finally {
        setKernelThreadsEnabled(true);
      }
    });
  }
}
globalThis.addEventListener("unload", () => cases.forEach((c) => c.dispose()));
