/**
 * bfloat16 matrix products with f32 accumulation and f32 output (mixed precision, as PyTorch's
 * autocast runs a linear layer), through oneDNN's `dnnl_gemm_bf16bf16f32` by Deno FFI. Used only
 * where the CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16 in `/proc/cpuinfo`): elsewhere
 * oneDNN emulates it and f32 is faster. The f32 operands are rounded to bf16 (round to nearest
 * even) into scratch arrays on every call by oneDNN reorder primitives (native code, one per
 * length, made on first use); bf16 operands (the bfloat16 precision's activations) are read as
 * they are. The result C is f32, or bf16 rounded once from the f32 accumulator. A library without
 * oneDNN 2.x's C API for reorders (oneDNN 3 changed it) rounds in a JS loop instead, about 4×
 * slower.
 *
 * The library is found at run time: `MINIMIND_DNNL`, then Debian's `libdnnl.so.3` / `.so.2`
 * (package libdnnl2/libdnnl3), and held by a `Dnnl` (engine, stream, descriptors, a primitive
 * cache), which the packed f32 products of decode steps (`packed.ts`) use too.
 *
 * @module
 */

import {
  type Bf16Operand,
  handleTrivial,
  type MixedArgs,
  type MixedResolved,
  resolveMixed,
} from "./types.ts";
import { alignPad, CACHE_LINE } from "../align.ts";
import { bf16OfF32Bits } from "../../../dtype.ts";

const DIM = "i64";
const SYMBOLS = {
  // transa, transb (chars 'N'/'T'), M, N, K, alpha, A, lda, B, ldb, beta, C, ldc: row-major
  dnnl_gemm_bf16bf16f32: {
    parameters: [
      "u8",
      "u8",
      DIM,
      DIM,
      DIM,
      "f32",
      "buffer",
      DIM,
      "buffer",
      DIM,
      "f32",
      "buffer",
      DIM,
    ],
    result: "i32",
  },
  // the reorder primitive (f32 → bf16 in native code) through oneDNN 2.x's C API
  dnnl_engine_create: { parameters: ["buffer", "i32", "usize"], result: "i32" },
  dnnl_stream_create: { parameters: ["buffer", "pointer", "u32"], result: "i32" },
  // oneDNN 2.x only (3.x has opaque memory descriptors): without it, rounding is done in JS
  dnnl_memory_desc_init_by_strides: {
    parameters: ["buffer", "i32", "buffer", "i32", "buffer"],
    result: "i32",
    optional: true,
  },
  dnnl_matmul_desc_init: {
    parameters: ["buffer", "buffer", "buffer", "pointer", "buffer"],
    result: "i32",
    optional: true,
  },
  // a descriptor by format tag (`any`: the primitive picks the layout), and the layout it picked
  dnnl_memory_desc_init_by_tag: {
    parameters: ["buffer", "i32", "buffer", "i32", "i32"],
    result: "i32",
    optional: true,
  },
  dnnl_primitive_desc_query_md: {
    parameters: ["pointer", "i32", "i32"],
    result: "pointer",
    optional: true,
  },
  dnnl_memory_desc_get_size: { parameters: ["buffer"], result: "usize", optional: true },
  dnnl_reorder_primitive_desc_create: {
    parameters: ["buffer", "buffer", "pointer", "buffer", "pointer", "pointer"],
    result: "i32",
  },
  dnnl_primitive_desc_create: {
    parameters: ["buffer", "buffer", "pointer", "pointer", "pointer"],
    result: "i32",
  },
  dnnl_primitive_desc_destroy: { parameters: ["pointer"], result: "i32" },
  dnnl_primitive_create: { parameters: ["buffer", "pointer"], result: "i32" },
  dnnl_primitive_destroy: { parameters: ["pointer"], result: "i32" },
  dnnl_memory_create: { parameters: ["buffer", "buffer", "pointer", "pointer"], result: "i32" },
  dnnl_memory_destroy: { parameters: ["pointer"], result: "i32" },
  dnnl_memory_set_data_handle: { parameters: ["pointer", "buffer"], result: "i32" },
  dnnl_primitive_execute: { parameters: ["pointer", "pointer", "i32", "buffer"], result: "i32" },
} as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;

// oneDNN 2.x enum values (dnnl_types.h)
const ENGINE_CPU = 1, STREAM_IN_ORDER = 1;
/** oneDNN's bf16 data type. */
export const DT_BF16 = 2;
/** oneDNN's f32 data type. */
export const DT_F32 = 3;
const ARG_FROM = 1, ARG_TO = 17, ARG_SRC = 1, ARG_WEIGHTS = 33, ARG_DST = 17;
/** `dnnl_format_tag_any` and `dnnl_query_weights_md` (dnnl_types.h, 2.x). */
const TAG_ANY = 1, QUERY_WEIGHTS_MD = 131;
/** Bytes reserved for one `dnnl_memory_desc_t` (about 800 in oneDNN 2.x; filled by the library). */
const MD_BYTES = 2048;
/** Bytes reserved for one `dnnl_matmul_desc_t` (four memory descriptors and a little more). */
const OP_DESC_BYTES = 16384;
/**
 * Primitives kept (one per conversion length and per product shape: a model's training step has a
 * few dozen, decode steps one per row count and weight shape and two per key length).
 */
export const MAX_PRIMS = 256;

const N_CHAR = 78, T_CHAR = 84;

/** Rounds f32 `x[from, to)` to bf16 bits in `out[0, to − from)` (round to nearest even). */
export function toBf16(x: Float32Array, from: number, to: number, out: Uint16Array): void {
  const u = new Uint32Array(x.buffer, x.byteOffset + 4 * from, to - from);
  for (let i = 0; i < u.length; i++) out[i] = bf16OfF32Bits(u[i]);
}

/** Whether this CPU multiplies bf16 natively (Linux: AVX512-BF16 or AMX-BF16 in /proc/cpuinfo). */
export function cpuHasBf16(): boolean {
  try {
    return /\b(avx512_bf16|amx_bf16)\b/.test(Deno.readTextFileSync("/proc/cpuinfo"));
  } catch {
    return false;
  }
}

/** A oneDNN call's status check: 0 is success. */
function check(status: number, what: string): void {
  if (status !== 0) throw new Error(`oneDNN ${what} failed (status ${status})`);
}

/**
 * A oneDNN primitive made for one shape and its memory objects, whose data pointers are set per
 * call: a reorder (f32 → bf16 of one length) or a matmul (bf16 × bf16 → f32 of one shape).
 */
export interface Prim {
  prim: Deno.PointerValue;
  mems: Deno.PointerValue[];
  /** The `dnnl_exec_arg_t {int arg; dnnl_memory_t memory;}` array. */
  args: BigUint64Array;
  /** The weights' descriptor the primitive chose, when asked for (`Dnnl.matmul`'s queryWeights). */
  weights?: Uint8Array;
}

/**
 * oneDNN 2.x through FFI: a CPU engine and an in-order stream, memory descriptors, and primitives
 * cached by key (one per shape), whose memories' data pointers are set on every call. Shared by
 * the bf16 products below and the packed f32 products (`packed.ts`).
 */
export class Dnnl {
  /** The library loaded. */
  readonly path: string;
  readonly s: Lib["symbols"];
  readonly engine: Deno.PointerValue;
  readonly stream: Deno.PointerValue;
  /**
   * Whether oneDNN 2.x's descriptor API is there (3.x has opaque memory descriptors): strides,
   * format tags, the layout a primitive chose and its size.
   */
  readonly native: boolean;
  readonly #prims = new Map<string, Prim>();
  /** Keys of primitives oneDNN has no implementation for (`tryMatmul` does not try them again). */
  readonly #failed = new Set<string>();

  constructor(lib: Lib, path: string) {
    this.path = path;
    this.s = lib.symbols;
    this.engine = this.handle((p) => this.s.dnnl_engine_create(p, ENGINE_CPU, 0n), "engine");
    this.stream = this.handle(
      (p) => this.s.dnnl_stream_create(p, this.engine, STREAM_IN_ORDER),
      "stream",
    );
    const s = this.s;
    this.native = s.dnnl_memory_desc_init_by_strides !== null && s.dnnl_matmul_desc_init !== null &&
      s.dnnl_memory_desc_init_by_tag !== null && s.dnnl_primitive_desc_query_md !== null &&
      s.dnnl_memory_desc_get_size !== null;
  }

  /** Calls a oneDNN constructor that writes a handle through its first argument. */
  handle(make: (out: BigUint64Array) => number, what: string): Deno.PointerValue {
    const out = new BigUint64Array(1);
    check(make(out), `${what} creation`);
    return Deno.UnsafePointer.create(out[0]);
  }

  /** A memory descriptor of `dims` with element `strides` (row-major when strides are plain). */
  md(dims: number[], strides: number[], dt: number): Uint8Array {
    const d = new Uint8Array(MD_BYTES);
    const big = (xs: number[]) => new BigInt64Array(xs.map(BigInt));
    check(
      this.s.dnnl_memory_desc_init_by_strides!(d, dims.length, big(dims), dt, big(strides)),
      `memory descriptor ${dims.join("×")}`,
    );
    return d;
  }

  /** A memory descriptor of `dims` whose layout the primitive chooses (format tag `any`). */
  mdAny(dims: number[], dt: number): Uint8Array {
    const d = new Uint8Array(MD_BYTES);
    const f = this.s.dnnl_memory_desc_init_by_tag;
    if (!f) throw new Error(`oneDNN at ${this.path} has no dnnl_memory_desc_init_by_tag`);
    check(f(d, dims.length, new BigInt64Array(dims.map(BigInt)), dt, TAG_ANY), "memory descriptor");
    return d;
  }

  /**
   * The cached primitive under `key`, if any, made the most recently used: the cache evicts the
   * least recently used, so the products every decode step makes stay while one-off shapes (a
   * decode step's attention at each key length) pass through.
   */
  #cached(key: string): Prim | undefined {
    const hit = this.#prims.get(key);
    if (hit) {
      this.#prims.delete(key);
      this.#prims.set(key, hit);
    }
    return hit;
  }

  /**
   * A new primitive cached under `key` (its callers looked there first), made from its descriptor
   * by `makePd` with memories for `mds` (bound to the exec args `argIds`), evicting the least
   * recently used beyond {@linkcode MAX_PRIMS}. `queryWeights` also copies out the weights'
   * descriptor the primitive chose (`Prim.weights`).
   */
  #make(
    key: string,
    makePd: (out: BigUint64Array) => number,
    mds: Uint8Array[],
    argIds: number[],
    queryWeights = false,
  ): Prim {
    const s = this.s;
    const pd = this.handle(makePd, `oneDNN primitive descriptor (${key})`);
    let prim: Deno.PointerValue;
    let weights: Uint8Array | undefined;
    try {
      if (queryWeights) {
        const q = s.dnnl_primitive_desc_query_md?.(pd, QUERY_WEIGHTS_MD, 0);
        if (!q) throw new Error(`oneDNN (${key}): no weights descriptor to query`);
        weights = new Uint8Array(MD_BYTES);
        new Deno.UnsafePointerView(q).copyInto(weights);
        mds = mds.map((md, i) => argIds[i] === ARG_WEIGHTS ? weights! : md);
      }
      prim = this.handle((p) => s.dnnl_primitive_create(p, pd), `primitive (${key})`);
    } finally {
      s.dnnl_primitive_desc_destroy(pd);
    }
    const mems = mds.map((md) =>
      this.handle((p) => s.dnnl_memory_create(p, md, this.engine, null), "memory")
    );
    const args = new BigUint64Array(2 * mems.length);
    mems.forEach((m, i) => {
      args[2 * i] = BigInt(argIds[i]);
      args[2 * i + 1] = BigInt(Deno.UnsafePointer.value(m));
    });
    if (this.#prims.size >= MAX_PRIMS) {
      const [oldKey, old] = this.#prims.entries().next().value!;
      this.#prims.delete(oldKey);
      s.dnnl_primitive_destroy(old.prim);
      for (const m of old.mems) s.dnnl_memory_destroy(m);
    }
    const r = { prim, mems, args, weights };
    this.#prims.set(key, r);
    return r;
  }

  /** Points the primitive's memories at `data` and runs it. */
  exec(p: Prim, data: ArrayBufferView[], what: string): void {
    const s = this.s;
    data.forEach((d, i) => check(s.dnnl_memory_set_data_handle(p.mems[i], d), "set_data_handle"));
    check(s.dnnl_primitive_execute(p.prim, this.stream, data.length, p.args), what);
  }

  /**
   * The matmul primitive C = A·W cached under `key`, else made from the descriptors `make` gives
   * (called only then): A, W and C. With `queryWeights` W's descriptor is `any` (`mdAny`) and the
   * layout oneDNN picks is the primitive's `weights`.
   */
  matmul(
    key: string,
    make: () => [Uint8Array, Uint8Array, Uint8Array],
    queryWeights = false,
  ): Prim {
    const hit = this.#cached(key);
    if (hit) return hit;
    const [a, w, c] = make();
    const desc = new Uint8Array(OP_DESC_BYTES);
    check(this.s.dnnl_matmul_desc_init!(desc, a, w, null, c), `matmul descriptor (${key})`);
    return this.#make(
      key,
      (o) => this.s.dnnl_primitive_desc_create(o, desc, null, this.engine, null),
      [a, w, c],
      [ARG_SRC, ARG_WEIGHTS, ARG_DST],
      queryWeights,
    );
  }

  /**
   * As {@linkcode Dnnl.matmul}, or null where oneDNN has no implementation for the descriptors
   * (remembered: the key is not tried again).
   */
  tryMatmul(
    key: string,
    make: () => [Uint8Array, Uint8Array, Uint8Array],
    queryWeights = false,
  ): Prim | null {
    if (this.#failed.has(key)) return null;
    try {
      return this.matmul(key, make, queryWeights);
    } catch {
      this.#failed.add(key);
      return null;
    }
  }

  /** The reorder primitive src → dst cached under `key`, else made from what `make` gives. */
  reorder(key: string, make: () => [Uint8Array, Uint8Array]): Prim {
    const hit = this.#cached(key);
    if (hit) return hit;
    const [src, dst] = make();
    return this.#make(
      key,
      (o) => this.s.dnnl_reorder_primitive_desc_create(o, src, this.engine, dst, this.engine, null),
      [src, dst],
      [ARG_FROM, ARG_TO],
    );
  }

  /**
   * `x`'s values rounded to bf16 bits in `out` (from its start) by a reorder primitive, one per
   * length and OpenMP thread count: round to nearest even, as {@linkcode toBf16}, except that f32
   * subnormals become zero. oneDNN 2.x only (`native`). A primitive runs on as many threads as
   * were current when it was made, so a thread pinned to one (`oneOmpThread`) gets its own (one
   * made for the products' two threads made a MiniMind2-Small step's bf16 attention 28 → 44 ms).
   */
  toBf16(x: Float32Array, out: Uint16Array): void {
    const n = x.length;
    const p = this.reorder(`f32→bf16 ${n} on ${ompThreads()}`, () => [
      this.md([n], [1], DT_F32),
      this.md([n], [1], DT_BF16),
    ]);
    this.exec(p, [x, out.subarray(0, n)], `f32→bf16 reorder of ${n} values`);
  }

  /** Bytes of memory a descriptor describes (its layout's padding included). */
  size(md: Uint8Array): number {
    const f = this.s.dnnl_memory_desc_get_size;
    if (!f) throw new Error(`oneDNN at ${this.path} has no dnnl_memory_desc_get_size`);
    return Number(f(md));
  }
}

/**
 * `n` zeroed u16 values starting on a 64-byte boundary where the address can be read (see
 * `../align.ts`): the scratch oneDNN's products read their rounded operands from.
 */
export function alignedU16(n: number): Uint16Array<ArrayBuffer> {
  const buf = new Uint16Array(n + CACHE_LINE / 2);
  const skip = alignPad(buf) / 2;
  return buf.subarray(skip, skip + n);
}

/**
 * Events that may have changed some array's values: the CPU backend counts every kernel dispatch
 * and every write it makes outside kernels into an array that held other values (a recycled array
 * zeroed, `fromArray`, `adopt`). Arrays change no other way (reads copy), so a bf16 rounding made
 * during one dispatch is still exact in the next one if nothing else was counted between.
 */
let changes = 0;

/** Counts an event that may change array values (see `changes`; the CPU backend calls it). */
export function arraysMayChange(): void {
  changes++;
}

/** A rounded operand: the span of `buffer` from byte `at`, `n` values, in scratch `slot`. */
interface Rounded {
  buffer: ArrayBufferLike;
  at: number;
  n: number;
  slot: number;
  /** `changes` when it was rounded or last reused. */
  changes: number;
}

/** A bf16 gemm with f32 accumulation (see the module doc). */
export class Bf16Gemm {
  /** The library loaded. */
  readonly detail: string;
  readonly #d: Dnnl;
  /** Scratch for rounded operands: this call's two and the previous call's two. */
  readonly #slots = [alignedU16(0), alignedU16(0), alignedU16(0), alignedU16(0)];
  /** The previous call's rounded operands. */
  #held: Rounded[] = [];
  /** f32 values rounded, and values whose rounding was reused from the previous call. */
  readonly stats = { rounded: 0, reused: 0 };

  constructor(d: Dnnl) {
    this.#d = d;
    this.detail = d.native
      ? `oneDNN matmul primitives, operands rounded by oneDNN reorders, ${d.path}`
      : `oneDNN dnnl_gemm_bf16bf16f32, operands rounded in JS, ${d.path}`;
  }

  /**
   * Rounds f32 `x[from, to)` to bf16 bits in `out[0, to − from)` (round to nearest even) in
   * oneDNN's native code: the bits of {@linkcode toBf16}, except that f32 subnormals become zero.
   */
  toBf16(x: Float32Array, from: number, to: number, out: Uint16Array): void {
    const n = to - from;
    if (n <= 0) return;
    if (this.#d.native) this.#d.toBf16(x.subarray(from, to), out);
    else toBf16(x, from, to, out);
  }

  /**
   * The matmul primitive for one product shape: bf16 A (m×k, or stored k×m) and B (k×n, or stored
   * n×k) with leading dimensions, f32 or bf16 C (m×n, row stride ldc). oneDNN picks its best kernel
   * (AMX or AVX512-BF16 brgemm), 1.5–1.9× dnnl_gemm_bf16bf16f32 on the forward's A·Bᵀ products.
   */
  #matmul(r: MixedResolved): Prim {
    const { m, n, k, lda, ldb, ldc, transA, transB } = r;
    const dtC = r.c instanceof Uint16Array ? DT_BF16 : DT_F32;
    const key = `matmul ${m} ${n} ${k} ${lda} ${ldb} ${ldc} ${transA} ${transB} ${dtC}`;
    const d = this.#d;
    return d.matmul(key, () => [
      d.md([m, k], transA ? [1, lda] : [lda, 1], DT_BF16),
      d.md([k, n], transB ? [1, ldb] : [ldb, 1], DT_BF16),
      d.md([m, n], [ldc, 1], dtC),
    ]);
  }

  /**
   * `x[from, to)` rounded to bf16 in a scratch slot not in `mine` (this call's): the previous
   * call's rounding of the same span of the same buffer when nothing can have written any array
   * since, i.e. the only change is this product's own dispatch (see {@linkcode arraysMayChange}:
   * a layer's q, k and v products read the same x, and a linear layer's backward products both
   * read its output gradient, one right after the other), else a new rounding.
   */
  #rounded(x: Bf16Operand, from: number, to: number, mine: Set<number>): Rounded | Uint16Array {
    if (x instanceof Uint16Array) return x.subarray(from, to); // bf16 already
    const n = to - from, at = x.byteOffset + 4 * from;
    const hit = this.#held.find((h) =>
      h.buffer === x.buffer && h.at === at && h.n === n && h.changes === changes - 1
    );
    let slot: number;
    if (hit) {
      slot = hit.slot;
      this.stats.reused += n;
    } else {
      slot = [0, 1, 2, 3].find((i) => !mine.has(i) && !this.#held.some((h) => h.slot === i))!;
      if (this.#slots[slot].length < n) this.#slots[slot] = alignedU16(n);
      this.toBf16(x, from, to, this.#slots[slot]);
      this.stats.rounded += n;
    }
    mine.add(slot);
    return { buffer: x.buffer, at, n, slot, changes };
  }

  /**
   * `C = beta·C + op(A)·op(B)` with f32 A and B rounded to bf16 (bf16 ones used as they are),
   * accumulated in f32 and stored in f32, or rounded once to a bf16 C.
   */
  sgemm(args: MixedArgs): void {
    const r = resolveMixed(args);
    if (r.c instanceof Uint16Array && !(this.#d.native && r.beta === 0)) {
      throw new Error(
        `Cannot store a bf16 product (m=${r.m} n=${r.n} k=${r.k}, beta ${r.beta}): it needs oneDNN 2.x's matmul primitive and beta 0 (${this.#d.path})`,
      );
    }
    if (handleTrivial(r)) return;
    // the spans of a and b the batch reads, rounded once
    const [rA, cA] = r.transA ? [r.k, r.m] : [r.m, r.k];
    const [rB, cB] = r.transB ? [r.n, r.k] : [r.k, r.n];
    const endA = r.aOff + (r.batch - 1) * r.strideA + (rA - 1) * r.lda + cA;
    const endB = r.bOff + (r.batch - 1) * r.strideB + (rB - 1) * r.ldb + cB;
    const mine = new Set<number>();
    const ra = this.#rounded(r.a, r.aOff, endA, mine);
    const rb = this.#rounded(r.b, r.bOff, endB, mine);
    this.#held = [ra, rb].filter((x): x is Rounded => !(x instanceof Uint16Array));
    const sa = ra instanceof Uint16Array ? ra : this.#slots[ra.slot];
    const sb = rb instanceof Uint16Array ? rb : this.#slots[rb.slot];
    if (this.#d.native && r.beta === 0) {
      const p = this.#matmul(r);
      const what = `bf16 matmul m=${r.m} n=${r.n} k=${r.k}`;
      const sizeA = (rA - 1) * r.lda + cA, sizeB = (rB - 1) * r.ldb + cB;
      for (let bi = 0; bi < r.batch; bi++) {
        const ao = bi * r.strideA, bo = bi * r.strideB, co = r.cOff + bi * r.strideC;
        const c = r.c.subarray(co, co + (r.m - 1) * r.ldc + r.n);
        this.#d.exec(
          p,
          [sa.subarray(ao, ao + sizeA), sb.subarray(bo, bo + sizeB), c],
          what,
        );
      }
      return;
    }
    const ta = r.transA ? T_CHAR : N_CHAR, tb = r.transB ? T_CHAR : N_CHAR;
    const f = this.#d.s.dnnl_gemm_bf16bf16f32;
    for (let bi = 0; bi < r.batch; bi++) {
      const ao = bi * r.strideA, bo = bi * r.strideB, co = r.cOff + bi * r.strideC;
      const status = f(
        ta,
        tb,
        BigInt(r.m),
        BigInt(r.n),
        BigInt(r.k),
        1,
        ao === 0 ? sa : sa.subarray(ao),
        BigInt(r.lda),
        bo === 0 ? sb : sb.subarray(bo),
        BigInt(r.ldb),
        r.beta,
        (co === 0 ? r.c : r.c.subarray(co)) as Float32Array,
        BigInt(r.ldc),
      );
      if (status !== 0) {
        throw new Error(
          `dnnl_gemm_bf16bf16f32 failed (status ${status}) on m=${r.m} n=${r.n} k=${r.k}`,
        );
      }
    }
  }
}

/** libgomp's thread-count calls (oneDNN's OpenMP runtime), or null where it cannot be loaded. */
let gomp: { set: (n: number) => void; get: () => number } | null | undefined;
function openGomp(): typeof gomp {
  if (gomp !== undefined) return gomp;
  try {
    const lib = Deno.dlopen("libgomp.so.1", {
      omp_set_num_threads: { parameters: ["i32"], result: "void" },
      omp_get_max_threads: { parameters: [], result: "i32" },
    }).symbols;
    return gomp = { set: (n) => lib.omp_set_num_threads(n), get: () => lib.omp_get_max_threads() };
  } catch {
    return gomp = null;
  }
}

/** This thread's OpenMP thread count (0 where libgomp cannot be loaded). */
function ompThreads(): number {
  return openGomp()?.get() ?? 0;
}

/** Whether {@linkcode oneOmpThread} can pin oneDNN's calls from a thread to that thread alone. */
export function canPinOmp(): boolean {
  return openGomp() !== null;
}

/**
 * Makes the oneDNN calls this thread makes from now on run on it alone (OpenMP's thread count is a
 * per-thread setting: the kernel pool's threads each call oneDNN on one thread, while the calling
 * thread's products keep theirs) and returns what puts the count back. A primitive keeps the
 * count it was made under, so primitives for such calls must be made after this. A no-op where
 * libgomp cannot be loaded (see {@linkcode canPinOmp}).
 */
export function oneOmpThread(): () => void {
  const g = openGomp();
  if (!g) return () => {};
  const before = g.get();
  if (before === 1) return () => {};
  g.set(1);
  return () => g.set(before);
}

let cachedDnnl: Dnnl | string | null = null;
let cached: Bf16Gemm | string | null = null;

/**
 * Sets oneDNN's OpenMP defaults before the library (and its OpenMP runtime) loads, where the
 * user set nothing. Idle threads spin briefly, then sleep (`OMP_WAIT_POLICY=PASSIVE` with
 * `GOMP_SPINCOUNT=10000`, which GNU OpenMP honours over the policy): OpenBLAS's and the kernel
 * pool's threads need the same cores between oneDNN calls (endless spinning doubled the CPU time of
 * a 2-thread MiniMind2-Small bf16 step on a loaded 2-core machine: 4547 → 2403 ms), but sleeping
 * at once made each of a decode step's short products wait for its threads to wake (8 streams of
 * MiniMind2-Small: 509 tok/s with no spin, 651–673 with 5,000–20,000 spins; the bf16 train step
 * 1,597–1,619 → 1,624–1,750 tok/s). The thread count follows `OPENBLAS_NUM_THREADS` when only
 * that is set.
 */
function openMpDefaults(): void {
  const set = (name: string, value: string) => {
    Deno.env.set(name, value);
    ourVariables.add(name);
  };
  try {
    if (!Deno.env.get("OMP_WAIT_POLICY") && !Deno.env.get("GOMP_SPINCOUNT")) {
      set("OMP_WAIT_POLICY", "PASSIVE");
      set("GOMP_SPINCOUNT", "10000");
    }
    const blas = Deno.env.get("OPENBLAS_NUM_THREADS");
    if (!Deno.env.get("OMP_NUM_THREADS") && blas) set("OMP_NUM_THREADS", blas);
  } catch {
    // no --allow-env: OpenMP's own defaults
  }
}

/** The variables `openMpDefaults` set (they were unset before). */
const ourVariables = new Set<string>();

/**
 * This process's environment without the OpenMP settings made for oneDNN here, i.e. as the user
 * started it: for child processes that must not inherit them (the benchmarks' PyTorch side, which
 * would otherwise run with our thread-waiting policy instead of its own defaults).
 */
export function environmentAsStarted(): Record<string, string> {
  const env = Deno.env.toObject();
  for (const name of ourVariables) delete env[name];
  return env;
}

/**
 * oneDNN 2.x, or why not: no library (`MINIMIND_DNNL`, then Debian's `libdnnl.so.3` / `.so.2`) or
 * no FFI permission. Loaded once per process.
 */
export function openDnnl(): Dnnl | string {
  if (cachedDnnl !== null) return cachedDnnl;
  let env: string | undefined;
  try {
    env = Deno.env.get("MINIMIND_DNNL");
  } catch {
    env = undefined;
  }
  openMpDefaults();
  const tried: string[] = [];
  const paths = [
    ...(env ? [env] : []),
    "/usr/lib/x86_64-linux-gnu/libdnnl.so.3",
    "/usr/lib/x86_64-linux-gnu/libdnnl.so.2",
    "libdnnl.so.3",
    "libdnnl.so.2",
  ];
  for (const path of paths) {
    try {
      return cachedDnnl = new Dnnl(Deno.dlopen(path, SYMBOLS), path);
    } catch (e) {
      tried.push(`${path}: ${(e as Error).message.split("\n")[0]}`);
    }
  }
  return cachedDnnl = `no oneDNN library with dnnl_gemm_bf16bf16f32 (${tried.join("; ")})`;
}

/**
 * oneDNN 2.x with the descriptor API its primitives are built with here (`Dnnl.native`), or null
 * (no library, oneDNN 3, no FFI permission): what the packed products and the batched decode
 * attention run on.
 */
export function nativeDnnl(): Dnnl | null {
  const d = openDnnl();
  return typeof d === "string" || !d.native ? null : d;
}

/**
 * The bf16 gemm, or why there is none: no native bf16 on this CPU (`cpuHasBf16`), no oneDNN
 * library, or no FFI permission. Loaded once per process.
 */
export function openBf16Gemm(): Bf16Gemm | string {
  if (cached !== null) return cached;
  if (!cpuHasBf16()) return cached = "this CPU has no AVX512-BF16 / AMX-BF16";
  const d = openDnnl();
  return cached = typeof d === "string" ? d : new Bf16Gemm(d);
}
