/**
 * Fused RMSNorm over the last axis: y = w ⊙ x · rsqrt(mean(x²) + eps). Forward saves rstd;
 * backward is one fused op returning dx and dw.
 * @module
 */
// N = rows, H = normalised width
import { isFloat } from "../dtype.ts";
import type { OpDef } from "../op.ts";
import { apply, defineOp, NONDIFF } from "../op.ts";
import { fmt } from "../shape.ts";
import type { Tensor } from "../tensor.ts";

/** Params of `rmsNorm`. */
export interface RmsNormParams {
  /** Added inside the square root. */
  readonly eps: number;
}

/** x [..., H], w [H] → y [..., H], rstd [...]. */
export const rmsNormOp: OpDef<RmsNormParams> = defineOp<RmsNormParams>({
  name: "rms_norm",
  infer: ([x, w]) => {
    const h = x.shape[x.shape.length - 1];
    if (!isFloat(x.dtype) || w.dtype !== x.dtype || w.shape.length !== 1 || w.shape[0] !== h) {
      throw new Error(
        `Cannot rmsNorm ${x.dtype} ${fmt(x.shape)} with weight ${w.dtype} ${fmt(w.shape)}`,
      );
    }
    return [{ shape: x.shape, dtype: x.dtype }, { shape: x.shape.slice(0, -1), dtype: x.dtype }];
  },
  cpu: ([x, w], [y, rstd], { inputs, params }) => {
    const h = inputs[0].shape[inputs[0].shape.length - 1];
    const rows = h === 0 ? 0 : x.length / h;
    for (let r = 0; r < rows; r++) {
      const base = r * h;
      let ss = 0;
      for (let i = 0; i < h; i++) ss += x[base + i] * x[base + i];
      const rs = 1 / Math.sqrt(ss / h + params.eps);
      rstd[r] = rs;
      for (let i = 0; i < h; i++) y[base + i] = w[i] * (x[base + i] * rs);
    }
  },
  // see rmsNormBackward
  vjp: (ct, ctx) => {
    const [dx, dw] = apply(rmsNormBackwardOp, [
      ct[0]!,
      ctx.inputs[0]!,
      ctx.inputs[1]!,
      ctx.outputs[1]!,
    ], {});
    return [dx, dw];
  },
  saves: { inputs: true, outputs: [1] },
  statOutputs: [1],
  examples: [
    { inputs: [{ shape: [3, 8] }, { shape: [8] }], params: { eps: 1e-5 } },
    { inputs: [{ shape: [2, 3, 5] }, { shape: [5] }], params: { eps: 1e-6 } },
  ],
});

/**
 * ct, x, w, rstd → dx, dw with g = w ⊙ ct:
 * dx = rstd·g − x·rstd³·(Σ g⊙x)/H ;  dw = Σ_rows ct ⊙ x · rstd.
 */
export const rmsNormBackwardOp: OpDef<Record<string, never>> = defineOp<Record<string, never>>({
  name: "rms_norm_backward",
  infer: ([_ct, x, w]) => [{ shape: x.shape, dtype: x.dtype }, { shape: w.shape, dtype: w.dtype }],
  cpu: ([ct, x, w, rstd], [dx, dw], { inputs }) => {
    const h = inputs[1].shape[inputs[1].shape.length - 1];
    const rows = h === 0 ? 0 : x.length / h;
    for (let r = 0; r < rows; r++) {
      const base = r * h, rs = rstd[r];
      let dot = 0;
      for (let i = 0; i < h; i++) dot += w[i] * ct[base + i] * x[base + i];
      const c = rs * rs * rs * dot / h;
      for (let i = 0; i < h; i++) {
        dx[base + i] = rs * w[i] * ct[base + i] - x[base + i] * c;
        dw[i] += ct[base + i] * x[base + i] * rs;
      }
    }
  },
  vjp: NONDIFF,
  examples: [
    {
      inputs: [{ shape: [3, 8] }, { shape: [3, 8] }, { shape: [8] }, {
        shape: [3],
        kind: "positive",
      }],
      params: {},
    },
  ],
});

/**
 * RMSNorm over the last axis (MiniMind/Llama): w ⊙ x / sqrt(mean(x²) + eps).
 *
 * @param x input [..., H]
 * @param weight scale [H]
 * @param options eps (default 1e-5)
 * @returns normalised x
 */
export function rmsNorm(x: Tensor, weight: Tensor, options: { eps?: number } = {}): Tensor {
  return apply(rmsNormOp, [x, weight], { eps: options.eps ?? 1e-5 })[0];
}
