import assert from "node:assert/strict";
import { compareTable, type PairResult, range, ROWS } from "./cpu_compare.ts";

const pair = (ours: number, torch: number, config = "openblas-openmp, 2 threads"): PairResult => ({
  tokens_per_s: ours,
  cpu_ms_per_step: 1000,
  peak_rss_mb: 900 + ours / 100,
  precision: "Precision: float32",
  torch_tokens_per_s: torch,
  torch_cpu_ms_per_step: 2000,
  torch_peak_rss_mb: 1600,
  torch_config: `${config} (/usr/lib/x86_64-linux-gnu/openblas-openmp/libopenblas.so.0)`,
  ours_config: "2 threads",
});

Deno.test("cpu_compare: ranges over runs, per-run ratios, largest RSS, the usual PyTorch config", () => {
  assert.equal(range([1234.4, 987.6]), "988–1,234");
  assert.equal(range([5, 5]), "5");
  assert.equal(range([1.234], 2), "1.23");
  const t = compareTable([
    {
      label: "MiniMind2-Small",
      runs: [pair(1000, 800), pair(1100, 1000), pair(900, 850, "openblas-openmp, 1 threads")],
    },
    { label: "empty", runs: [] },
  ]).split("\n");
  assert.equal(t.length, 3, "header, rule, one row (a row without runs is left out)");
  assert.equal(
    t[2],
    "| MiniMind2-Small | 900–1,100 | 800–1,000 | 1.06–1.25 | 1,000 / 2,000 | 911 / 1600 MB | " +
      "2 threads; openblas-openmp, 2 threads in 2 of 3 |",
  );
  assert.deepEqual(ROWS.map((r) => r.id), ["demo", "small", "mm3", "small_bf16"]);
  assert.ok(ROWS[3].args.includes("bfloat16"));
});
