/**
 * The MiniMind engine behind the scheduler: one batched KV cache whose rows are requests of
 * different lengths. A new request is prefilled alone (B = 1) and joins the batch at the next
 * decode step (`concatCacheRows` left-pads it with masked slots); a finished one leaves it
 * (`selectCacheRows`); columns no row uses any more are trimmed. Each decode step feeds one token
 * per row with per-row RoPE positions and the cache's key mask, so a row computes what it would
 * compute alone.
 *
 * Prefix cache (llama.cpp's `cache_prompt`, vLLM's prefix caching): a finished row's keys and
 * values are kept, within a byte budget (least recently used out first), and a prompt that starts
 * with the same tokens — the next turn of a chat, a shared system prompt or tool list — prefills
 * only the rest. The reused steps come from an earlier, differently shaped computation, so the
 * logits can differ from a whole prefill's by float rounding.
 * @module
 */
// B = rows, S = cache length, V = vocab size
import { tensor } from "../nn/creation.ts";
import { byteSize } from "../nn/dtype.ts";
import { sliceAxis } from "../nn/ops/movement.ts";
import { forward, type ForwardResult } from "../nn/model/minimind.ts";
import { type StepLogprobs, stepLogprobs } from "./sampling.ts";
import { defaultBackend } from "../nn/backend/select.ts";
import { keep, scope } from "../nn/scope.ts";
import type { Tensor } from "../nn/tensor.ts";
import { type DecodeState, decodeStep } from "../nn/model/generate.ts";
import type { MiniMindParams } from "../nn/model/minimind.ts";
import {
  cacheLength,
  concatCacheRows,
  disposeCache,
  dropCacheSteps,
  selectCacheRows,
} from "../nn/model/layers/kv_cache.ts";
import type { KvCache } from "../nn/model/layers/kv_cache.ts";
import type { MiniMindConfig } from "../nn/model/minimind_config.ts";
import type { Engine, EngineRow } from "./scheduler.ts";

/** A model to serve: its static config and its parameter tree. */
export interface ServeModel {
  /** Model config. */
  cfg: MiniMindConfig;
  /** Parameter tree (from `init`, `loadModel`, …). */
  params: MiniMindParams;
}

class Row implements EngineRow {
  /** Its own cache until it joins the batch. */
  pending: KvCache | null;
  released = false;
  /** The tokens in its cache (prompt, then each token fed), for the prefix cache. */
  readonly ids: number[];
  constructor(ids: readonly number[], cache: KvCache) {
    this.ids = [...ids];
    this.pending = cache;
  }
  /** Tokens in its cache. */
  get length(): number {
    return this.ids.length;
  }
}

/** A finished row's keys and values, kept for prompts that start with its tokens. */
interface PrefixEntry {
  readonly ids: readonly number[];
  readonly cache: KvCache;
  readonly bytes: number;
  used: number;
}

/** Bytes of a cache's keys and values. */
function cacheBytes(c: KvCache): number {
  let n = 0;
  for (const l of c.layers) n += l.k.size * byteSize(l.k.dtype) + l.v.size * byteSize(l.v.dtype);
  return n;
}

/** Length of the common prefix of a and b. */
function commonPrefix(a: readonly number[], b: readonly number[]): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return i;
}

/** Positions per forward when scoring a sequence (bounds its logits to SCORE_CHUNK × V). */
export const SCORE_CHUNK = 256;

/** Options of {@link MiniMindEngine}. */
export interface EngineOptions {
  /** Longest sequence a row may reach (default: the model's maxPositionEmbeddings). */
  maxPositions?: number;
  /** Trim unused leading cache columns once there are at least this many (default 32). */
  trimAt?: number;
  /** Bytes of finished rows' keys and values kept for reuse (default 64 MiB; 0 = off). */
  prefixCacheBytes?: number;
  /** Shortest shared prefix worth reusing, in tokens (default 16). */
  prefixMinTokens?: number;
}

/** Counters of the prefix cache. */
export interface PrefixCacheStats {
  /** Prompts that reused cached steps. */
  hits: number;
  /** Prompt tokens not prefilled thanks to it. */
  reusedTokens: number;
  /** Rows kept now. */
  entries: number;
  /** Bytes they hold. */
  bytes: number;
}

/** The MiniMind {@link Engine}: batched decode over one shared, masked KV cache. */
export class MiniMindEngine implements Engine {
  readonly vocabSize: number;
  readonly maxPositions: number;
  readonly #model: ServeModel;
  readonly #trimAt: number;
  readonly #prefixBytes: number;
  readonly #prefixMin: number;
  #cache: KvCache | null = null;
  #rows: Row[] = [];
  #prefixes: PrefixEntry[] = [];
  #clock = 0;
  #hits = 0;
  #reused = 0;

  /**
   * Creates an engine with an empty batch.
   *
   * @param model config and params
   * @param options limits
   */
  constructor(model: ServeModel, options: EngineOptions = {}) {
    this.#model = model;
    this.vocabSize = model.cfg.vocabSize;
    this.maxPositions = Math.min(options.maxPositions ?? Infinity, model.cfg.maxPositionEmbeddings);
    this.#trimAt = options.trimAt ?? 32;
    this.#prefixBytes = options.prefixCacheBytes ?? 64 * 2 ** 20;
    this.#prefixMin = Math.max(1, options.prefixMinTokens ?? 16);
  }

  /** The prefix cache's counters. */
  get prefixStats(): PrefixCacheStats {
    return {
      hits: this.#hits,
      reusedTokens: this.#reused,
      entries: this.#prefixes.length,
      bytes: this.#prefixes.reduce((s, e) => s + e.bytes, 0),
    };
  }

  /** Rows in the shared cache and its length (for tests). */
  get batchShape(): { rows: number; length: number } {
    return { rows: this.#rows.length, length: cacheLength(this.#cache) };
  }

  prefill(ids: readonly number[]): { row: EngineRow; logits: Tensor; cached: number } {
    const n = ids.length;
    if (n === 0 || n >= this.maxPositions) {
      throw new Error(`Cannot prefill ${n} tokens: expected 1..${this.maxPositions - 1}`);
    }
    const [prefix, cached] = this.#takePrefix(ids);
    const state: DecodeState = { cache: prefix };
    const logits = keep(scope(() => {
      const x = tensor(Int32Array.from(ids.slice(cached)), [1, n - cached], "i32"); // (1, T)
      return decodeStep(this.#model, state, x); // (1, V)
    }));
    return { row: new Row(ids, state.cache!), logits, cached };
  }

  /**
   * The cached steps of the longest kept prefix of `ids` (at most all but the last token, whose
   * logits the prefill must compute) as a cache of the caller's, and how many; [null, 0] when
   * none is long enough. An entry used whole is handed over (a chat's next turn supersedes it).
   */
  #takePrefix(ids: readonly number[]): [KvCache | null, number] {
    let best: PrefixEntry | null = null, len = 0;
    for (const e of this.#prefixes) {
      const p = Math.min(commonPrefix(e.ids, ids), ids.length - 1);
      if (p > len) [best, len] = [e, p];
    }
    if (!best || len < this.#prefixMin) return [null, 0];
    this.#hits++;
    this.#reused += len;
    best.used = ++this.#clock;
    if (len === best.ids.length) {
      this.#prefixes = this.#prefixes.filter((e) => e !== best);
      return [best.cache, len];
    }
    const { layers } = best.cache;
    const steps = layers.map((l) => ({
      k: sliceAxis(l.k, 0, 0, len),
      v: sliceAxis(l.v, 0, 0, len),
    }));
    return [{ layers: steps, mask: null }, len];
  }

  /** Keeps a finished row's cache (B = 1, its steps only) for prompts that start with its tokens. */
  #keepPrefix(ids: readonly number[], cache: KvCache): void {
    const entry: PrefixEntry = { ids, cache, bytes: cacheBytes(cache), used: ++this.#clock };
    // entries this one extends are superseded; the least recently used go over the budget
    const out: PrefixEntry[] = [], drop: PrefixEntry[] = [];
    let total = 0;
    const all = [entry, ...this.#prefixes].sort((a, b) => b.used - a.used);
    for (const e of all) {
      const superseded = e !== entry && commonPrefix(e.ids, ids) === e.ids.length;
      if (!superseded && total + e.bytes <= this.#prefixBytes) {
        total += e.bytes;
        out.push(e);
      } else drop.push(e);
    }
    for (const e of drop) disposeCache(e.cache);
    this.#prefixes = out;
  }

  /** Row `r`'s steps of the shared cache, as a cache of its own (B = 1, no padding). */
  #ownCache(r: Row): KvCache | null {
    const i = this.#rows.indexOf(r), shared = this.#cache;
    if (i < 0 || !shared) return null;
    return keep(scope(() => {
      const steps = dropCacheSteps(selectCacheRows(shared, [i]), cacheLength(shared) - r.length);
      return { layers: steps.layers, mask: null };
    }));
  }

  release(row: EngineRow): void {
    const r = row as Row;
    if (r.released) return;
    r.released = true;
    const reuse = this.#prefixBytes > 0 && r.length >= this.#prefixMin;
    const own = r.pending ?? (reuse ? this.#ownCache(r) : null);
    r.pending = null;
    if (own && reuse) this.#keepPrefix(r.ids, own);
    else disposeCache(own);
    // the shared cache drops released rows at the next decode; free it now if none is left
    if (this.#rows.length && this.#rows.every((x) => x.released)) {
      disposeCache(this.#cache);
      this.#cache = null;
      this.#rows = [];
    }
  }

  /** Makes the shared cache hold exactly `rows`, in that order. */
  #arrange(rows: readonly Row[]): KvCache | null {
    const at = new Map(this.#rows.map((r, i) => [r, i]));
    const kept = rows.filter((r) => at.has(r));
    const fresh = rows.filter((r) => !at.has(r));
    for (const r of fresh) {
      if (!r.pending || r.released) throw new Error("Cannot decode a row that was released");
    }
    let cache = this.#cache;
    let order = this.#rows;
    // drop rows that left (and reorder), then trim columns no remaining row uses
    const sameOrder = kept.length === order.length && kept.every((r, i) => order[i] === r);
    if (!sameOrder) {
      const next = kept.length ? selectCacheRows(cache!, kept.map((r) => at.get(r)!)) : null;
      disposeCache(cache);
      cache = next;
      order = kept;
    }
    if (cache && order.length) {
      const s = cacheLength(cache);
      const unused = s - Math.max(...order.map((r) => r.length));
      if (unused >= this.#trimAt || (!sameOrder && unused > 0)) {
        const trimmed = dropCacheSteps(cache, unused);
        disposeCache(cache);
        cache = trimmed;
      }
    }
    if (fresh.length) {
      const parts = [...(cache && order.length ? [cache] : []), ...fresh.map((r) => r.pending!)];
      const joined = parts.length === 1 ? parts[0] : concatCacheRows(parts);
      if (parts.length > 1) { for (const p of parts) disposeCache(p); }
      for (const r of fresh) r.pending = null;
      cache = joined;
      order = [...order, ...fresh];
    }
    // the scheduler lists rows in join order, so this only reorders if it ever does not
    if (order.some((r, i) => rows[i] !== r)) {
      const at2 = new Map(order.map((r, i) => [r, i]));
      const next = selectCacheRows(cache!, rows.map((r) => at2.get(r)!));
      disposeCache(cache);
      cache = next;
      order = [...rows];
    }
    this.#rows = order;
    return cache;
  }

  decode(rows: readonly EngineRow[], tokens: readonly number[]): Tensor {
    const rs = rows as readonly Row[];
    const b = rs.length;
    if (b === 0 || tokens.length !== b) {
      throw new Error(`Cannot decode ${tokens.length} tokens for ${b} rows`);
    }
    for (const r of rs) {
      if (r.length + 1 > this.maxPositions) {
        throw new Error(`Cannot decode past ${this.maxPositions} positions`);
      }
    }
    // intermediates of the joins, selections and trims are freed by the scope
    const arranged = scope(() => this.#arrange(rs));
    this.#cache = arranged ? keep(arranged) : null;
    const state: DecodeState = { cache: this.#cache };
    const logits = keep(scope(() => {
      const ids = tensor(Int32Array.from(tokens), [b, 1], "i32"); // (B, 1)
      const pos = tensor(Int32Array.from(rs, (r) => r.length), [b, 1], "i32"); // (B, 1)
      return decodeStep(this.#model, state, ids, { positions: pos }); // (B, V)
    }));
    this.#cache = state.cache; // decodeStep disposed the old one
    rs.forEach((r, i) => r.ids.push(tokens[i]));
    return logits;
  }

  /**
   * Log-probs of `ids[1..]` under the model, each given the tokens before it, with the `top`
   * most likely tokens at each position: one forward over the sequence in chunks of
   * {@linkcode SCORE_CHUNK} positions on a KV cache of its own (the batch's is untouched), each
   * chunk's logits read back and reduced on the host.
   *
   * @param ids the tokens (at least 1; at most the engine's positions)
   * @param top alternatives per position
   * @returns ids.length − 1 entries
   */
  async score(ids: readonly number[], top: number): Promise<StepLogprobs[]> {
    if (ids.length === 0 || ids.length > this.maxPositions) {
      throw new Error(`Cannot score ${ids.length} tokens: expected 1..${this.maxPositions}`);
    }
    const { cfg, params } = this.#model;
    const V = cfg.vocabSize;
    const out: StepLogprobs[] = [];
    let cache: KvCache | null = null;
    try {
      for (let s = 0; s + 1 < ids.length; s += SCORE_CHUNK) {
        const e = Math.min(ids.length - 1, s + SCORE_CHUNK); // positions s..e-1 predict s+1..e
        const past: KvCache | null = cache;
        const r: ForwardResult = scope(() =>
          forward(cfg, params, tensor(Int32Array.from(ids.slice(s, e)), [1, e - s], "i32"), {
            cache: past,
            useCache: true,
            logitsToKeep: e - s,
          })
        ); // logits (1, e − s, V)
        disposeCache(past);
        cache = r.cache;
        const all = await r.logits.data();
        r.logits.dispose();
        for (let t = 0; t < e - s; t++) {
          out.push(stepLogprobs(all.subarray(t * V, (t + 1) * V), ids[s + t + 1], top));
        }
      }
    } finally {
      disposeCache(cache);
    }
    return out;
  }

  /** No request is left: the backend gives back the arrays it kept for reuse (the CPU pool). */
  idle(): void {
    defaultBackend().trim?.();
  }

  /** Frees the shared cache, every pending row and the prefix cache. */
  dispose(): void {
    for (const r of this.#rows) {
      r.released = true;
      disposeCache(r.pending);
      r.pending = null;
    }
    disposeCache(this.#cache);
    this.#cache = null;
    this.#rows = [];
    for (const e of this.#prefixes) disposeCache(e.cache);
    this.#prefixes = [];
  }
}
