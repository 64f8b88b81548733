/**
 * Batched next-token sampling with per-request settings, on the `sample` op (MiniMind's
 * `generate` filters: temperature → repetition penalty → top-k → top-p → inverse-CDF draw), after
 * OpenAI's logit bias and presence and frequency penalties on the raw logits (as vLLM orders
 * them) and the token mask of a constrained reply. Rows with
 * equal filter settings share one op call. Each request draws its uniform from its own key and
 * step (`foldIn(key, step)`), so the token a request gets never depends on what else is decoded
 * in the same batch, and a request with a seed gets what `generate` gives for that seed (exactly,
 * up to the float rounding of a prompt taken from the engine's prefix cache).
 * @module
 */
// B = rows in the batch, G = rows in one settings group, V = vocab size
import { tensor } from "../nn/creation.ts";
import { foldIn, key as seedKey, uniformArray } from "../nn/random.ts";
import type { Key } from "../nn/random.ts";
import type { Tensor } from "../nn/tensor.ts";
import { concat, sliceAxis } from "../nn/ops/movement.ts";
import { add } from "../nn/ops/binary.ts";
import { sample } from "../nn/ops/sample.ts";
import { logitAddend } from "../nn/model/generate.ts";
import type { SamplingSettings } from "./validate.ts";

/** The uniform in [0, 1) a request uses at decode step `step`. */
export function stepUniform(k: Key, step: number): number {
  return uniformArray(foldIn(k, step), 1)[0];
}

/**
 * The key of a request seed's choice `row`: row `row` of `generate`'s scheme (row r, step s uses
 * `foldIn(foldIn(key(seed), r), s)`), so a seeded request's choice r returns what `generate`
 * returns for row r of the same prompts.
 */
export function requestKey(seed: number, row = 0): Key {
  return foldIn(seedKey(seed), row);
}

/** One row to sample: its settings, its uniform, and (for the penalties) the tokens it has seen. */
export interface SampleRow {
  /** Temperature, top-p, top-k, the penalties. */
  sampling: SamplingSettings;
  /** The row's uniform for this step. */
  u: number;
  /** Prompt + generated ids (read only when the repetition penalty is not 1). */
  seen?: Iterable<number>;
  /**
   * How often each id was generated so far (read only when the presence or frequency penalty is
   * not 0: OpenAI counts the completion's tokens, not the prompt's).
   */
  counts?: ReadonlyMap<number, number>;
  /** Return the log-prob of the sampled token and of this many most likely ones (off when absent). */
  logprobs?: number;
  /** A (V) logit addend of 0 and −∞: the tokens a constrained reply allows (`constrain.ts`). */
  allowed?: Float32Array;
}

/** A token and its log-prob under the model's raw distribution. */
export interface TokenLogprob {
  /** Token id. */
  id: number;
  /** log-softmax of the raw logits (before penalties, temperature and filtering) at `id`. */
  logprob: number;
}

/** The log-prob of a sampled token and the most likely alternatives at that step. */
export interface StepLogprobs extends TokenLogprob {
  /** The `logprobs` most likely tokens, most likely first (ties: lower id first). */
  top: TokenLogprob[];
}

/** What {@linkcode sampleRows} returns: one id per row, and log-probs for the rows that asked. */
export interface SampledRows {
  /** The B sampled ids. */
  ids: Int32Array;
  /** Per row: its {@linkcode StepLogprobs}, or null when the row did not ask. */
  logprobs: (StepLogprobs | null)[];
}

/**
 * log-softmax of `row` at `id` and its `top` largest entries (f64 sums). NaN logits never rank.
 *
 * @param row one row of raw logits (V)
 * @param id the sampled token
 * @param top how many of the most likely tokens to list (0..V)
 * @returns the token's log-prob and the top list
 */
export function stepLogprobs(row: ArrayLike<number>, id: number, top: number): StepLogprobs {
  const V = row.length;
  let mx = -Infinity;
  for (let i = 0; i < V; i++) if (row[i] > mx) mx = row[i];
  let z = 0;
  for (let i = 0; i < V; i++) z += Math.exp(row[i] - mx);
  const lse = mx + Math.log(z);
  // the `top` best so far, best first (insertion into a short sorted list)
  const best: number[] = [];
  const k = Math.min(top, V);
  for (let i = 0; i < V && k > 0; i++) {
    const v = row[i];
    if (!(v >= -Infinity)) continue; // NaN
    if (best.length === k && !(v > row[best[k - 1]])) continue;
    let j = best.length;
    while (j > 0 && v > row[best[j - 1]]) j--;
    best.splice(j, 0, i);
    if (best.length > k) best.pop();
  }
  return {
    id,
    logprob: row[id] - lse,
    top: best.map((i) => ({ id: i, logprob: row[i] - lse })),
  };
}

function groupKey(s: SamplingSettings): string {
  return `${s.temperature}|${s.topK}|${s.topP}|${s.repetitionPenalty}|${s.minP ?? 0}`;
}

function adjusted(r: SampleRow): boolean {
  return r.sampling.presencePenalty !== 0 || r.sampling.frequencyPenalty !== 0 ||
    r.allowed !== undefined || (r.sampling.logitBias?.size ?? 0) > 0;
}

/** A group's rows' logit addends (G, V) ({@linkcode logitAddend}: the one formula `generate` uses). */
function addendRows(rows: readonly SampleRow[], idx: readonly number[], V: number): Float32Array {
  return logitAddend(
    idx.map((i) => {
      const r = rows[i];
      return {
        logitBias: r.sampling.logitBias,
        counts: r.counts,
        presencePenalty: r.sampling.presencePenalty,
        frequencyPenalty: r.sampling.frequencyPenalty,
        allowed: r.allowed,
      };
    }),
    V,
  );
}

/**
 * Samples one token per row of `logits` (B, V). Reads the ids back (one sync point per settings
 * group, one more for the logits when a row asks for log-probs); disposes everything it creates,
 * never `logits`.
 *
 * @param logits last-position logits [B, V]
 * @param rows per-row settings, B of them
 * @returns the B token ids, and the log-probs of the rows that asked
 */
export async function sampleRows(logits: Tensor, rows: readonly SampleRow[]): Promise<SampledRows> {
  const [B, V] = logits.shape;
  if (rows.length !== B) {
    throw new Error(`Cannot sample ${rows.length} rows from logits of shape [${logits.shape}]`);
  }
  const groups = new Map<string, number[]>();
  rows.forEach((r, i) => {
    const k = groupKey(r.sampling);
    const g = groups.get(k);
    if (g) g.push(i);
    else groups.set(k, [i]);
  });
  const out = new Int32Array(B);
  for (const idx of groups.values()) {
    const s = rows[idx[0]].sampling;
    const made: Tensor[] = [];
    try {
      let x = logits;
      if (idx.length !== B) {
        const parts = idx.map((i) => sliceAxis(logits, 0, i, i + 1)); // (1, V) each
        made.push(...parts);
        x = concat(parts, 0); // (G, V)
        made.push(x);
      }
      if (idx.some((i) => adjusted(rows[i]))) {
        const pen = tensor(addendRows(rows, idx, V), [idx.length, V]); // (G, V)
        made.push(pen);
        x = add(x, pen);
        made.push(x);
      }
      const u = tensor(Float32Array.from(idx, (i) => rows[i].u), [idx.length]); // (G)
      made.push(u);
      let seen: Tensor | undefined;
      if (s.repetitionPenalty !== 1) {
        const mask = new Uint32Array(idx.length * V);
        idx.forEach((i, g) => {
          for (const id of rows[i].seen ?? []) if (id >= 0 && id < V) mask[g * V + id] = 1;
        });
        seen = tensor(mask, [idx.length, V], "u32");
        made.push(seen);
      }
      const ids = sample(x, u, {
        temperature: s.temperature > 0 ? s.temperature : 1,
        greedy: s.temperature === 0,
        topK: s.topK,
        topP: s.topP,
        repetitionPenalty: s.repetitionPenalty,
        minP: s.minP,
        seen,
      }); // (G) i32
      made.push(ids);
      const got = await ids.data(); // sync point
      idx.forEach((i, g) => (out[i] = got[g]));
    } finally {
      for (const t of made) t.dispose();
    }
  }
  const logprobs: (StepLogprobs | null)[] = rows.map(() => null);
  if (rows.some((r) => r.logprobs !== undefined)) {
    const all = await logits.data(); // sync point, only for requests that ask
    rows.forEach((r, i) => {
      if (r.logprobs === undefined) return;
      logprobs[i] = stepLogprobs(all.subarray(i * V, (i + 1) * V), out[i], r.logprobs);
    });
  }
  return { ids: out, logprobs };
}
