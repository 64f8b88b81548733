/**
 * MiniMind self-attention (GQA) as a pure function: q/k/v projections, minimind3's per-head
 * QK-norm, RoPE, KV-cache append, fused causal attention, output projection.
 * @module
 */
// B = batch, T = new time steps, S = key time steps (cache + new), H = hidden,
// NH = query heads, NKV = kv heads, HD = head dim, P = RoPE table rows
import type { MiniMindConfig } from "../minimind_config.ts";
import type { Tensor } from "../../tensor.ts";
import { matmul } from "../../ops/matmul.ts";
import { concat, reshape } from "../../ops/movement.ts";
import { rmsNorm } from "../../ops/rms_norm.ts";
import { rope } from "../../ops/rope.ts";
import { attention } from "../../ops/attention.ts";
import type { LayerCache } from "./kv_cache.ts";
import type { RopeTables } from "./rope_table.ts";

/** Parameters of one attention block (HF names; Linear weights are [out, in]). */
export type SelfAttentionParams = {
  /** q_proj.weight (NH·HD, H). */
  readonly q_proj: { readonly weight: Tensor };
  /** k_proj.weight (NKV·HD, H). */
  readonly k_proj: { readonly weight: Tensor };
  /** v_proj.weight (NKV·HD, H). */
  readonly v_proj: { readonly weight: Tensor };
  /** o_proj.weight (H, NH·HD). */
  readonly o_proj: { readonly weight: Tensor };
  /** q_norm.weight (HD) — minimind3 only. */
  readonly q_norm?: { readonly weight: Tensor };
  /** k_norm.weight (HD) — minimind3 only. */
  readonly k_norm?: { readonly weight: Tensor };
};

/** Per-call context shared by every layer of one forward. */
export interface AttentionContext {
  /** RoPE tables (P, HD). */
  readonly tables: RopeTables;
  /** Position of the first new token when `positions` is absent (the cache length). */
  readonly offset: number;
  /** Per-row positions i32 (B, T), overriding `offset`. */
  readonly positions?: Tensor;
  /** Key mask (B, S) float 1/0, or undefined when every key is real. */
  readonly mask?: Tensor;
}

/**
 * One attention block: x (B, T, H) → (B, T, H), plus the layer's keys/values including the past.
 *
 * @param cfg model config
 * @param p block parameters
 * @param x normalised input (B, T, H)
 * @param ctx tables, positions, key mask
 * @param past this layer's cache entry (or undefined)
 * @returns the block output and the updated keys/values (B, S, NKV, HD)
 */
export function selfAttention(
  cfg: MiniMindConfig,
  p: SelfAttentionParams,
  x: Tensor,
  ctx: AttentionContext,
  past?: LayerCache,
): { out: Tensor; kv: LayerCache } {
  const [b, t] = x.shape;
  const nh = cfg.numAttentionHeads, nkv = cfg.numKeyValueHeads, hd = cfg.headDim;
  // x·Wᵀ on (B, T, H) directly: the CPU matmul folds B·T into one gemm
  let q = reshape(matmul(x, p.q_proj.weight, { transB: true }), [b, t, nh, hd]); // (B, T, NH, HD)
  let k = reshape(matmul(x, p.k_proj.weight, { transB: true }), [b, t, nkv, hd]); // (B, T, NKV, HD)
  const v = reshape(matmul(x, p.v_proj.weight, { transB: true }), [b, t, nkv, hd]); // (B, T, NKV, HD)
  if (p.q_norm && p.k_norm) {
    // minimind3: RMSNorm over HD, per head, before RoPE (and before caching)
    q = rmsNorm(q, p.q_norm.weight, { eps: cfg.rmsNormEps }); // (B, T, NH, HD)
    k = rmsNorm(k, p.k_norm.weight, { eps: cfg.rmsNormEps }); // (B, T, NKV, HD)
  }
  const where = ctx.positions ? { positions: ctx.positions } : { offset: ctx.offset };
  q = rope(q, ctx.tables.cos, ctx.tables.sin, where); // (B, T, NH, HD)
  k = rope(k, ctx.tables.cos, ctx.tables.sin, where); // (B, T, NKV, HD)
  // the cache holds post-RoPE keys before GQA expansion; new steps go after the cached ones
  const kAll = past ? concat([past.k, k], 1) : k; // (B, S, NKV, HD)
  const vAll = past ? concat([past.v, v], 1) : v; // (B, S, NKV, HD)
  // query t sees key s ≤ t + S − T (and mask[b, s] ≠ 0); head h reads kv head ⌊h·NKV/NH⌋
  const o = attention(q, kAll, vAll, { causal: true, mask: ctx.mask }); // (B, T, NH, HD)
  const out = matmul(reshape(o, [b, t, nh * hd]), p.o_proj.weight, { transB: true }); // (B, T, H)
  return { out, kv: { k: kAll, v: vAll } };
}
