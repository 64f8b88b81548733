/**
 * The f32 fast path of the CPU attention kernels: the score matrices of one (batch, head) live in
 * the SIMD module's memory, where the gemm (BLAS through FFI, or wasm) writes them and reads the
 * probabilities back, so nothing is copied; the softmax and dS passes run as SIMD kernels.
 *
 * @module
 */
// T = query time, S = key time

import type { TypedArray } from "../../../dtype.ts";
import { simd, type SimdKernels } from "./mod.ts";

/** Scratch for one attention call: score matrices [T, S] in wasm memory and per-row blocks. */
export class AttnWorkspace {
  /** Scores, then probabilities P [T, S] (a view of wasm memory). */
  readonly sc: Float32Array;
  /** dP, then dS [T, S] (backward only; a view of wasm memory). */
  readonly dp: Float32Array;
  /** rowsum(dO ⊙ O) [T] for `ds` (backward only; a view of wasm memory). */
  readonly dsum: Float32Array;
  readonly #s: SimdKernels;
  readonly #t: number;
  readonly #n: number;
  readonly #scP: number;
  readonly #dpP: number;
  readonly #dP: number;
  readonly #prmP: number;
  readonly #statP: number;
  readonly #maskP: number;

  /** Reserves the scratch for [t, n] scores (and dP when `backward`), with a key mask row. */
  constructor(s: SimdKernels, t: number, n: number, backward: boolean, masked: boolean) {
    this.#s = s;
    this.#t = t;
    this.#n = n;
    s.reset();
    this.#scP = s.alloc(t * n * 4);
    this.#dpP = backward ? s.alloc(t * n * 4) : 0;
    this.#dP = backward ? s.alloc(t * 4) : 0;
    this.#prmP = s.alloc(t * 16);
    this.#statP = s.alloc(t * 16);
    this.#maskP = masked ? s.alloc(n * 4) : 0;
    // views last: an alloc may have grown (and replaced) the buffer
    this.sc = s.f32.subarray(this.#scP >> 2, (this.#scP >> 2) + t * n);
    this.dp = s.f32.subarray(this.#dpP >> 2, (this.#dpP >> 2) + (backward ? t * n : 0));
    this.dsum = s.f32.subarray(this.#dP >> 2, (this.#dP >> 2) + (backward ? t : 0));
  }

  /** Copies the key mask row of one batch (n values, 0 = hidden). */
  setMask(mask: TypedArray, offset: number): void {
    this.#s.f32.set(mask.subarray(offset, offset + this.#n), this.#maskP >> 2);
  }

  /** Writes row ti's block: shift c as f32 hi + lo, g = 1, limit lim. */
  #putRow(ti: number, c: number, lim: number): void {
    const w = (this.#prmP >> 2) + 4 * ti, f = this.#s.f32;
    const hi = Math.fround(c);
    f[w] = hi;
    f[w + 1] = Number.isFinite(c) ? c - hi : 0;
    f[w + 2] = 1;
    this.#s.i32[w + 3] = lim;
  }

  /**
   * Turns the raw scores in `sc` into probabilities, in place: v = score·scale, hidden where
   * j ≥ lim(ti) = min(n, ti + shift + 1) (when `causal`) or the key mask is 0. With `lseIn` the
   * row log-sum-exp is read from `lse` at `li`; otherwise it is computed and written there.
   * Fully hidden rows (lse = -Infinity) get 0 everywhere; rows whose lse is NaN get NaN, as the
   * TypeScript loop does. Rows [r0, r1) only, when given (their lse at `li + r`). With `period`
   * the rows are several heads' [period, n] blocks one after another: a row's causal limit is
   * that of its time, ti mod period.
   */
  probs(
    causal: boolean,
    shift: number,
    scale: number,
    lse: TypedArray,
    li: number,
    lseIn: boolean,
    r0 = 0,
    r1 = this.#t,
    period = this.#t,
  ): void {
    const n = this.#n, s = this.#s, per = this.#per();
    const lim = (ti: number) => causal ? Math.max(0, Math.min(n, (ti % period) + shift + 1)) : n;
    let nanRows = false;
    if (lseIn) {
      // P = exp(v − lse): one exp per visible score
      for (let ti = r0; ti < r1; ti++) {
        const z = lse[li + ti];
        if (z !== z) nanRows = true;
        this.#putRow(ti, z, z === -Infinity ? 0 : lim(ti));
      }
      const args = [this.#scP, this.#scP, n, n, this.#prmP, scale, this.#maskP];
      s.par("attn_exp", args, r0, r1, per);
    } else {
      // max, exp(v − max) stored and summed, then scaled by 1/Σ: one exp per visible score
      for (let ti = r0; ti < r1; ti++) this.#putRow(ti, 0, lim(ti));
      const args = [this.#scP, n, n, this.#prmP, scale, this.#maskP, this.#statP];
      s.par("attn_softmax", args, r0, r1, per);
      const st = s.f64, sp = this.#statP >> 3;
      for (let ti = r0; ti < r1; ti++) {
        const m = st[sp + 2 * ti];
        const z = m === -Infinity ? -Infinity : m + Math.log(st[sp + 2 * ti + 1]);
        lse[li + ti] = z;
        if (z !== z) nanRows = true;
      }
    }
    if (nanRows) {
      for (let ti = r0; ti < r1; ti++) {
        const z = lse[li + ti];
        if (z !== z) this.sc.fill(NaN, ti * n, (ti + 1) * n);
      }
    }
  }

  /**
   * dS = P ⊙ (dP − dsum)·scale in place in `dp`, over rows [r0, r1) (default all) and their
   * first `cols` columns (default all; a causal row block stops at its last visible key).
   */
  ds(scale: number, r0 = 0, r1 = this.#t, cols = this.#n): void {
    const args = [this.#scP, this.#dpP, this.#n, cols, this.#dP, scale];
    this.#s.par("attn_ds", args, r0, r1, this.#per());
  }

  /**
   * Rows per piece of a parallel call: four pieces per thread (causal rows differ in length, and
   * pieces are claimed as threads free up), each ≥ 4096 scores.
   */
  #per(): number {
    return Math.max(Math.ceil(4096 / this.#n), Math.ceil(this.#t / (4 * this.#s.threads)));
  }
}

/**
 * A workspace for one f32 attention call, or null when the fast path does not apply (SIMD off or
 * unavailable, or f64 arrays).
 */
export function attnWorkspace(
  q: TypedArray,
  t: number,
  n: number,
  backward: boolean,
  masked: boolean,
): AttnWorkspace | null {
  if (!(q instanceof Float32Array) || t === 0 || n === 0) return null;
  const s = simd();
  return s ? new AttnWorkspace(s, t, n, backward, masked) : null;
}
