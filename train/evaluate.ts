/**
 * Evaluations the demo and `deno task eval` report: perplexity on held-out text (exp of the mean
 * next-token cross-entropy over real tokens) and **form accuracy** — the share of generated poems
 * whose every line has the requested number of characters (5 or 7), with the line count checked
 * separately.
 * @module
 */
import type { Tensor } from "../nn/tensor.ts";
import { tensor } from "../nn/creation.ts";
import { scope } from "../nn/scope.ts";
import { crossEntropy } from "../nn/ops/cross_entropy.ts";
import { concat, sliceAxis } from "../nn/ops/movement.ts";
import { full } from "../nn/creation.ts";
import { forward } from "../nn/model/minimind.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import { generate } from "../nn/model/generate.ts";
import type { GenerateOptions, GenerationPiece } from "../nn/model/generate.ts";
import type { Dataset, LMSample } from "../data/datasets.ts";
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
  const tok = model.tokenizer;
  const results: FormResult[] = [];
  const bs = options.batchSize ?? 32;
  for (let i = 0; i < prompts.length; i += bs) {
    const group = prompts.slice(i, i + bs);
    const texts = group.map((p) =>
      tok.applyChatTemplate([{ role: "user", content: composePrompt(p) }], {
        addGenerationPrompt: true,
      })
    );
    const out = group.map(() => "");
    const gen = generate(model, texts, {
      maxNewTokens: 80,
      temperature: 0.7,
      topP: 0.85,
      topK: 50,
      seed: i,
      ...options,
    }) as AsyncGenerator<GenerationPiece>;
    for await (const piece of gen) out[piece.index] += piece.text;
    group.forEach((p, j) => {
      const text = out[j].trim();
      const [lineLengthsOk, formOk] = checkForm(text, p.form);
      results.push({ ...p, prompt: composePrompt(p), text, lineLengthsOk, formOk });
    });
  }
  const n = results.length || 1;
  return {
    results,
    lineAccuracy: results.filter((r) => r.lineLengthsOk).length / n,
    formAccuracy: results.filter((r) => r.formOk).length / n,
  };
}
