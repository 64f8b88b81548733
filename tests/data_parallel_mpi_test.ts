/**
 * Data parallel end to end under Open MPI: `mpirun -np 2 deno run -A train/pretrain.ts` with
 * `--batch_size 2` against one process with `--batch_size 4` (same seed, tiny model, 10 steps),
 * a 2-rank checkpoint resumed by a 2-rank run, a 1-rank resume of it refused, and a rank that
 * never reaches a collective named by the others. Needs `mpirun` (Debian `openmpi-bin`).
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fixture } from "./_util.ts";
import { loadWeights } from "../train/checkpoint.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const PRETRAIN = join(ROOT, "train/pretrain.ts");
const POEMS = [
  "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
  "白日依山盡，黃河入海流。",
  "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
  "紅豆生南國，春來發幾枝。願君多采擷，此物最相思。",
  "千山鳥飛絕。",
  "松下問童子，言師採藥去。只在此山中，雲深不知處。",
];

/** mpirun's own flags: root in CI, and 2 ranks on machines with fewer free slots. */
function mpirun(np: number): string[] {
  const cmd = ["mpirun", "--oversubscribe", "-np", String(np)];
  if (Deno.uid() === 0) cmd.push("--allow-run-as-root");
  return [...cmd, "-x", "MINIMIND_DIST_TIMEOUT", "-x", "OPENBLAS_NUM_THREADS", "-x", "NO_COLOR"];
}

async function run(cmd: string[]): Promise<{ code: number; out: string }> {
  const p = await new Deno.Command(cmd[0], {
    args: cmd.slice(1),
    env: { MINIMIND_DIST_TIMEOUT: "60", OPENBLAS_NUM_THREADS: "1", NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output().catch((e) => {
    throw new Error(`Cannot run ${cmd[0]} (apt-get install openmpi-bin): ${e.message}`);
  });
  const dec = new TextDecoder();
  return { code: p.code, out: dec.decode(p.stdout) + dec.decode(p.stderr) };
}

async function pretrain(np: number, dir: string, data: string, extra: string[]) {
  const args = [
    ...["run", "-A", PRETRAIN, "--data_path", data, "--tokenizer_path"],
    fixture("minimind/minimind2"),
    ...["--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "4"],
    ...["--num_key_value_heads", "2", "--max_seq_len", "24", "--accumulation_steps", "2"],
    ...["--learning_rate", "2e-3", "--log_interval", "1", "--save_interval", "1000"],
    ...["--max_steps", "10", "--device", "cpu", "--seed", "5"],
    ...["--save_dir", join(dir, "out"), "--checkpoint_dir", join(dir, "ck"), ...extra],
  ];
  const r = await run(
    np > 1 ? [...mpirun(np), Deno.execPath(), ...args] : [Deno.execPath(), ...args],
  );
  return r;
}

function losses(dir: string): number[] {
  const lines = Deno.readTextFileSync(join(dir, "out", "pretrain_32_metrics.jsonl")).trim();
  return lines.split("\n").map((l) => JSON.parse(l).loss);
}

async function weights(dir: string): Promise<Record<string, Float32Array>> {
  const w = await loadWeights(join(dir, "out", "pretrain_32.safetensors"));
  const out: Record<string, Float32Array> = {};
  for (const [k, t] of Object.entries(w.tensors)) {
    out[k] = (await t.data()) as Float32Array;
    t.dispose();
  }
  return out;
}

Deno.test("mpirun -np 2 pretrain = one process with the global batch; 2-rank resume is bit-exact", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "mm_dp_" });
  try {
    const data = join(tmp, "poems.jsonl");
    // 21 texts, global batch 4: 6 steps an epoch, the last with 1 row (rank 1 has none)
    const texts = Array.from({ length: 21 }, (_, i) => ({ text: `${i}${POEMS[i % 6]}` }));
    await Deno.writeTextFile(data, texts.map((t) => JSON.stringify(t)).join("\n") + "\n");
    const [dp, one] = [join(tmp, "dp"), join(tmp, "one")];
    const a = await pretrain(2, dp, data, ["--batch_size", "2", "--epochs", "2"]);
    assert.equal(a.code, 0, a.out);
    assert.match(a.out, /Data parallel: 2 ranks \(mpi\), 2 rows each, global batch 4/);
    const b = await pretrain(1, one, data, ["--batch_size", "4", "--epochs", "2"]);
    assert.equal(b.code, 0, b.out);

    // per-step losses: f32 summation order only (the ranks' token means recombined by weight)
    const [la, lb] = [losses(dp), losses(one)];
    assert.equal(la.length, 10);
    assert.equal(lb.length, 10);
    for (let i = 0; i < 10; i++) {
      assert.ok(Math.abs(la[i] - lb[i]) <= 1e-5 * lb[i], `step ${i + 1}: ${la[i]} vs ${lb[i]}`);
    }
    const [wa, wb] = [await weights(dp), await weights(one)];
    let maxDiff = 0;
    for (const [k, want] of Object.entries(wb)) {
      for (let i = 0; i < want.length; i++) {
        maxDiff = Math.max(maxDiff, Math.abs(wa[k][i] - want[i]));
      }
    }
    assert.ok(maxDiff < 2e-5, `final params within 2e-5 of one process: max |diff| ${maxDiff}`);
    const rel = Math.max(...la.map((l, i) => Math.abs(l - lb[i]) / lb[i]));
    console.log(
      `losses ${la.map((l) => l.toFixed(4)).join(" ")}; max rel diff ${rel.toExponential(2)}, ` +
        `max param diff ${maxDiff.toExponential(2)}`,
    );

    // a 2-rank run stopped after 3 steps, resumed by a 2-rank run: bit-exact
    const rs = join(tmp, "resume");
    const c = await pretrain(2, rs, data, [
      "--batch_size",
      "2",
      "--epochs",
      "2",
      "--stop_after",
      "3",
    ]);
    assert.equal(c.code, 130, c.out);
    assert.equal(losses(rs).length, 3);
    await Deno.mkdir(join(tmp, "copy"));
    await Deno.copyFile(
      join(rs, "ck", "pretrain_32_resume.safetensors"),
      join(tmp, "copy", "pretrain_32_resume.safetensors"),
    );
    const d = await pretrain(2, rs, data, [
      "--batch_size",
      "2",
      "--epochs",
      "2",
      "--from_resume",
      "1",
    ]);
    assert.equal(d.code, 0, d.out);
    assert.match(d.out, /Resuming from .*: epoch 1, step 3\/6/);
    assert.deepEqual(losses(rs), la, "the resumed run's losses are the uninterrupted run's");
    assert.deepEqual(await weights(rs), wa, "and so are its final params, bit for bit");

    // one process cannot continue a 2-rank checkpoint
    const e = await pretrain(1, rs, data, [
      ...["--batch_size", "4", "--epochs", "2", "--from_resume", "1"],
      ...["--checkpoint_dir", join(tmp, "copy")],
    ]);
    assert.equal(e.code, 1, e.out);
    assert.match(e.out, /written by a 2-rank run.*this run has 1 rank/);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("mpirun: a rank that never reaches an all-reduce is named by the others", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "mm_dp_" });
  try {
    const script = join(tmp, "hang.ts");
    const mpi = new URL("../train/dist/mpi.ts", import.meta.url).href;
    await Deno.writeTextFile(
      script,
      `import { openMpi } from "${mpi}";
const comm = openMpi({ timeoutMs: 1500 });
const x = new Float32Array([comm.rank + 1]);
await comm.allReduceSum(x);
console.log("rank " + comm.rank + " sum " + x[0]);
if (comm.rank === 1) await new Promise((r) => setTimeout(r, 20_000)); // hangs
try {
  await comm.allReduceSum(x);
} catch (e) {
  console.log(e.message);
  comm.abort(3);
}
`,
    );
    const t0 = performance.now();
    const r = await run([...mpirun(2), Deno.execPath(), "run", "-A", script]);
    assert.match(r.out, /rank 0 sum 3/);
    assert.match(
      r.out,
      /Rank 0: all-reduce #1 \(1 values\) did not complete within 1.5 s: rank 1 never reached it/,
    );
    assert.notEqual(r.code, 0);
    assert.ok(performance.now() - t0 < 15_000, "the job ended long before the hung rank woke up");
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
