/**
 * Evaluations the demo and `deno task eval` report: perplexity on held-out text (exp of the mean
 * next-token cross-entropy over real tokens) and **form accuracy** — the share of generated poems
 * whose every line has the requested number of characters (5 or 7), with the line count checked
 * separately.
 * @module
 */
import type { Tensor } from "../nn/tensor.ts";
import { full, tensor } from "../nn/creation.ts";
import { scope } from "../nn/scope.ts";
import { crossEntropy } from "../nn/ops/cross_entropy.ts";
import { concat, sliceAxis } from "../nn/ops/movement.ts";
import { forward } from "../nn/model/minimind.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { generate } from "../nn/model/generate.ts";
import type { GenerateOptions, GenerationPiece } from "../nn/model/generate.ts";
import type { Dataset, DPOSample, LMSample } from "../data/datasets.ts";
import { maximum } from "../nn/ops/binary.ts";
import { cast, div, mul } from "../nn/ops/arith.ts";
import { sum } from "../nn/ops/reduce.ts";
import { distillLoss, tokenLogProbs } from "../nn/model/losses.ts";
import { dpoBatch } from "./posttrain.ts";
import { DataLoader } from "../data/loader.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { analyzePoem, poemForm } from "../data/corpus/poetry.ts";
import type { PoemForm } from "../data/corpus/poetry.ts";

/** A model to evaluate. */
export interface EvalModel {
  /** Config. */
  cfg: MiniMindConfig;
  /** Params. */
  params: MiniMindParams;
  /** Tokenizer. */
  tokenizer: Tokenizer;
}

/**
 * Perplexity of `dataset` under the model: exp(Σ CE / #targets) over every non-ignored label
 * (MiniMind's shifted LM loss), in batches.
 *
 * @param model config and params
 * @param dataset LM samples (e.g. held-out pretrain text)
 * @param options batch size, how many samples (default all)
 * @returns `{ppl, loss, tokens}`
 */
export async function perplexity(
  model: { cfg: MiniMindConfig; params: MiniMindParams },
  dataset: Dataset<LMSample>,
  options: { batchSize?: number; limit?: number } = {},
): Promise<{ ppl: number; loss: number; tokens: number }> {
  const loader = new DataLoader(dataset, {
    batchSize: options.batchSize ?? 16,
    shuffle: false,
    trimPadding: true,
  });
  const limit = options.limit ?? dataset.length;
  let total = 0, count = 0, seen = 0;
  for (const b of loader.batches(0)) {
    if (seen >= limit) break;
    seen += b.batch;
    const [sum, n] = scope(() => {
      const ids = tensor(b.inputIds, [b.batch, b.seqLen], "i32");
      const { logits } = forward(model.cfg, model.params, ids); // (B, T, V)
      // targets[b, t] = labels[b, t + 1]; the last column is ignored
      const labels = tensor(b.labels, [b.batch, b.seqLen], "i32");
      const tail = full([b.batch, 1], -100, "i32");
      const targets = concat([sliceAxis(labels, 1, 1, b.seqLen), tail], 1); // (B, T)
      let n = 0;
      for (let r = 0; r < b.batch; r++) {
        for (let t = 1; t < b.seqLen; t++) if (b.labels[r * b.seqLen + t] !== -100) n++;
      }
      return [crossEntropy(logits, targets, { reduction: "sum" }), n] as [Tensor, number];
    });
    total += await sum.item(); // sync point
    sum.dispose();
    count += n;
  }
  const loss = count ? total / count : NaN;
  return { ppl: Math.exp(loss), loss, tokens: count };
}

/** One form-accuracy prompt. */
export interface FormPrompt {
  /** Poem title. */
  title: string;
  /** Requested form. */
  form: PoemForm;
}

/** One generated poem and its verdict. */
export interface FormResult extends FormPrompt {
  /** The user prompt. */
  prompt: string;
  /** What the model wrote. */
  text: string;
  /** Every line has the requested characters per line (and there is at least one line). */
  lineLengthsOk: boolean;
  /** …and the number of lines is right too (the full form). */
  formOk: boolean;
}

/**
 * Held-out titles with their real forms: the first `perForm` poems of each of the four forms
 * among `《title》 author\npoem` texts (the demo's and the RL trainers' evaluation set).
 *
 * @param texts held-out pretrain texts of the corpus
 * @param perForm titles per form
 * @returns up to 4 × perForm prompts
 */
export function heldoutFormPrompts(texts: readonly string[], perForm: number): FormPrompt[] {
  const byForm = new Map<string, FormPrompt[]>();
  for (const t of texts) {
    const m = /^《(.+?)》[^\n]*\n([\s\S]+)$/u.exec(t);
    if (!m) continue;
    const form = poemForm(m[2]);
    if (!form) continue;
    const list = byForm.get(form.name) ?? [];
    if (list.length < perForm) list.push({ title: m[1], form });
    byForm.set(form.name, list);
  }
  return [...byForm.values()].flat();
}

/**
 * The compose request the corpus's SFT data uses: `写一首{form}，题为《{title}》。`.
 *
 * @param p title and form
 * @returns the user message
 */
export function composePrompt(p: FormPrompt): string {
  return `写一首${p.form.name}，题为《${p.title}》。`;
}

/**
 * Whether a poem's every line has `charsPerLine` characters (lines split at ，。？！；).
 *
 * @param text generated text
 * @param form requested form
 * @returns `[every line length right, line count right too]`
 */
export function checkForm(text: string, form: PoemForm): [boolean, boolean] {
  const { lines } = analyzePoem(text);
  const lengths = lines.length > 0 && lines.every((l) => [...l].length === form.charsPerLine);
  return [lengths, lengths && lines.length === form.lines];
}

/**
 * The model's reply to each user message (chat template with the generation prompt, batched).
 *
 * @param model config, params, tokenizer
 * @param messages one user message per reply
 * @param options sampling (default temperature 0.7, top-p 0.85, top-k 50, 80 new tokens),
 *   batch size (default 32; batch i samples with seed i unless `seed` is given) and
 *   `openThinking` (the generation prompt opens a think block, `<think>\n`, instead of giving an
 *   empty one; the reply then starts inside it)
 * @returns the replies, trimmed
 */
export async function chatReplies(
  model: EvalModel,
  messages: readonly string[],
  options: GenerateOptions & { batchSize?: number; openThinking?: boolean } = {},
): Promise<string[]> {
  const tok = model.tokenizer;
  const out: string[] = [];
  const bs = options.batchSize ?? 32;
  for (let i = 0; i < messages.length; i += bs) {
    const group = messages.slice(i, i + bs);
    const texts = group.map((m) =>
      tok.applyChatTemplate([{ role: "user", content: m }], {
        addGenerationPrompt: true,
        openThinking: options.openThinking,
      })
    );
    const replies = group.map(() => "");
    const gen = generate(model, texts, {
      maxNewTokens: 80,
      temperature: 0.7,
      topP: 0.85,
      topK: 50,
      seed: i,
      ...options,
    }) as AsyncGenerator<GenerationPiece>;
    for await (const piece of gen) replies[piece.index] += piece.text;
    out.push(...replies.map((r) => r.trim()));
  }
  return out;
}

/**
 * Generates a poem for every prompt (chat template, batched) and checks its form.
 *
 * @param model config, params, tokenizer
 * @param prompts titles and forms
 * @param options sampling (default temperature 0.7, top-p 0.85, top-k 50, 80 new tokens, seed 0)
 * @returns one result per prompt and the two accuracies
 */
export async function formAccuracy(
  model: EvalModel,
  prompts: readonly FormPrompt[],
  options: GenerateOptions & { batchSize?: number } = {},
): Promise<{ results: FormResult[]; lineAccuracy: number; formAccuracy: number }> {
  const texts = await chatReplies(model, prompts.map(composePrompt), options);
  const results: FormResult[] = prompts.map((p, j) => {
    const [lineLengthsOk, formOk] = checkForm(texts[j], p.form);
    return { ...p, prompt: composePrompt(p), text: texts[j], lineLengthsOk, formOk };
  });
  const n = results.length || 1;
  return {
    results,
    lineAccuracy: results.filter((r) => r.lineLengthsOk).length / n,
    formAccuracy: results.filter((r) => r.formOk).length / n,
  };
}

/** What {@link preferenceAccuracy} measures on preference pairs. */
export interface PreferenceReport {
  /** Share of pairs whose policy margin score(chosen) − score(rejected) is > 0. */
  accuracy: number;
  /**
   * Share of pairs whose DPO implicit reward margin is > 0: the policy margin minus the
   * reference's (TRL's `rewards/accuracies`; 0 when the policy is the reference).
   */
  rewardAccuracy: number;
  /** Mean policy margin. */
  margin: number;
  /** KL(policy ‖ reference) per response token (nats), over chosen and rejected responses. */
  kl: number;
  /** Pairs evaluated. */
  pairs: number;
}

/**
 * Preference accuracy of a policy on DPO pairs (the DPO trainer's sequence scores of the
 * response tokens) and its KL to a reference model on the same response tokens.
 *
 * @param cfg model config (policy and reference share it)
 * @param policy the trained params
 * @param ref the reference params (e.g. the SFT model the policy started from)
 * @param dataset pairs
 * @param options batch size (default 8), score reduction (default "sum", HEAD's)
 * @returns accuracy, mean margin, KL, pair count
 */
export async function preferenceAccuracy(
  cfg: MiniMindConfig,
  policy: MiniMindParams,
  ref: MiniMindParams,
  dataset: Dataset<DPOSample>,
  options: { batchSize?: number; reduction?: "sum" | "mean" } = {},
): Promise<PreferenceReport> {
  const loader = new DataLoader(dataset, {
    batchSize: options.batchSize ?? 8,
    shuffle: false,
    trimPadding: true,
  });
  let wins = 0, rewardWins = 0, pairs = 0, marginSum = 0, klSum = 0, klTokens = 0;
  for (const b of loader.batches(0)) {
    const [scores, kl, tokens] = scope(() => {
      const { x, y, mask } = dpoBatch(b);
      const pl = forward(cfg, policy, x).logits; // (2B, T, V)
      const rl = forward(cfg, ref, x).logits;
      const m = cast(mask, "f32");
      const score = (logits: Tensor) => {
        const s = sum(mul(tokenLogProbs(logits, y), m), 1); // (2B)
        return options.reduction === "mean" ? div(s, maximum(sum(m, 1), 1e-8)) : s;
      };
      const n = b.maskChosen.reduce((a, v) => a + v, 0) + b.maskRejected.reduce((a, v) => a + v, 0);
      return [concat([score(pl), score(rl)], 0), distillLoss(rl, pl, mask), n] as [
        Tensor,
        Tensor,
        number,
      ];
    });
    const sc = await scores.data(); // sync point: policy scores (2B), then the reference's
    const ref0 = 2 * b.batch;
    for (let i = 0; i < b.batch; i++) {
      const d = sc[i] - sc[b.batch + i];
      marginSum += d;
      if (d > 0) wins++;
      if (d - (sc[ref0 + i] - sc[ref0 + b.batch + i]) > 0) rewardWins++;
    }
    pairs += b.batch;
    klSum += (await kl.item()) * tokens;
    klTokens += tokens;
    scores.dispose();
    kl.dispose();
  }
  return {
    accuracy: pairs ? wins / pairs : NaN,
    rewardAccuracy: pairs ? rewardWins / pairs : NaN,
    margin: pairs ? marginSum / pairs : NaN,
    kl: klTokens ? klSum / klTokens : NaN,
    pairs,
  };
}
