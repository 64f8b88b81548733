/**
 * Fused causal grouped-query attention (flash-style contract): forward saves the row
 * log-sum-exp so backward recomputes probabilities instead of storing them. On the CPU q, k, v
 * (and so the output and the gradients) may be bf16, the bfloat16 precision's activations, for
 * T > 1: the bf16 units (`backend/cpu/attention_bf16.ts`) run them; lse and a key mask are f32
 * (`computeDtype`). Query head h reads
 * KV head ⌊h / (NH/NKV)⌋ (MiniMind's repeat_kv). A query at time t sees key s when
 * s ≤ t + (S − T) (new tokens sit after the cache) and, with a key mask, mask[b, s] ≠ 0.
 * @module
 */
// B = batch, T = query time, S = key time, NH = query heads, NKV = kv heads, HD = head dim
import { allocArray, computeDtype, isFloat } from "../dtype.ts";
import type { KernelOp, Meta } from "../op.ts";
import { defineOp, NONDIFF } from "../op.ts";
import { apply } from "../apply.ts";
import { transpose } from "./movement.ts";
import { fmt } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { bf16AttentionFits, pooledAttention } from "../backend/cpu/threads/mod.ts";
import {
  attentionBackwardHead,
  attentionForwardUnit,
  forwardScoreRows,
  zeroKvGrads,
} from "../backend/cpu/attention_heads.ts";
import { attentionBackward, attentionForward } from "./attention/wgsl.ts";
import type { AttnShape } from "./attention/wgsl.ts";
import { attnWorkspace } from "../backend/cpu/simd/attention.ts";
import { batchedDecodeAttention } from "../backend/cpu/attention_decode.ts";

/** Params of `attention`. */
export interface AttentionParams {
  /** Apply the causal mask. */
  readonly causal: boolean;
  /** Score scale (1/√HD). */
  readonly scale: number;
  /**
   * K and V are time-major, [S, B, NKV, HD] (a KV cache: appending a step along the leading
   * axis extends the array in place, at any batch size), instead of [B, S, NKV, HD].
   */
  readonly kvTimeMajor?: boolean;
}

function attnDims(q: Meta, k: Meta, v: Meta, mask?: Meta, kvTimeMajor = false): AttnShape {
  const [b, t, nh, hd] = q.shape;
  const [kb, s, nkv, khd] = kvTimeMajor
    ? [k.shape[1], k.shape[0], k.shape[2], k.shape[3]]
    : k.shape;
  const ok = q.shape.length === 4 && k.shape.length === 4 && v.shape.length === 4 &&
    isFloat(computeDtype(q.dtype)) &&
    k.dtype === q.dtype && v.dtype === q.dtype && kb === b && khd === hd &&
    v.shape.every((d, i) => d === k.shape[i]) &&
    nkv > 0 && nh % nkv === 0;
  if (!ok) {
    throw new Error(
      `Cannot attend with q ${fmt(q.shape)}, k ${fmt(k.shape)}, v ${
        fmt(v.shape)
      }: expected [B,T,NH,HD], ${
        kvTimeMajor ? "[S,B,NKV,HD] (time-major)" : "[B,S,NKV,HD]"
      } with NH divisible by NKV`,
    );
  }
  if (
    mask &&
    (mask.shape.length !== 2 || mask.shape[0] !== b || mask.shape[1] !== s ||
      mask.dtype !== computeDtype(q.dtype))
  ) {
    throw new Error(
      `Cannot attend with key mask ${mask.dtype} ${fmt(mask.shape)}: expected ${
        computeDtype(q.dtype)
      } [${b}, ${s}]`,
    );
  }
  return { b, t, s, nh, nkv, hd, kvTimeMajor };
}

/** [S, B, …] ↔ [B, S, …]. */
const SWAP_01 = [1, 0, 2, 3];

/** q, k, v, [mask] → out [B,T,NH,HD], lse [B,NH,T]. */
export const attentionOp: KernelOp<AttentionParams, "attention"> = defineOp<
  AttentionParams,
  "attention"
>({
  name: "attention",
  infer: ([q, k, v, mask], params) => {
    const d = attnDims(q, k, v, mask, params.kvTimeMajor);
    return [{ shape: q.shape, dtype: q.dtype }, {
      shape: [d.b, d.nh, d.t],
      dtype: computeDtype(q.dtype),
    }];
  },
  writesAll: true,
  cpu: ([q, k, v, mask], [out, lse], { inputs, params }) => {
    const d = attnDims(inputs[0], inputs[1], inputs[2], inputs[3], params.kvTimeMajor);
    const { b, t, s } = d;
    const a = { q, k, v, mask: mask ?? null, out, lse };
    // f32 decode step: every unit's products in two batched oneDNN calls
    if (batchedDecodeAttention(d, a, params)) return;
    // whole (batch, KV group) units per thread: bf16 products in the bfloat16 precision (T > 1),
    // else f32 on a pool with several threads
    if (pooledAttention(q, d, params, [q, k, v, out, lse], mask ?? null, false)) return;
    // f32: scores live in the SIMD module's memory and the softmax runs there
    const ws = attnWorkspace(q, forwardScoreRows(d), s, false, !!mask);
    const sc = ws ? ws.sc : allocArray(inputs[0].dtype, t * s); // (T, S)
    for (let bi = 0; bi < b; bi++) {
      if (ws && mask) ws.setMask(mask, bi * s);
      for (let g = 0; g < d.nkv; g++) {
        attentionForwardUnit(d, bi, g, a, params, sc, ws);
      }
    }
  },
  wgsl: ({ inputs, params }, device) => {
    const d = attnDims(inputs[0], inputs[1], inputs[2], inputs[3], params.kvTimeMajor);
    return attentionForward(d, inputs.length > 3, params.causal, params.scale, device);
  },
  // see attentionBackward, which takes K and V batch-major (time-major ones are transposed)
  vjp: (ct, ctx) => {
    const [q, k, v, mask] = ctx.inputs as Tensor[];
    const tm = ctx.params.kvTimeMajor === true;
    const kb = tm ? transpose(k, SWAP_01) : k, vb = tm ? transpose(v, SWAP_01) : v;
    const ins = [q, kb, vb, ctx.outputs[0]!, ctx.outputs[1]!, ct[0]!, ...(mask ? [mask] : [])];
    const { causal, scale } = ctx.params;
    const [dq, dk, dv] = apply(attentionBackwardOp, ins, { causal, scale });
    const back = (x: Tensor) => tm ? transpose(x, SWAP_01) : x;
    return [dq, back(dk), back(dv), ...(mask ? [null] : [])];
  },
  saves: { inputs: true, outputs: true },
  statOutputs: [1],
  examples: [
    {
      inputs: [{ shape: [2, 5, 4, 3] }, { shape: [2, 5, 2, 3] }, { shape: [2, 5, 2, 3] }],
      params: { causal: true, scale: 1 / Math.sqrt(3) },
    },
    {
      inputs: [{ shape: [1, 2, 2, 4] }, { shape: [1, 6, 1, 4] }, { shape: [1, 6, 1, 4] }],
      params: { causal: true, scale: 0.5 },
      label: "with cache",
    },
    {
      inputs: [
        { shape: [2, 3, 2, 2] },
        { shape: [2, 4, 2, 2] },
        { shape: [2, 4, 2, 2] },
        { shape: [2, 4], values: [1, 1, 1, 1, 0, 1, 1, 1] },
      ],
      params: { causal: true, scale: 0.7 },
      label: "key mask",
    },
    {
      inputs: [{ shape: [1, 3, 2, 2] }, { shape: [1, 4, 2, 2] }, { shape: [1, 4, 2, 2] }],
      params: { causal: false, scale: 0.7 },
      label: "non-causal",
    },
    {
      inputs: [
        { shape: [2, 2, 4, 3] },
        { shape: [5, 2, 2, 3] },
        { shape: [5, 2, 2, 3] },
        { shape: [2, 5], values: [1, 1, 1, 1, 1, 0, 1, 1, 1, 1] },
      ],
      params: { causal: true, scale: 0.6, kvTimeMajor: true },
      label: "time-major cache",
    },
  ],
});

/**
 * q, k, v, out, lse, dout, [mask] → dq, dk, dv. With P recomputed from lse:
 * dV = Pᵀ dO ; dP = dO Vᵀ ; dS = P ⊙ (dP − rowsum(dO ⊙ O)) · scale ; dQ = dS K ; dK = dSᵀ Q.
 */
export const attentionBackwardOp: KernelOp<AttentionParams, "attention_backward"> = defineOp<
  AttentionParams,
  "attention_backward"
>({
  name: "attention_backward",
  infer: ([q, k, v]) => [
    { shape: q.shape, dtype: q.dtype },
    { shape: k.shape, dtype: k.dtype },
    { shape: v.shape, dtype: v.dtype },
  ],
  // dQ row blocks are stored whole; dK and dV are zeroed per unit before its heads add into them
  writesAll: true,
  cpu: ([q, k, v, o, lse, dout, mask], [dq, dk, dv], { inputs, params }) => {
    const d = attnDims(inputs[0], inputs[1], inputs[2], inputs[6], batchMajor(params));
    const { b, t, s, nh } = d;
    const arrays = [q, k, v, o, lse, dout, dq, dk, dv];
    if (pooledAttention(q, d, params, arrays, mask ?? null, true)) return;
    const dt = inputs[0].dtype;
    // f32: P, dP and rowsum(dO ⊙ O) live in the SIMD module's memory, dS is computed there
    const ws = attnWorkspace(q, t, s, true, !!mask);
    const p = ws ? ws.sc : allocArray(dt, t * s); // (T, S)
    const dp = ws ? ws.dp : allocArray(dt, t * s); // (T, S)
    const dsum = ws ? ws.dsum : allocArray(dt, t); // (T)
    const a = { q, k, v, o, lse, dout, mask: mask ?? null, dq, dk, dv };
    for (let bi = 0; bi < b; bi++) {
      if (ws && mask) ws.setMask(mask, bi * s);
      for (let g = 0; g < d.nkv; g++) zeroKvGrads(d, bi, g, dk, dv);
      for (let h = 0; h < nh; h++) attentionBackwardHead(d, bi, h, a, params, p, dp, dsum, ws);
    }
  },
  wgsl: ({ inputs, params }, device) => {
    const d = attnDims(inputs[0], inputs[1], inputs[2], inputs[6], batchMajor(params));
    return attentionBackward(d, inputs.length > 6, params.causal, params.scale, device);
  },
  vjp: NONDIFF,
  examples: [
    {
      // q, k, v, out, lse, dout
      inputs: [
        { shape: [2, 5, 4, 3] },
        { shape: [2, 5, 2, 3] },
        { shape: [2, 5, 2, 3] },
        { shape: [2, 5, 4, 3] },
        { shape: [2, 4, 5] },
        { shape: [2, 5, 4, 3] },
      ],
      params: { causal: true, scale: 1 / Math.sqrt(3) },
    },
  ],
});

/** The backward op's K and V are batch-major (`attention`'s VJP transposes time-major ones). */
function batchMajor(params: AttentionParams): false {
  if (params.kvTimeMajor) {
    throw new Error("attention_backward takes K and V as [B,S,NKV,HD]: transpose time-major ones");
  }
  return false;
}

/** Options of `attention`. */
export interface AttentionOptions {
  /** Causal mask (default true). */
  causal?: boolean;
  /** Score scale (default 1/√HD). */
  scale?: number;
  /** Key mask [B, S] (1 = attend, 0 = skip), same dtype as q. */
  mask?: Tensor;
  /** k and v are time-major, [S, B, NKV, HD] (a KV cache's layout); default false. */
  kvTimeMajor?: boolean;
}

/**
 * Scaled dot-product attention with grouped KV heads.
 *
 * @param q queries [B, T, NH, HD]
 * @param k keys [B, S, NKV, HD] (S ≥ T with a KV cache), or [S, B, NKV, HD] with `kvTimeMajor`
 * @param v values, as k
 * @param options causal, scale, key mask, K/V layout
 * @returns [B, T, NH, HD]
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const scale = options.scale ?? 1 / Math.sqrt(q.shape[3]);
  const ins = options.mask ? [q, k, v, options.mask] : [q, k, v];
  const causal = options.causal ?? true;
  const params = options.kvTimeMajor ? { causal, scale, kvTimeMajor: true } : { causal, scale };
  return apply(attentionOp, ins, params)[0];
}

/**
 * Whether attention over `t` queries and `s` keys with `nh` query and `nkv` KV heads can take bf16
 * q, k and v on the CPU (the bfloat16 precision's activations): T > 1, a KV group's scores fit a
 * unit, oneDNN 2.x in the bfloat16 precision.
 *
 * @param d the call's sizes
 * @returns whether `attention` accepts bf16 tensors of this shape
 */
export function attentionTakesBf16(d: { t: number; s: number; nh: number; nkv: number }): boolean {
  return bf16AttentionFits(d);
}
