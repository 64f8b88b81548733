/**
 * Batched next-token sampling with per-request settings, on the `sample` op (MiniMind's
 * `generate` filters: temperature → repetition penalty → top-k → top-p → inverse-CDF draw). Rows
 * with equal settings share one op call. Each request draws its uniform from its own key and
 * step (`foldIn(key, step)`), so the token a request gets never depends on what else is decoded
 * in the same batch, and a request with a seed gets exactly what `generate` gives for that seed.
 * @module
 */
// B = rows in the batch, G = rows in one settings group, V = vocab size
import { tensor } from "../nn/creation.ts";
import { foldIn, key as seedKey, uniformArray } from "../nn/random.ts";
import type { Key } from "../nn/random.ts";
import type { Tensor } from "../nn/tensor.ts";
import { concat, sliceAxis } from "../nn/ops/movement.ts";
import { sample } from "../nn/ops/sample.ts";
import type { SamplingSettings } from "./validate.ts";

/** The uniform in [0, 1) a request uses at decode step `step`. */
export function stepUniform(k: Key, step: number): number {
  return uniformArray(foldIn(k, step), 1)[0];
}

/**
 * The key of a request seed: row 0 of `generate`'s scheme (row r, step s uses
 * `foldIn(foldIn(key(seed), r), s)`), so a seeded request returns what `generate` returns.
 */
export function requestKey(seed: number): Key {
  return foldIn(seedKey(seed), 0);
}

/** One row to sample: its settings, its uniform, and (for the penalty) the tokens it has seen. */
export interface SampleRow {
  /** Temperature, top-p, top-k, repetition penalty. */
  sampling: SamplingSettings;
  /** The row's uniform for this step. */
  u: number;
  /** Prompt + generated ids (read only when the repetition penalty is not 1). */
  seen?: Iterable<number>;
}

function groupKey(s: SamplingSettings): string {
  return `${s.temperature}|${s.topK}|${s.topP}|${s.repetitionPenalty}`;
}

/**
 * Samples one token per row of `logits` (B, V). Reads the ids back (one sync point per settings
 * group); disposes everything it creates, never `logits`.
 *
 * @param logits last-position logits [B, V]
 * @param rows per-row settings, B of them
 * @returns the B token ids
 */
export async function sampleRows(logits: Tensor, rows: readonly SampleRow[]): Promise<Int32Array> {
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
        seen,
      }); // (G) i32
      made.push(ids);
      const got = await ids.data(); // sync point
      idx.forEach((i, g) => (out[i] = got[g]));
    } finally {
      for (const t of made) t.dispose();
    }
  }
  return out;
}
