/**
 * The MiniMind engine behind the scheduler: one batched KV cache whose rows are requests of
 * different lengths. A new request is prefilled alone (B = 1) and joins the batch at the next
 * decode step (`concatCacheRows` left-pads it with masked slots); a finished one leaves it
 * (`selectCacheRows`); columns no row uses any more are trimmed. Each decode step feeds one token
 * per row with per-row RoPE positions and the cache's key mask, so a row computes exactly what it
 * would compute alone.
 * @module
 */
// B = rows, S = cache length, V = vocab size
import { tensor } from "../nn/creation.ts";
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
  length: number;
  /** Its own cache until it joins the batch. */
  pending: KvCache | null;
  released = false;
  constructor(length: number, cache: KvCache) {
    this.length = length;
    this.pending = cache;
  }
}

/** Options of {@link MiniMindEngine}. */
export interface EngineOptions {
  /** Longest sequence a row may reach (default: the model's maxPositionEmbeddings). */
  maxPositions?: number;
  /** Trim unused leading cache columns once there are at least this many (default 32). */
  trimAt?: number;
}

/** The MiniMind {@link Engine}: batched decode over one shared, masked KV cache. */
export class MiniMindEngine implements Engine {
  readonly vocabSize: number;
  readonly maxPositions: number;
  readonly #model: ServeModel;
  readonly #trimAt: number;
  #cache: KvCache | null = null;
  #rows: Row[] = [];

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
  }

  /** Rows in the shared cache and its length (for tests). */
  get batchShape(): { rows: number; length: number } {
    return { rows: this.#rows.length, length: cacheLength(this.#cache) };
  }

  prefill(ids: readonly number[]): { row: EngineRow; logits: Tensor } {
    const n = ids.length;
    if (n === 0 || n >= this.maxPositions) {
      throw new Error(`Cannot prefill ${n} tokens: expected 1..${this.maxPositions - 1}`);
    }
    const state: DecodeState = { cache: null };
    const logits = keep(scope(() => {
      const x = tensor(Int32Array.from(ids), [1, n], "i32"); // (1, T)
      return decodeStep(this.#model, state, x); // (1, V)
    }));
    return { row: new Row(n, state.cache!), logits };
  }

  release(row: EngineRow): void {
    const r = row as Row;
    if (r.released) return;
    r.released = true;
    if (r.pending) {
      disposeCache(r.pending);
      r.pending = null;
    }
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
    for (const r of rs) r.length++;
    return logits;
  }

  /** No request is left: the backend gives back the arrays it kept for reuse (the CPU pool). */
  idle(): void {
    defaultBackend().trim?.();
  }

  /** Frees the shared cache and every pending row. */
  dispose(): void {
    disposeCache(this.#cache);
    this.#cache = null;
    for (const r of this.#rows) this.release(r);
    this.#rows = [];
  }
}
