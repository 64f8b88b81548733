import assert from "node:assert/strict";
import { join } from "node:path";
import { Tokenizer } from "../data/tokenizer.ts";
import { PretrainDataset } from "../data/datasets.ts";
import { dispose, flatten, mapTree } from "../nn/tree.ts";
import type { Tree } from "../nn/tree.ts";
import { Tensor } from "../nn/tensor.ts";
import { scalar } from "../nn/creation.ts";
import { add, sub } from "../nn/ops/binary.ts";
import { affine, mul } from "../nn/ops/arith.ts";
import { square } from "../nn/ops/unary.ts";
import { sum } from "../nn/ops/reduce.ts";
import { fixture } from "../tests/_util.ts";
import { parseFlags } from "../cli.ts";
import { lmBatch, lmFlags, lmLoss, runLm } from "./lm.ts";
import type { LmRunResult } from "./lm.ts";
import { loadResume } from "./checkpoint.ts";
import { learningRateSchedule, runTraining } from "./loop.ts";
import { getLr } from "./schedule.ts";
import { MetricsWriter, NonFiniteLossError } from "./metrics.ts";
import { makeTrainStep } from "./step.ts";
import { savedField, stepTrainer } from "./trainer.ts";
import type { Trainer } from "./trainer.ts";
import type { TrainState } from "./step.ts";
import { Progress } from "./progress.ts";
import { DataLoader } from "../data/loader.ts";
import { adamw } from "./optim.ts";
import { init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";

const POEMS = [
  "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
  "白日依山盡，黃河入海流。欲窮千里目，更上一層樓。",
  "春眠不覺曉，處處聞啼鳥。夜來風雨聲，花落知多少。",
  "紅豆生南國，春來發幾枝。願君多采擷，此物最相思。",
  "千山鳥飛絕，萬徑人蹤滅。孤舟蓑笠翁，獨釣寒江雪。",
  "松下問童子，言師採藥去。只在此山中，雲深不知處。",
];
const TEXTS = Array.from({ length: 36 }, (_, i) => ({ text: `${i}：${POEMS[i % POEMS.length]}` }));
const tok = await Tokenizer.fromFile(fixture("minimind/minimind2"));
const quiet = () => new Progress({ tty: false, write: () => {} });

function args(dir: string, extra: string[] = []) {
  return parseFlags(
    [
      ...["--hidden_size", "32", "--num_hidden_layers", "2", "--num_attention_heads", "4"],
      ...["--batch_size", "4", "--max_seq_len", "24", "--accumulation_steps", "3"],
      ...["--learning_rate", "1e-3", "--log_interval", "1", "--save_interval", "1000"],
      ...["--epochs", "3"],
      ...["--save_dir", join(dir, "out"), "--checkpoint_dir", join(dir, "ck"), "--device", "cpu"],
      ...extra,
    ],
    lmFlags({
      saveWeight: "pretrain",
      epochs: 2,
      batchSize: 4,
      learningRate: 1e-3,
      accumulationSteps: 1,
      maxSeqLen: 24,
      fromWeight: "none",
    }),
    "test",
  );
}

async function run(dir: string, extra: string[], stopAfter?: number): Promise<LmRunResult> {
  const { values, given } = args(dir, extra);
  const dataset = new PretrainDataset(TEXTS, tok, { maxLength: values.max_seq_len });
  return await runLm({
    args: values,
    given,
    dataset,
    tokenizer: tok,
    stopAfter,
    progress: quiet(),
    handleSigint: false,
  });
}

async function bits(t: Tree): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, v] of Object.entries(flatten(t))) {
    const d = await v.data();
    out[k] = [...new Uint32Array(d.buffer, d.byteOffset, d.length)];
  }
  return out;
}

Deno.test("--from_resume 1 continues bit-exactly: 20 steps straight = 10 + resume + 10", async () => {
  const a = await Deno.makeTempDir(), b = await Deno.makeTempDir();
  // accumulation 3 and an epoch of 9 batches: the stop at 10 falls inside a group, in epoch 2
  const straight = await run(a, ["--max_steps", "20"]);
  const first = await run(b, ["--max_steps", "20"], 10);
  assert.ok(first.interrupted);
  assert.equal(first.steps, 10);
  const { info, state } = await loadResume(first.files.resume);
  assert.deepEqual([info.epoch, info.step, state.micro], [1, 1, 1]);
  const second = await run(b, ["--max_steps", "20", "--from_resume", "1"]);
  assert.ok(!second.interrupted);
  assert.equal(second.steps, 20);
  assert.equal(second.updates, straight.updates);
  assert.deepEqual([...first.losses, ...second.losses], straight.losses);
  assert.deepEqual(await bits(second.params), await bits(straight.params));
  // metrics continue in the same file; the weights file is final
  assert.equal(MetricsWriter.read(second.files.metrics).length, 20);
  assert.deepEqual(
    MetricsWriter.read(second.files.metrics).map((r) => r.globalStep),
    [
      ...Array(20).keys(),
    ].map((i) => i + 1),
  );
  for (const d of [a, b]) await Deno.remove(d, { recursive: true });
});

Deno.test("a NaN loss stops the run naming the step; the last checkpoint stays intact", async () => {
  const dir = await Deno.makeTempDir();
  const cfg = config("minimind2-small", {
    hiddenSize: 32,
    numHiddenLayers: 1,
    numAttentionHeads: 4,
    vocabSize: tok.vocabSize,
  });
  const base = lmLoss(cfg);
  let calls = 0;
  const lossFn = (
    p: Tree,
    b: Parameters<typeof base>[1],
  ): [ReturnType<typeof mul>, ReturnType<typeof mul>] => {
    const [l, aux] = base(p, b);
    return ++calls === 7 ? [mul(l, NaN), aux] : [l, aux];
  };
  const opts = {
    stem: "pretrain_32",
    saveDir: join(dir, "out"),
    checkpointDir: join(dir, "ck"),
    loader: new DataLoader(new PretrainDataset(TEXTS, tok, { maxLength: 16 }), { batchSize: 4 }),
    toBatch: lmBatch,
    trainer: stepTrainer(makeTrainStep(lossFn, adamw(), { gradClip: 1, hasAux: true })),
    params: init(cfg, key(0)) as unknown as Tree,
    epochs: 1,
    learningRate: 1e-3,
    logInterval: 100,
    saveInterval: 3,
    resume: false,
    seed: 42,
    saveWeights: async () => {},
    progress: quiet(),
    handleSigint: false,
  };
  await assert.rejects(
    () => runTraining(opts),
    (e: Error) => {
      assert.ok(e instanceof NonFiniteLossError);
      assert.match(e.message, /Loss is NaN at epoch 1 step 7\/9/);
      assert.match(e.message, /epoch 1 step 6\) is intact/);
      return true;
    },
  );
  const { info } = await loadResume(join(dir, "ck", "pretrain_32_resume.safetensors"));
  assert.equal(info.step, 6);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("Ctrl-C in deno task pretrain saves a resume checkpoint and exits 130", async () => {
  const dir = await Deno.makeTempDir();
  const data = join(dir, "data.jsonl");
  await Deno.writeTextFile(data, TEXTS.map((t) => JSON.stringify(t)).join("\n") + "\n");
  const common = [
    "run",
    "-A",
    new URL("./pretrain.ts", import.meta.url).pathname,
    ...["--data_path", data, "--tokenizer_path", fixture("minimind/minimind2")],
    ...["--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "4"],
    ...["--batch_size", "2", "--max_seq_len", "24", "--epochs", "50", "--log_interval", "1"],
    ...["--save_dir", join(dir, "out"), "--checkpoint_dir", join(dir, "ck"), "--device", "cpu"],
  ];
  const child = new Deno.Command(Deno.execPath(), {
    args: common,
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let out = "";
  while (!out.includes("Epoch:[1/50](3/")) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  child.kill("SIGINT");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    out += value;
  }
  const status = await child.status;
  await child.stderr.cancel();
  assert.equal(status.code, 130, out);
  // how far it ran before the signal landed depends on the machine: a fast one may finish
  // the first epoch first
  const saved = out.match(
    /Saved .*pretrain_32_resume\.safetensors at epoch (\d+) step (\d+)\/18; continue with --from_resume 1/,
  );
  assert.ok(saved, `no save line: ${out}`);
  const { info } = await loadResume(join(dir, "ck", "pretrain_32_resume.safetensors"));
  assert.deepEqual([Number(saved[1]), Number(saved[2])], [info.epoch + 1, info.step], out);
  // it stops after the step in progress when the signal lands (how many steps the child ran
  // before that depends on the pipe and the machine, not on the loop). A step's line is printed
  // once the next step is encoded, so when the notice appears the step before the one in
  // progress may still be unlogged: at most two steps are logged after the notice, and the
  // checkpoint is the last logged step
  const notice = out.indexOf("Ctrl-C: saving a resume checkpoint after this step");
  assert.ok(notice > 0, `no Ctrl-C notice: ${out}`);
  const after = [...out.slice(notice).matchAll(/Epoch:\[(\d+)\/50\]\((\d+)\/18\)/g)];
  assert.ok(after.length <= 2, `stopped late: ${out}`);
  const steps = [...out.matchAll(/Epoch:\[(\d+)\/50\]\((\d+)\/18\)/g)];
  const lastLogged = steps.at(-1)!;
  const at = info.epoch * 18 + info.step;
  assert.equal(at, (Number(lastLogged[1]) - 1) * 18 + Number(lastLogged[2]), out);
  assert.ok(at < 50 * 18, `ran to the end: ${out}`);
  // resuming picks up where it stopped
  const again = await new Deno.Command(Deno.execPath(), {
    args: [...common, "--from_resume", "1", "--max_steps", String(at + 2)],
  }).output();
  const text = new TextDecoder().decode(again.stdout);
  assert.equal(again.code, 0, text + new TextDecoder().decode(again.stderr));
  assert.match(text, new RegExp(`Resuming from .* epoch ${info.epoch + 1}, step ${info.step}/18`));
  const end = at + 2;
  assert.match(
    text,
    new RegExp(`Epoch:\\[${Math.floor((end - 1) / 18) + 1}/50\\]\\(${(end - 1) % 18 + 1}/18\\)`),
  );
  await Deno.remove(dir, { recursive: true });
});

Deno.test("CLI flag errors name the flag and list the valid choices", async () => {
  const bad = (argv: string[]) => () => args("/tmp", argv);
  assert.throws(
    bad(["--bogus", "1"]),
    /Unknown flag --bogus for test\. Valid flags: --save_dir, .*--epochs/,
  );
  assert.throws(
    bad(["--device", "cuda:0"]),
    /Invalid --device "cuda:0": expected one of auto, cpu, webgpu/,
  );
  assert.throws(bad(["--batch_size", "0"]), /Invalid --batch_size "0": expected an integer ≥ 1/);
  assert.throws(bad(["--from_resume", "yes"]), /Invalid --from_resume "yes": expected 0 or 1/);
  assert.throws(bad(["--epochs"]), /Missing a value after --epochs/);
  assert.equal(args("/tmp", ["--learning-rate=3e-4"]).values.learning_rate, 3e-4);
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./sft.ts", import.meta.url).pathname, "--preset", "gpt2"],
  }).output();
  assert.equal(r.code, 2);
  assert.match(
    new TextDecoder().decode(r.stderr),
    /Invalid --preset "gpt2": expected one of minimind2-small, minimind2, minimind2-moe, minimind3, minimind3-moe/,
  );
});

Deno.test("metrics time each step between steps' ends, also on log steps (two losses read at once)", async () => {
  const dir = await Deno.makeTempDir();
  const r = await run(dir, [
    "--max_steps",
    "16",
    "--log_interval",
    "2",
    "--accumulation_steps",
    "1",
  ]);
  const recs = MetricsWriter.read(r.files.metrics).slice(2); // the first steps include compilation
  const rates = recs.map((x) => x.tokensPerS).sort((a, b) => a - b);
  const median = rates[rates.length >> 1];
  assert.ok(median > 0);
  // a log step's record once divided by the microseconds between two reads: ~100× the median
  for (const x of recs) {
    assert.ok(
      x.tokensPerS < 10 * median,
      `step ${x.globalStep}: ${x.tokensPerS.toFixed(0)} tokens/s against a median of ${median}`,
    );
  }
});

// A trainer of its own, as a PPO/GRPO/DPO trainer plugs in: its state holds the policy's
// TrainState, a frozen reference model and a running value; its step reports an extra scalar.
type RefBatch = { ids: Tensor; labels: Tensor; ref: Tree };
type RefState = { policy: TrainState; ref: Tree; seen: number };

function refTrainer(cfg: MiniMindConfig): Trainer<RefState, { ids: Tensor; labels: Tensor }> {
  const lm = lmLoss(cfg);
  // LM loss + 0.1 · Σ(θ − θ_ref)² (a KL-like pull to the reference); aux = the penalty
  const policy = stepTrainer(makeTrainStep(
    (p: Tree, b: RefBatch): [Tensor, Tensor] => {
      const [loss] = lm(p, b);
      const pairs = Object.entries(flatten(p)).map(([k, w]) => [w, flatten(b.ref)[k]]);
      const pen = pairs.reduce(
        (acc: Tensor | null, [w, r]) => {
          const d = sum(square(sub(w, r)));
          return acc ? add(acc, d) : d;
        },
        null,
      )!;
      return [add(loss, affine(pen, 0.1)), pen];
    },
    adamw(),
    { accumulationSteps: 3, hasAux: true },
  ));
  const copy = (t: Tree) => mapTree(t, (x) => (x instanceof Tensor ? affine(x, 1) : x));
  return {
    init: (params) => ({ policy: policy.init(params), ref: copy(params), seen: 0 }),
    restore: (saved, path) => ({
      policy: policy.restore(savedField(saved, "policy", path), path),
      ref: savedField(saved, "ref", path),
      seen: Number(savedField(saved, "seen", path)),
    }),
    step: (s, batch, hyper) => {
      const [next, out] = policy.step(s.policy, { ...batch, ref: s.ref }, hyper);
      const seen = s.seen + batch.ids.shape[0];
      return [{ ...s, policy: next, seen }, { ...out, scalars: { seen: scalar(seen) } }];
    },
    weights: (s) => s.policy.params,
    updates: (s) => s.policy.updates,
    flush: (s, hyper) => {
      const next = policy.flush?.(s.policy, hyper);
      return next ? { ...s, policy: next } : null;
    },
  };
}

Deno.test("a trainer of its own plugs into the loop: extra state trees resume bit-exactly", async () => {
  const cfg = config("minimind2-small", {
    hiddenSize: 32,
    numHiddenLayers: 1,
    numAttentionHeads: 4,
    vocabSize: tok.vocabSize,
  });
  const dir = await Deno.makeTempDir();
  const go = (sub: string, stopAfter?: number, resume = false) =>
    runTraining({
      trainer: refTrainer(cfg),
      params: init(cfg, key(0)) as unknown as Tree,
      stem: "ref_32",
      saveDir: join(dir, sub, "out"),
      checkpointDir: join(dir, sub, "ck"),
      loader: new DataLoader(new PretrainDataset(TEXTS, tok, { maxLength: 16 }), { batchSize: 5 }),
      toBatch: lmBatch,
      epochs: 2,
      learningRate: 1e-2,
      logInterval: 100,
      saveInterval: 1000,
      resume,
      seed: 42,
      stopAfter,
      saveWeights: async () => {},
      progress: quiet(),
      handleSigint: false,
    });
  const straight = await go("a");
  const first = await go("b", 10); // epoch 2 step 2: inside an accumulation group
  assert.ok(first.interrupted);
  // the checkpoint holds the trainer's whole state: the reference model and the running value
  const resumePath = first.files.resume;
  const saved = await loadResume(resumePath, (t, p) => refTrainer(cfg).restore(t, p));
  const rows = [...Array(2)].flatMap(() => [5, 5, 5, 5, 5, 5, 5, 1]); // 36 texts in batches of 5
  const seenAfter = rows.map((_, i) => rows.slice(0, i + 1).reduce((a, b) => a + b));
  assert.equal(saved.state.seen, seenAfter[9]);
  assert.equal(saved.state.policy.micro, 2);
  assert.deepEqual(await bits(saved.state.ref), await bits(init(cfg, key(0)) as unknown as Tree));
  dispose(saved.state);
  // a checkpoint of another trainer is refused naming the missing field
  await assert.rejects(
    () => loadResume(resumePath),
    /has no field "params" \(it holds policy, ref, seen\)/,
  );
  const second = await go("b", undefined, true);
  assert.deepEqual([...first.losses, ...second.losses], straight.losses);
  assert.equal(second.updates, straight.updates);
  assert.deepEqual(await bits(second.params), await bits(straight.params));
  // the step's own scalars land in the metrics, continuing across the resume
  const seen = MetricsWriter.read(second.files.metrics).map((r) => r.scalars?.seen);
  assert.deepEqual(seen, seenAfter);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("--warmup_steps: linear warmup to the peak, then cosine to a tenth at the last step", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const r = await run(dir, [
      "--max_steps",
      "12",
      "--warmup_steps",
      "4",
      "--accumulation_steps",
      "1",
    ]);
    const lr = MetricsWriter.read(r.files.metrics).map((x) => x.lr);
    assert.equal(lr.length, 12);
    // warmupCosine: (step + 1) / (warmup + 1) of the peak 1e-3 for steps 0..3, the peak at 4
    [0.2e-3, 0.4e-3, 0.6e-3, 0.8e-3, 1e-3].forEach((want, i) =>
      assert.ok(Math.abs(lr[i] - want) < 1e-12, `step ${i + 1}: lr ${lr[i]}, want ${want}`)
    );
    for (let i = 5; i < 12; i++) assert.ok(lr[i] < lr[i - 1], `cosine decays at step ${i + 1}`);
    assert.ok(Math.abs(lr[11] - 1e-4) < 1e-12, `last lr ${lr[11]}`);
    assert.throws(
      () => learningRateSchedule(1e-3, 11, 12),
      /Invalid --warmup_steps 11: the run has 12 steps/,
    );
    // without the flag: MiniMind's get_lr, which starts at the peak
    assert.equal(learningRateSchedule(1e-3, 0, 12)(1), getLr(1, 12, 1e-3));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pretrain checks --data_path before training a tokenizer or writing anything", async () => {
  const cwd = await Deno.makeTempDir();
  try {
    const t0 = performance.now();
    const r = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        new URL("./pretrain.ts", import.meta.url).pathname,
        "--data_path",
        "missing.jsonl",
      ],
      cwd,
    }).output();
    assert.equal(r.code, 2);
    assert.match(
      new TextDecoder().decode(r.stderr),
      /Invalid --data_path missing\.jsonl: no such file/,
    );
    assert.deepEqual([...Deno.readDirSync(cwd)], [], "no tokenizer, corpus or output folder");
    assert.ok(performance.now() - t0 < 30_000);
  } finally {
    await Deno.remove(cwd, { recursive: true });
  }
});
