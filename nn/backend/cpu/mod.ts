/**
 * The CPU backend: storages are typed arrays; kernels are the ops' reference `cpu` functions
 * (matmul calls the fast gemm in `gemm/`). Freed arrays of 64 KiB and more, of sizes that recur
 * (requested again after a free), are kept in a pool by dtype and length and handed out again
 * zeroed: a train step allocates the same shapes every step, and a recycled array skips the page
 * faults of fresh memory (13% of a demo-model step). One-off sizes, like the lengths of a growing
 * KV cache, are left to the GC.
 *
 * While the kernel pool is on (`threads/`: AdamW, RMSNorm and RoPE split over worker threads;
 * `MINIMIND_CPU_THREADS=1` turns it off), large arrays are views of `SharedArrayBuffer`s instead,
 * which workers can reach. V8 hardly ever collects a dropped `SharedArrayBuffer` (measured: 200
 * dropped 16–40 MB buffers took 5.9 GB of RSS, plain ones 0.5 GB), so none is left to the GC: a
 * freed one goes back to a free list by capacity (sizes rounded up to 8 steps per power of two,
 * so a growing KV cache reuses them too), a storage dropped without `free` is recovered when its
 * view is collected, and past `sharedLimitBytes` of buffers the backend allocates plain arrays.
 *
 * An append (`KernelOp.extendsInput`: `concat` along an axis with only size-1 axes before it, so a
 * step of the time-major KV cache) gets an array with room to grow, half as much again; the next
 * append to that result is a longer view of the same array, and only the new values are written.
 * Every earlier view keeps its values (a second append to the same prefix gets its own array), and
 * the array goes back when the last storage viewing it is freed.
 * @module
 */
import type { Backend, BackendCounters, Storage } from "../backend.ts";
import { newCounters } from "../backend.ts";
import type { DType, TypedArray } from "../../dtype.ts";
import { allocArray, byteSize, dtypeOfArray, viewArray } from "../../dtype.ts";
import type { KernelOp, Meta } from "../../op.ts";
import { gemmClock } from "./gemm_adapter.ts";
import { forgetPacked } from "./gemm/packed.ts";
import { arraysMayChange } from "./gemm/bf16.ts";
import { alignPad, CACHE_LINE } from "./align.ts";
import { sharedArraysOn } from "./threads/mod.ts";

/**
 * The capacity of the shared buffer that holds `bytes`: rounded up to one of 8 steps per power of
 * two (at most 12.5% more), so buffers of nearby sizes are interchangeable.
 */
export function sharedCapacity(bytes: number): number {
  const step = 2 ** Math.max(3, Math.floor(Math.log2(bytes)) - 3);
  return Math.ceil(bytes / step) * step;
}

/** Arrays smaller than this are left to the GC (pooling pays off for large ones). */
const POOL_MIN_BYTES = 64 * 1024;

/** Time one op's CPU kernel took over a profiled span (see `CpuBackend.startProfile`). */
export interface OpProfileRow {
  /** The op's name. */
  readonly op: string;
  /** Kernel calls. */
  calls: number;
  /** Milliseconds inside the kernel. */
  ms: number;
  /** Milliseconds taking (and zeroing) the output arrays. */
  allocMs: number;
  /** Of `ms`, milliseconds inside matrix products (`gemm`: BLAS or wasm). */
  gemmMs: number;
  /** Bytes of outputs allocated. */
  outBytes: number;
}

/**
 * An array whose leading elements several storages view, each a prefix one longer than the one
 * before (appends, see `KernelOp.extendsInput`): only the longest may grow further, in place.
 */
interface Extent {
  /** The whole array (its tail past `filled` is room for appends). */
  readonly full: TypedArray;
  /** Storages viewing it that are not freed yet. */
  users: number;
  /** Elements the longest view covers. */
  filled: number;
}

/** A CPU storage: a typed array. */
export interface CpuStorage extends Storage {
  /** The values. */
  readonly data: TypedArray;
  /** The array `data` is a prefix of, when it was made by an append (see {@linkcode Extent}). */
  readonly extent?: Extent;
}

/**
 * Elements an append's new array holds for a prefix of `size`: half as much again, so a cache
 * that grows one step at a time is copied into a new array O(log n) times.
 */
function roomFor(size: number): number {
  return Math.ceil(size * 1.5);
}

/** The CPU backend (one instance, `cpuBackend`). */
export class CpuBackend implements Backend {
  readonly name = "cpu";
  readonly counters: BackendCounters = newCounters();
  /** Storages adopted from callers, which may still hold the array: never pooled. */
  readonly #foreign = new WeakSet<Storage>();
  /** Freed arrays by dtype and length, ready for reuse. */
  readonly #pool = new Map<string, TypedArray[]>();
  #pooledBytes = 0;
  /** Sizes requested again after one of their arrays was freed: their frees are pooled. */
  readonly #recurring = new Set<string>();
  /** Sizes freed but not (yet) requested again: their arrays go to the GC. */
  readonly #freedOnce = new Set<string>();
  /**
   * Upper bound of the bytes the pool keeps. A free that would pass it empties the pool instead
   * (so sizes that recur only rarely do not pile up).
   */
  poolLimitBytes = 2 * 1024 ** 3;
  /**
   * The pool holds at most `poolLiveRatio` × the bytes of live storages, or `poolFloorBytes` when
   * that is more: a free past it goes to the GC (a server's KV caches, gone with their requests,
   * must not stay as pool once the model is all that is live).
   */
  poolLiveRatio = 1;
  /** See {@link CpuBackend.poolLiveRatio} (default 256 MiB, a training step's activations). */
  poolFloorBytes = 256 * 1024 ** 2;
  #sharedArrays: boolean | undefined;
  /**
   * Whether large arrays are shared (`SharedArrayBuffer` views the kernel pool's workers reach):
   * by default when the kernel pool is on (decided at the first large allocation, which starts the
   * pool's workers). Tests of the plain pool turn it off.
   */
  get sharedArrays(): boolean {
    return this.#sharedArrays ??= sharedArraysOn();
  }
  set sharedArrays(on: boolean) {
    this.#sharedArrays = on;
  }
  /**
   * Most bytes of `SharedArrayBuffer`s the backend keeps (in use or free; they are never given
   * back): past it, large arrays are plain and their kernels run on the calling thread.
   */
  sharedLimitBytes = 4 * 1024 ** 3;
  /** Free shared buffers by byte capacity. */
  readonly #blocks = new Map<number, SharedArrayBuffer[]>();
  #sharedBytes = 0;
  #sharedFreeBytes = 0;
  /** Takes back the buffer of a shared storage collected without `free`. */
  readonly #lost = new FinalizationRegistry<SharedArrayBuffer>((b) => this.#giveBlock(b));
  /** Counts off a view of an extent collected without `free` (its array outlives the views). */
  readonly #lostViews = new FinalizationRegistry<Extent>((e) => this.#leave(e));
  /** Appends extend arrays in place (see `KernelOp.extendsInput`); tests compare both ways. */
  extendInPlace = true;

  /** Per-op timings while a profile is running (null = not profiling, no timer calls). */
  #profile: Map<string, OpProfileRow> | null = null;

  /**
   * Starts timing every kernel call by op name (kernel time and output allocation time apart);
   * `stopProfile` returns the rows. Costs two `performance.now()` calls per kernel while on.
   */
  startProfile(): void {
    this.#profile = new Map();
    gemmClock.on = true;
  }

  /** Stops profiling; returns one row per op seen since `startProfile`, slowest first. */
  stopProfile(): OpProfileRow[] {
    const rows = [...(this.#profile?.values() ?? [])].sort((a, b) => b.ms - a.ms);
    this.#profile = null;
    gemmClock.on = false;
    return rows;
  }

  /** A storage of `data`; with `extent`, one of the views of an extended array. */
  #wrap(data: TypedArray, pooled: boolean, extent?: Extent): CpuStorage {
    this.counters.bytesInUse += data.byteLength;
    if (!pooled) this.counters.bytesAllocated += data.byteLength;
    if (!extent) return { backend: this, refs: 0, bytes: data.byteLength, data };
    this.#lostViews.register(data, extent, data);
    return { backend: this, refs: 0, bytes: data.byteLength, data, extent };
  }

  /**
   * A zeroed array (left as it was when `zero` is false: the kernel writes every element): a freed
   * one of the same dtype and length when the pool has it.
   */
  #take(dtype: DType, size: number, zero = true): [TypedArray, boolean] {
    const bytes = size * byteSize(dtype);
    if (bytes >= POOL_MIN_BYTES && this.sharedArrays) {
      const shared = this.#takeShared(dtype, size, bytes, zero);
      if (shared) return shared;
    }
    if (bytes >= POOL_MIN_BYTES) {
      const k = dtype + size;
      const a = this.#pool.get(k)?.pop();
      if (a) {
        this.#pooledBytes -= a.byteLength;
        this.counters.poolHits++;
        forgetPacked(a); // the same array, about to hold other values
        if (zero) arraysMayChange();
        return [zero ? a.fill(0) : a, true];
      }
      // a size wanted again after a free recurs (a train step's shapes do, step after step; a
      // growing KV cache's lengths do not)
      if (this.#freedOnce.delete(k)) this.#recurring.add(k);
    }
    return [allocArray(dtype, size), false];
  }

  /**
   * A view of `size` elements on a shared buffer (a free one of the size's capacity, else a new
   * one), zeroed unless `zero` is false; null past `sharedLimitBytes`.
   */
  #takeShared(
    dtype: DType,
    size: number,
    bytes: number,
    zero: boolean,
  ): [TypedArray, boolean] | null {
    const cap = sharedCapacity(bytes + CACHE_LINE); // room to start on a cache line
    let b = this.#blocks.get(cap)?.pop();
    const reused = b !== undefined;
    if (b) this.#sharedFreeBytes -= cap;
    else if (this.#sharedBytes + cap <= this.sharedLimitBytes) {
      b = new SharedArrayBuffer(cap);
      this.#sharedBytes += cap;
    } else return null;
    const a = viewArray(dtype, b, alignPad(new Uint8Array(b)), size); // on a 64-byte boundary
    if (reused) {
      this.counters.poolHits++;
      if (zero) {
        arraysMayChange();
        a.fill(0);
      }
    }
    this.#lost.register(a, b, a);
    return [a, reused];
  }

  /** Puts a shared buffer on the free list of its capacity. */
  #giveBlock(b: SharedArrayBuffer): void {
    const list = this.#blocks.get(b.byteLength);
    if (list) list.push(b);
    else this.#blocks.set(b.byteLength, [b]);
    this.#sharedFreeBytes += b.byteLength;
  }

  alloc(dtype: DType, size: number): Storage {
    return this.#wrap(...this.#take(dtype, size));
  }

  fromArray(data: TypedArray): Storage {
    arraysMayChange();
    const shared = data.byteLength >= POOL_MIN_BYTES && this.sharedArrays
      ? this.#takeShared(dtypeOfArray(data), data.length, data.byteLength, false)
      : null;
    if (!shared) return this.#wrap(data.slice(), false);
    shared[0].set(data as never);
    return this.#wrap(...shared);
  }

  /** Wraps `data` without copying (the caller gives up ownership). */
  adopt(data: TypedArray): Storage {
    arraysMayChange();
    const s = this.#wrap(data, false);
    this.#foreign.add(s);
    return s;
  }

  read(s: Storage, dtype: DType, size: number): Promise<TypedArray> {
    return Promise.resolve(this.readSync(s, dtype, size));
  }

  readSync(s: Storage, dtype: DType, size: number): TypedArray {
    const d = (s as CpuStorage).data;
    if (d.length !== size || d.BYTES_PER_ELEMENT !== byteSize(dtype)) {
      throw new Error(`Cannot read ${size} ${dtype} values from a CPU storage of ${d.length}`);
    }
    return d.slice();
  }

  free(s: Storage): void {
    this.counters.bytesInUse -= s.bytes;
    const { data, extent } = s as CpuStorage;
    if (extent) {
      this.#lostViews.unregister(data);
      this.#leave(extent);
      return;
    }
    if (this.#foreign.delete(s) || s.bytes < POOL_MIN_BYTES) return;
    this.#release(data);
  }

  /** A storage viewing `e` is gone: the last one gives the whole array back. */
  #leave(e: Extent): void {
    if (--e.users === 0) this.#release(e.full);
  }

  /**
   * Output 0 of an op that appends to input `input` (`KernelOp.extendsInput`), `size` elements:
   * a longer view of the input's array where it has room that no other storage took (the prefix
   * is then already in place), else a new array with room for later appends, for appends of at
   * most a quarter of a large prefix; null (allocate as usual) otherwise.
   */
  #extend(input: CpuStorage, dtype: DType, size: number): [TypedArray, boolean, Extent] | null {
    const { data: a, extent: e } = input;
    if (
      e && e.filled === a.length && a.byteOffset === e.full.byteOffset && size <= e.full.length &&
      dtypeOfArray(e.full) === dtype
    ) {
      e.filled = size;
      e.users++;
      return [e.full.subarray(0, size), true, e];
    }
    if (a.byteLength < POOL_MIN_BYTES || 4 * (size - a.length) > a.length) return null;
    const [full, pooled] = this.#take(dtype, roomFor(size), false);
    return [full.subarray(0, size), pooled, { full, users: 1, filled: size }];
  }

  /** Gives a whole array back: to its shared buffer's free list, or to the pool. */
  #release(a: TypedArray): void {
    if (a.buffer instanceof SharedArrayBuffer) {
      this.#lost.unregister(a);
      this.#giveBlock(a.buffer);
      return;
    }
    const k = dtypeOfArray(a) + a.length, bytes = a.byteLength;
    if (!this.#recurring.has(k)) {
      if (this.#freedOnce.size >= 4096) this.#freedOnce.clear();
      this.#freedOnce.add(k);
      return;
    }
    if (this.#pooledBytes + bytes > this.poolLimitBytes) {
      this.emptyPool();
      return;
    }
    // live memory shrank with this free: the pool shrinks with it, this array first
    const bound = Math.max(this.poolFloorBytes, this.poolLiveRatio * this.counters.bytesInUse);
    if (this.#pooledBytes > bound) this.#shrinkTo(bound);
    if (this.#pooledBytes + bytes > bound) return; // to the GC
    const list = this.#pool.get(k);
    if (list) list.push(a);
    else this.#pool.set(k, [a]);
    this.#pooledBytes += bytes;
  }

  /**
   * Drops every pooled array (the GC reclaims them) and forgets which sizes recur; live storages
   * are untouched.
   */
  emptyPool(): void {
    this.#pool.clear();
    this.#pooledBytes = 0;
    this.#recurring.clear();
    this.#freedOnce.clear();
  }

  /** Drops pooled arrays (largest lists first) until the pool holds at most `bytes`. */
  #shrinkTo(bytes: number): void {
    const lists = [...this.#pool.entries()].filter(([, l]) => l.length).sort((a, b) =>
      b[1].length * b[1][0].byteLength - a[1].length * a[1][0].byteLength
    );
    for (const [k, list] of lists) {
      while (list.length && this.#pooledBytes > bytes) this.#pooledBytes -= list.pop()!.byteLength;
      if (!list.length) this.#pool.delete(k);
      if (this.#pooledBytes <= bytes) return;
    }
  }

  /** Empties the pool (work has paused: {@link Backend.trim}). */
  trim(): void {
    this.emptyPool();
  }

  /** Bytes held by the pool (freed plain arrays waiting for reuse). */
  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  /** Bytes of shared buffers: all of them (in use or free), and the free ones. */
  get sharedBytes(): { total: number; free: number } {
    return { total: this.#sharedBytes, free: this.#sharedFreeBytes };
  }

  run<P>(
    op: KernelOp<P>,
    inputs: Storage[],
    inMetas: Meta[],
    outMetas: Meta[],
    params: P,
  ): Storage[] {
    const ins = inputs.map((s) => (s as CpuStorage).data);
    const prof = this.#profile;
    const t0 = prof ? performance.now() : 0;
    // an input whose array other storages view too (an extent) is never written in place
    const alias = op.inPlace?.(params)?.map((j) =>
      j !== null && (inputs[j] as CpuStorage).extent ? null : j
    );
    // (an extended array's tail is not zeroed: only for kernels that write every element)
    const grow = this.extendInPlace && op.writesAll
      ? op.extendsInput?.(params, inMetas) ?? null
      : null;
    // each output's array, whether it came from the pool (or in place), and its extent if any
    const outs = outMetas.map((m, i): [TypedArray, boolean, Extent?] => {
      const j = alias?.[i];
      if (j !== undefined && j !== null) {
        forgetPacked(ins[j]); // written in place: a packed copy of it is stale
        return [ins[j], true];
      }
      let n = 1;
      for (const d of m.shape) n *= d;
      return (i === 0 && grow !== null
        ? this.#extend(inputs[grow] as CpuStorage, m.dtype, n)
        : null) ?? this.#take(m.dtype, n, !op.writesAll);
    });
    const t1 = prof ? performance.now() : 0;
    const g0 = gemmClock.ms;
    this.counters.dispatches++;
    arraysMayChange();
    op.cpu(ins, outs.map((o) => o[0]), { inputs: inMetas, outputs: outMetas, params });
    if (prof) {
      const t2 = performance.now();
      let row = prof.get(op.name);
      if (!row) {
        row = { op: op.name, calls: 0, ms: 0, allocMs: 0, gemmMs: 0, outBytes: 0 };
        prof.set(op.name, row);
      }
      row.calls++;
      row.gemmMs += gemmClock.ms - g0;
      row.ms += t2 - t1;
      row.allocMs += t1 - t0;
      for (const o of outs) row.outBytes += o[0].byteLength;
    }
    return outs.map((o, i) => {
      const j = alias?.[i];
      return j !== undefined && j !== null ? inputs[j] : this.#wrap(...o);
    });
  }

  sync(): Promise<void> {
    return Promise.resolve();
  }
}

/** The single CPU backend instance. */
export const cpuBackend: CpuBackend = new CpuBackend();

/** The values of a CPU storage without copying (kernels and tests only). */
export function cpuArray(s: Storage): TypedArray {
  if (s.backend !== cpuBackend) {
    throw new Error(`Cannot view a ${s.backend.name} storage as a CPU array`);
  }
  return (s as CpuStorage).data;
}
