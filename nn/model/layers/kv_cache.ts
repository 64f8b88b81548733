/**
 * The KV cache: per layer the post-RoPE keys (post-k_norm in minimind3) and the values, before GQA
 * expansion — MiniMind's `past_key_values` layout — plus an optional key mask for rows with holes
 * (left padding, or rows of different lengths decoded together). The cache is a plain value:
 * `forward` returns a new one and the caller disposes the old one (`disposeCache`). At batch 1
 * the CPU backend appends a step in place (the new cache's arrays extend the old one's), so a
 * decode step does not copy the whole cache; batched caches are copied.
 * @module
 */
// B = batch rows, S = cached time steps, NKV = kv heads, HD = head dim
import { concat, pad } from "../../ops/movement.ts";
import { takeAlongAxis } from "../../ops/gather.ts";
import { ones, tensor } from "../../creation.ts";
import type { Tensor } from "../../tensor.ts";
import { fmt } from "../../shape.ts";

/** One layer's cached keys and values. */
export interface LayerCache {
  /** Keys, post-RoPE (B, S, NKV, HD). */
  readonly k: Tensor;
  /** Values (B, S, NKV, HD). */
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
  return cache.layers[0].k.shape[1];
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
  const b = cache.layers[0]?.k.shape[0] ?? 0;
  for (const r of rows) {
    if (!Number.isInteger(r) || r < 0 || r >= b) {
      throw new Error(`Cannot select cache row ${r}: the cache has ${b} rows`);
    }
  }
  const pick = (x: Tensor): Tensor => {
    // gather along axis 0 with an index broadcast over the trailing axes
    const inner = x.size / (x.shape[0] || 1);
    const idx = new Int32Array(rows.length * inner);
    for (let i = 0; i < rows.length; i++) idx.fill(rows[i], i * inner, (i + 1) * inner);
    const shape = [rows.length, ...x.shape.slice(1)];
    return takeAlongAxis(x, tensor(idx, shape, "i32", { backend: x.backend }), 0);
  };
  return {
    layers: cache.layers.map((l) => ({ k: pick(l.k), v: pick(l.v) })),
    mask: cache.mask ? pick(cache.mask) : null,
  };
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
  const ref = caches[0].layers[0]?.k;
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
  const leftPad = (x: Tensor, by: number): Tensor =>
    by === 0 ? x : pad(x, [0, by, ...x.shape.slice(2).map(() => 0)], x.shape.map(() => 0));
  const layers: LayerCache[] = [];
  for (let l = 0; l < nl; l++) {
    layers.push({
      k: concat(caches.map((c) => leftPad(c.layers[l].k, s - cacheLength(c))), 0), // (B, S, NKV, HD)
      v: concat(caches.map((c) => leftPad(c.layers[l].v, s - cacheLength(c))), 0), // (B, S, NKV, HD)
    });
  }
  const needMask = caches.some((c) => c.mask !== null || cacheLength(c) !== s);
  const mask = needMask
    ? concat(
      caches.map((c) => {
        const rows = c.layers[0].k.shape[0];
        const m = c.mask ?? ones([rows, cacheLength(c)], ref.dtype, { backend: ref.backend });
        return leftPad(m, s - cacheLength(c)); // (b, S)
      }),
      0,
    )
    : null;
  return { layers, mask };
}
