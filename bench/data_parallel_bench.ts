/**
 * `deno task bench:dp` — data parallel on one machine: tokens/s of `mpirun -np N` with one BLAS
 * thread per rank against one process with N BLAS threads, on the same global batch, runs
 * interleaved (A B A B …) so a load change on a shared machine hits both sides; also the
 * all-reduce time per step. Each run is `bench/train_bench.ts` (random tokens, full train step).
 *
 *   deno task bench:dp --model demo --global_batch 16 --max_seq_len 128 --rounds 2
 *   deno task bench:dp --model minimind2-small --global_batch 4 --max_seq_len 256
 *
 * `deno bench bench/data_parallel_bench.ts` times the gradient all-reduce itself (`allReduceSum`
 * of an in-process group of 2 ranks) at the demo model's and MiniMind2-Small's gradient sizes.
 * @module
 */
import { parseFlags, runMain, usage } from "../cli.ts";
import { DEMO_MODEL, modelFlags } from "../demo.ts";
import { inProcessGroup } from "../train/dist/comm.ts";
import { countParams } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import type { FlagTable } from "../cli.ts";

/** The benchmark's flags. */
export const DP_BENCH_FLAGS = {
  model: {
    type: "choice",
    default: "demo",
    choices: ["demo", "minimind2-small"],
    help: "demo = hidden 192, 4 layers, 6/2 heads (the demo's model)",
  },
  ranks: { type: "int", default: 2, min: 2, help: "mpirun -np N (and N threads for one process)" },
  global_batch: { type: "int", default: 16, min: 2, help: "sequences per step over all ranks" },
  max_seq_len: { type: "int", default: 128, min: 2, help: "tokens per sequence" },
  steps: { type: "int", default: 4, min: 1, help: "timed steps per run" },
  rounds: { type: "int", default: 2, min: 1, help: "interleaved repetitions of both sides" },
} satisfies FlagTable;

const COMMAND = "deno task bench:dp";

/** One `bench/train_bench.ts` run: its JSON line. */
async function trainBench(
  launch: string[],
  env: Record<string, string>,
  args: string[],
): Promise<Record<string, number>> {
  const script = new URL("./train_bench.ts", import.meta.url).pathname;
  const cmd = [...launch, Deno.execPath(), "run", "-A", script, ...args, "--device", "cpu"];
  const out = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    env,
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (out.code !== 0 || !text) {
    throw new Error(
      `${cmd.join(" ")} failed (exit ${out.code}): ${new TextDecoder().decode(out.stderr).trim()}`,
    );
  }
  return JSON.parse(text.split("\n").pop()!);
}

/**
 * Runs the benchmark.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, DP_BENCH_FLAGS, COMMAND);
  if (help) {
    console.log(usage(COMMAND, "Data parallel (mpirun) vs threads, tokens/s.", DP_BENCH_FLAGS));
    return 0;
  }
  const N = a.ranks;
  if (a.global_batch % N !== 0) {
    throw new Error(`Invalid --global_batch ${a.global_batch}: not a multiple of --ranks ${N}`);
  }
  const model = a.model === "demo" ? modelFlags(DEMO_MODEL) : ["--preset", "minimind2-small"];
  const common = [...model, "--max_seq_len", String(a.max_seq_len), "--steps", String(a.steps)];
  const mpirun = ["mpirun", "--oversubscribe", "-np", String(N), "-x", "OPENBLAS_NUM_THREADS"];
  if (Deno.uid?.() === 0) mpirun.splice(1, 0, "--allow-run-as-root");
  const rows: string[] = [];
  const dp: number[] = [], solo: number[] = [], reduce: number[] = [], wait: number[] = [];
  for (let r = 0; r < a.rounds; r++) {
    const d = await trainBench(mpirun, { OPENBLAS_NUM_THREADS: "1" }, [
      ...common,
      "--batch_size",
      String(a.global_batch / N),
    ]);
    const s = await trainBench([], { OPENBLAS_NUM_THREADS: String(N) }, [
      ...common,
      "--batch_size",
      String(a.global_batch),
    ]);
    dp.push(d.tokens_per_s), solo.push(s.tokens_per_s);
    reduce.push(d.allreduce_ms_per_step), wait.push(d.wait_ms_per_step);
    rows.push(
      `round ${r + 1}: mpirun -np ${N} ×1 thread ${d.tokens_per_s} tok/s ` +
        `(${d.ms_per_step} ms/step, all-reduce ${d.allreduce_ms_per_step} ms + waiting for ` +
        `the other rank ${d.wait_ms_per_step} ms); ` +
        `1 process ×${N} threads ${s.tokens_per_s} tok/s (${s.ms_per_step} ms/step)`,
    );
    console.error(rows.at(-1));
  }
  const med = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor((x.length - 1) / 2)];
  console.log(JSON.stringify({
    model: a.model,
    ranks: N,
    global_batch: a.global_batch,
    max_seq_len: a.max_seq_len,
    dp_tokens_per_s: dp,
    threads_tokens_per_s: solo,
    allreduce_ms_per_step: reduce,
    wait_ms_per_step: wait,
    speedup_median: Math.round(med(dp) / med(solo) * 100) / 100,
  }));
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));

// the all-reduce of one step's gradients (every parameter, f32) between 2 in-process ranks
for (
  const [model, cfg] of [
    ["demo", config("minimind2-small", DEMO_MODEL)],
    ["MiniMind2-Small", config("minimind2-small")],
  ] as const
) {
  const params = countParams(cfg).total;
  const comms = inProcessGroup(2);
  const grads = comms.map(() => new Float32Array(params).fill(0.5));
  Deno.bench({
    name: `allReduceSum, 2 in-process ranks, ${model} (${(params / 1e6).toFixed(1)}M f32)`,
    group: "all-reduce",
    ignore: import.meta.main,
    async fn() {
      await Promise.all(comms.map((c, r) => c.allReduceSum(grads[r])));
    },
  });
}
