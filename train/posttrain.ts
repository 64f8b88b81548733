/**
 * MiniMind's post-training scripts as objectives over the shared LM run (`runLm`: model loading,
 * loader, AdamW, the loop with checkpoints, resume, Ctrl-C, NaN stop, metrics and loss plot):
 *
 * - `lora` (train_lora.py): a param split — the loaded model is the frozen base, closed over by
 *   the loss; `valueAndGrad` and AdamW see only the adapters; adapters-only weights in
 *   `<save_dir>/lora/<lora_name>_<hidden>.safetensors`.
 * - `dpo` (train_dpo.py): policy = the loaded model, reference = a frozen copy; the loss is
 *   `dpoLoss` over `tokenLogProbs` (HEAD masked sum β 0.15 by default, `--dpo_reduction mean
 *   --beta 0.1` for V2).
 * - `distill` (train_distillation.py): α·CE + (1 − α)·T²·KL(teacher‖student); any teacher file
 *   or HF folder, MoE allowed, same vocabulary required (checked before training).
 * - `reason` (V2 train_reason.py): SFT loss with weight 10 on the tags `<think>`, `</think>`,
 *   `<answer>`, `</answer>`, divided by the unweighted mask count. By default the weight goes on
 *   whole tag spans in the reply; `--tag_loss ids` is V2's rule (every id of every tag, anywhere),
 *   which with a per-character tokenizer up-weights `<`, `>`, `/` and letters everywhere.
 * @module
 */
import { join } from "node:path";
import { tensor } from "../nn/creation.ts";
import { key } from "../nn/random.ts";
import { mapTree } from "../nn/tree.ts";
import type { Tree } from "../nn/tree.ts";
import { Tensor } from "../nn/tensor.ts";
import { add } from "../nn/ops/binary.ts";
import { affine, mul } from "../nn/ops/arith.ts";
import { sum } from "../nn/ops/reduce.ts";
import { crossEntropy } from "../nn/ops/cross_entropy.ts";
import { forward, lossFromLogits } from "../nn/model/minimind.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { distillLoss, dpoLoss, tokenLogProbs } from "../nn/model/losses.ts";
import * as lora from "../convert/lora.ts";
import { loadModel } from "../convert/hf.ts";
import { configToHF } from "../nn/model/minimind_config.ts";
import { buildCorpus } from "../data/corpus/build.ts";
import { ciStyleData, reasonRecords } from "../data/corpus/posttrain.ts";
import { DPODataset, SFTDataset } from "../data/datasets.ts";
import type { Dataset, DPOSample, LMSample } from "../data/datasets.ts";
import type { Batch } from "../data/loader.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import type { FlagTable } from "../cli.ts";
import { parseFlags, usage, UsageError } from "../cli.ts";
import { weightStem } from "./checkpoint.ts";
import { lmBatch, lmFlags, reportRun, resolveTokenizer, runLm, startDevice } from "./lm.ts";
import type { LmArgs, LmRunResult, Objective, ObjectiveFn } from "./lm.ts";
import type { Progress } from "./progress.ts";

/** The four post-training trainers. */
export type PostKind = "lora" | "dpo" | "distill" | "reason";

/** A batch of token ids and unshifted labels (B, T). */
type LmTensors = { ids: Tensor; labels: Tensor };

function loraFlags() {
  return {
    ...lmFlags({
      saveWeight: "lora",
      epochs: 10,
      batchSize: 32,
      learningRate: 1e-4,
      accumulationSteps: 1,
      maxSeqLen: 340,
      fromWeight: "full_sft",
    }),
    log_interval: { type: "int", default: 10, min: 1, help: "log every N steps" },
    lora_name: {
      type: "string",
      default: "lora_ci",
      help: "adapter name: <save_dir>/lora/<lora_name>_<hidden>.safetensors",
    },
    lora_rank: { type: "int", default: 16, min: 1, help: "adapter rank (MiniMind2: 8)" },
    lora_targets: {
      type: "optional",
      help: "comma-separated Linear names (default: every square Linear, as apply_lora)",
    },
  } satisfies FlagTable;
}

function dpoFlags() {
  return {
    ...lmFlags({
      saveWeight: "dpo",
      epochs: 1,
      batchSize: 4,
      learningRate: 4e-8,
      accumulationSteps: 1,
      maxSeqLen: 1024,
      fromWeight: "full_sft",
    }),
    save_interval: { type: "int", default: 100, min: 1, help: "save every N steps" },
    beta: { type: "float", default: 0.15, min: 0, help: "DPO β (HEAD 0.15; MiniMind2 0.1)" },
    dpo_reduction: {
      type: "choice",
      default: "sum",
      choices: ["sum", "mean"],
      help: "sequence score: HEAD masked sum, or MiniMind2's masked mean",
    },
  } satisfies FlagTable;
}

function distillFlags() {
  return {
    ...lmFlags({
      saveWeight: "full_dist",
      epochs: 6,
      batchSize: 32,
      learningRate: 5e-6,
      accumulationSteps: 1,
      maxSeqLen: 340,
      fromWeight: "full_sft",
    }),
    save_interval: { type: "int", default: 100, min: 1, help: "save every N steps" },
    teacher_weight: {
      type: "string",
      default: "full_sft",
      help:
        "teacher: a weight file, an HF folder, or a name under <save_dir> at --teacher_hidden_size",
    },
    teacher_hidden_size: { type: "int", default: 768, min: 8, help: "width of a named teacher" },
    teacher_use_moe: { type: "bool01", default: false, help: "a named teacher is MoE" },
    alpha: { type: "float", default: 0.5, min: 0, help: "loss = α·CE + (1 − α)·KD" },
    temperature: { type: "float", default: 1.5, min: 0, help: "distillation temperature T" },
  } satisfies FlagTable;
}

function reasonFlags() {
  return {
    ...lmFlags({
      saveWeight: "reason",
      epochs: 1,
      batchSize: 8,
      learningRate: 1e-6,
      accumulationSteps: 1,
      maxSeqLen: 720,
      fromWeight: "dpo",
    }),
    save_interval: { type: "int", default: 100, min: 1, help: "save every N steps" },
    reason_samples: {
      type: "int",
      default: 5000,
      min: 1,
      help: "think-format conversations generated from the corpus (without --data_path)",
    },
    tag_loss: {
      type: "choice",
      default: "span",
      choices: ["span", "ids"],
      help: "weight 10 on whole tag spans in the reply, or on every tag id anywhere (MiniMind2)",
    },
  } satisfies FlagTable;
}

/** Each trainer's flag table (MiniMind's names and defaults). */
export const POST_FLAGS = {
  lora: loraFlags(),
  dpo: dpoFlags(),
  distill: distillFlags(),
  reason: reasonFlags(),
} as const;

const SUMMARY: Record<PostKind, string> = {
  lora: "LoRA fine-tuning of a frozen model (trainer/train_lora.py).",
  dpo: "Direct preference optimisation (trainer/train_dpo.py).",
  distill: "Knowledge distillation from a teacher model (trainer/train_distillation.py).",
  reason: "Reasoning SFT with up-weighted think/answer tags (MiniMind2 trainer/train_reason.py).",
};

/** Parsed flags of any post-training trainer (the LM flags plus its own). */
// deno-lint-ignore no-explicit-any
export type PostArgs = LmArgs & Record<string, any>;

/** Test and demo hooks of {@link runPost}. */
export interface PostHooks {
  /** The tokenizer (default: `--tokenizer_path`, else out/tokenizer). */
  tokenizer?: Tokenizer;
  /** The data (default: `--data_path`, else generated from the embedded corpus). */
  dataset?: Dataset<LMSample> | Dataset<DPOSample>;
  /** Stop after N steps of this process (saving a resume checkpoint). */
  stopAfter?: number;
  /** Output. */
  progress?: Progress;
  /** Handle Ctrl-C (default true). */
  handleSigint?: boolean;
  /** Log lines (default console.log). */
  log?: (m: string) => void;
}

/** What {@link runPost} returns: the run and, for LoRA, the adapter file. */
export type PostResult = LmRunResult;

/** A frozen copy of a tree (new tensors, same values): the DPO reference. */
function frozenCopy(t: Tree): Tree {
  return mapTree(t, (x) => (x instanceof Tensor ? affine(x, 1, 0) : x));
}

/** LoRA: the adapters are the trainable tree; the loaded model is closed over, never updated. */
export function loraObjective(a: PostArgs): ObjectiveFn<LMSample, LmTensors> {
  return (cfg: MiniMindConfig, params: Tree): Objective<LMSample, LmTensors> => {
    const base = params as unknown as MiniMindParams;
    const targets = a.lora_targets
      ? String(a.lora_targets).split(",").map((s) => s.trim())
      : undefined;
    const adapters = lora.init(cfg, key(a.seed), { rank: a.lora_rank, targets });
    return {
      params: adapters,
      lossFn: (ad, b) => {
        const r = forward(cfg, base, b.ids, { train: true, lora: ad });
        return [add(lossFromLogits(r.logits, b.labels), r.auxLoss), r.auxLoss];
      },
      toBatch: lmBatch,
      saveWeights: (ad, path) =>
        lora.save(path, ad, {
          rank: String(a.lora_rank),
          base_config: JSON.stringify(configToHF(cfg)),
        }),
      stem: join("lora", `${a.lora_name}_${cfg.hiddenSize}${cfg.useMoe ? "_moe" : ""}`),
    };
  };
}

/** A DPO batch: chosen rows then rejected rows (2B, T−1). */
type DpoTensors = { x: Tensor; y: Tensor; mask: Tensor };

/** Stacks chosen over rejected rows, as train_dpo.py's `torch.cat([chosen, rejected])`. */
export function dpoBatch(b: Batch<DPOSample>): DpoTensors {
  const n = b.batch * b.seqLen;
  const cat = (c: Int32Array, r: Int32Array) => {
    const out = new Int32Array(2 * n);
    out.set(c, 0);
    out.set(r, n);
    return tensor(out, [2 * b.batch, b.seqLen], "i32");
  };
  return {
    x: cat(b.xChosen, b.xRejected),
    y: cat(b.yChosen, b.yRejected),
    mask: cat(b.maskChosen, b.maskRejected),
  };
}

/** DPO: policy = the loaded model, reference = its frozen copy (log-probs never on the tape). */
export function dpoObjective(a: PostArgs): ObjectiveFn<DPOSample, DpoTensors> {
  return (cfg: MiniMindConfig, params: Tree): Objective<DPOSample, DpoTensors> => {
    const ref = frozenCopy(params) as unknown as MiniMindParams;
    const opts = { beta: a.beta as number, reduction: a.dpo_reduction as "sum" | "mean" };
    return {
      params,
      lossFn: (p, b) => {
        const refLogps = tokenLogProbs(forward(cfg, ref, b.x).logits, b.y);
        const r = forward(cfg, p as unknown as MiniMindParams, b.x, { train: true });
        const policyLogps = tokenLogProbs(r.logits, b.y);
        const d = dpoLoss({ policyLogps, refLogps, mask: b.mask }, opts);
        return [add(d.loss, r.auxLoss), r.auxLoss];
      },
      toBatch: dpoBatch,
    };
  };
}

/** A distillation batch: ids, labels and the float row mask (labels[:, 1:] ≠ −100) (B, T). */
type DistillTensors = { ids: Tensor; labels: Tensor; mask: Tensor };

/** The LM batch plus the row mask of the logits that have a target. */
export function distillBatch(b: Batch<LMSample>): DistillTensors {
  const m = new Float32Array(b.batch * b.seqLen);
  for (let r = 0; r < b.batch; r++) {
    for (let t = 0; t + 1 < b.seqLen; t++) {
      m[r * b.seqLen + t] = b.labels[r * b.seqLen + t + 1] !== -100 ? 1 : 0;
    }
  }
  return { ...lmBatch(b), mask: tensor(m, [b.batch, b.seqLen], "f32") };
}

/** A loaded teacher. */
export interface Teacher {
  /** Its config (MoE allowed). */
  cfg: MiniMindConfig;
  /** Its params (never updated). */
  params: MiniMindParams;
  /** Where it came from. */
  path: string;
}

/**
 * Loads `--teacher_weight` (a weight file, an HF folder, or a name under `--save_dir`).
 *
 * @param a parsed flags
 * @returns the teacher
 */
export async function loadTeacher(a: PostArgs): Promise<Teacher> {
  const w = String(a.teacher_weight);
  const path = w.endsWith(".safetensors") || w.includes("/")
    ? w
    : join(a.save_dir, `${weightStem(w, a.teacher_hidden_size, a.teacher_use_moe)}.safetensors`);
  if (!(await Deno.stat(path).catch(() => null))) {
    throw new UsageError(
      `Cannot load --teacher_weight ${w}: ${path} does not exist (pass a weight file or an HF folder)`,
    );
  }
  const m = await loadModel(path);
  return { cfg: m.cfg, params: m.params, path };
}

/**
 * Distillation: α·CE + (1 − α)·KD of the student against the teacher's logits. The teacher's
 * vocabulary must be the student's (checked here, before any training).
 *
 * @param a parsed flags
 * @param teacher the loaded teacher (null with α = 1: plain CE, no teacher forward)
 * @returns the objective
 */
export function distillObjective(
  a: PostArgs,
  teacher: Teacher | null,
): ObjectiveFn<LMSample, DistillTensors> {
  return (cfg: MiniMindConfig, params: Tree): Objective<LMSample, DistillTensors> => {
    const alpha = a.alpha as number, temperature = a.temperature as number;
    if (teacher && teacher.cfg.vocabSize !== cfg.vocabSize) {
      throw new UsageError(
        `Cannot distill from ${teacher.path}: its vocabulary has ${teacher.cfg.vocabSize} tokens ` +
          `but the student's has ${cfg.vocabSize}; teacher and student must share a tokenizer`,
      );
    }
    if (!teacher && alpha !== 1) {
      throw new Error("Cannot distill without a teacher unless alpha = 1");
    }
    return {
      params,
      lossFn: (p, b) => {
        const s = forward(cfg, p as unknown as MiniMindParams, b.ids, { train: true });
        const ce = add(lossFromLogits(s.logits, b.labels), s.auxLoss);
        if (!teacher || alpha === 1) return [ce, s.auxLoss];
        const t = forward(teacher.cfg, teacher.params, b.ids).logits;
        const kd = distillLoss(s.logits, t, b.mask, { temperature });
        return [add(affine(ce, alpha, 0), affine(kd, 1 - alpha, 0)), s.auxLoss];
      },
      toBatch: distillBatch,
    };
  };
}

/** A reasoning batch: ids, shifted targets, per-target weights and the unweighted count. */
type ReasonTensors = { ids: Tensor; targets: Tensor; weights: Tensor; count: number };

/** The tags V2's train_reason.py up-weights. */
export const REASON_TAGS: readonly string[] = ["<think>", "</think>", "<answer>", "</answer>"];

/** How `reason` picks the up-weighted targets (`--tag_loss`). */
export type TagLoss = "span" | "ids";

/**
 * The token ids of each of {@link REASON_TAGS} under a tokenizer (one id for a tag that is an
 * added token, e.g. `<think>` in MiniMind's tokenizers; several for `<answer>`).
 *
 * @param tok the tokenizer
 * @returns one id sequence per tag
 */
export function reasonTagIds(tok: Tokenizer): number[][] {
  return REASON_TAGS.map((s) => tok.encode(s, { addSpecialTokens: false }));
}

/**
 * The ids V2's train_reason.py up-weights: every id of tokenize('<think>'), '</think>',
 * '<answer>' and '</answer>' (`--tag_loss ids`).
 *
 * @param tok the tokenizer
 * @returns the id set
 */
export function reasonSpecialIds(tok: Tokenizer): Set<number> {
  return new Set(reasonTagIds(tok).flat());
}

/**
 * The reasoning loss weights: target y[t] = ids[t+1]; w = the loss mask, then 10 on the
 * up-weighted targets; the sum is divided by the unweighted mask count (as V2).
 *
 * - `span` (the default): 10 on the positions where a whole tag's id sequence appears among the
 *   reply's targets (the loss mask), nowhere else.
 * - `ids` (V2's `loss_mask[sp_ids] = 10`): 10 wherever the target is any id of any tag, inside or
 *   outside the reply. When a tag is several tokens, those ids are ordinary text pieces (`<`, `>`,
 *   `/`, single letters with a per-character tokenizer), up-weighted wherever they occur.
 *
 * @param tags each tag's id sequence ({@link reasonTagIds})
 * @param mode `span` or `ids`
 * @returns batch → tensors
 */
export function reasonBatch(
  tags: readonly number[][],
  mode: TagLoss = "span",
): (b: Batch<LMSample>) => ReasonTensors {
  const ids = new Set(tags.flat());
  const spans = tags.filter((s) => s.length > 0);
  return (b) => {
    const n = b.batch * b.seqLen;
    const targets = new Int32Array(n).fill(-100);
    const w = new Float32Array(n);
    let count = 0;
    for (let r = 0; r < b.batch; r++) {
      const row = r * b.seqLen;
      const masked = (t: number) => t + 1 < b.seqLen && b.labels[row + t + 1] !== -100;
      for (let t = 0; t + 1 < b.seqLen; t++) {
        const y = b.inputIds[row + t + 1];
        const m = masked(t) ? 1 : 0;
        targets[row + t] = y;
        count += m;
        w[row + t] = mode === "ids" && ids.has(y) ? 10 : m;
      }
      if (mode !== "span") continue;
      for (let t = 0; t + 1 < b.seqLen; t++) {
        for (const s of spans) {
          if (s.every((id, k) => masked(t + k) && b.inputIds[row + t + k + 1] === id)) {
            for (let k = 0; k < s.length; k++) w[row + t + k] = 10;
          }
        }
      }
    }
    return {
      ids: tensor(b.inputIds, [b.batch, b.seqLen], "i32"),
      targets: tensor(targets, [b.batch, b.seqLen], "i32"),
      weights: tensor(w, [b.batch, b.seqLen], "f32"),
      count: Math.max(count, 1),
    };
  };
}

/**
 * Reasoning SFT: Σ(CE·w) / Σmask + aux.
 *
 * @param tags each tag's id sequence ({@link reasonTagIds})
 * @param mode `span` (tag spans in the reply) or `ids` (V2: every tag id anywhere)
 * @returns the objective
 */
export function reasonObjective(
  tags: readonly number[][],
  mode: TagLoss = "span",
): ObjectiveFn<LMSample, ReasonTensors> {
  return (cfg: MiniMindConfig, params: Tree): Objective<LMSample, ReasonTensors> => ({
    params,
    lossFn: (p, b) => {
      const r = forward(cfg, p as unknown as MiniMindParams, b.ids, { train: true });
      const ce = crossEntropy(r.logits, b.targets, { reduction: "none" }); // (B, T)
      const loss = affine(sum(mul(ce, b.weights)), 1 / b.count, 0);
      return [add(loss, r.auxLoss), r.auxLoss];
    },
    toBatch: reasonBatch(tags, mode),
  });
}

/** The default data of each trainer, from the embedded corpus. */
async function defaultData(
  kind: PostKind,
  a: PostArgs,
  tok: Tokenizer,
  log: (m: string) => void,
): Promise<{ dataset: Dataset<LMSample> | Dataset<DPOSample>; what: string }> {
  const source = a.data_path as string | undefined;
  const corpus = source ? null : await buildCorpus({ log });
  const opts = { maxLength: a.max_seq_len, seed: a.seed, skipBadLines: a.skip_bad_lines };
  if (kind === "dpo") {
    const path = source ?? corpus!.dpo;
    return { dataset: new DPODataset(path, tok, opts), what: path };
  }
  if (kind === "lora") {
    if (source) return { dataset: new SFTDataset(source, tok, opts), what: source };
    const ci = ciStyleData(corpus!.pretrain, corpus!.heldoutPretrain, a.seed);
    return {
      dataset: new SFTDataset(ci.train, tok, { ...opts, addSystemRatio: 0, emptyThinkRatio: 1 }),
      what: `${ci.train.length} ci (词) in ${
        Object.keys(ci.patterns).length
      } tunes from the corpus`,
    };
  }
  if (kind === "reason") {
    // MiniMind2's SFTDataset adds no system prompt (its English letters would get weight 10 here)
    const ro = { ...opts, emptyThinkRatio: 0, addSystemRatio: 0 };
    if (source) return { dataset: new SFTDataset(source, tok, ro), what: source };
    const recs = reasonRecords(corpus!.pretrain, a.reason_samples, a.seed);
    return {
      dataset: new SFTDataset(recs, tok, ro),
      what: `${recs.length} think-format poem explanations from the corpus`,
    };
  }
  const path = source ?? corpus!.sft;
  return { dataset: new SFTDataset(path, tok, opts), what: path };
}

/**
 * Runs one post-training trainer with parsed flags.
 *
 * @param kind which trainer
 * @param parsed parsed flags (`values`) and the names given explicitly
 * @param hooks tokenizer, data, output and test hooks
 * @returns the run
 */
export async function runPost(
  kind: PostKind,
  parsed: { values: PostArgs; given: Set<string> },
  hooks: PostHooks = {},
): Promise<PostResult> {
  const a = parsed.values;
  const log = hooks.log ?? console.log;
  const tokenizer = hooks.tokenizer ?? await resolveTokenizer(a.tokenizer_path, log);
  // the teacher is loaded (and its vocabulary checked) before any data or training
  const teacher = kind === "distill" && a.alpha !== 1 ? await loadTeacher(a) : null;
  if (teacher) {
    log(
      `Teacher: ${teacher.path} (hidden ${teacher.cfg.hiddenSize}, ${teacher.cfg.numHiddenLayers} layers${
        teacher.cfg.useMoe ? ", MoE" : ""
      }, vocab ${teacher.cfg.vocabSize})`,
    );
    if (teacher.cfg.vocabSize !== tokenizer.vocabSize) {
      throw new UsageError(
        `Cannot distill from ${teacher.path}: its vocabulary has ${teacher.cfg.vocabSize} tokens ` +
          `but the tokenizer has ${tokenizer.vocabSize}; teacher and student must share a tokenizer`,
      );
    }
  }
  const data = hooks.dataset
    ? { dataset: hooks.dataset, what: "given dataset" }
    : await defaultData(kind, a, tokenizer, log);
  log(`Data: ${data.what} (${data.dataset.length} records, up to ${a.max_seq_len} tokens)`);
  if (kind === "lora") {
    await Deno.mkdir(join(a.save_dir, "lora"), { recursive: true });
    await Deno.mkdir(join(a.checkpoint_dir, "lora"), { recursive: true });
  }
  const common = {
    args: a,
    given: parsed.given,
    tokenizer,
    stopAfter: hooks.stopAfter,
    progress: hooks.progress,
    handleSigint: hooks.handleSigint,
  };
  if (kind === "dpo") {
    return await runLm<DPOSample, DpoTensors>({
      ...common,
      dataset: data.dataset as Dataset<DPOSample>,
      objective: dpoObjective(a),
    });
  }
  const dataset = data.dataset as Dataset<LMSample>;
  if (kind === "lora") return await runLm({ ...common, dataset, objective: loraObjective(a) });
  if (kind === "distill") {
    return await runLm({ ...common, dataset, objective: distillObjective(a, teacher) });
  }
  return await runLm({
    ...common,
    dataset,
    objective: reasonObjective(reasonTagIds(tokenizer), a.tag_loss as TagLoss),
  });
}

/**
 * The command-line entry of a trainer (`deno task lora|dpo|distill|reason`).
 *
 * @param kind which trainer
 * @param argv arguments
 * @returns the exit code
 */
export async function postMain(kind: PostKind, argv: readonly string[]): Promise<number> {
  const command = `deno task ${kind}`;
  const table = POST_FLAGS[kind] as FlagTable;
  const parsed = parseFlags(argv, table, command);
  if (parsed.help) {
    console.log(usage(command, SUMMARY[kind], table));
    return 0;
  }
  await startDevice(String(parsed.values.device), String(parsed.values.dtype), console.log);
  const r = await runPost(kind, parsed as unknown as { values: PostArgs; given: Set<string> });
  return reportRun(r);
}
