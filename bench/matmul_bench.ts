// Matmul benchmarks: every path (blas, wasm on 1 thread, wasm with workers, plain TS) on 512³ and the
// LLM shapes (forward x·Wᵀ and both backward matmuls of a 512→1536 linear layer on 1024 tokens).
// `deno bench` reports time per call; a GFLOP/s table, from the same calls, is printed at the end.
//
//   deno bench -A bench/matmul_bench.ts
//   bash bench/matmul_vs_numpy.sh          # the same shapes next to numpy, with the ratio

import { sgemmJs } from "../nn/backend/cpu/gemm/mod.ts";
import type { SgemmArgs } from "../nn/backend/cpu/gemm/mod.ts";
import { openBlas } from "../nn/backend/cpu/gemm/blas.ts";
import { WasmGemm } from "../nn/backend/cpu/gemm/wasm.ts";
import { makeArgs, median, SHAPES } from "./matmul_report.ts";

const threads = Math.min(8, navigator.hardwareConcurrency);
const blas = openBlas();
const wasm1 = new WasmGemm();
const wasmN = new WasmGemm();
await wasmN.startWorkers(threads);

const paths: [string, (a: SgemmArgs) => void][] = [
  ...("sgemm" in blas
    ? [["blas", (a: SgemmArgs) => blas.sgemm(a)] as [string, (a: SgemmArgs) => void]]
    : []),
  ["wasm×1", (a) => wasm1.sgemm(a)],
  [`wasm×${threads}`, (a) => wasmN.sgemm(a)],
  ["js", sgemmJs],
];
if (!("sgemm" in blas)) console.log(`blas: not found (${blas.reason}), skipped`);

/** Per-call seconds, by shape then path. */
const times = new Map<string, Map<string, number[]>>();

for (const s of SHAPES) {
  const args = makeArgs(s);
  const byPath = new Map<string, number[]>();
  times.set(s.name, byPath);
  for (const [path, sgemm] of paths) {
    const samples: number[] = [];
    byPath.set(path, samples);
    Deno.bench({ name: `${path} ${s.name}`, group: s.name, baseline: path === "js" }, (b) => {
      b.start();
      const t = performance.now();
      sgemm(args);
      samples.push((performance.now() - t) / 1000);
      b.end();
    });
  }
}

globalThis.addEventListener("unload", () => {
  wasmN.dispose();
  const names = paths.map(([p]) => p);
  console.log(`\nGFLOP/s (median of the calls above)\n| shape | ${names.join(" | ")} |`);
  console.log(`|---|${names.map(() => "---:").join("|")}|`);
  for (const s of SHAPES) {
    const flops = 2 * s.m * s.n * s.k;
    const cells = names.map((p) => {
      const t = times.get(s.name)!.get(p)!;
      return t.length ? (flops / median(t) / 1e9).toFixed(1) : "-";
    });
    console.log(`| ${s.name} | ${cells.join(" | ")} |`);
  }
});
