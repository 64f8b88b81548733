/**
 * Fused causal grouped-query attention (flash-style contract): forward saves the row
 * log-sum-exp so backward recomputes probabilities instead of storing them. Query head h reads
 * KV head ⌊h / (NH/NKV)⌋ (MiniMind's repeat_kv). A query at time t sees key s when
 * s ≤ t + (S − T) (new tokens sit after the cache) and, with a key mask, mask[b, s] ≠ 0.
 * @module
 */
// B = batch, T = query time, S = key time, NH = query heads, NKV = kv heads, HD = head dim
import type { TypedArray } from "../dtype.ts";
import { allocArray, isFloat } from "../dtype.ts";
import type { KernelOp, Meta } from "../op.ts";
import { defineOp, NONDIFF } from "../op.ts";
import { apply } from "../apply.ts";
import { fmt } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { gemm } from "../backend/cpu/gemm_adapter.ts";
import { attentionBackward, attentionForward } from "./attention/wgsl.ts";
import { type AttnWorkspace, attnWorkspace } from "../backend/cpu/simd/attention.ts";

/** Params of `attention`. */
export interface AttentionParams {
  /** Apply the causal mask. */
  readonly causal: boolean;
  /** Score scale (1/√HD). */
  readonly scale: number;
}

interface AttnDims {
  b: number;
  t: number;
  s: number;
  nh: number;
  nkv: number;
  hd: number;
}

function attnDims(q: Meta, k: Meta, v: Meta, mask?: Meta): AttnDims {
  const [b, t, nh, hd] = q.shape;
  const [kb, s, nkv, khd] = k.shape;
  const ok = q.shape.length === 4 && k.shape.length === 4 && v.shape.length === 4 &&
    isFloat(q.dtype) &&
    k.dtype === q.dtype && v.dtype === q.dtype && kb === b && khd === hd &&
    v.shape.every((d, i) => d === k.shape[i]) &&
    nkv > 0 && nh % nkv === 0;
  if (!ok) {
    throw new Error(
      `Cannot attend with q ${fmt(q.shape)}, k ${fmt(k.shape)}, v ${
        fmt(v.shape)
      }: expected [B,T,NH,HD], [B,S,NKV,HD] with NH divisible by NKV`,
    );
  }
  if (
    mask &&
    (mask.shape.length !== 2 || mask.shape[0] !== b || mask.shape[1] !== s ||
      mask.dtype !== q.dtype)
  ) {
    throw new Error(
      `Cannot attend with key mask ${mask.dtype} ${
        fmt(mask.shape)
      }: expected ${q.dtype} [${b}, ${s}]`,
    );
  }
  return { b, t, s, nh, nkv, hd };
}

/** Scaled, masked scores of one (batch, head) → probabilities in place; returns row lse. */
function probs(
  d: AttnDims,
  bi: number,
  h: number,
  q: TypedArray,
  k: TypedArray,
  mask: TypedArray | undefined,
  p: AttentionParams,
  sc: TypedArray,
  lse: TypedArray | null,
  lseIn: TypedArray | null,
  ws: AttnWorkspace | null,
): void {
  const { t, s, nh, nkv, hd } = d;
  const g = Math.floor(h / (nh / nkv));
  gemm(
    false,
    true,
    t,
    s,
    hd,
    q,
    (bi * t * nh + h) * hd,
    nh * hd,
    k,
    (bi * s * nkv + g) * hd,
    nkv * hd,
    sc,
    0,
    s,
  );
  const shift = s - t;
  if (ws) {
    // the same passes as below, as SIMD kernels over sc (which is ws.sc)
    ws.probs(p.causal, shift, p.scale, (lse ?? lseIn)!, (bi * nh + h) * t, lseIn !== null);
    return;
  }
  for (let ti = 0; ti < t; ti++) {
    const row = ti * s;
    const lim = p.causal ? Math.min(s, ti + shift + 1) : s;
    let m = -Infinity;
    for (let j = 0; j < s; j++) {
      const visible = j < lim && (!mask || mask[bi * s + j] !== 0);
      const v = visible ? sc[row + j] * p.scale : -Infinity;
      sc[row + j] = v;
      if (v > m) m = v;
    }
    const li = (bi * nh + h) * t + ti;
    let z: number;
    if (lseIn) z = lseIn[li];
    else if (m === -Infinity) z = -Infinity;
    else {
      let sum = 0;
      for (let j = 0; j < s; j++) sum += Math.exp(sc[row + j] - m);
      z = m + Math.log(sum);
    }
    if (lse) lse[li] = z;
    for (let j = 0; j < s; j++) sc[row + j] = z === -Infinity ? 0 : Math.exp(sc[row + j] - z);
  }
}

/** q, k, v, [mask] → out [B,T,NH,HD], lse [B,NH,T]. */
export const attentionOp: KernelOp<AttentionParams, "attention"> = defineOp<
  AttentionParams,
  "attention"
>({
  name: "attention",
  infer: ([q, k, v, mask]) => {
    const d = attnDims(q, k, v, mask);
    return [{ shape: q.shape, dtype: q.dtype }, { shape: [d.b, d.nh, d.t], dtype: q.dtype }];
  },
  cpu: ([q, k, v, mask], [out, lse], { inputs, params }) => {
    const d = attnDims(inputs[0], inputs[1], inputs[2], inputs[3]);
    const { b, t, s, nh, nkv, hd } = d;
    // f32: scores live in the SIMD module's memory and the softmax runs there
    const ws = attnWorkspace(q, t, s, false, !!mask);
    const sc = ws ? ws.sc : allocArray(inputs[0].dtype, t * s); // (T, S)
    for (let bi = 0; bi < b; bi++) {
      if (ws && mask) ws.setMask(mask, bi * s);
      for (let h = 0; h < nh; h++) {
        probs(d, bi, h, q, k, mask, params, sc, lse, null, ws);
        const g = Math.floor(h / (nh / nkv));
        gemm(
          false,
          false,
          t,
          hd,
          s,
          sc,
          0,
          s,
          v,
          (bi * s * nkv + g) * hd,
          nkv * hd,
          out,
          (bi * t * nh + h) * hd,
          nh * hd,
        );
      }
    }
  },
  wgsl: ({ inputs, params }, device) => {
    const d = attnDims(inputs[0], inputs[1], inputs[2], inputs[3]);
    return attentionForward(d, inputs.length > 3, params.causal, params.scale, device);
  },
  // see attentionBackward
  vjp: (ct, ctx) => {
    const [q, k, v, mask] = ctx.inputs as Tensor[];
    const ins = [q, k, v, ctx.outputs[0]!, ctx.outputs[1]!, ct[0]!, ...(mask ? [mask] : [])];
    const [dq, dk, dv] = apply(attentionBackwardOp, ins, ctx.params);
    return [dq, dk, dv, ...(mask ? [null] : [])];
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
  cpu: ([q, k, v, o, lse, dout, mask], [dq, dk, dv], { inputs, params }) => {
    const d = attnDims(inputs[0], inputs[1], inputs[2], inputs[6]);
    const { b, t, s, nh, nkv, hd } = d;
    const dt = inputs[0].dtype;
    // f32: P, dP and rowsum(dO ⊙ O) live in the SIMD module's memory, dS is computed there
    const ws = attnWorkspace(q, t, s, true, !!mask);
    const p = ws ? ws.sc : allocArray(dt, t * s); // (T, S)
    const dp = ws ? ws.dp : allocArray(dt, t * s); // (T, S)
    const dsum = ws ? ws.dsum : allocArray(dt, t); // (T)
    for (let bi = 0; bi < b; bi++) {
      if (ws && mask) ws.setMask(mask, bi * s);
      for (let h = 0; h < nh; h++) {
        const g = Math.floor(h / (nh / nkv));
        const qo = (bi * t * nh + h) * hd, ko = (bi * s * nkv + g) * hd;
        probs(d, bi, h, q, k, mask, params, p, null, lse, ws);
        // dV += Pᵀ dO
        gemm(true, false, s, hd, t, p, 0, s, dout, qo, nh * hd, dv, ko, nkv * hd, 1);
        // dP = dO Vᵀ
        gemm(false, true, t, s, hd, dout, qo, nh * hd, v, ko, nkv * hd, dp, 0, s);
        for (let ti = 0; ti < t; ti++) {
          let acc = 0;
          for (let i = 0; i < hd; i++) {
            acc += dout[qo + ti * nh * hd + i] * o[qo + ti * nh * hd + i];
          }
          dsum[ti] = acc;
        }
        if (ws) ws.ds(params.scale);
        else {
          for (let ti = 0; ti < t; ti++) {
            const row = ti * s;
            for (let j = 0; j < s; j++) {
              dp[row + j] = p[row + j] * (dp[row + j] - dsum[ti]) * params.scale;
            }
          }
        }
        // dQ = dS K ; dK += dSᵀ Q
        gemm(false, false, t, hd, s, dp, 0, s, k, ko, nkv * hd, dq, qo, nh * hd);
        gemm(true, false, s, hd, t, dp, 0, s, q, qo, nh * hd, dk, ko, nkv * hd, 1);
      }
    }
  },
  wgsl: ({ inputs, params }, device) => {
    const d = attnDims(inputs[0], inputs[1], inputs[2], inputs[6]);
    return attentionBackward(d, inputs.length > 6, params.causal, params.scale, device);
  },
  vjp: NONDIFF,
  examples: [],
});

/** Options of `attention`. */
export interface AttentionOptions {
  /** Causal mask (default true). */
  causal?: boolean;
  /** Score scale (default 1/√HD). */
  scale?: number;
  /** Key mask [B, S] (1 = attend, 0 = skip), same dtype as q. */
  mask?: Tensor;
}

/**
 * Scaled dot-product attention with grouped KV heads.
 *
 * @param q queries [B, T, NH, HD]
 * @param k keys [B, S, NKV, HD] (S ≥ T with a KV cache)
 * @param v values [B, S, NKV, HD]
 * @param options causal, scale, key mask
 * @returns [B, T, NH, HD]
 */
export function attention(q: Tensor, k: Tensor, v: Tensor, options: AttentionOptions = {}): Tensor {
  const scale = options.scale ?? 1 / Math.sqrt(q.shape[3]);
  const ins = options.mask ? [q, k, v, options.mask] : [q, k, v];
  return apply(attentionOp, ins, { causal: options.causal ?? true, scale })[0];
}
