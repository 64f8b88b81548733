/**
 * The CPU backend: storages are typed arrays; kernels are the ops' reference `cpu` functions
 * (matmul calls the fast gemm in `gemm/`). Freed arrays of 64 KiB and more, of sizes that recur
 * (requested again after a free), are kept in a pool by dtype and length and handed out again
 * zeroed: a train step allocates the same shapes every step, and a recycled array skips the page
 * faults of fresh memory (13% of a demo-model step). One-off sizes, like the lengths of a growing
 * KV cache, are left to the GC.
 * @module
 */
import type { Backend, BackendCounters, Storage } from "../backend.ts";
import { newCounters } from "../backend.ts";
import type { DType, TypedArray } from "../../dtype.ts";
import { allocArray, byteSize, dtypeOfArray } from "../../dtype.ts";
import type { KernelOp, Meta } from "../../op.ts";

/** Arrays smaller than this are left to the GC (pooling pays off for large ones). */
const POOL_MIN_BYTES = 64 * 1024;

/** A CPU storage: a typed array. */
export interface CpuStorage extends Storage {
  /** The values. */
  readonly data: TypedArray;
}

class CpuBackend implements Backend {
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

  #wrap(data: TypedArray, pooled: boolean): CpuStorage {
    this.counters.bytesInUse += data.byteLength;
    if (!pooled) this.counters.bytesAllocated += data.byteLength;
    return { backend: this, refs: 0, bytes: data.byteLength, data };
  }

  /** A zeroed array: a freed one of the same dtype and length when the pool has it. */
  #take(dtype: DType, size: number): [TypedArray, boolean] {
    if (size * byteSize(dtype) >= POOL_MIN_BYTES) {
      const k = dtype + size;
      const a = this.#pool.get(k)?.pop();
      if (a) {
        this.#pooledBytes -= a.byteLength;
        this.counters.poolHits++;
        return [a.fill(0), true];
      }
      // a size wanted again after a free recurs (a train step's shapes do, step after step; a
      // growing KV cache's lengths do not)
      if (this.#freedOnce.delete(k)) this.#recurring.add(k);
    }
    return [allocArray(dtype, size), false];
  }

  alloc(dtype: DType, size: number): Storage {
    return this.#wrap(...this.#take(dtype, size));
  }

  fromArray(data: TypedArray): Storage {
    return this.#wrap(data.slice(), false);
  }

  /** Wraps `data` without copying (the caller gives up ownership). */
  adopt(data: TypedArray): Storage {
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
    if (this.#foreign.delete(s) || s.bytes < POOL_MIN_BYTES) return;
    const a = (s as CpuStorage).data;
    const k = dtypeOfArray(a) + a.length;
    if (!this.#recurring.has(k)) {
      if (this.#freedOnce.size >= 4096) this.#freedOnce.clear();
      this.#freedOnce.add(k);
      return;
    }
    if (this.#pooledBytes + s.bytes > this.poolLimitBytes) {
      this.emptyPool();
      return;
    }
    const list = this.#pool.get(k);
    if (list) list.push(a);
    else this.#pool.set(k, [a]);
    this.#pooledBytes += s.bytes;
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

  /** Bytes held by the pool (freed arrays waiting for reuse). */
  get pooledBytes(): number {
    return this.#pooledBytes;
  }

  run<P>(
    op: KernelOp<P>,
    inputs: Storage[],
    inMetas: Meta[],
    outMetas: Meta[],
    params: P,
  ): Storage[] {
    const ins = inputs.map((s) => (s as CpuStorage).data);
    const outs = outMetas.map((m) => {
      let n = 1;
      for (const d of m.shape) n *= d;
      return this.#take(m.dtype, n);
    });
    this.counters.dispatches++;
    op.cpu(ins, outs.map((o) => o[0]), { inputs: inMetas, outputs: outMetas, params });
    return outs.map((o) => this.#wrap(...o));
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
