/**
 * Attention of T > 1 queries (training, prefill) in the bfloat16 precision, one (batch row, KV
 * group) unit at a time as the f32 units (`attention_heads.ts`) run, but with the unit's matrix
 * products in bf16 with f32 accumulation through oneDNN (AMX or AVX512-BF16), as PyTorch's CPU
 * autocast runs MiniMind's attention: `q @ kᵀ` and `p @ v` on bf16 operands, the softmax in f32.
 *
 * A unit's REP query heads are stacked into one [REP·T, HD] operand, so each product covers the
 * whole group (its dK and dV sum the heads inside the product). The operands are rounded to bf16 by
 * oneDNN reorders that also gather them from the tensors' layouts; P and dS are rounded from the
 * unit's f32 scores in the SIMD workspace, where the softmax and dS passes run as in f32. The
 * products run over every key: the softmax writes 0 past a row's visible keys.
 *
 * The tensors may be f32 or, in the bfloat16 precision's attention activations, bf16 (q, k, v,
 * the output and dO, dQ, dK, dV; lse stays f32): the gathers then copy bf16 as it is, the
 * scatters round the f32 results once, and dK and dV come out of their products as bf16.
 *
 * The kernel pool's threads run the units (`threads/mod.ts`), each calling oneDNN on one OpenMP
 * thread (`oneOmpThread`): oneDNN's own threads, woken a dozen times a layer between the SIMD
 * passes, made the same products slower than f32 in a train step on two cores (41 ms against 32 a
 * step forward when tried that way). Each thread has its own oneDNN primitives and scratch.
 *
 * @module
 */
// B = batch, T = query time, S = key time, NH = query heads, NKV = kv heads, HD = head dim,
// REP = NH / NKV
import type { TypedArray } from "../../dtype.ts";
import type { AttnShape } from "../../ops/attention/wgsl.ts";
import {
  alignedU16,
  type Dnnl,
  DT_BF16,
  DT_F32,
  nativeDnnl,
  oneOmpThread,
  openDnnl,
  type Prim,
} from "./gemm/bf16.ts";
import { kvOffset, kvStep, type UnitRun, unitSimd, unpackAttn } from "./attention_heads.ts";
import { AttnWorkspace } from "./simd/attention.ts";
import { alignPad, CACHE_LINE } from "./align.ts";

/** This thread's scratch arrays, grown as needed and kept. */
const scratch = new Map<string, Uint16Array | Float32Array>();
function bf16Scratch(name: string, n: number): Uint16Array {
  const a = scratch.get(name);
  if (a instanceof Uint16Array && a.length >= n) return a.subarray(0, n);
  const fresh = alignedU16(n);
  scratch.set(name, fresh);
  return fresh;
}
/** f32 scratch on a cache line, as `alignedU16` (oneDNN's products write it). */
function f32Scratch(name: string, n: number): Float32Array {
  const a = scratch.get(name);
  if (a instanceof Float32Array && a.length >= n) return a.subarray(0, n);
  const buf = new Float32Array(n + CACHE_LINE / 4), skip = alignPad(buf) / 4;
  const fresh = buf.subarray(skip, skip + n);
  scratch.set(name, fresh);
  return fresh;
}

/** This thread's oneDNN 2.x (the pool only sends work here where the calling thread has it). */
function dnnl(): Dnnl {
  const d = nativeDnnl();
  if (d) return d;
  const why = openDnnl();
  throw new Error(
    `bf16 attention units: no oneDNN 2.x on this thread (${
      typeof why === "string" ? why : `${why.path} has no 2.x descriptor API`
    })`,
  );
}

/** oneDNN's data type for a tensor's array: bf16 bits or f32. */
function dtOf(a: TypedArray): number {
  return a instanceof Uint16Array ? DT_BF16 : DT_F32;
}

/**
 * A reorder between `dims` with `strides` of data type `dtStrided` (a unit's slice of a tensor)
 * and the dense layout of `dtDense`: gathering (`gather`, strided → dense) or scattering back.
 */
function reorder(
  dn: Dnnl,
  dims: number[],
  strides: number[],
  dtStrided: number,
  dtDense: number,
  gather: boolean,
): Prim {
  const key = `attention unit ${
    gather ? "gather" : "scatter"
  } ${dims} ${strides} ${dtStrided} ${dtDense}`;
  return dn.reorder(key, () => {
    const dense = dims.map((_, i) => dims.slice(i + 1).reduce((p, q) => p * q, 1));
    const strided = dn.md(dims, strides, dtStrided), packed = dn.md(dims, dense, dtDense);
    return gather ? [strided, packed] : [packed, strided];
  });
}

/**
 * C [m, n] (row stride ldc; f32, or bf16 with `dtC`) = op(A)·op(B): A bf16 dense [m, k] (stored
 * [k, m] when `ta`), B bf16 dense [k, n] (stored [n, k] when `tb`).
 */
function product(
  dn: Dnnl,
  m: number,
  n: number,
  k: number,
  ta: boolean,
  tb: boolean,
  ldc: number,
  dtC = DT_F32,
): Prim {
  return dn.matmul(`attention unit ${m} ${n} ${k} ${ta} ${tb} ${ldc} ${dtC}`, () => [
    dn.md([m, k], ta ? [1, m] : [k, 1], DT_BF16),
    dn.md([k, n], tb ? [1, k] : [n, 1], DT_BF16),
    dn.md([m, n], [ldc, 1], dtC),
  ]);
}

/**
 * The unit's operand gatherers: its query heads' rows of q (or dO, out, dQ) and its K or V rows,
 * from tensors of data type `dt` (f32 or bf16).
 */
function layouts(dn: Dnnl, d: AttnShape, dt: number) {
  const { t, s, nh, nkv, hd } = d;
  const rep = nh / nkv;
  const heads = (dense: number, gather: boolean) =>
    reorder(dn, [rep, t, hd], [hd, nh * hd, 1], dt, dense, gather);
  return {
    /** Element offset of the unit's first query row. */
    qAt: (bi: number, g: number) => (bi * t * nh + g * rep) * hd,
    headsIn: heads(DT_BF16, true),
    /** The heads' rows as dense f32, bf16 widened (O and dO for rowsum(dO ⊙ O)). */
    headsF32: heads(DT_F32, true),
    headsOut: heads(DT_F32, false),
    keysIn: reorder(dn, [s, hd], [kvStep(d), 1], dt, DT_BF16, true),
  };
}

/**
 * `run` with this thread's oneDNN calls on one OpenMP thread: the unit's primitives are made under
 * that count too (a primitive keeps the count it was made under).
 */
function onOneOmpThread(run: UnitRun): UnitRun {
  return (a, mask, sc, u0, u1) => {
    const restore = oneOmpThread();
    try {
      run(a, mask, sc, u0, u1);
    } finally {
      restore();
    }
  };
}

/**
 * What both unit kernels start from, for the call's arrays `a` (q, k, v first, lse fifth): its
 * dimensions, this thread's oneDNN and a SIMD workspace for one unit's [REP·T, S] scores, the
 * gatherers, bf16 scratch for Q, K, V and P, and the scores product (also dP's:
 * [REP·T, HD] · [S, HD]ᵀ).
 */
function setup(sc: readonly number[], a: TypedArray[], mask: TypedArray | null, backward: boolean) {
  const [d, p] = unpackAttn(sc);
  const { t, s, nh, nkv, hd } = d;
  const rep = nh / nkv, rows = rep * t;
  const [q, k, v, , lse] = a;
  const dn = dnnl(), L = layouts(dn, d, dtOf(q));
  const qb = bf16Scratch("q", rows * hd), kb = bf16Scratch("k", s * hd);
  const vb = bf16Scratch("v", s * hd);
  const ws = new AttnWorkspace(unitSimd("bf16 attention units"), rows, s, backward, !!mask);
  const scores = product(dn, rows, s, hd, false, true, s);
  return {
    d,
    rows,
    dn,
    ws,
    L,
    qb,
    kb,
    vb,
    pb: bf16Scratch("p", rows * s),
    scores,
    /** Unit u's batch row and group, its offsets in q and in K/V, its Q, K and V gathered. */
    gather(u: number) {
      const bi = Math.floor(u / nkv), g = u % nkv, qo = L.qAt(bi, g), ko = kvOffset(d, bi, g);
      dn.exec(L.headsIn, [q.subarray(qo), qb], "attention: q to bf16");
      dn.exec(L.keysIn, [k.subarray(ko), kb], "attention: k to bf16");
      dn.exec(L.keysIn, [v.subarray(ko), vb], "attention: v to bf16");
      return { bi, g, qo, ko };
    },
    /**
     * The gathered unit's P in `ws.sc`: the scores Q·Kᵀ, then the softmax over its rows (head of
     * the group, time: lse's order from the group's first head), writing lse, or with `fromLse`
     * reading it.
     */
    probs(bi: number, g: number, fromLse: boolean) {
      dn.exec(scores, [qb, kb, ws.sc], "attention: scores");
      if (mask) ws.setMask(mask, bi * s);
      ws.probs(p.causal, s - t, p.scale, lse, (bi * nh + g * rep) * t, fromLse, 0, rows, t);
    },
    scale: p.scale,
  };
}

/**
 * Forward over units [u0, u1) of (batch, KV group) in bf16 products, on this thread. `a` is q, k,
 * v, out, lse; `sc` the dimensions as the f32 units take them (`attention_heads.ts`).
 */
export const bf16AttentionForwardUnits: UnitRun = onOneOmpThread((a, mask, sc, u0, u1) => {
  const { d, rows, dn, ws, L, vb, pb, gather, probs } = setup(sc, a, mask, false);
  const out = a[3];
  const ob = f32Scratch("o", rows * d.hd);
  const outputs = product(dn, rows, d.hd, d.s, false, false, d.hd);
  for (let u = u0; u < u1; u++) {
    const { bi, g, qo } = gather(u);
    probs(bi, g, false);
    dn.toBf16(ws.sc.subarray(0, rows * d.s), pb);
    dn.exec(outputs, [pb, vb, ob], "attention: outputs");
    dn.exec(L.headsOut, [ob, out.subarray(qo)], "attention: outputs to [B,T,NH,HD]");
  }
});

/**
 * Backward over units [u0, u1) of (batch, KV group) in bf16 products, K and V batch-major, P
 * recomputed from lse: dV = Pᵀ·dO ; dP = dO·Vᵀ ; dS = P ⊙ (dP − rowsum(dO ⊙ O))·scale ;
 * dQ = dS·K ; dK = dSᵀ·Q. `a` is q, k, v, o, lse, dout, dq, dk, dv.
 */
export const bf16AttentionBackwardUnits: UnitRun = onOneOmpThread((a, mask, sc, u0, u1) => {
  const { d, rows, dn, ws, L, qb, kb, vb, pb, scores, gather, probs, scale } = setup(
    sc,
    a,
    mask,
    true,
  );
  const [, , , o, , dout, dq, dk, dv] = a;
  const { s, hd } = d;
  const dob = bf16Scratch("do", rows * hd), dsb = bf16Scratch("ds", rows * s);
  const dqb = f32Scratch("o", rows * hd);
  // O and dO as dense f32 rows (bf16 widened) for rowsum(dO ⊙ O)
  const oRows = f32Scratch("o rows", rows * hd), doRows = f32Scratch("do rows", rows * hd);
  const kvGrad = product(dn, s, hd, rows, true, false, kvStep(d), dtOf(dk));
  const qGrad = product(dn, rows, hd, s, false, false, hd);
  for (let u = u0; u < u1; u++) {
    const { bi, g, qo, ko } = gather(u);
    dn.exec(L.headsIn, [dout.subarray(qo), dob], "attention backward: dO to bf16");
    probs(bi, g, true); // P again, from the scores and lse
    // rowsum(dO ⊙ O) per row (head of the group, time)
    dn.exec(L.headsF32, [o.subarray(qo), oRows], "attention backward: O rows");
    dn.exec(L.headsF32, [dout.subarray(qo), doRows], "attention backward: dO rows");
    for (let row = 0; row < rows; row++) {
      let acc = 0;
      for (let i = row * hd; i < (row + 1) * hd; i++) acc += doRows[i] * oRows[i];
      ws.dsum[row] = acc;
    }
    dn.exec(scores, [dob, vb, ws.dp], "attention backward: dP");
    ws.ds(scale);
    dn.toBf16(ws.sc.subarray(0, rows * s), pb);
    dn.toBf16(ws.dp.subarray(0, rows * s), dsb);
    // dV = Pᵀ·dO and dK = dSᵀ·Q straight into the [B, S, NKV, HD] gradients (the group's heads
    // summed by the product); dQ = dS·K, then scattered to [B, T, NH, HD]
    dn.exec(kvGrad, [pb, dob, dv.subarray(ko)], "attention backward: dV");
    dn.exec(kvGrad, [dsb, qb, dk.subarray(ko)], "attention backward: dK");
    dn.exec(qGrad, [dsb, kb, dqb], "attention backward: dQ");
    dn.exec(L.headsOut, [dqb, dq.subarray(qo)], "attention backward: dQ to [B,T,NH,HD]");
  }
});
