/**
 * What `deno task pretrain` and `deno task sft` share (MiniMind's trainer_utils.py): the flag
 * table with each script's defaults, device selection, the tokenizer (trained on the embedded
 * corpus on first use), the model config from the flags or from `--from_weight`'s metadata, the
 * LM loss (CE + MoE aux), and the run: loader, AdamW, the loop, final weights.
 * @module
 */
import { join } from "node:path";
import { defaultBackend, setBackendFromFlag } from "../nn/backend/select.ts";
import type { WebGpuBackend } from "../nn/backend/webgpu/backend.ts";
import { setMatmulPrecision } from "../nn/backend/cpu/gemm_adapter.ts";
import { tensor } from "../nn/creation.ts";
import { key } from "../nn/random.ts";
import type { Tree } from "../nn/tree.ts";
import type { Tensor } from "../nn/tensor.ts";
import { add } from "../nn/ops/binary.ts";
import { countParams, forward, init, lossFromLogits } from "../nn/model/minimind.ts";
import { config as makeConfig, configToHF, PRESETS } from "../nn/model/minimind_config.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import type { ConfigOverrides, MiniMindConfig, PresetName } from "../nn/model/minimind_config.ts";
import { loadModel } from "../convert/hf.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { trainTokenizer } from "../data/bpe_trainer.ts";
import { buildCorpus } from "../data/corpus/build.ts";
import { readTrainingTexts } from "../data/train_tokenizer.ts";
import type { Dataset, LMSample } from "../data/datasets.ts";
import type { DatasetOptions } from "../data/datasets.ts";
import { DataLoader } from "../data/loader.ts";
import type { Batch } from "../data/loader.ts";
import type { Flags, FlagTable } from "../cli.ts";
import { deviceFlag, UsageError } from "../cli.ts";
import { adamw } from "./optim.ts";
import { saveWeights, weightStem } from "./checkpoint.ts";
import { runTraining } from "./loop.ts";
import type { BatchSource } from "./loop.ts";
import type { LossFn } from "./step.ts";
import { makeTrainStep } from "./step.ts";
import type { LossScaleOptions, TrainState } from "./step.ts";
import { stepTrainer } from "./trainer.ts";
import type { AsyncTrainer, Trainer } from "./trainer.ts";
import type { LoopResult } from "./loop.ts";
import { formatDuration, Progress } from "./progress.ts";
import type { Communicator } from "./dist/comm.ts";
import { broadcastJson, rankZeroFirst, SoloCommunicator } from "./dist/comm.ts";
import { openCommunicator } from "./dist/mpi.ts";
import { broadcastParams, dataParallel, dataParallelTrainer } from "./dist/data_parallel.ts";
import { ShardedLoader } from "./dist/shard.ts";

/** Per-script defaults (MiniMind's argparse defaults of train_pretrain.py / train_full_sft.py). */
export interface LmDefaults {
  /** Weight name prefix (`pretrain`, `full_sft`). */
  saveWeight: string;
  /** Epochs. */
  epochs: number;
  /** Batch size. */
  batchSize: number;
  /** Peak learning rate. */
  learningRate: number;
  /** Gradient accumulation. */
  accumulationSteps: number;
  /** Sequence length. */
  maxSeqLen: number;
  /** `--from_weight` default (`none` or a weight name). */
  fromWeight: string;
}

/**
 * The flag table of an LM trainer: MiniMind's flags (same names and meaning) plus ours.
 *
 * @param d the script's defaults
 * @returns the table
 */
export function lmFlags(d: LmDefaults) {
  return {
    save_dir: { type: "string", default: "out", help: "where weights, metrics and plots go" },
    save_weight: { type: "string", default: d.saveWeight, help: "weight name prefix" },
    epochs: { type: "int", default: d.epochs, min: 1, help: "passes over the data" },
    batch_size: { type: "int", default: d.batchSize, min: 1, help: "sequences per micro-batch" },
    learning_rate: { type: "float", default: d.learningRate, min: 0, help: "peak lr of get_lr" },
    device: deviceFlag(),
    dtype: {
      type: "choice",
      default: "float32",
      choices: ["float32", "bfloat16", "float16"],
      help: "mixed-precision matmuls with f32 weights and accumulation: bfloat16 on a CPU with " +
        "native bf16, float16 on WebGPU with shader-f16 (and dynamic loss scaling); otherwise float32",
    },
    num_workers: { type: "int", default: 0, min: 0, help: "accepted for compatibility (unused)" },
    accumulation_steps: {
      type: "int",
      default: d.accumulationSteps,
      min: 1,
      help: "micro-batches per optimizer update",
    },
    grad_clip: { type: "float", default: 1.0, min: 0, help: "global-norm clip (0 = off)" },
    warmup_steps: {
      type: "int",
      default: 0,
      min: 0,
      help: "linear lr warmup over N steps, then cosine to lr/10 (0 = get_lr, no warmup)",
    },
    log_interval: { type: "int", default: 100, min: 1, help: "log every N steps" },
    save_interval: { type: "int", default: 1000, min: 1, help: "save every N steps" },
    hidden_size: { type: "int", default: 512, min: 8, help: "model width" },
    num_hidden_layers: { type: "int", default: 8, min: 1, help: "decoder blocks" },
    max_seq_len: { type: "int", default: d.maxSeqLen, min: 3, help: "tokens per sequence" },
    use_moe: { type: "bool01", default: false, help: "mixture-of-experts MLPs" },
    data_path: {
      type: "optional",
      help: "JSONL data (default: the embedded poetry corpus)",
    },
    from_weight: {
      type: "string",
      default: d.fromWeight,
      help: "start from <save_dir>/<name>_<hidden>.safetensors, a file, an HF folder, or none",
    },
    from_resume: { type: "bool01", default: false, help: "continue from the resume checkpoint" },
    use_wandb: { type: "switch", default: false, help: "accepted for compatibility (unused)" },
    wandb_project: { type: "string", default: "MiniMind", help: "accepted (unused)" },
    use_compile: { type: "bool01", default: false, help: "accepted for compatibility (unused)" },
    tokenizer_path: {
      type: "optional",
      help: "tokenizer folder (default out/tokenizer, trained on the corpus if missing)",
    },
    preset: {
      type: "choice",
      default: "minimind2-small",
      choices: Object.keys(PRESETS),
      help: "architecture family; the size flags override it",
    },
    num_attention_heads: { type: "int", default: 0, min: 0, help: "query heads (0 = preset)" },
    num_key_value_heads: { type: "int", default: 0, min: 0, help: "kv heads (0 = preset)" },
    intermediate_size: { type: "int", default: 0, min: 0, help: "MLP width (0 = derived)" },
    checkpoint_dir: {
      type: "string",
      default: "checkpoints",
      help: "where resume checkpoints go",
    },
    seed: { type: "int", default: 42, help: "init and data-order seed" },
    max_steps: { type: "int", default: 0, min: 0, help: "stop after N steps (0 = all epochs)" },
    stop_after: {
      type: "int",
      default: 0,
      min: 0,
      help: "stop after N steps of this run with a resume checkpoint (0 = never)",
    },
    skip_bad_lines: {
      type: "switch",
      default: false,
      help: "count and skip malformed JSONL lines",
    },
  } satisfies FlagTable;
}

/** Parsed LM trainer flags. */
export type LmArgs = Flags<ReturnType<typeof lmFlags>>;

/**
 * Selects the backend for `--device`.
 *
 * @param device auto, cpu or webgpu
 * @returns the backend's name
 */
export async function selectDevice(device: string): Promise<string> {
  return (await setBackendFromFlag(device)).name;
}

/**
 * A trainer's start-up: selects the backend for `--device`, applies `--dtype` to it
 * (`applyDtype`) and logs both (`Device: …`, `Precision: …`).
 *
 * @param device auto, cpu or webgpu
 * @param dtype the `--dtype` flag
 * @param log where the two lines go
 * @returns when both are in effect
 */
export async function startDevice(
  device: string,
  dtype: string,
  log: (m: string) => void,
): Promise<void> {
  const name = await selectDevice(device);
  log(`Device: ${name}`);
  log(applyDtype(dtype, name));
}

/** `--from_weight`'s path, which must exist. */
async function existingFromWeight(a: LmArgs): Promise<string> {
  const path = fromWeightPath(a);
  if (!(await Deno.stat(path).catch(() => null))) {
    throw new UsageError(
      `Cannot start from --from_weight ${a.from_weight}: ${path} does not exist ` +
        `(train it first, pass a path, or use --from_weight none)`,
    );
  }
  return path;
}

/**
 * Checks the paths the flags name before anything slow runs (training a tokenizer, building the
 * corpus, loading a model): `--data_path`, `--tokenizer_path` and `--from_weight` must exist.
 *
 * @param a parsed flags
 * @returns when every named input exists
 */
export async function checkInputs(a: LmArgs): Promise<void> {
  for (const [flag, path] of [["data_path", a.data_path], ["tokenizer_path", a.tokenizer_path]]) {
    if (path === undefined) continue;
    const info = await Deno.stat(path).catch(() => null);
    if (!info) throw new UsageError(`Invalid --${flag} ${path}: no such file or folder`);
    if (flag === "data_path" && !info.isFile) {
      throw new UsageError(`Invalid --data_path ${path}: a JSONL file is expected, not a folder`);
    }
  }
  if (a.from_weight !== "none") await existingFromWeight(a);
}

/**
 * The `--dtype` flag of the commands that decode (serve, eval, the serving benchmark): float32,
 * bfloat16 products where the CPU has native bf16, or float16 products on WebGPU (`applyDtype`).
 *
 * @param also what the command adds to the help (the benchmark's PyTorch side)
 * @returns the flag's spec
 */
export function decodeDtypeFlag(
  also = "",
): { type: "choice"; default: string; choices: readonly string[]; help: string } {
  return {
    type: "choice",
    default: "float32",
    choices: ["float32", "bfloat16", "float16"],
    help:
      "bfloat16: matmuls on bf16-rounded operands with f32 accumulation, on a CPU with native " +
      "bf16 (a decode step reads a bf16 copy of each weight); float16: the same in f16 on " +
      `WebGPU with shader-f16; otherwise float32${also}`,
  };
}

/**
 * Applies `--dtype`: "bfloat16" on the CPU backend turns on bf16 matmuls with f32 accumulation
 * (`setMatmulPrecision`: the linear layers' products and attention's; the SwiGLU MLP's hidden
 * activations and attention's q, k, v and output are stored in bf16, `model/layers/`; master
 * weights, gradients and optimizer state stay f32), where the CPU multiplies bf16 natively.
 * "float16" on the WebGPU backend turns on f16 operands with f32 accumulation in the matmul op
 * (`WebGpuBackend.setMatmulPrecision`), where the adapter has `shader-f16`; training then scales
 * the loss ({@linkcode lossScaling}). Everything else trains in float32. Returns the line to log,
 * saying which precision is in effect and why.
 *
 * @param dtype the `--dtype` flag
 * @param device the backend name `selectDevice` returned
 * @returns a one-line description of the precision in effect
 */
export function applyDtype(dtype: string, device: string): string {
  setMatmulPrecision("float32");
  const gpu = webGpu();
  gpu?.setMatmulPrecision("float32");
  if (dtype === "float32") return "Precision: float32";
  if (dtype === "float16") {
    const why = gpu
      ? gpu.setMatmulPrecision("float16")
      : "it is implemented on WebGPU (--device webgpu); on the CPU use bfloat16";
    return why === null
      ? "Precision: float16 matmuls (linear layers and the LM head) with float32 accumulation; weights, attention, softmax and all else float32; training scales the loss dynamically"
      : `Precision: float32 (--dtype float16 unavailable: ${why})`;
  }
  if (dtype !== "bfloat16" || device !== "cpu") {
    return `Precision: float32 (--dtype ${dtype} is implemented on the CPU: WGSL has no ` +
      "bfloat16; use float16 on WebGPU)";
  }
  const why = setMatmulPrecision("bfloat16");
  return why === null
    ? "Precision: bfloat16 matmuls (linear layers and attention) with float32 accumulation, the MLP's and attention's activations stored in bfloat16; weights, softmax and all else float32"
    : `Precision: float32 (--dtype bfloat16 unavailable: ${why})`;
}

/** The WebGPU backend when it is the one in use. */
function webGpu(): WebGpuBackend | null {
  const b = defaultBackend();
  return b.name === "webgpu" ? b as WebGpuBackend : null;
}

/**
 * Dynamic loss scaling (PyTorch `GradScaler`'s defaults) when the float16 precision is in effect,
 * else null: MiniMind enables its GradScaler for `--dtype float16` only (bfloat16 has float32's
 * range).
 *
 * @returns the train step's `lossScale` option
 */
export function lossScaling(): LossScaleOptions | null {
  return webGpu()?.matmulPrecision === "float16" ? {} : null;
}

/** The default tokenizer folder. */
export const DEFAULT_TOKENIZER = "out/tokenizer";

/**
 * The tokenizer: `path` if given; else `out/tokenizer`, trained on the embedded corpus's pretrain
 * text (MiniMind's special tokens and template, vocab 6400) when it does not exist yet.
 *
 * @param path `--tokenizer_path`
 * @param log progress messages
 * @returns the tokenizer
 */
export async function resolveTokenizer(
  path: string | undefined,
  log: (m: string) => void = console.log,
): Promise<Tokenizer> {
  if (path) return await Tokenizer.fromFile(path);
  const dir = DEFAULT_TOKENIZER;
  if (await Deno.stat(join(dir, "tokenizer.json")).catch(() => null)) {
    return await Tokenizer.fromFile(dir);
  }
  const corpus = await buildCorpus({ log });
  log(`Training a tokenizer on ${corpus.pretrain} (vocab 6400) → ${dir}`);
  const tok = trainTokenizer(readTrainingTexts(corpus.pretrain), { vocabSize: 6400 });
  await tok.save(dir);
  return await Tokenizer.fromFile(dir);
}

/**
 * The model config from the flags: `--preset` with the size flags on top; vocab from the
 * tokenizer.
 *
 * @param a parsed flags
 * @param vocabSize the tokenizer's vocabulary size
 * @returns the resolved config
 */
export function configFromArgs(a: LmArgs, vocabSize: number): MiniMindConfig {
  const o: ConfigOverrides = {
    hiddenSize: a.hidden_size,
    numHiddenLayers: a.num_hidden_layers,
    useMoe: a.use_moe,
    vocabSize,
  };
  if (a.num_attention_heads) o.numAttentionHeads = a.num_attention_heads;
  if (a.num_key_value_heads) o.numKeyValueHeads = a.num_key_value_heads;
  if (a.intermediate_size) o.intermediateSize = a.intermediate_size;
  try {
    return makeConfig(a.preset as PresetName, o);
  } catch (e) {
    throw new UsageError(`Invalid model flags: ${(e as Error).message}`);
  }
}

/** `--from_weight` as a path: a file or folder as given, or `<save_dir>/<name>_<hidden>[_moe].safetensors`. */
export function fromWeightPath(a: LmArgs): string {
  const w = a.from_weight;
  if (w.endsWith(".safetensors") || w.includes("/")) return w;
  return join(a.save_dir, `${weightStem(w, a.hidden_size, a.use_moe)}.safetensors`);
}

/**
 * The LM loss of MiniMind's pretrain and SFT scripts: `res.loss + res.aux_loss`, with the aux
 * part returned separately for logging.
 *
 * @param cfg model config
 * @returns (params, batch) → [loss, aux]
 */
export function lmLoss(
  cfg: MiniMindConfig,
): (params: Tree, batch: { ids: Tensor; labels: Tensor }) => [Tensor, Tensor] {
  return (params, b) => {
    const { logits, auxLoss } = forward(cfg, params as unknown as MiniMindParams, b.ids, {
      train: true,
    });
    return [add(lossFromLogits(logits, b.labels), auxLoss), auxLoss];
  };
}

/** An LM batch on the device, with its count of target tokens. */
export interface LmBatch {
  /** Input ids (B, T). */
  ids: Tensor;
  /** Unshifted labels (B, T), −100 = ignored. */
  labels: Tensor;
  /**
   * Positions the loss averages over: labels after the shift (columns 1…T−1) that are not −100.
   * Data parallel weighs each rank's shard by it, so N shards average like one batch.
   */
  targets: number;
}

/** (B, T) typed arrays of a batch → tensors, and its target count. */
export function lmBatch(b: Batch<LMSample>): LmBatch {
  let targets = 0;
  for (let r = 0; r < b.batch; r++) {
    for (let t = 1; t < b.seqLen; t++) if (b.labels[r * b.seqLen + t] !== -100) targets++;
  }
  return {
    ids: tensor(b.inputIds, [b.batch, b.seqLen], "i32"),
    labels: tensor(b.labels, [b.batch, b.seqLen], "i32"),
    targets,
  };
}

/**
 * What a run trains once the model is loaded: pretraining and SFT train every parameter with the
 * LM loss; post-training swaps in its own trainable tree (LoRA adapters), loss (DPO,
 * distillation, weighted reasoning CE), batch and weight file.
 */
export interface Objective<D extends object, B> {
  /** What the optimizer updates (the model's params, or LoRA adapters). */
  params: Tree;
  /** (trainable, batch) → [loss, aux loss for the log]. */
  lossFn: LossFn<B, Tensor>;
  /** Typed-array batch → tensors. */
  toBatch: (batch: Batch<D>) => B;
  /** Writes the final (or periodic) weights of the trainable tree. */
  saveWeights?: (trainable: Tree, path: string) => Promise<void>;
  /** File stem (default `<save_weight>_<hidden>[_moe]`). */
  stem?: string;
}

/** Builds an {@link Objective} for the loaded model. */
export type ObjectiveFn<D extends object, B> = (
  cfg: MiniMindConfig,
  params: Tree,
) => Objective<D, B> | Promise<Objective<D, B>>;

/** Everything an LM run needs besides the flags. */
export interface LmRunInput<D extends object = LMSample, B = { ids: Tensor; labels: Tensor }> {
  /** Parsed flags. */
  args: LmArgs;
  /** Flags given explicitly. */
  given: Set<string>;
  /** The dataset. */
  dataset: Dataset<D>;
  /** What to train (default: every parameter with the LM loss). */
  objective?: ObjectiveFn<D, B>;
  /** Its tokenizer (saved beside the weights). */
  tokenizer: Tokenizer;
  /** Test hook: stop after N steps of this process. */
  stopAfter?: number;
  /** Output (default stdout). */
  progress?: Progress;
  /** Handle Ctrl-C (default true). */
  handleSigint?: boolean;
  /** Start from these params instead of a fresh init (with `--from_weight none`). */
  initialParams?: Tree;
  /**
   * The data-parallel group (`openCommunicator()` under `mpirun`; default one process): each rank
   * trains `--batch_size` rows of a global batch of size × `--batch_size`, rank 0 logs and saves.
   */
  comm?: Communicator;
}

/** What an LM run produced. */
export interface LmRunResult extends LoopResult {
  /** The model config trained. */
  cfg: MiniMindConfig;
}

/**
 * Builds or loads the model, then trains it (MiniMind's `init_model` + the epoch loop).
 *
 * @param input flags, dataset, tokenizer
 * @returns the loop's result and the config
 */
export async function runLm<D extends object = LMSample, B = { ids: Tensor; labels: Tensor }>(
  input: LmRunInput<D, B>,
): Promise<LmRunResult> {
  const { args: a, given, dataset, tokenizer } = input;
  const comm = input.comm ?? new SoloCommunicator();
  // data parallel: rank 0 speaks for the group
  const progress = comm.rank === 0
    ? input.progress ?? new Progress()
    : new Progress({ tty: false, write: () => {} });
  const say = (m: string) => progress.line(m);

  // model: fresh (MiniMind2 init) or from earlier weights, whose config wins
  let cfg: MiniMindConfig;
  let params: Tree;
  if (a.from_weight === "none") {
    cfg = configFromArgs(a, tokenizer.vocabSize);
    params = input.initialParams ?? init(cfg, key(a.seed)) as unknown as Tree;
  } else {
    const path = await existingFromWeight(a);
    const m = await loadModel(path);
    cfg = m.cfg;
    params = m.params as unknown as Tree;
    for (
      const [flag, want, got] of [
        ["hidden_size", a.hidden_size, cfg.hiddenSize],
        ["num_hidden_layers", a.num_hidden_layers, cfg.numHiddenLayers],
        ["use_moe", a.use_moe, cfg.useMoe],
      ] as const
    ) {
      if (given.has(flag) && want !== got) {
        throw new UsageError(
          `Invalid --${flag} ${want}: ${path} was trained with ${flag} ${got}`,
        );
      }
    }
    say(`Loaded ${path}`);
  }
  if (cfg.vocabSize !== tokenizer.vocabSize) {
    throw new UsageError(
      `Cannot train: the model's vocab size ${cfg.vocabSize} differs from the tokenizer's ${tokenizer.vocabSize}`,
    );
  }
  const n = countParams(cfg);
  say(
    `Model Params: ${(n.total / 1e6).toFixed(2)}M` +
      (cfg.useMoe ? `-A${(n.active / 1e6).toFixed(2)}M` : "") +
      ` (${cfg.generation}, hidden ${cfg.hiddenSize}, ${cfg.numHiddenLayers} layers, ` +
      `${cfg.numAttentionHeads}/${cfg.numKeyValueHeads} heads, vocab ${cfg.vocabSize})`,
  );

  const hf = JSON.stringify(configToHF(cfg));
  const objective: Objective<D, B> = input.objective ? await input.objective(cfg, params) : {
    params,
    lossFn: lmLoss(cfg) as unknown as LossFn<B, Tensor>,
    toBatch: lmBatch as unknown as (b: Batch<D>) => B,
  };
  if (comm.size > 1 && input.objective) {
    throw new UsageError(
      `Cannot run this trainer data parallel (${comm.size} ranks): only pretrain and sft ` +
        `shard their batches across ranks; run it as one process`,
    );
  }
  const stem = objective.stem ?? weightStem(a.save_weight, cfg.hiddenSize, cfg.useMoe);
  if (comm.rank === 0) {
    await Deno.mkdir(a.save_dir, { recursive: true });
    await tokenizer.save(a.save_dir); // the weights' tokenizer, where loadModel looks for it
  }
  const step = makeTrainStep(objective.lossFn, adamw(), {
    accumulationSteps: a.accumulation_steps,
    gradClip: a.grad_clip,
    hasAux: true,
    lossScale: lossScaling(),
  });
  // data parallel: rank 0's seed and params; each rank takes its rows of the global batch
  const seed = await broadcastJson(comm, a.seed);
  const global = new DataLoader(dataset, {
    batchSize: a.batch_size * comm.size,
    seed,
    trimPadding: true,
  });
  let trainer: Trainer<TrainState, B | null> | AsyncTrainer<TrainState, B | null> = stepTrainer(
    step,
  ) as Trainer<TrainState, B | null>;
  let loader: BatchSource<D> = global;
  let trainParams = objective.params;
  if (comm.size > 1) {
    trainParams = await broadcastParams(comm, trainParams);
    loader = new ShardedLoader(global, comm.rank, comm.size);
    trainer = dataParallelTrainer(
      dataParallel(step, comm, {
        // only the LM objective runs data parallel (checked above): B is LmBatch here
        weight: (b) => (b as unknown as LmBatch).targets,
        tokens: (b) => (b as unknown as LmBatch).ids.size,
      }),
    );
    say(
      `Data parallel: ${comm.size} ranks (${comm.kind}), ${a.batch_size} rows each, ` +
        `global batch ${a.batch_size * comm.size}`,
    );
  }
  const result = await runTraining({
    trainer,
    comm,
    stem,
    saveDir: a.save_dir,
    checkpointDir: a.checkpoint_dir,
    loader,
    toBatch: (b) => b.batch === 0 ? null : objective.toBatch(b),
    params: trainParams,
    epochs: a.epochs,
    learningRate: a.learning_rate,
    warmupSteps: a.warmup_steps,
    logInterval: a.log_interval,
    saveInterval: a.save_interval,
    resume: a.from_resume,
    seed,
    maxSteps: a.max_steps || undefined,
    stopAfter: input.stopAfter ?? (a.stop_after || undefined),
    saveWeights: objective.saveWeights ?? ((p, path) => saveWeights(path, p, { config: hf })),
    extra: { args: a, config: configToHF(cfg) },
    progress,
    // under mpirun, Ctrl-C reaches the ranks as SIGTERM (then SIGKILL): nothing to save then
    handleSigint: comm.size > 1 ? false : input.handleSigint,
  });
  return { ...result, cfg };
}

/**
 * Prints where a trainer command's run left things (steps, tokens, time, the weights, metrics and
 * loss curve) and returns its exit code: 130 when Ctrl-C stopped it, else 0.
 *
 * @param r the run's result
 * @returns the exit code
 */
export function reportRun(r: LmRunResult): number {
  console.log(
    `${r.interrupted ? "Stopped" : "Done"}: ${r.steps} steps, ${r.updates} updates, ` +
      `${(r.tokens / 1e6).toFixed(2)}M tokens in ${formatDuration(r.elapsedS)}`,
  );
  if (!r.interrupted) console.log(`Weights: ${r.files.weights}`);
  console.log(`Metrics: ${r.files.metrics}, loss curve: ${r.files.lossCurve}`);
  return r.interrupted ? 130 : 0;
}

/** What `pretrain` and `sft` differ in: their default data and their dataset class. */
export interface LmCommand {
  /** The embedded corpus file used without `--data_path`. */
  corpus: "pretrain" | "sft";
  /** Opens the dataset (PretrainDataset or SFTDataset). */
  dataset: (path: string, tokenizer: Tokenizer, o: DatasetOptions) => Dataset<LMSample>;
  /** What one record is, for the log line ("texts", "conversations"). */
  records: string;
}

/**
 * The body of `deno task pretrain` and `deno task sft`: checks the inputs, opens the data-parallel
 * group (one process unless under `mpirun`; rank 0 logs), selects the device and precision, loads
 * the tokenizer and data (rank 0 first, so what it builds is read by the others), trains, and
 * reports the run on rank 0.
 *
 * @param args parsed flags
 * @param given the flags given on the command line
 * @param command the command's data
 * @returns the exit code
 */
export async function runLmCommand(
  args: LmArgs,
  given: Set<string>,
  command: LmCommand,
): Promise<number> {
  await checkInputs(args); // before the tokenizer, the corpus or the device start
  // 1. device, and the data-parallel group under mpirun (rank 0 logs)
  const comm = openCommunicator();
  const log = comm.rank === 0 ? console.log : () => {};
  await startDevice(args.device, args.dtype, log);

  // 2. tokenizer and data (default: the embedded corpus)
  const { tokenizer, data, dataset } = await rankZeroFirst(comm, async () => {
    const tokenizer = await resolveTokenizer(args.tokenizer_path, log);
    const data = args.data_path ?? (await buildCorpus({ log }))[command.corpus];
    const dataset = command.dataset(data, tokenizer, {
      maxLength: args.max_seq_len,
      seed: args.seed,
      skipBadLines: args.skip_bad_lines,
    });
    return { tokenizer, data, dataset };
  });
  log(
    `Data: ${data} (${dataset.length} ${command.records}, up to ${args.max_seq_len} tokens each)`,
  );

  // 3. model and training
  const r = await runLm({ args, given, dataset, tokenizer, comm });
  comm.close();
  if (comm.rank !== 0) return r.interrupted ? 130 : 0;
  return reportRun(r);
}
