/**
 * The KV cache: per layer the post-RoPE keys (post-k_norm in minimind3) and the values, before GQA
 * expansion, plus an optional key mask for rows with holes (left padding, or rows of different
 * lengths decoded together). Keys and values are time-major, (S, B, NKV, HD) — MiniMind's
 * `past_key_values` hold the same values as (B, S, NKV, HD) — so that a decode step's append is
 * along the leading axis, which the CPU backend does in place (the new cache's arrays extend the
 * old one's) instead of copying the whole cache, at any batch size. The cache is a plain value:
 * `forward` returns a new one and the caller disposes the old one (`disposeCache`).
 * @module
 */
// B = batch rows, S = cached time steps, NKV = kv heads, HD = head dim
import { concat, pad, sliceAxis } from "../../ops/movement.ts";
import { takeAlongAxis } from "../../ops/gather.ts";
import { ones, tensor } from "../../creation.ts";
import type { Tensor } from "../../tensor.ts";
import { fmt } from "../../shape.ts";

/** One layer's cached keys and values, time-major. */
export interface LayerCache {
  /** Keys, post-RoPE (S, B, NKV, HD). */
  readonly k: Tensor;
  /** Values (S, B, NKV, HD). */
  readonly v: Tensor;
}

/** Cached keys/values of every layer (a plain value; dispose with `disposeCache`). */
export interface KvCache {
  /** One entry per decoder block. */
  readonly layers: readonly LayerCache[];
  /**
   * Which cached slots hold real tokens, float 1/0 (B, S) in the model dtype; null = all of
   * them. A slot with 0 is never attended to.
   */
  readonly mask: Tensor | null;
}

/**
 * Number of cached time steps S (0 for an empty or absent cache).
 *
 * @param cache a cache
 * @returns S
 */
export function cacheLength(cache: KvCache | null | undefined): number {
  if (!cache || cache.layers.length === 0) return 0;
  return cache.layers[0].k.shape[0];
}

/**
 * Number of batch rows B of a cache (0 for an empty or absent cache).
 *
 * @param cache a cache
 * @returns B
 */
export function cacheRows(cache: KvCache | null | undefined): number {
  if (!cache || cache.layers.length === 0) return 0;
  return cache.layers[0].k.shape[1];
}

/**
 * Drops a cache's first `n` time steps (continuous batching: steps no remaining row uses). Returns
 * a new cache; the input is left as is.
 *
 * @param cache the cache
 * @param n steps to drop, 0 ≤ n ≤ S
 * @returns the cache of steps [n, S)
 */
export function dropCacheSteps(cache: KvCache, n: number): KvCache {
  const s = cacheLength(cache);
  if (!Number.isInteger(n) || n < 0 || n > s) {
    throw new Error(`Cannot drop ${n} steps of a cache of ${s}`);
  }
  return {
    layers: cache.layers.map((l) => ({ k: sliceAxis(l.k, 0, n, s), v: sliceAxis(l.v, 0, n, s) })),
    mask: cache.mask ? sliceAxis(cache.mask, 1, n, s) : null,
  };
}

/**
 * Disposes every tensor of a cache.
 *
 * @param cache the cache
 */
export function disposeCache(cache: KvCache | null | undefined): void {
  if (!cache) return;
  for (const l of cache.layers) {
    l.k.dispose();
    l.v.dispose();
  }
  cache.mask?.dispose();
}

/**
 * Keeps the given batch rows of a cache, in the given order (continuous batching: drop finished
 * rows, reorder). Returns a new cache; the input is left as is.
 *
 * @param cache the cache
 * @param rows row indices into the batch
 * @returns the selected rows
 */
export function selectCacheRows(cache: KvCache, rows: readonly number[]): KvCache {
  const b = cacheRows(cache);
  for (const r of rows) {
    if (!Number.isInteger(r) || r < 0 || r >= b) {
      throw new Error(`Cannot select cache row ${r}: the cache has ${b} rows`);
    }
  }
  // the index that gathers `rows` along `axis` of x, broadcast over the other axes
  const index = (x: Tensor, axis: number): Tensor => {
    const shape = x.shape.map((d, i) => (i === axis ? rows.length : d));
    const inner = shape.slice(axis + 1).reduce((p, d) => p * d, 1);
    const idx = new Int32Array(shape.reduce((p, d) => p * d, 1));
    for (let o = 0; o < idx.length; o += rows.length * inner) {
      for (let i = 0; i < rows.length; i++) {
        idx.fill(rows[i], o + i * inner, o + (i + 1) * inner);
      }
    }
    return tensor(idx, shape, "i32", { backend: x.backend });
  };
  // every layer's keys and values have one shape: one index serves them all
  const kv = cache.layers.length ? index(cache.layers[0].k, 1) : null;
  const pick = (x: Tensor) => takeAlongAxis(x, kv!, 1); // (S, b, NKV, HD)
  const layers = cache.layers.map((l) => ({ k: pick(l.k), v: pick(l.v) }));
  kv?.dispose();
  const m = cache.mask;
  return { layers, mask: m ? takeAlongAxis(m, index(m, 0), 0) : null }; // mask (b, S)
}

/**
 * Joins the rows of several caches into one batch (continuous batching: add newly prefilled
 * requests). Shorter caches are padded on the left with masked-out slots so every row keeps its
 * own positions; the result's mask marks real slots.
 *
 * @param caches caches with the same layers and head shapes
 * @returns the joined cache (B = Σ rows, S = max S)
 */
export function concatCacheRows(caches: readonly KvCache[]): KvCache {
  if (caches.length === 0) throw new Error("Cannot join an empty list of caches");
  const s = Math.max(...caches.map(cacheLength));
  const ref = caches[0].layers[0]?.k; // (S, B, NKV, HD)
  if (!ref) throw new Error("Cannot join caches without layers");
  const nl = caches[0].layers.length;
  for (const c of caches) {
    const k = c.layers[0]?.k;
    if (
      c.layers.length !== nl || !k || k.shape[2] !== ref.shape[2] || k.shape[3] !== ref.shape[3]
    ) {
      throw new Error(
        `Cannot join caches of ${nl} layers ${fmt(ref.shape)} and ${c.layers.length} layers ${
          fmt(k?.shape ?? [])
        }`,
      );
    }
  }
  // `by` masked-out steps before the first one, along the time axis
  const leftPad = (x: Tensor, axis: number, by: number): Tensor =>
    by === 0 ? x : pad(x, x.shape.map((_, i) => (i === axis ? by : 0)), x.shape.map(() => 0));
  const layers: LayerCache[] = [];
  for (let l = 0; l < nl; l++) {
    const join = (pick: (c: KvCache) => Tensor) =>
      concat(caches.map((c) => leftPad(pick(c), 0, s - cacheLength(c))), 1); // (S, B, NKV, HD)
    layers.push({ k: join((c) => c.layers[l].k), v: join((c) => c.layers[l].v) });
  }
  const needMask = caches.some((c) => c.mask !== null || cacheLength(c) !== s);
  const mask = needMask
    ? concat(
      caches.map((c) => {
        const m = c.mask ??
          ones([cacheRows(c), cacheLength(c)], ref.dtype, { backend: ref.backend });
        return leftPad(m, 1, s - cacheLength(c)); // (b, S)
      }),
      0,
    )
    : null;
  return { layers, mask };
}
