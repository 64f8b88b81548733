/**
 * `deno task ppo | grpo | spo`: MiniMind's RL scripts (HEAD `train_ppo.py`, `train_grpo.py`, V2
 * `train_spo.py`) with their flags, defaults and output names (`out/ppo_actor_<hidden>`,
 * `out/grpo_<hidden>`, `out/spo_<hidden>`), on the shared training loop (resume, Ctrl-C, NaN stop,
 * metrics) plus a reward plot. `--reward rules|poetry|model:<path>` picks the reward;
 * `deno task ppo --loss_type sequence` is V2's sequence-level PPO (old actor, A = r − V(last)).
 *
 * With no `--data_path` a run uses the embedded poetry corpus's RL prompts, starts from the demo's
 * SFT model and uses the poetry reward, with settings sized for a CPU (see {@link EMBEDDED}); the
 * held-out poetry reward on the demo's 48 unseen titles is measured before and after.
 * @module
 */
import { join } from "node:path";
import { scope } from "../nn/scope.ts";
import type { Tree } from "../nn/tree.ts";
import { dispose } from "../nn/tree.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import { countParams } from "../nn/model/minimind.ts";
import { configToHF } from "../nn/model/minimind_config.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { loadModel } from "../convert/hf.ts";
import { loadSafetensors } from "../convert/safetensors.ts";
import { buildCorpus } from "../data/corpus/build.ts";
import { poemForm } from "../data/corpus/poetry.ts";
import { RLAIFDataset } from "../data/datasets.ts";
import type { RLAIFSample } from "../data/datasets.ts";
import { DataLoader } from "../data/loader.ts";
import type { Batch } from "../data/loader.ts";
import { readTrainingTexts } from "../data/train_tokenizer.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { parseFlags, usage, UsageError } from "../cli.ts";
import type { FlagTable } from "../cli.ts";
import { lmFlags, lossScaling, resolveTokenizer, startDevice } from "../train/lm.ts";
import { runTraining } from "../train/loop.ts";
import type { LoopResult } from "../train/loop.ts";
import { saveWeights, weightStem } from "../train/checkpoint.ts";
import { atomicWrite } from "../train/checkpoint.ts";
import { MetricsWriter } from "../train/metrics.ts";
import { lineChartSvg } from "../train/plot.ts";
import { formatDuration } from "../train/progress.ts";
import type { Progress } from "../train/progress.ts";
import { heldoutFormPrompts } from "../train/scores.ts";
import { RlTrainer } from "./trainer.ts";
import type { AsyncTrainer } from "../train/trainer.ts";
import type { RlAlgorithm, RlReport, RlSettings } from "./trainer.ts";
import { poetryReward, rulesReward, ValueHeadRewardModel } from "./rewards.ts";
import type { RewardFunction } from "./rewards.ts";
import type { CriticParams } from "./critic.ts";
import { evaluatePoetry, pairedGain } from "./evaluate.ts";
import type { PairedGain, PoetryEval } from "./evaluate.ts";

/** MiniMind's per-script defaults (spec §4.2; SPO from V2). */
const MINIMIND = {
  ppo: { saveWeight: "ppo_actor", lr: 3e-7, accum: 1, maxSeqLen: 768, maxGenLen: 1024 },
  grpo: { saveWeight: "grpo", lr: 3e-7, accum: 1, maxSeqLen: 768, maxGenLen: 1024 },
  spo: { saveWeight: "spo", lr: 1e-7, accum: 4, maxSeqLen: 66, maxGenLen: 1536 },
} as const;

/**
 * The flags every RL trainer (and `deno task agent`) shares: the LM trainers' flags from `lm`,
 * with the RL loop's logging and saving defaults, and the rollout sampler.
 *
 * @param lm the LM trainers' flag table with the command's defaults
 * @returns the shared flag table
 */
export function rlLoopFlags<T extends ReturnType<typeof lmFlags>>(lm: T) {
  return {
    ...lm,
    learning_rate: { ...lm.learning_rate, help: "actor peak lr (cosine to lr/10 over updates)" },
    log_interval: { ...lm.log_interval, default: 1 },
    save_interval: { ...lm.save_interval, default: 10 },
    max_seq_len: { ...lm.max_seq_len, help: "prompt tokens kept (the last ones)" },
    temperature: { type: "float", default: 0.8, min: 0, help: "rollout sampling temperature" },
    top_p: { type: "float", default: 0.85, min: 0, help: "rollout nucleus mass" },
    top_k: { type: "int", default: 50, min: 0, help: "rollout top-k (0 = off)" },
  } satisfies FlagTable;
}

/**
 * The group-relative objective's flags (`grpo` and `agent`).
 *
 * @param numGenerations the default samples per prompt
 * @returns the flag table
 */
export function groupFlags(numGenerations: number) {
  return {
    num_generations: { type: "int", default: numGenerations, min: 2, help: "samples per prompt" },
    beta: { type: "float", default: 0.1, min: 0, help: "KL weight" },
    loss_type: { type: "choice", default: "cispo", choices: ["grpo", "cispo"], help: "objective" },
    epsilon: { type: "float", default: 0.2, min: 0, help: "GRPO ratio clip" },
    epsilon_high: { type: "float", default: 5.0, min: 0, help: "CISPO IS-weight truncation" },
  } satisfies FlagTable;
}

function baseFlags(algo: RlAlgorithm) {
  const d = MINIMIND[algo];
  const lm = lmFlags({
    saveWeight: d.saveWeight,
    epochs: 1,
    batchSize: 2,
    learningRate: d.lr,
    accumulationSteps: d.accum,
    maxSeqLen: d.maxSeqLen,
    fromWeight: "full_sft",
  });
  return {
    ...rlLoopFlags(lm),
    max_gen_len: { type: "int", default: d.maxGenLen, min: 1, help: "most generated tokens" },
    thinking_ratio: {
      type: "float",
      default: 0.9,
      min: 0,
      help: "share of prompts rendered with open thinking (embedded corpus: 0)",
    },
    reward: {
      type: "string",
      default: "auto",
      help: "rules | poetry | model:<path> (auto: poetry on the embedded corpus, else rules)",
    },
    reward_model_path: {
      type: "optional",
      help: "MiniMind's flag: a reward model (same as --reward model:<path>)",
    },
    eval_per_form: {
      type: "int",
      default: 0,
      min: 0,
      help: "held-out titles per form scored before/after (embedded corpus: 12)",
    },
    eval_samples: { type: "int", default: 4, min: 1, help: "samples per held-out title" },
  } satisfies FlagTable;
}

/** The flag table of each RL command. */
export function rlFlags(algo: RlAlgorithm): FlagTable {
  const base = baseFlags(algo);
  if (algo === "grpo") return { ...base, ...groupFlags(6) };
  if (algo === "spo") {
    return { ...base, beta: { type: "float", default: 0.02, min: 0, help: "KL weight" } };
  }
  return {
    ...base,
    loss_type: {
      type: "choice",
      default: "token",
      choices: ["token", "sequence"],
      help: "token: HEAD's per-token PPO with GAE; sequence: V2's sequence-level PPO",
    },
    critic_learning_rate: { type: "float", default: 5e-7, min: 0, help: "critic peak lr" },
    clip_epsilon: {
      type: "float",
      default: 0.2,
      min: 0,
      help: "ratio clip (--loss_type sequence: V2's 0.1 unless given)",
    },
    kl_coef: { type: "float", default: 0.02, min: 0, help: "KL-to-reference weight" },
    vf_coef: { type: "float", default: 0.5, min: 0, help: "value-loss weight" },
    ppo_update_iters: { type: "int", default: 2, min: 1, help: "passes over each rollout (token)" },
    early_stop_kl: { type: "float", default: 0.25, min: 0, help: "approx-KL early stop (token)" },
    gamma: { type: "float", default: 1.0, min: 0, help: "GAE discount (token)" },
    lam: { type: "float", default: 0.95, min: 0, help: "GAE λ (token)" },
    update_old_actor_freq: {
      type: "int",
      default: 4,
      min: 1,
      help: "steps between old-actor syncs (sequence)",
    },
    critic_warmup: {
      type: "int",
      default: 0,
      min: 0,
      help: "first steps that train only the critic (not MiniMind's; embedded corpus: see README)",
    },
  };
}

/**
 * Settings of the embedded-corpus run, used for every flag not given when `--data_path` is not
 * given: the demo's SFT model (hidden 192), short poems, a CPU-sized batch and a learning rate
 * for a 2.8M-parameter model (MiniMind's 3e-7 is for its 100M+ models and would not move it).
 */
export const EMBEDDED: Record<RlAlgorithm, Record<string, number | string>> = {
  grpo: {
    hidden_size: 192,
    batch_size: 4,
    num_generations: 8,
    learning_rate: 1e-4,
    beta: 0.05,
    max_seq_len: 64,
    max_gen_len: 96,
    thinking_ratio: 0,
    save_interval: 20,
    max_steps: 80,
    eval_per_form: 24,
    eval_samples: 8,
  },
  ppo: {
    hidden_size: 192,
    batch_size: 32,
    accumulation_steps: 16,
    learning_rate: 5e-5,
    critic_learning_rate: 1e-3,
    critic_warmup: 5,
    lam: 1.0,
    kl_coef: 0.5,
    max_seq_len: 64,
    max_gen_len: 96,
    thinking_ratio: 0,
    save_interval: 10,
    max_steps: 40,
    eval_per_form: 24,
    eval_samples: 8,
  },
  spo: {
    hidden_size: 192,
    batch_size: 64,
    accumulation_steps: 1,
    learning_rate: 1e-4,
    beta: 0.5,
    max_seq_len: 64,
    max_gen_len: 96,
    thinking_ratio: 0,
    save_interval: 10,
    max_steps: 30,
    eval_per_form: 24,
    eval_samples: 8,
  },
};

type Args = Record<string, string | number | boolean | undefined>;

/** What {@link runRl} returns (for tests and the report). */
export interface RlRunResult extends LoopResult {
  /** Held-out poetry reward before training (when evaluated). */
  before: PoetryEval | null;
  /** …and after. */
  after: PoetryEval | null;
  /** after − before with its standard error over titles (when both were evaluated). */
  gain?: PairedGain | null;
  /** The reward plot. */
  rewardPlot: string;
}

/** Options of {@link runRl} (test hooks). */
export interface RunRlOptions {
  /** Stop after N steps of this process (saving a resume checkpoint). */
  stopAfter?: number;
  /** Handle Ctrl-C (default true). */
  handleSigint?: boolean;
  /** Replace the reward (tests). */
  reward?: RewardFunction;
  /** Output lines (default console.log). */
  log?: (m: string) => void;
  /** The training loop's progress output (default stdout). */
  progress?: Progress;
  /** Called after each step with its rollout, prompts, rewards and advantages. */
  onReport?: (report: RlReport) => void;
}

async function exists(p: string): Promise<boolean> {
  return (await Deno.stat(p).catch(() => null)) !== null;
}

/** The starting weights: a path as given, or `<save_dir>/<name>_<hidden>.safetensors` (the
 * embedded run also looks in the demo's folder, `out/demo/`). */
async function startWeights(a: Args, embedded: boolean): Promise<string> {
  const w = String(a.from_weight);
  if (w.endsWith(".safetensors") || w.includes("/")) return w;
  const file = `${weightStem(w, Number(a.hidden_size), Boolean(a.use_moe))}.safetensors`;
  const main = join(String(a.save_dir), file);
  if (await exists(main)) return main;
  const demo = join("out", "demo", file);
  if (embedded && (await exists(demo))) return demo;
  throw new UsageError(
    `Cannot start from --from_weight ${w}: ${main} does not exist` +
      (embedded ? ` (nor ${demo}: run \`deno task demo\` first)` : "") +
      " — pass a path or train it first",
  );
}

/** The reward of `--reward` / `--reward_model_path`. */
async function chooseReward(a: Args, embedded: boolean, tok: Tokenizer): Promise<RewardFunction> {
  let r = String(a.reward);
  if (a.reward_model_path) r = `model:${a.reward_model_path}`;
  if (r === "auto") r = embedded ? "poetry" : "rules";
  if (r === "poetry") return poetryReward();
  if (r === "rules") return rulesReward();
  if (r.startsWith("model:")) {
    const path = r.slice("model:".length);
    const m = await loadModel(path, { lenient: true });
    const file = path.endsWith(".safetensors") ? path : join(path, "model.safetensors");
    const flat = await loadSafetensors(file);
    const weight = flat["value_head.weight"], bias = flat["value_head.bias"];
    for (const [k, t] of Object.entries(flat)) if (!k.startsWith("value_head.")) t.dispose();
    if (!weight || !bias) {
      throw new UsageError(
        `Cannot use ${path} as a reward model: it has no value_head.weight/value_head.bias`,
      );
    }
    const params = { ...m.params, value_head: { weight, bias } } as CriticParams;
    return rulesReward(
      new ValueHeadRewardModel({ cfg: m.cfg, params, tokenizer: m.tokenizer ?? tok }),
    );
  }
  throw new UsageError(
    `Invalid --reward ${JSON.stringify(r)}: expected rules, poetry or model:<path>`,
  );
}

/**
 * The held-out evaluation of the starting weights, cached in `<saveDir>/heldout_eval.json` by
 * weights file (path, size, mtime) and settings: it is deterministic, and PPO, GRPO and SPO runs
 * from the same model share it.
 */
async function cachedEval(
  weights: string,
  saveDir: string,
  settings: unknown,
  run: () => Promise<PoetryEval>,
): Promise<PoetryEval> {
  const file = (await Deno.stat(weights)).isFile ? weights : join(weights, "model.safetensors");
  const st = await Deno.stat(file);
  const id = JSON.stringify({ file, size: st.size, mtime: st.mtime?.getTime(), settings });
  const cache = join(saveDir, "heldout_eval.json");
  const saved = await Deno.readTextFile(cache).then((t) => JSON.parse(t)).catch(() => ({}));
  // JSON turns NaN into null; an entry from before per-poem totals were kept is run again
  if (saved[id]?.totals) return { ...saved[id], kl: saved[id].kl ?? NaN } as PoetryEval;
  const e = await run();
  await Deno.mkdir(saveDir, { recursive: true });
  const now = await Deno.readTextFile(cache).then((t) => JSON.parse(t)).catch(() => ({}));
  await atomicWrite(cache, [new TextEncoder().encode(JSON.stringify({ ...now, [id]: e }))]);
  return e;
}

function fmtEval(e: PoetryEval): string {
  const m = e.mean;
  return `reward ${m.total.toFixed(3)} (form ${m.form.toFixed(3)}, rhyme ${
    m.rhyme.toFixed(3)
  }, tone ${m.tone.toFixed(3)}, repeat ${m.repeat.toFixed(3)}) over ${e.count} poems` +
    (Number.isNaN(e.kl) ? "" : `, KL to the reference ${e.kl.toFixed(4)}`);
}

/**
 * The reward plot: mean reward per step (and each component) from the metrics file.
 *
 * @param metricsPath the run's metrics JSONL
 * @param title chart title
 * @returns the SVG text
 */
export function rewardPlotSvg(metricsPath: string, title: string): string {
  const recs = MetricsWriter.read(metricsPath).filter((r) => r.scalars?.reward !== undefined);
  const names = Object.keys(recs[0]?.scalars ?? {}).filter((k) =>
    k === "reward" || (k.startsWith("reward_") && k !== "reward_std")
  );
  return lineChartSvg(
    names.map((k) => ({
      name: k,
      x: recs.map((r) => r.globalStep),
      y: recs.map((r) => r.scalars![k]),
    })),
    { title, xLabel: "step", yLabel: "mean reward", smooth: 0.8 },
  );
}

/** What {@link trainRlLoop} needs besides the trainer: the run's flags and its data. */
export interface RlLoopInput<S extends Tree, B, D extends object> {
  /** The RL trainer (rollout → rewards → update). */
  trainer: AsyncTrainer<S, B>;
  /** The starting weights (the loop owns them). */
  params: Tree;
  /** Their config. */
  cfg: MiniMindConfig;
  /** Saved beside the weights. */
  tokenizer: Tokenizer;
  /** The parsed flags (MiniMind's names: save_dir, save_weight, epochs, learning_rate, …). */
  args: Args;
  /** Prompts, batched and shuffled with `--seed`. */
  loader: DataLoader<D>;
  /** A batch of records → the trainer's batch. */
  toBatch: (b: Batch<D>) => B;
  /** Stored in the resume checkpoint (the algorithm, or `agent`). */
  algorithm: string;
  /** Test hooks and output. */
  options: Pick<RunRlOptions, "stopAfter" | "handleSigint" | "progress">;
}

/**
 * The training part shared by the RL commands and `deno task agent`: the tokenizer saved beside
 * the weights, the shared loop with MiniMind's flags (resume, Ctrl-C, metrics, loss curve) and the
 * reward plot next to them.
 *
 * @param o the trainer, the data and the flags
 * @returns the loop's result, the weight stem and the reward plot's path
 */
export async function trainRlLoop<S extends Tree, B, D extends object>(
  o: RlLoopInput<S, B, D>,
): Promise<{ result: LoopResult; stem: string; plot: string }> {
  const a = o.args;
  const stem = weightStem(String(a.save_weight), o.cfg.hiddenSize, o.cfg.useMoe);
  await Deno.mkdir(String(a.save_dir), { recursive: true });
  await o.tokenizer.save(String(a.save_dir));
  const hf = JSON.stringify(configToHF(o.cfg));
  const result = await runTraining({
    trainer: o.trainer,
    params: o.params,
    stem,
    saveDir: String(a.save_dir),
    checkpointDir: String(a.checkpoint_dir),
    loader: o.loader,
    toBatch: o.toBatch,
    epochs: Number(a.epochs),
    learningRate: Number(a.learning_rate),
    logInterval: Number(a.log_interval),
    saveInterval: Number(a.save_interval),
    resume: Boolean(a.from_resume),
    seed: Number(a.seed),
    maxSteps: Number(a.max_steps) || undefined,
    stopAfter: o.options.stopAfter,
    saveWeights: (p, file) => saveWeights(file, p, { config: hf }),
    extra: { args: a, config: configToHF(o.cfg), algorithm: o.algorithm },
    handleSigint: o.options.handleSigint,
    progress: o.options.progress,
  });
  const plot = join(String(a.save_dir), `${stem}_reward.svg`);
  await atomicWrite(plot, [
    new TextEncoder().encode(rewardPlotSvg(result.files.metrics, `${stem}: reward`)),
  ]);
  return { result, stem, plot };
}

/**
 * Runs an RL command.
 *
 * @param algo ppo, grpo or spo
 * @param argv command-line arguments
 * @param options test hooks
 * @returns the run's result, or null for `--help`
 */
export async function runRl(
  algo: RlAlgorithm,
  argv: readonly string[],
  options: RunRlOptions = {},
): Promise<RlRunResult | null> {
  const say = options.log ?? console.log;
  const command = `deno task ${algo}`;
  const table = rlFlags(algo);
  const { values, given, help } = parseFlags(argv, table, command);
  if (help) {
    say(usage(command, SUMMARY[algo], table));
    return null;
  }
  const a = values as Args;
  const embedded = !given.has("data_path");
  if (embedded) {
    for (const [k, v] of Object.entries(EMBEDDED[algo])) if (!given.has(k)) a[k] = v;
  }
  await startDevice(String(a.device), String(a.dtype), say);

  // 1. model (actor = reference = the starting weights) and tokenizer
  const path = await startWeights(a, embedded);
  const m = await loadModel(path);
  const cfg = m.cfg;
  const tokenizer = m.tokenizer ??
    await resolveTokenizer(a.tokenizer_path as string | undefined, say);
  if (cfg.vocabSize !== tokenizer.vocabSize) {
    throw new UsageError(
      `Cannot train ${path}: its vocab size ${cfg.vocabSize} differs from the tokenizer's ${tokenizer.vocabSize}`,
    );
  }
  say(
    `Loaded ${path}: ${
      (countParams(cfg).total / 1e6).toFixed(2)
    }M params (hidden ${cfg.hiddenSize}, ` +
      `${cfg.numHiddenLayers} layers)`,
  );

  // 2. prompts and reward
  const corpus = embedded ? await buildCorpus({ log: say }) : null;
  const data = (a.data_path as string | undefined) ?? corpus!.rl;
  const dataset = new RLAIFDataset(data, tokenizer, {
    thinkingRatio: Number(a.thinking_ratio),
    seed: Number(a.seed),
    skipBadLines: Boolean(a.skip_bad_lines),
  });
  const reward = options.reward ?? await chooseReward(a, embedded, tokenizer);
  say(`Data: ${data} (${dataset.length} prompts); reward: ${reward.name}`);

  // 3. the trainer; cosine spans (MiniMind's CosineAnnealingLR T_max)
  const B = Number(a.batch_size), accum = Number(a.accumulation_steps);
  const iters = Math.ceil(dataset.length / B);
  const steps = Math.min(Number(a.epochs) * iters, Number(a.max_steps) || Infinity);
  const G = algo === "grpo" ? Number(a.num_generations) : 1;
  const mb = Math.min(2, B * G);
  const sequence = algo === "ppo" && a.loss_type === "sequence";
  if (sequence && !given.has("clip_epsilon")) a.clip_epsilon = 0.1; // V2's default
  const updates = algo === "ppo" && !sequence
    ? Math.ceil(steps * Number(a.ppo_update_iters) * Math.ceil(B / mb) / accum)
    : Math.ceil(steps / accum);
  const settings: RlSettings = {
    algorithm: algo,
    cfg,
    tokenizer,
    reward,
    maxSeqLen: Number(a.max_seq_len),
    maxGenLen: Number(a.max_gen_len),
    temperature: Number(a.temperature),
    topP: Number(a.top_p),
    topK: Number(a.top_k),
    learningRate: Number(a.learning_rate),
    criticLearningRate: Number(a.critic_learning_rate ?? 0),
    totalUpdates: updates,
    criticTotalUpdates: updates,
    accumulationSteps: accum,
    gradClip: Number(a.grad_clip),
    lossScale: lossScaling(),
    numGenerations: G,
    lossType: (algo === "grpo" ? a.loss_type : "cispo") as "grpo" | "cispo",
    beta: Number(algo === "ppo" ? a.kl_coef : a.beta),
    clipEpsilon: Number(algo === "ppo" ? a.clip_epsilon : a.epsilon ?? 0.2),
    epsilonHigh: Number(a.epsilon_high ?? 5),
    ppoUpdateIters: Number(a.ppo_update_iters ?? 2),
    ppoMinibatch: mb,
    earlyStopKl: Number(a.early_stop_kl ?? 0.25),
    valueClip: 0.2,
    gamma: Number(a.gamma ?? 1),
    lambda: Number(a.lam ?? 0.95),
    seed: Number(a.seed),
    ppoLossType: sequence ? "sequence" : "token",
    vfCoef: Number(a.vf_coef ?? 0.5),
    updateOldActorFreq: Number(a.update_old_actor_freq ?? 4),
    criticWarmupSteps: Number(a.critic_warmup ?? 0),
  };
  const trainer = new RlTrainer(settings);
  let shown = 0;
  trainer.onReport = (report) => {
    options.onReport?.(report);
    const { rollout, rewards } = report;
    if (shown++ % Math.max(1, Number(a.log_interval) * 10) !== 0) return;
    say(
      `  sample: ${rollout.texts[0].replace(/\n/g, " / ")}  (reward ${
        rewards[0].total.toFixed(3)
      })`,
    );
  };

  // 4. held-out poetry reward before training
  const evalPerForm = Number(a.eval_per_form);
  const evalSet = evalPerForm > 0 && corpus
    ? heldoutFormPrompts(
      readTrainingTexts(corpus.heldoutPretrain).filter((t) =>
        poemForm(t.slice(t.indexOf("\n") + 1)) !== null
      ),
      evalPerForm,
    )
    : [];
  const evalOpts = {
    samples: Number(a.eval_samples),
    maxNewTokens: Number(a.max_gen_len),
    temperature: Number(a.temperature),
    topP: Number(a.top_p),
    topK: Number(a.top_k),
    seed: 1234,
    batchSize: 96,
  };
  let before: PoetryEval | null = null;
  const t0 = performance.now();
  if (evalSet.length && !(a.from_resume && given.has("from_resume"))) {
    before = await cachedEval(
      path,
      String(a.save_dir),
      { evalOpts, evalSet },
      () => evaluatePoetry({ cfg, params: m.params, tokenizer }, evalSet, evalOpts),
    );
    say(
      `Held-out (${evalSet.length} unseen titles × ${evalOpts.samples}) before: ${
        fmtEval(before)
      } ` +
        `[${formatDuration((performance.now() - t0) / 1000)}]`,
    );
  }

  // 5. train on the shared loop
  const { result, plot: rewardPlot } = await trainRlLoop({
    trainer,
    params: m.params as unknown as Tree,
    cfg,
    tokenizer,
    args: a,
    loader: new DataLoader<RLAIFSample>(dataset, { batchSize: B, seed: Number(a.seed) }),
    toBatch: (b) => ({
      prompt: (b as unknown as { prompt: string[] }).prompt,
      record: (b as unknown as { record: Record<string, unknown>[] }).record,
    }),
    algorithm: algo,
    options,
  });

  // 6. held-out poetry reward after training, with the KL to the starting model
  let after: PoetryEval | null = null, gain: PairedGain | null = null;
  if (evalSet.length && !result.interrupted) {
    const ref = (await loadModel(path)).params;
    after = await evaluatePoetry(
      { cfg, params: result.params as unknown as MiniMindParams, tokenizer },
      evalSet,
      { ...evalOpts, ref },
    );
    scope(() => dispose(ref as unknown as Tree));
    say(`Held-out after: ${fmtEval(after)}`);
    if (before) {
      gain = pairedGain(before, after, evalOpts.samples);
      say(
        `Held-out gain: ${gain.delta.toFixed(3)} ± ${gain.se.toFixed(3)} (SE over ${gain.titles} ` +
          `titles, paired draws; ${gain.z.toFixed(1)} SE)`,
      );
    }
    for (const x of after.examples.slice(0, 4)) {
      say(`  《${x.prompt.title}》 ${x.prompt.form.name}: ${x.text.replace(/\n/g, " / ")}`);
    }
  }
  say(
    `${
      result.interrupted ? "Stopped" : "Done"
    }: ${result.steps} steps, ${result.updates} updates in ` +
      `${formatDuration(result.elapsedS)}` +
      (result.interrupted ? "" : `; weights ${result.files.weights}`),
  );
  say(`Metrics: ${result.files.metrics}; reward plot: ${rewardPlot}`);
  return { ...result, before, after, gain, rewardPlot };
}

const SUMMARY: Record<RlAlgorithm, string> = {
  ppo: "PPO with a critic and GAE (trainer/train_ppo.py).",
  grpo: "GRPO / CISPO (trainer/train_grpo.py).",
  spo: "SPO, single-stream policy optimisation (V2 trainer/train_spo.py).",
};

/**
 * The entry point of one RL command: runs it and returns the exit code (130 after Ctrl-C).
 *
 * @param algo ppo, grpo or spo
 * @param argv arguments
 * @returns exit code
 */
export async function mainRl(algo: RlAlgorithm, argv: readonly string[]): Promise<number> {
  const r = await runRl(algo, argv);
  return r?.interrupted ? 130 : 0;
}
