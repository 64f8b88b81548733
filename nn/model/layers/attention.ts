/**
 * MiniMind self-attention (GQA) as a pure function: q/k/v projections, minimind3's per-head
 * QK-norm, RoPE, KV-cache append, fused causal attention, output projection.
 *
 * In the CPU's bfloat16 precision (`activationDtype`), without a KV cache (training, scoring) and
 * without QK-norm or LoRA adapters, q, k and v are stored bf16 by their products, RoPE turns them
 * in bf16, attention reads them as they are and writes its output bf16, which o_proj reads as it
 * is; their gradients are bf16 too, as under PyTorch's autocast.
 * @module
 */
// B = batch, T = new time steps, S = key time steps (cache + new), H = hidden,
// NH = query heads, NKV = kv heads, HD = head dim, P = RoPE table rows
import type { MiniMindConfig } from "../minimind_config.ts";
import type { Tensor } from "../../tensor.ts";
import { linear } from "./linear.ts";
import type { LinearParams } from "./linear.ts";
import { concat, reshape, transpose } from "../../ops/movement.ts";
import { rmsNorm } from "../../ops/rms_norm.ts";
import { rope } from "../../ops/rope.ts";
import { attention, attentionTakesBf16 } from "../../ops/attention.ts";
import { activationDtype, matmul } from "../../ops/matmul.ts";
import type { LayerCache } from "./kv_cache.ts";
import type { RopeTables } from "./rope_table.ts";

/** Parameters of one attention block (HF names; Linear weights are [out, in]). */
export type SelfAttentionParams = {
  /** q_proj.weight (NH·HD, H). */
  readonly q_proj: LinearParams;
  /** k_proj.weight (NKV·HD, H). */
  readonly k_proj: LinearParams;
  /** v_proj.weight (NKV·HD, H). */
  readonly v_proj: LinearParams;
  /** o_proj.weight (H, NH·HD). */
  readonly o_proj: LinearParams;
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
  /** The layers keep their keys and values for a KV cache (time-major, see `LayerCache`). */
  readonly cache: boolean;
}

/**
 * One attention block: x (B, T, H) → (B, T, H), plus the layer's keys/values including the past.
 *
 * @param cfg model config
 * @param p block parameters
 * @param x normalised input (B, T, H)
 * @param ctx tables, positions, key mask
 * @param past this layer's cache entry (or undefined)
 * @returns the block output and, with `ctx.cache`, the updated keys/values (S, B, NKV, HD)
 */
export function selfAttention(
  cfg: MiniMindConfig,
  p: SelfAttentionParams,
  x: Tensor,
  ctx: AttentionContext,
  past?: LayerCache,
): { out: Tensor; kv: LayerCache | null } {
  const [b, t] = x.shape;
  const nh = cfg.numAttentionHeads, nkv = cfg.numKeyValueHeads, hd = cfg.headDim;
  if (!ctx.cache && bf16Path(p, x, { t, s: t, nh, nkv })) {
    const lowp = { transB: true, dtype: "bf16" } as const;
    const where = ctx.positions ? { positions: ctx.positions } : { offset: ctx.offset };
    const proj = (w: Tensor, heads: number) => reshape(matmul(x, w, lowp), [b, t, heads, hd]); // bf16 (B, T, heads, HD)
    const q = rope(proj(p.q_proj.weight, nh), ctx.tables.cos, ctx.tables.sin, where);
    const k = rope(proj(p.k_proj.weight, nkv), ctx.tables.cos, ctx.tables.sin, where);
    const o = attention(q, k, proj(p.v_proj.weight, nkv), { causal: true, mask: ctx.mask });
    const out = matmul(reshape(o, [b, t, nh * hd]), p.o_proj.weight, {
      transB: true,
      dtype: "f32",
    });
    return { out, kv: null }; // (B, T, H)
  }
  // x·Wᵀ (+ B(A(x)) on adapted Linears) on (B, T, H) directly: the CPU matmul folds B·T into one gemm
  let q = reshape(linear(p.q_proj, x), [b, t, nh, hd]); // (B, T, NH, HD)
  let k = reshape(linear(p.k_proj, x), [b, t, nkv, hd]); // (B, T, NKV, HD)
  const v = reshape(linear(p.v_proj, x), [b, t, nkv, hd]); // (B, T, NKV, HD)
  if (p.q_norm && p.k_norm) {
    // minimind3: RMSNorm over HD, per head, before RoPE (and before caching)
    q = rmsNorm(q, p.q_norm.weight, { eps: cfg.rmsNormEps }); // (B, T, NH, HD)
    k = rmsNorm(k, p.k_norm.weight, { eps: cfg.rmsNormEps }); // (B, T, NKV, HD)
  }
  const where = ctx.positions ? { positions: ctx.positions } : { offset: ctx.offset };
  q = rope(q, ctx.tables.cos, ctx.tables.sin, where); // (B, T, NH, HD)
  k = rope(k, ctx.tables.cos, ctx.tables.sin, where); // (B, T, NKV, HD)
  // query t sees key s ≤ t + S − T (and mask[b, s] ≠ 0); head h reads kv head ⌊h·NKV/NH⌋
  if (!ctx.cache) {
    const o = attention(q, k, v, { causal: true, mask: ctx.mask }); // (B, T, NH, HD)
    return { out: linear(p.o_proj, reshape(o, [b, t, nh * hd])), kv: null }; // (B, T, H)
  }
  // the cache holds post-RoPE keys before GQA expansion, time-major: new steps go after the
  // cached ones along the leading axis, which extends the arrays in place (CPU) at any batch
  const timeMajor = (x: Tensor) =>
    b === 1 || t === 1 ? reshape(x, [t, b, nkv, hd]) : transpose(x, [1, 0, 2, 3]); // (T, B, NKV, HD)
  const kAll = past ? concat([past.k, timeMajor(k)], 0) : timeMajor(k); // (S, B, NKV, HD)
  const vAll = past ? concat([past.v, timeMajor(v)], 0) : timeMajor(v); // (S, B, NKV, HD)
  const o = attention(q, kAll, vAll, { causal: true, mask: ctx.mask, kvTimeMajor: true }); // (B, T, NH, HD)
  const out = linear(p.o_proj, reshape(o, [b, t, nh * hd])); // (B, T, H)
  return { out, kv: { k: kAll, v: vAll } };
}

/** Whether this block's attention activations are bf16 (see the module doc). */
function bf16Path(
  p: SelfAttentionParams,
  x: Tensor,
  d: { t: number; s: number; nh: number; nkv: number },
): boolean {
  const plain = !p.q_proj.lora && !p.k_proj.lora && !p.v_proj.lora && !p.o_proj.lora;
  return plain && !p.q_norm && activationDtype(x) === "bf16" && attentionTakesBf16(d);
}
