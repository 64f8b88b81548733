/**
 * `deno task demo:posttrain` — the post-training stages after `deno task demo`, on the embedded
 * corpus, starting from the demo's SFT model (`out/demo/full_sft_192.safetensors`), each through
 * its trainer (`deno task lora | dpo | distill | reason`) and measured on held-out data:
 *
 * 1. LoRA on Song ci (词) in four tunes — a style the demo model never read (it pretrains on
 *    regulated shi only): share of replies with exactly the requested tune's line pattern, share
 *    of the tune's line positions with the right length, share with the right line count.
 * 2. DPO on the corpus's `dpo.jsonl` (real poem chosen, corrupted poem rejected): **preference
 *    accuracy** (policy margin > 0) on pairs built from held-out poems, before and after, and the
 *    per-token KL of the policy to its reference.
 * 3. Distillation from a larger poetry model (trained here with the demo's recipe at about twice
 *    the size, or reused from an earlier run) into the demo-sized student trained from scratch:
 *    held-out **perplexity** of the student trained with the teacher vs the same student, same
 *    steps and data, on the labels alone, and the teacher's.
 * 4. Reasoning SFT on think-format poem explanations: share of held-out replies (the prompt opens
 *    the think block) in the `<think>…</think><answer>…</answer>` format, and share whose answer
 *    names the poem's form.
 *
 *   deno task demo             # first: the SFT model this starts from
 *   deno task demo:posttrain   # LoRA, DPO, distillation, reasoning SFT + report (README: time)
 * @module
 */
import { join } from "node:path";
import { buildCorpus } from "./data/corpus/build.ts";
import {
  CI_PROMPTS,
  ciStyleData,
  heldoutDpoPairs,
  linePattern,
  patternAgreement,
  reasonRecords,
} from "./data/corpus/posttrain.ts";
import { fill } from "./data/corpus/build.ts";
import { poemForm } from "./data/corpus/poetry.ts";
import { DPODataset, PlainTextDataset, SFTDataset } from "./data/datasets.ts";
import { readTrainingTexts } from "./data/train_tokenizer.ts";
import type { Dataset, DPOSample, LMSample } from "./data/datasets.ts";
import { Tokenizer } from "./data/tokenizer.ts";
import { countParams } from "./nn/model/minimind.ts";
import type { MiniMindParams } from "./nn/model/minimind.ts";
import type { MiniMindConfig } from "./nn/model/minimind_config.ts";
import { dispose } from "./nn/tree.ts";
import type { Tree } from "./nn/tree.ts";
import { loadModel } from "./convert/hf.ts";
import * as lora from "./convert/lora.ts";
import { parseFlags, runMain, usage, UsageError } from "./cli.ts";
import type { FlagTable } from "./cli.ts";
import { runLm, selectDevice } from "./train/lm.ts";
import type { LmRunResult } from "./train/lm.ts";
import { POST_FLAGS, runPost } from "./train/posttrain.ts";
import type { PostArgs, PostKind } from "./train/posttrain.ts";
import { chatReplies, perplexity, preferenceAccuracy } from "./train/scores.ts";
import type { EvalModel } from "./train/scores.ts";
import { formatDuration, Progress } from "./train/progress.ts";
import { type Stage, stageFlags } from "./demo.ts";

/** The flags. */
export const POSTTRAIN_DEMO_FLAGS = {
  device: {
    type: "choice",
    default: "auto",
    choices: ["auto", "cpu", "webgpu"],
    help: "auto = a real GPU if present, else CPU",
  },
  save_dir: { type: "string", default: "out/demo", help: "the demo's folder (model, tokenizer)" },
  from_weight: {
    type: "optional",
    help: "the SFT model (default <save_dir>/full_sft_192.safetensors, from deno task demo)",
  },
  quick: { type: "switch", default: false, help: "a tiny smoke run (few steps, few samples)" },
  seed: { type: "int", default: 42, help: "adapter init, data order and sampling seed" },
  stages: {
    type: "string",
    default: "lora,dpo,distill,reason",
    help: "which stages to run (comma-separated)",
  },
} satisfies FlagTable;

/** A model shape. */
interface Shape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
}

/** Sizes of one run. */
interface Plan {
  lora: Stage & { rank: number; targets: string; tunes: readonly string[] };
  /** `reduction`: the sequence score, trained and measured (MiniMind2 mean, HEAD sum). */
  dpo: Stage & { beta: number; reduction: "sum" | "mean" };
  /** The teacher (pretrained on the poems, then SFT) and the demo-sized student. */
  distill: {
    teacher: Shape & { pretrain: Stage; sft: Stage };
    student: Shape & Stage;
    alpha: number;
    temperature: number;
  };
  reason: Stage;
  /** Generations per tune for the style accuracy. */
  perTune: number;
  /** Held-out DPO pairs. */
  pairs: number;
  /** Held-out conversations for the student's perplexity. */
  pplTexts: number;
  /** Held-out poems for the reasoning check. */
  reasonPrompts: number;
}

/** The demo adapts every Linear (MiniMind's default, the square ones, is q/o only). */
const ALL_LINEARS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj";

/** The Song ci tunes of the LoRA stage. */
const DEMO_TUNES: readonly string[] = ["浣溪沙", "菩萨蛮", "鹧鸪天", "减字木兰花"];

const FULL: Plan = {
  lora: {
    steps: 600,
    batch: 16,
    seqLen: 96,
    lr: 3e-3,
    rank: 16,
    targets: ALL_LINEARS,
    tunes: DEMO_TUNES,
  },
  dpo: { steps: 100, batch: 8, seqLen: 96, lr: 1e-4, beta: 0.15, reduction: "sum" },
  distill: {
    // deno task demo's recipe (pretrain on the packed regulated poems, then SFT on the
    // poem-writing conversations) at about twice the demo model's size
    teacher: {
      hidden: 256,
      layers: 6,
      heads: 8,
      kvHeads: 2,
      pretrain: { steps: 294, batch: 16, seqLen: 128, lr: 4e-3 },
      sft: { steps: 300, batch: 16, seqLen: 160, lr: 1.5e-3 },
    },
    student: {
      hidden: 192,
      layers: 4,
      heads: 6,
      kvHeads: 2,
      steps: 150,
      batch: 16,
      seqLen: 160,
      lr: 2e-3,
    },
    alpha: 0.2,
    temperature: 1,
  },
  reason: { steps: 150, batch: 8, seqLen: 224, lr: 1e-3 },
  perTune: 8,
  pairs: 128,
  pplTexts: 128,
  reasonPrompts: 24,
};

const QUICK: Plan = {
  lora: {
    steps: 4,
    batch: 4,
    seqLen: 64,
    lr: 3e-3,
    rank: 4,
    targets: ALL_LINEARS,
    tunes: DEMO_TUNES,
  },
  dpo: { steps: 4, batch: 2, seqLen: 64, lr: 1e-4, beta: 0.15, reduction: "sum" },
  distill: {
    teacher: {
      hidden: 48,
      layers: 2,
      heads: 4,
      kvHeads: 2,
      pretrain: { steps: 3, batch: 4, seqLen: 32, lr: 3e-3 },
      sft: { steps: 3, batch: 4, seqLen: 64, lr: 2e-3 },
    },
    student: {
      hidden: 32,
      layers: 1,
      heads: 4,
      kvHeads: 2,
      steps: 4,
      batch: 4,
      seqLen: 64,
      lr: 2e-3,
    },
    alpha: 0.2,
    temperature: 1,
  },
  reason: { steps: 4, batch: 2, seqLen: 96, lr: 1e-3 },
  perTune: 1,
  pairs: 8,
  pplTexts: 8,
  reasonPrompts: 4,
};

/** The poem-writing requests of the corpus's SFT data (the task the demo's SFT teaches). */
const COMPOSE_ASK = /^(写一首|请以|作一首|以《)/u;

/** What {@link trainTeacher} needs from the run. */
interface TeacherContext {
  a: { save_dir: string; device: string; seed: number };
  tokenizer: Tokenizer;
  corpus: { pretrain: string };
  sftData: (seqLen: number) => Dataset<LMSample>;
  checkpointDir: string;
  say: (m: string) => void;
  ran: (r: LmRunResult) => void;
}

/**
 * The distillation teacher: `deno task demo`'s recipe (pretrain on the packed regulated poems,
 * then SFT on the poem-writing conversations) at the teacher's size. A teacher file left by an
 * earlier run is reused.
 *
 * @param t the teacher's shape and stages
 * @param ctx flags, tokenizer, data, output
 * @returns the teacher's weight file and its parameter count
 */
async function trainTeacher(
  t: Plan["distill"]["teacher"],
  ctx: TeacherContext,
): Promise<{ path: string; params: string }> {
  const { a, say } = ctx;
  const path = join(a.save_dir, `teacher_sft_${t.hidden}.safetensors`);
  const size = (cfg: MiniMindConfig) => `${(countParams(cfg).total / 1e6).toFixed(2)}M params`;
  if (await Deno.stat(path).catch(() => null)) {
    const m = await loadModel(path);
    dispose(m.params as unknown as Tree);
    say(`  teacher: ${path}, trained by an earlier run (delete it to train it again)`);
    return { path, params: size(m.cfg) };
  }
  const shape = [
    ...["--device", a.device, "--save_dir", a.save_dir, "--checkpoint_dir", ctx.checkpointDir],
    ...["--hidden_size", String(t.hidden), "--num_hidden_layers", String(t.layers)],
    ...["--num_attention_heads", String(t.heads), "--num_key_value_heads", String(t.kvHeads)],
    ...["--accumulation_steps", "1", "--seed", String(a.seed)],
  ];
  const run = async (
    st: Stage,
    saveWeight: string,
    fromWeight: string,
    data: Dataset<LMSample>,
  ) => {
    const epochs = Math.max(1, Math.ceil(st.steps * st.batch / data.length));
    const parsed = stageFlags(
      [...shape, "--epochs", String(epochs)],
      st,
      4,
      ["--from_weight", fromWeight],
      saveWeight,
      fromWeight,
      COMMAND,
    );
    const r = await runLm({
      args: parsed.values,
      given: parsed.given,
      dataset: data,
      tokenizer: ctx.tokenizer,
      progress: new Progress(),
    });
    ctx.ran(r);
    return r;
  };
  // the demo's pretraining text: the regulated verse, packed into full windows
  const texts = readTrainingTexts(ctx.corpus.pretrain)
    .filter((x) => poemForm(x.slice(x.indexOf("\n") + 1)) !== null);
  say(
    `  teacher: hidden ${t.hidden}, ${t.layers} layers; pretrain ${t.pretrain.steps} steps on the ` +
      `packed regulated poems, then SFT ${t.sft.steps} steps on the poem-writing conversations`,
  );
  const pt = await run(
    t.pretrain,
    "teacher_pretrain",
    "none",
    new PlainTextDataset(texts, ctx.tokenizer, { maxLength: t.pretrain.seqLen, mode: "packed" }),
  );
  dispose(pt.params);
  const sft = await run(t.sft, "teacher_sft", pt.files.weights, ctx.sftData(t.sft.seqLen));
  dispose(sft.params);
  return { path: sft.files.weights, params: size(sft.cfg) };
}

const COMMAND = "deno task demo:posttrain";

function pct(x: number): string {
  return `${(100 * x).toFixed(1)}%`;
}

/**
 * Runs the post-training demo.
 *
 * @param argv command-line arguments
 * @returns the exit code
 */
export async function main(argv: readonly string[]): Promise<number> {
  const { values: a, help } = parseFlags(argv, POSTTRAIN_DEMO_FLAGS, COMMAND);
  if (help) {
    console.log(
      usage(
        COMMAND,
        "LoRA, DPO, distillation and reasoning SFT after the demo.",
        POSTTRAIN_DEMO_FLAGS,
      ),
    );
    return 0;
  }
  const t0 = performance.now();
  const plan = a.quick ? QUICK : FULL;
  const say = (m: string) => console.log(m);
  // each stage's wall time and the 1-minute load average at its start (the machine may be
  // shared: wall time under load is an upper bound of the idle time)
  const marks: { name: string; t: number; load: number }[] = [];
  const section = (m: string) => {
    marks.push({ name: m, t: performance.now(), load: Deno.loadavg()[0] });
    say(
      `\n== ${m} ${"=".repeat(Math.max(0, 70 - m.length))} [${
        formatDuration((performance.now() - t0) / 1000)
      }]`,
    );
  };
  const load0 = Deno.loadavg()[0];
  const device = await selectDevice(a.device);
  const basePath = a.from_weight ?? join(a.save_dir, "full_sft_192.safetensors");
  if (!(await Deno.stat(basePath).catch(() => null))) {
    throw new UsageError(`Cannot start: ${basePath} does not exist (run deno task demo first)`);
  }
  const base = await loadModel(basePath);
  const cfg = base.cfg;
  const tokenizer = base.tokenizer ?? await Tokenizer.fromFile(join(a.save_dir, "tokenizer"));
  const model: EvalModel = { cfg, params: base.params, tokenizer };
  say(`MiniMind.ts post-training demo on ${device}${a.quick ? " (quick)" : ""}: from ${basePath}`);
  const corpus = await buildCorpus({ log: say });
  const ck = join(a.save_dir, "checkpoints");
  const stages = new Set(a.stages.split(",").map((x) => x.trim()));
  for (const st of stages) {
    if (!["lora", "dpo", "distill", "reason"].includes(st)) {
      throw new UsageError(
        `Invalid --stages ${a.stages}: ${st} is not one of lora, dpo, distill, reason`,
      );
    }
  }
  const rows: string[][] = [["", "before", "after"]];
  const notes: string[] = [];

  // one trainer run: its flags as `deno task <kind>` would parse them
  const train = (
    kind: PostKind,
    st: Stage,
    extra: string[],
    dataset: Dataset<LMSample> | Dataset<DPOSample>,
  ) => {
    const argv = [
      ...["--device", a.device, "--save_dir", a.save_dir, "--checkpoint_dir", ck],
      ...["--from_weight", basePath, "--seed", String(a.seed)],
      // enough epochs for the step count (the lr schedule spans max_steps)
      ...["--epochs", String(Math.max(1, Math.ceil(st.steps * st.batch / dataset.length)))],
      ...["--batch_size", String(st.batch), "--max_seq_len", String(st.seqLen)],
      ...["--learning_rate", String(st.lr), "--max_steps", String(st.steps)],
      ...[
        "--log_interval",
        String(Math.max(1, Math.round(st.steps / 4))),
        "--save_interval",
        "100000",
      ],
      ...extra,
    ];
    const parsed = parseFlags(argv, POST_FLAGS[kind] as FlagTable, `deno task ${kind}`);
    return runPost(kind, parsed as unknown as { values: PostArgs; given: Set<string> }, {
      tokenizer,
      dataset,
      progress: new Progress(),
      log: say,
    });
  };
  const ran = (
    r: { steps: number; tokens: number; elapsedS: number; files: { weights: string } },
  ) =>
    say(
      `  ${r.steps} steps, ${(r.tokens / 1e6).toFixed(2)}M tokens in ${
        formatDuration(r.elapsedS)
      } (${Math.round(r.tokens / r.elapsedS)} tokens/s) → ${r.files.weights}`,
    );

  // 1. LoRA: ci in 8 tunes
  if (stages.has("lora")) {
    section("1. LoRA on Song ci (词)");
    const ci = ciStyleData(corpus.pretrain, corpus.heldoutPretrain, a.seed, plan.lora.tunes);
    const tunes = Object.keys(ci.patterns);
    say(
      `  ${ci.train.length} ci in ${tunes.length} tunes: ${
        tunes.map((t) => `${t} ${ci.patterns[t].join("")}`).join(", ")
      }`,
    );
    const styleAsks = tunes.flatMap((tune) =>
      Array.from(
        { length: plan.perTune },
        (_, i) => ({ tune, text: fill(CI_PROMPTS[i % CI_PROMPTS.length], { tune }) }),
      )
    );
    const style = async (m: EvalModel) => {
      const replies = await chatReplies(m, styleAsks.map((s) => s.text), {
        maxNewTokens: 96,
        seed: a.seed,
      });
      const ok = replies.filter((r, i) =>
        linePattern(r).join() === ci.patterns[styleAsks[i].tune].join()
      );
      const lines = replies.filter((r, i) =>
        linePattern(r).length === ci.patterns[styleAsks[i].tune].length
      );
      const agree = replies.reduce(
        (s, r, i) => s + patternAgreement(linePattern(r), ci.patterns[styleAsks[i].tune]),
        0,
      );
      return {
        acc: ok.length / replies.length,
        lines: lines.length / replies.length,
        agree: agree / replies.length,
        replies,
      };
    };
    const styleBefore = await style(model);
    const styleLine = (r: typeof styleBefore) =>
      `exact tune pattern ${pct(r.acc)}, line positions right ${pct(r.agree)}, line count ` +
      `right ${pct(r.lines)}`;
    say(`  before: ${styleLine(styleBefore)} on ${styleAsks.length} tune prompts`);
    const lr = await train(
      "lora",
      plan.lora,
      [
        ...["--lora_rank", String(plan.lora.rank), "--lora_name", "lora_ci"],
        ...["--lora_targets", plan.lora.targets],
      ],
      new SFTDataset(ci.train, tokenizer, {
        maxLength: plan.lora.seqLen,
        seed: a.seed,
        addSystemRatio: 0,
        emptyThinkRatio: 1,
      }),
    );
    ran(lr);
    const adapters = lr.params;
    say(
      `  ${
        lora.count(adapters)
      } adapter params (rank ${plan.lora.rank}, every Linear) trained; the base stayed frozen`,
    );
    const loraModel = { ...model, params: lora.apply(base.params, adapters) };
    const styleAfter = await style(loraModel);
    say(`  after:  ${styleLine(styleAfter)}`);
    for (const i of tunes.map((_, k) => k * plan.perTune)) {
      say(`  e.g. ${styleAsks[i].text} (${ci.patterns[styleAsks[i].tune].join(",")}) →`);
      say(`     ${styleAfter.replies[i].replace(/\n/g, " / ")}`);
    }
    rows.push(["LoRA: exact tune pattern", pct(styleBefore.acc), pct(styleAfter.acc)]);
    rows.push(["LoRA: line positions right", pct(styleBefore.agree), pct(styleAfter.agree)]);
    rows.push(["LoRA: line count right", pct(styleBefore.lines), pct(styleAfter.lines)]);
    notes.push(
      `next: deno task eval --load_from ${basePath} --lora_weight ${lr.files.weights} --mode chat`,
    );
  }

  // 2. DPO on the corpus's pairs; held-out pairs from held-out poems
  if (stages.has("dpo")) {
    section("2. DPO on dpo.jsonl");
    const heldPairs = new DPODataset(
      heldoutDpoPairs(corpus.heldoutPretrain, plan.pairs, a.seed),
      tokenizer,
      {
        maxLength: plan.dpo.seqLen,
        seed: a.seed,
        emptyThinkRatio: 0,
      },
    );
    const prefBefore = await preferenceAccuracy(cfg, base.params, base.params, heldPairs, {
      reduction: plan.dpo.reduction,
    });
    say(
      `  before: preference accuracy ${pct(prefBefore.accuracy)} (mean margin ${
        prefBefore.margin.toFixed(2)
      }) on ${prefBefore.pairs} held-out pairs, sequence score = masked ${plan.dpo.reduction} ` +
        `of the response log-probs`,
    );
    const dr = await train(
      "dpo",
      plan.dpo,
      ["--beta", String(plan.dpo.beta), "--dpo_reduction", plan.dpo.reduction],
      new DPODataset(corpus.dpo, tokenizer, {
        maxLength: plan.dpo.seqLen,
        seed: a.seed,
        emptyThinkRatio: 0,
      }),
    );
    ran(dr);
    const policy = dr.params as unknown as MiniMindParams;
    const prefAfter = await preferenceAccuracy(cfg, policy, base.params, heldPairs, {
      reduction: plan.dpo.reduction,
    });
    say(
      `  after:  preference accuracy ${pct(prefAfter.accuracy)} (mean margin ${
        prefAfter.margin.toFixed(2)
      }), ` +
        `KL(policy‖reference) ${prefAfter.kl.toExponential(2)} nats/token`,
    );
    dispose(dr.params);
    rows.push([
      "DPO: held-out preference accuracy",
      pct(prefBefore.accuracy),
      pct(prefAfter.accuracy),
    ]);
    rows.push([
      "DPO: implicit reward margin > 0",
      pct(prefBefore.rewardAccuracy),
      pct(prefAfter.rewardAccuracy),
    ]);
    rows.push(["DPO: KL(policy‖reference)/token", "0", prefAfter.kl.toExponential(2)]);
  }

  // 3. distillation: a larger poetry model teaches the demo-sized student from scratch
  if (stages.has("distill")) {
    section("3. distillation");
    const d = plan.distill;
    // the teacher's domain: the poem-writing conversations (the demo's SFT data); held-out ones
    // for the perplexity
    const compose = (path: string) =>
      Deno.readTextFileSync(path).split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l))
        .filter((r) => COMPOSE_ASK.test(String(r.conversations?.[0]?.content)));
    const sftOpts = (seqLen: number) => ({
      maxLength: seqLen,
      seed: a.seed,
      addSystemRatio: 0,
      emptyThinkRatio: 1,
    });
    const heldSft = new SFTDataset(
      compose(corpus.heldoutSft),
      tokenizer,
      sftOpts(d.student.seqLen),
    );
    const sftData = (seqLen: number) =>
      new SFTDataset(compose(corpus.sft), tokenizer, sftOpts(seqLen));
    say(`  ${heldSft.length} held-out poem-writing conversations for the perplexity`);
    const teacher = await trainTeacher(d.teacher, {
      a,
      tokenizer,
      corpus,
      sftData,
      checkpointDir: ck,
      say,
      ran,
    });
    const teacherModel = await loadModel(teacher.path);
    const teacherPpl = await perplexity(
      { cfg: teacherModel.cfg, params: teacherModel.params },
      heldSft,
      { limit: plan.pplTexts },
    );
    dispose(teacherModel.params as unknown as Tree);
    const demoPpl = await perplexity(model, heldSft, { limit: plan.pplTexts });
    say(
      `  teacher (hidden ${d.teacher.hidden}, ${d.teacher.layers} layers, ${teacher.params}): ` +
        `held-out perplexity ${teacherPpl.ppl.toFixed(1)} (the demo model: ${
          demoPpl.ppl.toFixed(1)
        })`,
    );
    const st = d.student;
    const student = [
      ...["--from_weight", "none", "--hidden_size", String(st.hidden)],
      ...["--num_hidden_layers", String(st.layers), "--num_attention_heads", String(st.heads)],
      ...["--num_key_value_heads", String(st.kvHeads)],
    ];
    const students: Record<string, number> = {};
    for (
      const [label, extra] of [
        ["with the teacher", [
          ...["--teacher_weight", teacher.path, "--alpha", String(d.alpha)],
          ...["--temperature", String(d.temperature)],
        ]],
        ["labels only", ["--alpha", "1", "--save_weight", "full_sft_student"]],
      ] as const
    ) {
      const r = await train("distill", st, [...student, ...extra], sftData(st.seqLen));
      ran(r);
      const p = await perplexity(
        { cfg: r.cfg, params: r.params as unknown as MiniMindParams },
        heldSft,
        { limit: plan.pplTexts },
      );
      students[label] = p.ppl;
      say(
        `  student (hidden ${st.hidden}, ${st.layers} layers) trained ${label}: held-out ` +
          `perplexity ${p.ppl.toFixed(1)}`,
      );
      dispose(r.params);
    }
    rows.push([
      "distill: student ppl (no teacher, teacher)",
      students["labels only"].toFixed(1),
      students["with the teacher"].toFixed(1),
    ]);
    notes.push(
      `distillation: student perplexity ${
        students["with the teacher"].toFixed(1)
      } with the teacher vs ${students["labels only"].toFixed(1)} on labels only (teacher ${
        teacherPpl.ppl.toFixed(1)
      }, ${d.alpha}·CE + ${1 - d.alpha}·KD at T ${d.temperature}, ${st.steps} steps each)`,
    );
  }

  // 4. reasoning SFT: think-format explanations of poem forms
  if (stages.has("reason")) {
    section("4. reasoning SFT");
    const held = Deno.readTextFileSync(corpus.heldoutPretrain).split("\n").filter((l) => l.trim())
      .map((l) => String(JSON.parse(l).text)).map((t) => t.slice(t.indexOf("\n") + 1))
      .filter((b) => poemForm(b) !== null).slice(0, plan.reasonPrompts);
    // the generation prompt opens the think block (the template's open_thinking), so a reply
    // is the reasoning, </think>, then the answer; the check reads "<think>\n" + reply
    const reasonCheck = async (m: EvalModel) => {
      const replies = (await chatReplies(m, held.map((b) => `这首诗是什么体裁？\n${b}`), {
        maxNewTokens: 160,
        seed: a.seed,
        openThinking: true,
      })).map((r) => `<think>\n${r}`);
      const format = replies.filter((r) =>
        /^<think>[\s\S]*<\/think>\s*<answer>[\s\S]*<\/answer>$/.test(r.trim())
      );
      const right = replies.filter((r, i) => {
        const ans = /<answer>([\s\S]*?)<\/answer>/.exec(r)?.[1] ?? "";
        return ans.includes(poemForm(held[i])!.name);
      });
      return {
        format: format.length / replies.length,
        right: right.length / replies.length,
        replies,
      };
    };
    const reasonBefore = await reasonCheck(model);
    const rr = await train(
      "reason",
      plan.reason,
      ["--reason_samples", String(plan.reason.steps * plan.reason.batch)],
      new SFTDataset(
        reasonRecords(corpus.pretrain, plan.reason.steps * plan.reason.batch, a.seed),
        tokenizer,
        { maxLength: plan.reason.seqLen, seed: a.seed, emptyThinkRatio: 0, addSystemRatio: 0 },
      ),
    );
    ran(rr);
    const reasonAfter = await reasonCheck({
      ...model,
      params: rr.params as unknown as MiniMindParams,
    });
    say(`  e.g. 这首诗是什么体裁？ →`);
    for (const line of reasonAfter.replies[0].split("\n").slice(0, 6)) say(`     ${line}`);
    dispose(rr.params);
    rows.push(["reason: think/answer format", pct(reasonBefore.format), pct(reasonAfter.format)]);
    rows.push(["reason: form named right", pct(reasonBefore.right), pct(reasonAfter.right)]);
  }

  // summary
  section("summary");
  for (const r of rows) {
    say(`  ${r[0].padEnd(40)}${r.slice(1).map((c) => c.padStart(10)).join("")}`);
  }
  for (const n of notes) say(`  ${n}`);
  const times = marks.slice(0, -1).map((m, i) =>
    `${m.name.replace(/^\d\. /, "")} ${formatDuration((marks[i + 1].t - m.t) / 1000)} (load ${
      m.load.toFixed(1)
    })`
  );
  say(`  stages: ${times.join(", ")}`);
  say(
    `  wall time ${formatDuration((performance.now() - t0) / 1000)} on ${device}; load average ` +
      `(1 min) ${load0.toFixed(1)} at the start, ${
        Deno.loadavg()[0].toFixed(1)
      } at the end; files in ${a.save_dir}/`,
  );
  return 0;
}

if (import.meta.main) Deno.exit(await runMain(() => main(Deno.args), COMMAND));
