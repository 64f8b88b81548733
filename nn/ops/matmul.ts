/**
 * Batched matrix multiply with transpose flags. The VJP is two matmuls with flipped flags, so
 * backward never materialises a transpose. f32 runs on the fast gemm (BLAS / wasm SIMD), or in
 * bf16 with f32 accumulation when `setMatmulPrecision("bfloat16")` is in effect. On the CPU the
 * operands may also be bf16 tensors (used as they are) and the result bf16 (`dtype`): the
 * bfloat16 precision's activations, products with f32 accumulation rounded once when stored.
 * On WebGPU the float16 precision (`WebGpuBackend.setMatmulPrecision`) rounds the operands to f16
 * and accumulates in f32 (`matmul/wgsl.ts`).
 * @module
 */
// B = batch dims, M×K · K×N → M×N
import { computeDtype, type DType, isFloat } from "../dtype.ts";
import type { KernelOp, Meta } from "../op.ts";
import { defineOp } from "../op.ts";
import { apply1 } from "../apply.ts";
import { fmt, sameShape, sizeOf } from "../shape.ts";
import type { Tensor } from "../tensor.ts";
import { reshape } from "./movement.ts";
import { bf16Activations, matmulGemm, packedMatmul } from "../backend/cpu/gemm_adapter.ts";
import { PACKED_MAX_ROWS } from "../backend/cpu/gemm/packed.ts";
import { pooledMatmul } from "../backend/cpu/threads/mod.ts";
import { matmulKernel } from "./matmul/wgsl.ts";

/** Params of `matmul`. */
export interface MatmulParams {
  /** Use Aᵀ (A stored [..., K, M]). */
  readonly transA: boolean;
  /** Use Bᵀ (B stored [..., N, K]). */
  readonly transB: boolean;
  /**
   * The result's dtype where it is not the operands' common float dtype: "bf16", or "f32" from a
   * bf16 operand (CPU only).
   */
  readonly dtype?: "f32" | "bf16";
}

/**
 * The result dtype of a product of `a` and `b`, or null where they cannot be multiplied: one float
 * dtype (f32, f64) by default; with a bf16 operand or `dtype`, any mix of f32 and bf16 operands,
 * and the result `dtype` (f32 by default).
 */
function productDtype(a: DType, b: DType, dtype?: "f32" | "bf16"): DType | null {
  if (dtype === undefined && a === b && isFloat(a)) return a;
  const lowp = (d: DType) => computeDtype(d) === "f32"; // f32 or bf16
  return lowp(a) && lowp(b) ? dtype ?? "f32" : null;
}

interface Dims {
  batch: number[];
  m: number;
  k: number;
  n: number;
  batchA: number;
  batchB: number;
}

function dims(a: Meta, b: Meta, p: MatmulParams): Dims {
  const ra = a.shape.length, rb = b.shape.length;
  if (ra < 2 || rb < 2) {
    throw new Error(
      `Cannot matmul shapes ${fmt(a.shape)} and ${fmt(b.shape)}: both need rank >= 2`,
    );
  }
  const [a0, a1] = a.shape.slice(ra - 2);
  const [b0, b1] = b.shape.slice(rb - 2);
  const m = p.transA ? a1 : a0, ka = p.transA ? a0 : a1;
  const kb = p.transB ? b1 : b0, n = p.transB ? b0 : b1;
  if (ka !== kb) {
    throw new Error(
      `Cannot matmul shapes ${fmt(a.shape)} and ${fmt(b.shape)}${
        p.transA ? " (A transposed)" : ""
      }${p.transB ? " (B transposed)" : ""}: inner dimensions differ (${ka} vs ${kb})`,
    );
  }
  const ba = a.shape.slice(0, ra - 2), bb = b.shape.slice(0, rb - 2);
  if (ba.length && bb.length && !sameShape(ba, bb)) {
    throw new Error(
      `Cannot matmul shapes ${fmt(a.shape)} and ${fmt(b.shape)}: batch dimensions ${fmt(ba)} and ${
        fmt(bb)
      } differ`,
    );
  }
  const batch = ba.length >= bb.length ? ba : bb;
  return { batch, m, k: ka, n, batchA: sizeOf(ba), batchB: sizeOf(bb) };
}

/** Batched matmul with transpose flags. */
export const matmulOp: KernelOp<MatmulParams, "matmul"> = defineOp<MatmulParams, "matmul">({
  name: "matmul",
  infer: ([a, b], p) => {
    const dtype = productDtype(a.dtype, b.dtype, p.dtype);
    if (!dtype) {
      throw new Error(
        `Cannot matmul ${a.dtype} and ${b.dtype} tensors${
          p.dtype ? ` into ${p.dtype}` : ""
        }: both must be the same float dtype, or f32 and bf16 (CPU)`,
      );
    }
    const d = dims(a, b, p);
    return [{ shape: [...d.batch, d.m, d.n], dtype }];
  },
  writesAll: true,
  cpu: ([a, b], [c], { inputs, params }) => {
    const d = dims(inputs[0], inputs[1], params);
    const { m, n, k } = d;
    const { transA, transB } = params;
    const batch = Math.max(d.batchA, d.batchB);
    const lda = transA ? m : k, ldb = transB ? k : n;
    if (inputs[1].shape.length === 2 && !transA) {
      // a few rows against a weight used again (decode): its packed copy (../backend/cpu/gemm/)
      if (transB && packedMatmul(a, b, c, m * batch, n, k)) return;
      // fold A's batch into rows: one big gemm (on the kernel pool's threads when it is on)
      if (pooledMatmul(transA, transB, m * batch, n, k, a, lda, b, ldb, c, n)) return;
      matmulGemm(transA, transB, m * batch, n, k, a, lda, b, ldb, c, n);
      return;
    }
    const sa = inputs[0].shape.length > 2 ? m * k : 0, sb = inputs[1].shape.length > 2 ? k * n : 0;
    if (batch === 1 && pooledMatmul(transA, transB, m, n, k, a, lda, b, ldb, c, n)) return;
    matmulGemm(transA, transB, m, n, k, a, lda, b, ldb, c, n, batch, sa, sb, m * n);
  },
  wgsl: ({ inputs: [a, b], params }, device) => {
    const d = dims(a, b, params);
    const f16 = device.matmulF16 === true;
    const batch = Math.max(d.batchA, d.batchB);
    if (b.shape.length === 2 && !params.transA) {
      // fold A's batch into rows: one big product
      return [
        matmulKernel({
          ...params,
          m: d.m * batch,
          n: d.n,
          k: d.k,
          batch: 1,
          strideA: 0,
          strideB: 0,
          f16,
        }, device),
      ];
    }
    const strideA = a.shape.length > 2 ? d.m * d.k : 0,
      strideB = b.shape.length > 2 ? d.k * d.n : 0;
    return [
      matmulKernel({ ...params, m: d.m, n: d.n, k: d.k, batch, strideA, strideB, f16 }, device),
    ];
  },
  // C = op(A) op(B): dop(A) = ct op(B)ᵀ, dop(B) = op(A)ᵀ ct, then undo the flags; an input
  // that needs no gradient (a frozen weight) costs no gemm
  vjp: (ct, ctx) => {
    const g = ct[0]!;
    const a = ctx.inputs[0]!, b = ctx.inputs[1]!;
    const { transA, transB } = ctx.params;
    // each gradient in its input's dtype (a bf16 activation gets a bf16 gradient)
    const like = (x: Tensor, y: Tensor, t: Tensor) =>
      productDtype(x.dtype, y.dtype) === t.dtype ? {} : { dtype: t.dtype as "f32" | "bf16" };
    const da = !ctx.needsGrad[0]
      ? null
      : transA
      ? matmul(b, g, { transA: transB, transB: true, ...like(b, g, a) })
      : matmul(g, b, { transB: !transB, ...like(g, b, a) });
    if (!ctx.needsGrad[1]) return [da, null];
    let db: Tensor;
    if (b.rank === 2 && a.rank > 2 && !transA) {
      // sum over A's batch inside one gemm instead of materialising per-batch gradients
      const a2 = reshape(a, [-1, a.shape[a.rank - 1]]);
      const g2 = reshape(g, [-1, g.shape[g.rank - 1]]);
      db = transB
        ? matmul(g2, a2, { transA: true, ...like(g2, a2, b) })
        : matmul(a2, g2, { transA: true, ...like(a2, g2, b) });
    } else {
      db = transB
        ? matmul(g, a, { transA: true, transB: transA, ...like(g, a, b) })
        : matmul(a, g, { transA: !transA, ...like(a, g, b) });
    }
    return [da, db];
  },
  examples: [
    { inputs: [{ shape: [3, 4] }, { shape: [4, 5] }], params: { transA: false, transB: false } },
    {
      inputs: [{ shape: [4, 3] }, { shape: [4, 5] }],
      params: { transA: true, transB: false },
      label: "tA",
    },
    {
      inputs: [{ shape: [3, 4] }, { shape: [5, 4] }],
      params: { transA: false, transB: true },
      label: "tB",
    },
    {
      inputs: [{ shape: [4, 3] }, { shape: [5, 4] }],
      params: { transA: true, transB: true },
      label: "tAtB",
    },
    {
      inputs: [{ shape: [2, 3, 4] }, { shape: [2, 4, 5] }],
      params: { transA: false, transB: false },
      label: "batched",
    },
    {
      inputs: [{ shape: [2, 3, 4] }, { shape: [5, 4] }],
      params: { transA: false, transB: true },
      label: "linear",
    },
    {
      inputs: [{ shape: [2, 2, 4, 3] }, { shape: [2, 2, 5, 4] }],
      params: { transA: true, transB: true },
      label: "4d",
    },
  ],
});

/**
 * Matrix product of the last two axes, batched over leading axes (equal, or one side 2-D).
 *
 * @param a left operand [..., M, K] (or [..., K, M] with transA)
 * @param b right operand [..., K, N] (or [..., N, K] with transB)
 * @param options transpose flags; `dtype` of the result where it differs from the operands'
 *   common float dtype (CPU: "bf16", or "f32" from bf16 operands)
 * @returns [..., M, N]
 * @example
 * ```ts
 * import { matmul, tensor } from "@minimind/ts";
 * const x = tensor([[1, 2], [3, 4]]);
 * const w = tensor([[1, 0], [0, 1]]);
 * const y = matmul(x, w, { transB: true }); // x · wᵀ, like nn.Linear
 * ```
 */
export function matmul(
  a: Tensor,
  b: Tensor,
  options: { transA?: boolean; transB?: boolean; dtype?: "f32" | "bf16" } = {},
): Tensor {
  const flags = { transA: !!options.transA, transB: !!options.transB };
  return apply1(matmulOp, [a, b], options.dtype ? { ...flags, dtype: options.dtype } : flags);
}

/**
 * The dtype to keep activations derived from `x` in between products: "bf16" where `x` is on the
 * CPU in the bfloat16 precision on oneDNN's native products (`setMatmulPrecision`) and has more
 * rows than a decode step (training, prefill), else `x`'s own. A decode step's few rows keep f32
 * activations: their products run on packed bf16 copies of the weights (`gemm/packed.ts`), which
 * read f32 rows.
 *
 * @param x a tensor [..., K] the activations derive from
 * @returns "bf16", or x's dtype
 */
export function activationDtype(x: Tensor): DType {
  const rows = x.rank === 0 ? 1 : x.size / (x.shape[x.rank - 1] || 1);
  return x.dtype === "f32" && rows > PACKED_MAX_ROWS && x.backend.name === "cpu" &&
      bf16Activations()
    ? "bf16"
    : x.dtype;
}
