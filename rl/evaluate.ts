/**
 * The held-out poetry evaluation of the RL trainers: sample `samples` poems for each held-out
 * title (chat template, the same sampler settings before and after training), score them with the
 * poetry reward, and (given a reference model) report the policy's KL to it on its own samples.
 * @module
 */
import { scope } from "../nn/scope.ts";
import { tensor } from "../nn/creation.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import type { Tokenizer } from "../data/tokenizer.ts";
import { composePrompt } from "../train/scores.ts";
import type { FormPrompt } from "../train/scores.ts";
import { k3Kl, sequenceMean } from "./losses.ts";
import { rollout, rolloutTensors, scoreLogProbs } from "./rollout.ts";
import { poetryScore } from "./poetry.ts";
import type { PoetryScore } from "./poetry.ts";

/** Sampler and size of the evaluation. */
export interface PoetryEvalOptions {
  /** Samples per title (default 4). */
  samples?: number;
  /** Seed (default 0: the same draws before and after). */
  seed?: number;
  /** Most new tokens (default 96). */
  maxNewTokens?: number;
  /** Temperature (default 0.8), top-p (0.85), top-k (50): the RL sampler's. */
  temperature?: number;
  /** Nucleus mass. */
  topP?: number;
  /** Top-k. */
  topK?: number;
  /** Rows per rollout batch (default 64). */
  batchSize?: number;
  /** Reference params: also report the mean per-token k3 KL(π ‖ π_ref) on the samples. */
  ref?: MiniMindParams;
}

/** What {@link evaluatePoetry} returns. */
export interface PoetryEval {
  /** Mean of each reward component and the total. */
  mean: PoetryScore;
  /** Poems scored. */
  count: number;
  /** Mean per-token KL to the reference (NaN without one). */
  kl: number;
  /** One sample per title (the first). */
  examples: { prompt: FormPrompt; text: string; score: PoetryScore }[];
  /** Each poem's total, title by title (`samples` per title, in draw order). */
  totals?: number[];
}

/**
 * Samples and scores poems for held-out titles.
 *
 * @param model config, params, tokenizer
 * @param prompts titles and forms
 * @param options sampler, samples per title, reference
 * @returns mean scores, KL and examples
 */
export async function evaluatePoetry(
  model: { cfg: MiniMindConfig; params: MiniMindParams; tokenizer: Tokenizer },
  prompts: readonly FormPrompt[],
  options: PoetryEvalOptions = {},
): Promise<PoetryEval> {
  const k = options.samples ?? 4, bs = options.batchSize ?? 64;
  const tok = model.tokenizer;
  const rows = prompts.flatMap((p) => Array.from({ length: k }, () => p));
  const sum: PoetryScore = { total: 0, form: 0, rhyme: 0, tone: 0, repeat: 0 };
  const examples: PoetryEval["examples"] = [];
  const totals: number[] = [];
  let klSum = 0;
  for (let i = 0; i < rows.length; i += bs) {
    const group = rows.slice(i, i + bs);
    const ids = group.map((p) =>
      tok.encode(
        tok.applyChatTemplate([{ role: "user", content: composePrompt(p) }], {
          addGenerationPrompt: true,
        }),
      )
    );
    const r = await rollout(model, ids, {
      maxNewTokens: options.maxNewTokens ?? 96,
      temperature: options.temperature ?? 0.8,
      topP: options.topP ?? 0.85,
      topK: options.topK ?? 50,
      seed: (options.seed ?? 0) + i,
    });
    group.forEach((p, j) => {
      const s = poetryScore(r.texts[j], p.form);
      for (const key of Object.keys(sum) as (keyof PoetryScore)[]) sum[key] += s[key];
      totals.push(s.total);
      if ((i + j) % k === 0) examples.push({ prompt: p, text: r.texts[j], score: s });
    });
    if (options.ref) {
      const refLogp = await scoreLogProbs(model.cfg, options.ref, r);
      const t = scope(() => {
        const x = rolloutTensors(r);
        const ref = tensor(refLogp, [r.rows, r.responseWidth], "f32");
        return sequenceMean(k3Kl(x.oldLogp, ref), x.mask);
      });
      klSum += (await t.item()) * group.length;
      t.dispose();
    }
  }
  const n = rows.length;
  for (const key of Object.keys(sum) as (keyof PoetryScore)[]) sum[key] /= n;
  return { mean: sum, count: n, kl: options.ref ? klSum / n : NaN, examples, totals };
}

/** What {@link pairedGain} returns. */
export interface PairedGain {
  /** Mean score after − before. */
  delta: number;
  /** Its standard error over the units (titles, tasks). */
  se: number;
  /** delta / se. */
  z: number;
  /** Units paired (titles, tasks). */
  titles: number;
}

/**
 * The held-out gain of paired evaluations and its standard error. Before and after score the same
 * units (a held-out title, a task) the same number of times, so they are paired: a unit's
 * difference is the mean of its samples after minus before, and SE = sample std of the units'
 * differences / √units (the spread between units and between samples both enter it; the pairing
 * removes what the units share).
 *
 * @param before the starting model's scores, `samples` consecutive per unit (or a
 *   {@link PoetryEval} with `totals`)
 * @param after the trained model's, same units in the same order
 * @param samples samples per unit
 * @returns the gain, its SE and the ratio
 * @example
 * ```ts
 * import { pairedGain } from "./evaluate.ts";
 * pairedGain([1, 1, 2, 2], [2, 1, 2, 3], 2); // differences 0.5 and 0.5: SE 0
 * ```
 */
export function pairedGain(
  before: PoetryEval | readonly number[],
  after: PoetryEval | readonly number[],
  samples: number,
): PairedGain {
  const a = "totals" in before ? before.totals : before as readonly number[];
  const b = "totals" in after ? after.totals : after as readonly number[];
  if (!a || !b || a.length !== b.length || a.length % samples !== 0) {
    throw new Error(
      `Cannot pair held-out evaluations of ${a?.length ?? "no"} and ${
        b?.length ?? "no"
      } scores in units of ${samples}`,
    );
  }
  const titles = a.length / samples;
  const d = Array.from({ length: titles }, (_, t) => {
    let s = 0;
    for (let j = t * samples; j < (t + 1) * samples; j++) s += b[j] - a[j];
    return s / samples;
  });
  const delta = d.reduce((x, y) => x + y, 0) / titles;
  const v = titles > 1 ? d.reduce((x, y) => x + (y - delta) ** 2, 0) / (titles - 1) : NaN;
  const se = Math.sqrt(v / titles);
  return { delta, se, z: delta / se, titles };
}
