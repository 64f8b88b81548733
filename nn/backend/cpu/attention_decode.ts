/**
 * The f32 attention of a decode step (T = 1) as two batched oneDNN matmul primitives, one for the
 * scores of every (batch row, KV group) at once and one for the outputs, with the softmax between
 * them in the SIMD workspace (the scores are written there and read back from there, nothing is
 * copied). Each unit's own OpenBLAS products (`attentionForwardUnit`) read its K and V rows once
 * per product but pay a product's fixed cost per unit; with the KV cache time-major those rows are
 * also strided by the batch. One batched call: at 8 rows and S = 1,024, 0.77 ms a layer against
 * 1.89 (MiniMind2-Small's heads, 2 threads); at one row 52 against 91 µs.
 *
 * Used from two rows on (MiniMind2-Small, S = 1,024: 242 → 298 tok/s at 2 rows; 974 → 1,232 at 64
 * rows with S = 320). At one row the step's other products are BLAS's `sgemv`, whose threads then
 * compete with oneDNN's OpenMP threads for the cores (209 → 172 tok/s), so one row keeps the
 * per-unit products.
 * Which path a step takes depends only on its shape and on oneDNN 2.x being there, so runs stay
 * reproducible; the primitives are made per key length (about 50 µs each, two a step, shared by
 * the layers).
 *
 * @module
 */
// B = batch, S = key time, NH = query heads, NKV = kv heads, HD = head dim, REP = NH / NKV
import type { AttnShape } from "../../ops/attention/wgsl.ts";
import { stridesOf } from "../../shape.ts";
import { DT_F32, nativeDnnl } from "./gemm/bf16.ts";
import { type AttnForwardArrays, type AttnOptions, kvOffset, kvStep } from "./attention_heads.ts";
import { attnWorkspace } from "./simd/attention.ts";

let enabled = true;
/** Turns the batched decode path on or off for this process (tests compare both; on by default). */
export function setBatchedDecodeAttention(on: boolean): void {
  enabled = on;
}

/**
 * Out and lse of a decode step's attention (T = 1) by batched oneDNN products; false (nothing
 * written) when the path does not apply: off, T ≠ 1, one batch row, not f32, no SIMD workspace, no
 * oneDNN 2.x, or no oneDNN implementation for the shapes. Every key is visible to the one query,
 * except where the key mask hides it.
 *
 * @param d the call's shape (K and V in either layout)
 * @param a q [B, 1, NH, HD]; k, v ([B, S, NKV, HD], or [S, B, NKV, HD] time-major); the key mask
 *   [B, S] or null; out [B, 1, NH, HD] and lse [B, NH, 1], written
 * @param p the score scale
 * @returns whether it ran
 */
export function batchedDecodeAttention(
  d: AttnShape,
  a: AttnForwardArrays,
  p: AttnOptions,
): boolean {
  const { b, s, nh, nkv, hd } = d;
  const { q, k, v, mask, out, lse } = a;
  const rep = nh / nkv;
  if (
    !enabled || d.t !== 1 || b < 2 || !(q instanceof Float32Array) ||
    !(out instanceof Float32Array)
  ) return false;
  const dn = nativeDnnl();
  if (!dn) return false;
  const key = `decode attention ${b} ${s} ${nh} ${nkv} ${hd} ${d.kvTimeMajor === true}`;
  // K and V of unit (b, g) start at kvOffset(b, g); a key step is kvStep further
  const kvB = kvOffset(d, 1, 0), kvS = kvStep(d);
  const qDims = [b, nkv, rep, hd], scDims = [b, nkv, rep, s];
  const scores = dn.tryMatmul(`${key} scores`, () => [
    dn.md(qDims, stridesOf(qDims), DT_F32),
    dn.md([b, nkv, hd, s], [kvB, hd, 1, kvS], DT_F32), // Kᵀ
    dn.md(scDims, stridesOf(scDims), DT_F32),
  ]);
  const outputs = dn.tryMatmul(`${key} outputs`, () => [
    dn.md(scDims, stridesOf(scDims), DT_F32),
    dn.md([b, nkv, s, hd], [kvB, hd, kvS, 1], DT_F32),
    dn.md(qDims, stridesOf(qDims), DT_F32),
  ]);
  const ws = scores && outputs && attnWorkspace(q, b * nh, s, false, mask !== null);
  if (!scores || !outputs || !ws) return false;
  // scores [B·NH, S] into the workspace: row bi·NH + h, as lse's index
  dn.exec(scores, [q, k, ws.sc], `decode attention scores (${key})`);
  if (mask) {
    for (let bi = 0; bi < b; bi++) {
      ws.setMask(mask, bi * s);
      ws.probs(false, 0, p.scale, lse, 0, false, bi * nh, (bi + 1) * nh);
    }
  } else ws.probs(false, 0, p.scale, lse, 0, false);
  dn.exec(outputs, [ws.sc, v, out], `decode attention outputs (${key})`);
  return true;
}
