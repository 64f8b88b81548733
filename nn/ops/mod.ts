/**
 * The op registry: every primitive, by name. The conformance test (VJP vs finite differences),
 * the CPU↔WebGPU parity test and the benchmarks iterate it. Adding an op = one file + one line.
 * @module
 */
import type { OpDef } from "../op.ts";
import { affineOp, castOp } from "./arith.ts";
import { UNARY_OPS } from "./unary.ts";
import { accumulateOp, BINARY_OPS, powScalarOp, whereOp } from "./binary.ts";
import { argmaxOp, maxOp, sumOp, sumSquaresOp } from "./reduce.ts";
import { broadcastToOp, concatOp, padOp, reshapeOp, sliceOp, transposeOp } from "./movement.ts";
import { matmulOp } from "./matmul.ts";
import {
  embeddingBackwardOp,
  embeddingOp,
  scatterAddOp,
  takeAlongAxisOp,
  topkOp,
} from "./gather.ts";
import { logSoftmaxOp, logsumexpOp, softmaxOp } from "./softmax.ts";
import { crossEntropyBackwardOp, crossEntropyOp } from "./cross_entropy.ts";
import { rmsNormBackwardOp, rmsNormOp } from "./rms_norm.ts";
import { ropeOp } from "./rope.ts";
import { attentionBackwardOp, attentionOp } from "./attention.ts";
import { swigluBackwardOp, swigluOp } from "./swiglu.ts";
import { adamwOp } from "./adamw.ts";
import { lossScaleOp } from "./loss_scale.ts";
import { sampleOp } from "./sample.ts";

/** Each key names its op: an op filed under another name fails to type-check. */
// deno-lint-ignore no-explicit-any
type ByName<T> = { readonly [K in keyof T]: OpDef<any, K & string> };

const ops = {
  ...UNARY_OPS,
  cast: castOp,
  ...BINARY_OPS,
  affine: affineOp,
  pow_scalar: powScalarOp,
  where: whereOp,
  sum: sumOp,
  sum_squares: sumSquaresOp,
  max: maxOp,
  argmax: argmaxOp,
  reshape: reshapeOp,
  transpose: transposeOp,
  broadcast_to: broadcastToOp,
  slice: sliceOp,
  pad: padOp,
  concat: concatOp,
  matmul: matmulOp,
  take_along_axis: takeAlongAxisOp,
  scatter_add: scatterAddOp,
  embedding: embeddingOp,
  embedding_backward: embeddingBackwardOp,
  topk: topkOp,
  softmax: softmaxOp,
  log_softmax: logSoftmaxOp,
  logsumexp: logsumexpOp,
  cross_entropy: crossEntropyOp,
  cross_entropy_backward: crossEntropyBackwardOp,
  rms_norm: rmsNormOp,
  rms_norm_backward: rmsNormBackwardOp,
  rope: ropeOp,
  attention: attentionOp,
  attention_backward: attentionBackwardOp,
  swiglu: swigluOp,
  swiglu_backward: swigluBackwardOp,
  adamw: adamwOp,
  loss_scale: lossScaleOp,
  accumulate: accumulateOp,
  sample: sampleOp,
};

/** Every registered primitive, keyed by op name. */
// deno-lint-ignore no-explicit-any
export const OPS: Readonly<Record<string, OpDef<any>>> = ops satisfies ByName<typeof ops>;

export * from "./arith.ts";
export * from "./unary.ts";
export * from "./binary.ts";
export * from "./reduce.ts";
export * from "./movement.ts";
export * from "./matmul.ts";
export * from "./gather.ts";
export * from "./softmax.ts";
export * from "./cross_entropy.ts";
export * from "./rms_norm.ts";
export * from "./rope.ts";
export * from "./attention.ts";
export * from "./swiglu.ts";
export * from "./adamw.ts";
export * from "./loss_scale.ts";
export * from "./sample.ts";
