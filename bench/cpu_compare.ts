/**
 * `deno task bench:compare` — the CPU comparison table of the README ("Speed on CPU"): the full
 * train step of our engine against PyTorch, each at its best (PyTorch through `bench:train
 * --torch 1`: the OpenMP OpenBLAS, the better of 1 and all threads; ours the better of 1 thread and
 * the default, all threads) on the demo model, MiniMind2-Small and minimind3 in
 * fp32 and MiniMind2-Small in bf16 (PyTorch under CPU bf16 autocast), each pair run back to back
 * and the rows interleaved `--runs` times, so a change in the machine's load hits both sides. Prints
 * a markdown table to stdout (tokens/s ranges over the runs, the ratio of each run's pair, peak RSS,
 * CPU ms per step) with the machine, its load average before and after, and the command; each
 * run's JSON line goes to stderr as it comes.
 *
 *   deno task bench:compare                 # 3 runs, about 7 minutes on 2 idle cores
 *   deno task bench:compare --runs 5 --rows demo,small
 *
 * @module
 */
import { DEMO_MODEL, modelFlags } from "../demo.ts";
import { parseFlags, runMain, usage } from "../cli.ts";
import type { FlagTable } from "../cli.ts";

/** One row of the table: its label and the `bench:train` flags that make it. */
export interface CompareRow {
  /** Short name for `--rows`. */
  id: string;
  /** The table's first column. */
  label: string;
  /** `bench:train` flags (model, batch, dtype). */
  args: string[];
}

/** The rows of issue 16's table, in its order. */
export const ROWS: readonly CompareRow[] = [
  {
    id: "demo",
    label: "demo (192×4, 2.8M), 16×128",
    args: [
      ...modelFlags(DEMO_MODEL),
      ...["--batch_size", "16", "--max_seq_len", "128"],
    ],
  },
  {
    id: "small",
    label: "MiniMind2-Small (512×8, 25.8M), 4×256",
    args: ["--preset", "minimind2-small", "--batch_size", "4", "--max_seq_len", "256"],
  },
  {
    id: "mm3",
    label: "minimind3 (768×8, 64M), 2×256",
    args: ["--preset", "minimind3", "--batch_size", "2", "--max_seq_len", "256"],
  },
  {
    id: "small_bf16",
    label: "MiniMind2-Small 4×256, bf16 (PyTorch: bf16 autocast)",
    args: [
      ...["--preset", "minimind2-small", "--batch_size", "4", "--max_seq_len", "256"],
      ...["--dtype", "bfloat16"],
    ],
  },
];

const COMMAND = "deno task bench:compare";

const FLAGS = {
  runs: { type: "int", default: 3, min: 1, help: "interleaved runs of every row" },
  steps: { type: "int", default: 3, min: 1, help: "timed steps per run (each side)" },
  warmup: { type: "int", default: 1, min: 0, help: "untimed steps first" },
  rows: {
    type: "string",
    default: ROWS.map((r) => r.id).join(","),
    help: `comma-separated rows: ${ROWS.map((r) => r.id).join(", ")}`,
  },
} satisfies FlagTable;

/** The fields of a `bench:train --torch 1` line this table reads. */
export interface PairResult {
  tokens_per_s: number;
  cpu_ms_per_step: number;
  peak_rss_mb: number;
  precision: string;
  torch_tokens_per_s: number;
  torch_cpu_ms_per_step: number;
  torch_peak_rss_mb: number;
  torch_config: string;
  /** Our configuration that won ("1 thread", "2 threads"). */
  ours_config: string;
}

/** `lo–hi` of numbers, with `digits` decimals and thousands separators; one value alone. */
export function range(xs: readonly number[], digits = 0): string {
  const f = (x: number) =>
    x.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
  const lo = Math.min(...xs), hi = Math.max(...xs);
  return f(lo) === f(hi) ? f(lo) : `${f(lo)}–${f(hi)}`;
}

/** The configuration that won most often ("openblas-openmp, 2 threads"), without the path. */
function usualConfig(rs: readonly PairResult[], which: (r: PairResult) => string): string {
  const counts = new Map<string, number>();
  for (const r of rs) {
    const c = which(r).replace(/ \(.*\)$/, "");
    counts.set(c, (counts.get(c) ?? 0) + 1);
  }
  const [best, n] = [...counts].sort((a, b) => b[1] - a[1])[0];
  return n === rs.length ? best : `${best} in ${n} of ${rs.length}`;
}

/**
 * The markdown table: per row, our tokens/s and PyTorch's over the runs, the ratio of each run's
 * pair (ours / PyTorch), CPU ms per step and the largest peak RSS of each side.
 *
 * @param results each row's label and its runs' results, in table order
 * @returns the table, one line per row after the header
 */
export function compareTable(results: readonly { label: string; runs: PairResult[] }[]): string {
  const lines = [
    "| model, batch | MiniMind.ts tok/s | PyTorch tok/s | ratio (ours / PyTorch) | CPU ms/step ours / PyTorch | peak RSS ours / PyTorch | configs (ours; PyTorch) |",
    "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
  ];
  for (const { label, runs } of results) {
    if (runs.length === 0) continue;
    const col = (f: (r: PairResult) => number, d = 0) => range(runs.map(f), d);
    lines.push(
      `| ${label} | ${col((r) => r.tokens_per_s)} | ${col((r) => r.torch_tokens_per_s)} | ${
        col((r) => r.tokens_per_s / r.torch_tokens_per_s, 2)
      } | ${col((r) => r.cpu_ms_per_step)} / ${col((r) => r.torch_cpu_ms_per_step)} | ${
        Math.max(...runs.map((r) => r.peak_rss_mb)).toFixed(0)
      } / ${Math.max(...runs.map((r) => r.torch_peak_rss_mb)).toFixed(0)} MB | ${
        usualConfig(runs, (r) => r.ours_config)
      }; ${usualConfig(runs, (r) => r.torch_config)} |`,
    );
  }
  return lines.join("\n");
}

function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(", ");
  } catch {
    return "unknown";
  }
}

function cpuModel(): string {
  try {
    const m = Deno.readTextFileSync("/proc/cpuinfo").match(/model name\s*:\s*(.*)/);
    return m ? m[1].trim() : "unknown CPU";
  } catch {
    return "unknown CPU";
  }
}

/** Our configurations: every library's threads at 1, and everything at its default (the cores). */
const OURS: readonly { label: string; env: Record<string, string> }[] = [
  {
    label: "1 thread",
    env: {
      OPENBLAS_NUM_THREADS: "1",
      MINIMIND_SIMD_THREADS: "1",
      MINIMIND_CPU_THREADS: "1",
      OMP_NUM_THREADS: "1",
    },
  },
  { label: `${navigator.hardwareConcurrency} threads`, env: {} },
];

/** Runs `bench:train` with `extra` flags under `env` and returns its JSON line. */
async function benchTrain(
  row: CompareRow,
  extra: string[],
  env: Record<string, string>,
): Promise<Record<string, unknown>> {
  const script = new URL("./train_bench.ts", import.meta.url).pathname;
  const args = ["run", "-A", script, "--device", "cpu", ...extra, ...row.args];
  const out = await new Deno.Command(Deno.execPath(), { args, env, stderr: "inherit" }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (out.code !== 0) {
    throw new Error(`bench:train ${args.slice(3).join(" ")} failed (exit ${out.code}): ${text}`);
  }
  const line = text.split("\n").pop()!;
  console.error(line);
  return JSON.parse(line);
}

/**
 * One run of a row: ours at 1 thread, then ours at the default threads followed by PyTorch at its
 * best; our better configuration is kept, as PyTorch's is.
 */
async function runPair(row: CompareRow, steps: number, warmup: number): Promise<PairResult> {
  const flags = ["--steps", String(steps), "--warmup", String(warmup)];
  const single = await benchTrain(row, flags, OURS[0].env);
  const pair = await benchTrain(row, [...flags, "--torch", "1"], OURS[1].env);
  const best = (single.tokens_per_s as number) > (pair.tokens_per_s as number)
    ? { ...pair, ...pick(single), ours_config: OURS[0].label }
    : { ...pair, ours_config: OURS[1].label };
  return best as unknown as PairResult;
}

/** Our side's fields of a `bench:train` line. */
function pick(r: Record<string, unknown>): Record<string, unknown> {
  const { tokens_per_s, cpu_ms_per_step, peak_rss_mb, precision } = r;
  return { tokens_per_s, cpu_ms_per_step, peak_rss_mb, precision };
}

async function main(argv: string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "PyTorch vs ours on the CPU: the README's table.", FLAGS));
    return 0;
  }
  const ids = a.rows.split(",").map((s) => s.trim()).filter((s) => s);
  const rows = ids.map((id) => {
    const r = ROWS.find((x) => x.id === id);
    if (!r) {
      throw new Error(
        `--rows: unknown row "${id}"; valid rows are ${ROWS.map((x) => x.id).join(", ")}`,
      );
    }
    return r;
  });
  const loadBefore = loadAverage();
  const t0 = performance.now();
  const results = rows.map((r) => ({ label: r.label, runs: [] as PairResult[] }));
  for (let run = 1; run <= a.runs; run++) {
    for (const [i, row] of rows.entries()) {
      console.error(`run ${run}/${a.runs}: ${row.label}`);
      results[i].runs.push(await runPair(row, a.steps, a.warmup));
    }
  }
  const minutes = (performance.now() - t0) / 60000;
  const bf16 = results.flatMap((r) => r.runs).find((r) => /bfloat16/.test(r.precision));
  console.log(compareTable(results));
  console.log();
  console.log(
    `${a.runs} interleaved runs of ${a.steps} timed steps (+${a.warmup} warm-up) per side, ` +
      `${navigator.hardwareConcurrency} cores (${cpuModel()}), load average ${loadBefore} before ` +
      `and ${loadAverage()} after, ${minutes.toFixed(1)} min, ${new Date().toISOString()}. ` +
      `Each side the better of 1 thread and all threads per run (PyTorch on the OpenMP OpenBLAS).` +
      (bf16 ? ` Our bf16 row: ${bf16.precision}.` : "") +
      ` Command: ${COMMAND} ${argv.join(" ")}`.trimEnd() + ".",
  );
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
