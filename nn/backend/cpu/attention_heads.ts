/**
 * The CPU attention kernels one (batch, query head) at a time, shared by the attention ops
 * (`nn/ops/attention.ts`, every head in order on the calling thread) and the kernel pool
 * (`threads/`, which hands each thread whole (batch, KV group) units: a group's heads accumulate
 * into the same dK, dV rows, in head order either way, so the results are the same bits).
 *
 * @module
 */
// B = batch, T = query time, S = key time, NH = query heads, NKV = kv heads, HD = head dim
import type { TypedArray } from "../../dtype.ts";
import { gemm } from "./gemm_adapter.ts";
import { getGemm } from "./gemm/mod.ts";
import { AttnWorkspace } from "./simd/attention.ts";
import { privateSimd, type SimdKernels } from "./simd/mod.ts";
import type { AttnShape } from "../../ops/attention/wgsl.ts";

/** Element offset of key step 0 of batch row `bi`, KV head `g` in K or V (either layout). */
export function kvOffset(d: AttnShape, bi: number, g: number): number {
  return ((d.kvTimeMajor ? bi : bi * d.s) * d.nkv + g) * d.hd;
}

/** Elements between consecutive key steps of one batch row and head in K or V. */
export function kvStep(d: AttnShape): number {
  return (d.kvTimeMajor ? d.b : 1) * d.nkv * d.hd;
}

/** The attention params the kernels read. */
export interface AttnOptions {
  /** Apply the causal mask. */
  readonly causal: boolean;
  /** Score scale. */
  readonly scale: number;
}

/**
 * Row blocks [r0, r1) of the T query rows with `lim`, the keys the block's last row sees: causal
 * attention skips the matrix products over the hidden upper triangle block by block (about half of
 * the work at T = S). Blocks of T/8 rows (at least 16); one block when not causal.
 */
export function rowBlocks(d: AttnShape, causal: boolean): [number, number, number][] {
  const { t, s } = d;
  if (!causal || t <= 16) return [[0, t, s]];
  const rows = Math.max(16, Math.ceil(t / 8 / 16) * 16);
  const out: [number, number, number][] = [];
  for (let r0 = 0; r0 < t; r0 += rows) {
    const r1 = Math.min(t, r0 + rows);
    out.push([r0, r1, Math.max(0, Math.min(s, r1 + s - t))]);
  }
  return out;
}

/**
 * Scaled, masked scores of one (batch, head) → probabilities in place; returns row lse. Only the
 * columns of each row block below its `lim` are written (later ones are hidden for every row of
 * the block, and never read).
 */
function probs(
  d: AttnShape,
  bi: number,
  h: number,
  q: TypedArray,
  k: TypedArray,
  mask: TypedArray | null,
  p: AttnOptions,
  sc: TypedArray,
  lse: TypedArray | null,
  lseIn: TypedArray | null,
  ws: AttnWorkspace | null,
): void {
  const { t, s, nh, nkv, hd } = d;
  const g = Math.floor(h / (nh / nkv));
  // scores of each row block up to its last visible key (the rest of the row is never read)
  for (const [r0, r1, lim] of rowBlocks(d, p.causal)) {
    gemm(
      false,
      true,
      r1 - r0,
      lim,
      hd,
      q,
      (bi * t * nh + h) * hd + r0 * nh * hd,
      nh * hd,
      k,
      kvOffset(d, bi, g),
      kvStep(d),
      sc,
      r0 * s,
      s,
    );
  }
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

/** The inputs and outputs of one attention forward call. */
export interface AttnForwardArrays {
  q: TypedArray;
  k: TypedArray;
  v: TypedArray;
  mask: TypedArray | null;
  out: TypedArray;
  lse: TypedArray;
}

/**
 * Forward of one (batch, head): probabilities into `sc` (the workspace's when `ws`), lse, then
 * out = P·V block by block.
 */
function attentionForwardHead(
  d: AttnShape,
  bi: number,
  h: number,
  a: AttnForwardArrays,
  p: AttnOptions,
  sc: TypedArray,
  ws: AttnWorkspace | null,
): void {
  const { t, s, nh, nkv, hd } = d;
  const { v, out } = a;
  probs(d, bi, h, a.q, a.k, a.mask, p, sc, a.lse, null, ws);
  const g = Math.floor(h / (nh / nkv));
  for (const [r0, r1, lim] of rowBlocks(d, p.causal)) {
    gemm(
      false,
      false,
      r1 - r0,
      hd,
      lim,
      sc,
      r0 * s,
      s,
      v,
      kvOffset(d, bi, g),
      kvStep(d),
      out,
      (bi * t * nh + h) * hd + r0 * nh * hd,
      nh * hd,
    );
  }
}

/** Rows of scores a forward workspace holds: T, or at a decode step (T = 1) one KV group's heads. */
export function forwardScoreRows(d: AttnShape): number {
  return d.t === 1 ? d.nh / d.nkv : d.t;
}

/**
 * Forward of the unit (batch row `bi`, KV group `g`): every query head of the group, in order. At a
 * decode step (T = 1) with the SIMD workspace the group's rows of q are consecutive, so its scores
 * are one [rep, S] product and its outputs one [rep, HD] product instead of two matrix-vector
 * products per head; one query sees every cached key, so only the key mask hides any. `ws` (or
 * `sc`) holds {@linkcode forwardScoreRows} rows.
 */
export function attentionForwardUnit(
  d: AttnShape,
  bi: number,
  g: number,
  a: AttnForwardArrays,
  p: AttnOptions,
  sc: TypedArray,
  ws: AttnWorkspace | null,
): void {
  const { s, nh, nkv, hd } = d;
  const rep = nh / nkv;
  if (d.t === 1 && ws) {
    const h0 = bi * nh + g * rep, ko = kvOffset(d, bi, g), ks = kvStep(d);
    gemm(false, true, rep, s, hd, a.q, h0 * hd, hd, a.k, ko, ks, ws.sc, 0, s);
    ws.probs(false, 0, p.scale, a.lse, h0, false);
    gemm(false, false, rep, hd, s, ws.sc, 0, s, a.v, ko, ks, a.out, h0 * hd, hd);
    return;
  }
  for (let h = g * rep; h < (g + 1) * rep; h++) attentionForwardHead(d, bi, h, a, p, sc, ws);
}

/** The saved tensors and gradients of one attention backward call. */
export interface AttnBackwardArrays {
  q: TypedArray;
  k: TypedArray;
  v: TypedArray;
  o: TypedArray;
  lse: TypedArray;
  dout: TypedArray;
  mask: TypedArray | null;
  dq: TypedArray;
  dk: TypedArray;
  dv: TypedArray;
}

/**
 * Backward of one (batch, head), with P recomputed from lse into `p`: dV += Pᵀ dO ; dP = dO Vᵀ ;
 * dS = P ⊙ (dP − rowsum(dO ⊙ O)) · scale ; dQ = dS K ; dK += dSᵀ Q. `p`, `dp` and `dsum` are
 * scratch ([T, S], [T, S], [T]: the workspace's when `ws`).
 */
export function attentionBackwardHead(
  d: AttnShape,
  bi: number,
  h: number,
  a: AttnBackwardArrays,
  prm: AttnOptions,
  p: TypedArray,
  dp: TypedArray,
  dsum: TypedArray,
  ws: AttnWorkspace | null,
): void {
  const { t, s, nh, nkv, hd } = d;
  const { q, k, v, o, dout, dq, dk, dv } = a;
  const g = Math.floor(h / (nh / nkv));
  const qo = (bi * t * nh + h) * hd, ko = kvOffset(d, bi, g), ks = kvStep(d);
  probs(d, bi, h, q, k, a.mask, prm, p, null, a.lse, ws);
  for (let ti = 0; ti < t; ti++) {
    let acc = 0;
    for (let i = 0; i < hd; i++) {
      acc += dout[qo + ti * nh * hd + i] * o[qo + ti * nh * hd + i];
    }
    dsum[ti] = acc;
  }
  // row block by row block, over the keys the block sees (P and dS are 0 past them)
  for (const [r0, r1, lim] of rowBlocks(d, prm.causal)) {
    const m = r1 - r0, qb = qo + r0 * nh * hd, pb = r0 * s;
    // dV += Pᵀ dO
    gemm(true, false, lim, hd, m, p, pb, s, dout, qb, nh * hd, dv, ko, ks, 1);
    // dP = dO Vᵀ
    gemm(false, true, m, lim, hd, dout, qb, nh * hd, v, ko, ks, dp, pb, s);
    if (ws) ws.ds(prm.scale, r0, r1, lim);
    else {
      for (let ti = r0; ti < r1; ti++) {
        const row = ti * s;
        for (let j = 0; j < lim; j++) {
          dp[row + j] = p[row + j] * (dp[row + j] - dsum[ti]) * prm.scale;
        }
      }
    }
    // dQ = dS K ; dK += dSᵀ Q
    gemm(false, false, m, hd, lim, dp, pb, s, k, ko, ks, dq, qb, nh * hd);
    gemm(true, false, lim, hd, m, dp, pb, s, q, qb, nh * hd, dk, ko, ks, 1);
  }
}

/**
 * Zeroes unit (bi, g)'s rows of dK and dV (batch-major), which its heads then accumulate into: the
 * op writes every element itself (`writesAll`), so recycled arrays come unzeroed.
 */
export function zeroKvGrads(d: AttnShape, bi: number, g: number, dk: TypedArray, dv: TypedArray) {
  const ko = kvOffset(d, bi, g), ks = kvStep(d);
  for (let j = 0; j < d.s; j++) {
    dk.fill(0, ko + j * ks, ko + j * ks + d.hd);
    dv.fill(0, ko + j * ks, ko + j * ks + d.hd);
  }
}

/**
 * A unit kernel: an attention call's work over units [u0, u1) of (batch, KV group) on the calling
 * thread. `a` holds the call's arrays in the kernel's order, `mask` the key mask or null, `sc` the
 * dimensions and options as numbers (see {@linkcode unpackAttn}).
 */
export type UnitRun = (
  a: TypedArray[],
  mask: TypedArray | null,
  sc: readonly number[],
  u0: number,
  u1: number,
) => void;

/** The dimensions and options of a pooled call, as the kernel pool passes them (numbers). */
export function unpackAttn(sc: readonly number[]): [AttnShape, AttnOptions] {
  const [b, t, s, nh, nkv, hd, causal, scale, timeMajor] = sc;
  return [{ b, t, s, nh, nkv, hd, kvTimeMajor: timeMajor !== 0 }, { causal: causal !== 0, scale }];
}

/** This thread's own SIMD instance for unit kernels (`what` names them if there is none). */
export function unitSimd(what: string): SimdKernels {
  const s = privateSimd();
  if (!s) throw new Error(`${what}: the wasm SIMD kernels are unavailable`);
  return s;
}

/**
 * This thread's SIMD instance without a pool (the pool's threads split the units instead). Units
 * only run where the calling thread's products are OpenBLAS's; a thread that could not load it
 * would compute other bits, so it refuses.
 */
function blasUnitSimd() {
  const s = unitSimd("attention units");
  const g = getGemm();
  if (g.kind !== "blas") {
    throw new Error(`attention units: this thread's matrix products are ${g.detail}, not BLAS`);
  }
  return s;
}

/**
 * Forward over units [u0, u1) of (batch, KV group): every query head of the group, in order, on
 * this thread with its own SIMD instance. `a` is q, k, v, out, lse; `sc` the dimensions (b, t, s,
 * nh, nkv, hd, causal 0/1, scale, K and V time-major 0/1).
 */
export const attentionForwardUnits: UnitRun = (a, mask, sc, u0, u1) => {
  const [d, p] = unpackAttn(sc);
  const [q, k, v, out, lse] = a;
  const arrays = { q, k, v, mask, out, lse };
  const ws = new AttnWorkspace(blasUnitSimd(), forwardScoreRows(d), d.s, false, mask !== null);
  for (let u = u0; u < u1; u++) {
    const bi = Math.floor(u / d.nkv), g = u % d.nkv;
    if (mask) ws.setMask(mask, bi * d.s);
    attentionForwardUnit(d, bi, g, arrays, p, ws.sc, ws);
  }
};

/**
 * Backward over units [u0, u1) of (batch, KV group), as {@linkcode attentionForwardUnits}. `a` is
 * q, k, v, o, lse, dout, dq, dk, dv.
 */
export const attentionBackwardUnits: UnitRun = (a, mask, sc, u0, u1) => {
  const [d, p] = unpackAttn(sc);
  const [q, k, v, o, lse, dout, dq, dk, dv] = a;
  const arrays = { q, k, v, o, lse, dout, mask, dq, dk, dv };
  const ws = new AttnWorkspace(blasUnitSimd(), d.t, d.s, true, mask !== null);
  const rep = d.nh / d.nkv;
  for (let u = u0; u < u1; u++) {
    const bi = Math.floor(u / d.nkv), g = u % d.nkv;
    if (mask) ws.setMask(mask, bi * d.s);
    zeroKvGrads(d, bi, g, dk, dv);
    for (let h = g * rep; h < (g + 1) * rep; h++) {
      attentionBackwardHead(d, bi, h, arrays, p, ws.sc, ws.dp, ws.dsum, ws);
    }
  }
};
