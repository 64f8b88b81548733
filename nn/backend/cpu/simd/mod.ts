/**
 * WebAssembly SIMD kernels for the exp-heavy f32 CPU work (log-sum-exp rows, softmax, cross-entropy,
 * attention probabilities, SwiGLU, sigmoid/SiLU), ~8× faster than `Math.exp` loops. Built from
 * `build_wasm.ts` (where the numerics are explained); the bytes are embedded, so this needs no
 * permission and no toolchain.
 *
 * Kernels take byte offsets into the module's memory: callers copy their inputs in (the memory is
 * grown as needed and reused across calls), run a kernel, and copy the results out. The functions
 * in `ops.ts` do that for each op.
 *
 * When WebAssembly SIMD does not validate (an old engine), or `MINIMIND_SIMD=0` is set, or
 * {@linkcode setSimdEnabled} turned it off, {@linkcode simd} returns null and the ops keep their
 * plain TypeScript loops.
 *
 * @module
 */

import type { TypedArray } from "../../../dtype.ts";
import { WASM_PRIVATE, WASM_SHARED } from "./kernels_wasm.ts";
import {
  canSpawnWorkers,
  CTRL_BYTES,
  hasSharedMemory,
  type KernelFn,
  MAX_WASM_PAGES,
  wasmBytes,
  WasmPool,
} from "../wasm_pool/mod.ts";

/** An elementwise map over elements [i0, i1): input and output byte offsets, then the range. */
export type Map1 = (x: number, y: number, i0: number, i1: number) => void;

/** The module's exports (byte offsets and counts; see build_wasm.ts for each contract). */
export interface SimdExports {
  /** y = exp(x). */
  map_exp: Map1;
  /** y = σ(x). */
  map_sigmoid: Map1;
  /** y = x·σ(x). */
  map_silu: Map1;
  /** y = σ(x)·(1 + x·(1 − σ(x))). */
  map_silu_grad: Map1;
  /** y = g·σ(g)·u. */
  swiglu: (g: number, u: number, y: number, i0: number, i1: number) => void;
  /** n bf16 values at `src` widened to f32 at `dst`. */
  bf16_to_f32: (src: number, dst: number, n: number) => void;
  /** n f32 values at `src` rounded to bf16 bits at `dst` (nearest even, NaN kept). */
  f32_to_bf16: (src: number, dst: number, n: number) => void;
  /** du = ct·g·σ(g), dg = ct·u·σ(g)·(1 + g·(1 − σ(g))). */
  swiglu_bwd: (
    ct: number,
    g: number,
    u: number,
    dg: number,
    du: number,
    i0: number,
    i1: number,
  ) => void;
  /**
   * AdamW in f32 (torch's order of operations): p, g, m, v in; p', m', v' out; then β₁, β₂, eps,
   * decay, 1−β₁, 1−β₂, step size, 1/√bc₂, gradient scale.
   */
  adamw: (
    p: number,
    g: number,
    m: number,
    v: number,
    po: number,
    mo: number,
    vo: number,
    b1: number,
    b2: number,
    eps: number,
    decay: number,
    a1: number,
    a2: number,
    step: number,
    ibc: number,
    gs: number,
    i0: number,
    i1: number,
  ) => void;
  /** RMSNorm rows [r0, r1) of x [rows, h]: y = w·(x·rstd), rstd = 1/√(Σx²/h + eps); y may be x. */
  rms_fwd: (
    x: number,
    w: number,
    y: number,
    rstd: number,
    h: number,
    eps: number,
    r0: number,
    r1: number,
  ) => void;
  /**
   * RMSNorm backward rows [r0, r1): dx = rstd·w·ct − x·rstd³·(Σ w·ct·x)/h, and ct·x·rstd added
   * into the f64 partial dw (h values); dx may be ct.
   */
  rms_bwd: (
    ct: number,
    x: number,
    w: number,
    rstd: number,
    dx: number,
    dw: number,
    h: number,
    r0: number,
    r1: number,
  ) => void;
  /**
   * Rotate-half RoPE over rows [r0, r1) of x [rows, nh, hd], row r's cos and sin (hd each) at
   * c + 4·hd·r and s + 4·hd·r; sg −1 rotates backwards; y may be x.
   */
  rope: (
    x: number,
    c: number,
    s: number,
    y: number,
    nh: number,
    hd: number,
    sg: number,
    r0: number,
    r1: number,
  ) => void;
  /** Per row r of x (row stride ld): f64 (max, Σ exp(x − max)) at out + 16r. */
  row_stats: (x: number, ld: number, n: number, out: number, r0: number, r1: number) => void;
  /** As row_stats, and x becomes softmax(x) in place (0 on rows with nothing visible). */
  row_softmax: (x: number, ld: number, n: number, out: number, r0: number, r1: number) => void;
  /** As row_softmax over x·scale, limited to the row's lim, key mask applied (mask 0 = none). */
  attn_softmax: (
    x: number,
    ld: number,
    n: number,
    prm: number,
    scale: number,
    mask: number,
    out: number,
    r0: number,
    r1: number,
  ) => void;
  /** y = exp((x − hi) − lo)·g for j < lim, else 0 (per-row block at prm + 16r). */
  row_exp: (
    x: number,
    y: number,
    ld: number,
    n: number,
    prm: number,
    r0: number,
    r1: number,
  ) => void;
  /** As row_exp over x·scale, key mask applied. */
  attn_exp: (
    x: number,
    y: number,
    ld: number,
    n: number,
    prm: number,
    scale: number,
    mask: number,
    r0: number,
    r1: number,
  ) => void;
  /** dp = p ⊙ (dp − d_r)·scale. */
  attn_ds: (
    p: number,
    dp: number,
    ld: number,
    n: number,
    d: number,
    scale: number,
    r0: number,
    r1: number,
  ) => void;
}

/** The kernels workers may run, by index (the pool's jobs name them by index). */
export const EXPORTS = [
  "map_exp",
  "map_sigmoid",
  "map_silu",
  "map_silu_grad",
  "swiglu",
  "swiglu_bwd",
  "row_stats",
  "row_softmax",
  "attn_softmax",
  "row_exp",
  "attn_exp",
  "attn_ds",
  "adamw",
  "rms_fwd",
  "rms_bwd",
  "rope",
  "bf16_to_f32",
  "f32_to_bf16",
] as const;

/** A kernel's name. */
export type KernelName = typeof EXPORTS[number];

/** Bytes of padding after every buffer: partial vectors are loaded whole. */
const PAD = 16;

/**
 * One instance of the kernels and its memory, with typed views that follow the memory when it
 * grows. Allocation is a bump pointer reset per op call ({@linkcode SimdKernels.reset}).
 */
export class SimdKernels {
  /** The kernels. */
  readonly k: SimdExports;
  /** The memory the kernels address. */
  readonly memory: WebAssembly.Memory;
  /** Worker threads sharing the memory (shared memory only; none started until asked). */
  readonly pool: WasmPool | null;
  #f32: Float32Array;
  #f64: Float64Array;
  #i32: Int32Array;
  #u16: Uint16Array;
  readonly #base: number;
  #top: number;

  /** Instantiates `module` on a new memory (`shared` for worker threads). */
  constructor(module: WebAssembly.Module, shared: boolean) {
    this.memory = new WebAssembly.Memory({ initial: 16, maximum: MAX_WASM_PAGES, shared });
    const inst = new WebAssembly.Instance(module, { env: { memory: this.memory } });
    this.k = inst.exports as unknown as SimdExports;
    this.#f32 = new Float32Array(this.memory.buffer);
    this.#f64 = new Float64Array(this.memory.buffer);
    this.#i32 = new Int32Array(this.memory.buffer);
    this.#u16 = new Uint16Array(this.memory.buffer);
    const fns = EXPORTS.map((n) => this.k[n] as KernelFn);
    // Idle workers sleep at once (spin 0): the calls worth sharing take ~0.1-10 ms, so a futex
    // wake (a few µs) is cheap, while a polling worker would take the core from BLAS's threads
    // between calls (measured: it slowed the interleaved matmuls by ~15% on 2 cores).
    this.pool = shared ? new WasmPool(module, this.memory, [...EXPORTS], fns, { spin: 0 }) : null;
    // the pool's control block lives at the start of the memory
    this.#base = this.#top = shared ? CTRL_BYTES : 0;
  }

  /** Threads that share large calls (this one plus started workers). */
  get threads(): number {
    return this.pool?.threads ?? 1;
  }

  /**
   * Runs kernel `name` over the range [lo, hi), which fills its last two arguments, in pieces of
   * about `per` shared by every thread of the pool (just this one when it has no workers or the
   * range is a single piece). The other arguments are `args`.
   */
  par(name: KernelName, args: number[], lo: number, hi: number, per: number): void {
    const n = args.length;
    if (this.threads === 1 || hi - lo <= per) {
      (this.k[name] as KernelFn)(...args, lo, hi);
      return;
    }
    this.pool!.run(EXPORTS.indexOf(name), [...args, 0, 0], n, n + 1, lo, hi, per);
  }

  /** f32 view of the whole memory (valid until the next {@linkcode SimdKernels.alloc}). */
  get f32(): Float32Array {
    return this.#f32;
  }
  /** f64 view of the whole memory. */
  get f64(): Float64Array {
    return this.#f64;
  }
  /** i32 view of the whole memory. */
  get i32(): Int32Array {
    return this.#i32;
  }
  /** u16 view of the whole memory (bf16 bits). */
  get u16(): Uint16Array {
    return this.#u16;
  }

  /**
   * Copies `a[i0, i1)` to byte `at` as f32: f32 values as they are, bf16 bits widened (staged at
   * `stage`, which holds i1 − i0 u16 values).
   */
  copyIn(a: TypedArray, i0: number, i1: number, at: number, stage: number): void {
    if (a instanceof Uint16Array) {
      this.#u16.set(a.subarray(i0, i1), stage >> 1);
      this.k.bf16_to_f32(stage, at, i1 - i0);
    } else this.#f32.set(a.subarray(i0, i1), at >> 2);
  }

  /**
   * Copies n f32 values at byte `at` to `a` from index i0: to f32 arrays as they are, to bf16 ones
   * rounded to nearest even (staged at `stage`).
   */
  copyOut(at: number, n: number, a: TypedArray, i0: number, stage: number): void {
    if (a instanceof Uint16Array) {
      this.k.f32_to_bf16(at, stage, n);
      a.set(this.#u16.subarray(stage >> 1, (stage >> 1) + n), i0);
    } else (a as Float32Array).set(this.#f32.subarray(at >> 2, (at >> 2) + n), i0);
  }

  /** Frees every allocation (the start of an op call). */
  reset(): void {
    this.#top = this.#base;
  }

  /**
   * Reserves `bytes` (plus padding, 64-byte aligned) and returns its byte offset; grows the memory
   * and refreshes the views when needed, so views taken before must be re-read.
   */
  alloc(bytes: number): number {
    const at = this.#top;
    this.#top = (at + bytes + PAD + 63) & ~63;
    const have = this.memory.buffer.byteLength;
    if (this.#top > have) {
      const pages = Math.ceil((this.#top - have) / 65536);
      try {
        this.memory.grow(pages);
      } catch (e) {
        throw new RangeError(
          `wasm simd: cannot grow memory from ${have} to ${this.#top} bytes: ${
            (e as Error).message
          }`,
        );
      }
    }
    if (this.#f32.buffer.byteLength !== this.memory.buffer.byteLength) {
      this.#f32 = new Float32Array(this.memory.buffer);
      this.#f64 = new Float64Array(this.memory.buffer);
      this.#i32 = new Int32Array(this.memory.buffer);
      this.#u16 = new Uint16Array(this.memory.buffer);
    }
    return at;
  }
}

let enabled: boolean | undefined;
let instance: SimdKernels | null | undefined;
let wantThreads: number | undefined;

/** Reads an environment variable only when already allowed: asking would prompt for nothing. */
function envGet(name: string): string | undefined {
  const d = (globalThis as { Deno?: typeof Deno }).Deno;
  if (!d) return undefined;
  try {
    if (d.permissions.querySync({ name: "env", variable: name }).state !== "granted") return;
    return d.env.get(name)?.trim();
  } catch {
    return undefined;
  }
}

/** Compiles and instantiates the best variant, or returns null when SIMD is unavailable. */
function load(): SimdKernels | null {
  if (typeof WebAssembly === "undefined") return null;
  const shared = hasSharedMemory();
  const bytes = wasmBytes(shared ? WASM_SHARED : WASM_PRIVATE);
  if (!WebAssembly.validate(bytes)) return null;
  try {
    return new SimdKernels(new WebAssembly.Module(bytes), shared);
  } catch {
    return null;
  }
}

let privateInstance: SimdKernels | null | undefined;

/**
 * This thread's own instance of the kernels on a private memory, with no pool (each thread of the
 * kernel pool, `../threads/`, runs its share with one); null when SIMD is unavailable.
 */
export function privateSimd(): SimdKernels | null {
  if (privateInstance !== undefined) return privateInstance;
  if (typeof WebAssembly === "undefined") return privateInstance = null;
  const bytes = wasmBytes(WASM_PRIVATE);
  if (!WebAssembly.validate(bytes)) return privateInstance = null;
  return privateInstance = new SimdKernels(new WebAssembly.Module(bytes), false);
}

/** Default thread count: `MINIMIND_SIMD_THREADS`, else the cores (at most 8). */
function defaultThreads(): number {
  const env = Number(envGet("MINIMIND_SIMD_THREADS"));
  if (Number.isInteger(env) && env >= 1) return env;
  const nav = (globalThis as { navigator?: { hardwareConcurrency?: number } }).navigator;
  return Math.max(1, Math.min(8, nav?.hardwareConcurrency ?? 1));
}

/**
 * The SIMD kernels, or null when they are unavailable or turned off (the callers then run their
 * TypeScript loops). Created on first use, which also starts the worker threads in the background
 * (one per core beyond this one, at most 7; `MINIMIND_SIMD_THREADS` or {@linkcode initSimd} set
 * the count) when workers may be spawned without a permission prompt; until they are ready, and
 * if they cannot start, everything runs on the calling thread, silently.
 *
 * @example
 * ```ts
 * import { simd } from "./mod.ts";
 * const s = simd();
 * console.log(s ? `wasm SIMD, ${s.threads} thread(s)` : "plain TypeScript");
 * ```
 */
export function simd(): SimdKernels | null {
  enabled ??= envGet("MINIMIND_SIMD") !== "0";
  if (!enabled) return null;
  if (instance === undefined) {
    instance = load();
    starting = startWorkers(wantThreads ?? defaultThreads());
  }
  return instance;
}

/**
 * The SIMD kernels when every array is f32 and SIMD is on, else null: the test each op makes before
 * taking a SIMD path (its TypeScript loop otherwise).
 */
export function f32Simd(...arrays: TypedArray[]): SimdKernels | null {
  for (const a of arrays) if (!(a instanceof Float32Array)) return null;
  return simd();
}

/**
 * The kernels for an elementwise map over f32 or bf16 arrays (bf16 is widened on the way in and
 * rounded on the way out: {@linkcode SimdKernels.copyIn}), or null when SIMD is off or another
 * dtype is among them.
 */
export function mapSimd(...arrays: TypedArray[]): SimdKernels | null {
  for (const a of arrays) {
    if (!(a instanceof Float32Array) && !(a instanceof Uint16Array)) return null;
  }
  return simd();
}

let starting: Promise<void> = Promise.resolve();

/** Starts workers up to `threads` in total once the previous start settled; never rejects. */
function startWorkers(threads: number): Promise<void> {
  const pool = instance?.pool;
  if (!pool || threads <= 1 || !canSpawnWorkers()) return starting;
  return starting = starting.then(() => pool.start(threads)).catch(() => {});
}

/** Options of {@linkcode initSimd}. */
export interface SimdOptions {
  /** Threads sharing large calls, this one included (default: the cores, at most 8). */
  threads?: number;
}

/**
 * Creates the SIMD kernels if needed and starts `threads - 1` worker threads, resolving when they
 * are ready (or failed to start: then calls run on the calling thread). Calling it is optional:
 * {@linkcode simd} starts the default number of workers in the background on first use.
 *
 * @example
 * ```ts
 * import { initSimd } from "./mod.ts";
 * const s = await initSimd({ threads: 2 });
 * console.log(s?.threads); // 2 where workers may start, else 1
 * ```
 */
export async function initSimd(opts: SimdOptions = {}): Promise<SimdKernels | null> {
  wantThreads = opts.threads ?? defaultThreads();
  const s = simd();
  await startWorkers(wantThreads);
  return s;
}

/**
 * Turns the SIMD kernels on or off for this process (tests and benchmarks compare the two paths).
 *
 * @param on false: every op runs its TypeScript loop
 */
export function setSimdEnabled(on: boolean): void {
  enabled = on;
}
