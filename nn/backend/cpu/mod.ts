/**
 * The CPU backend: storages are typed arrays; kernels are the ops' reference `cpu` functions
 * (matmul calls the fast gemm in `gemm/`).
 * @module
 */
import type { Backend, BackendCounters, Storage } from "../backend.ts";
import { newCounters } from "../backend.ts";
import type { DType, TypedArray } from "../../dtype.ts";
import { allocArray, byteSize } from "../../dtype.ts";
import type { Meta, OpDef } from "../../op.ts";

/** A CPU storage: a typed array. */
export interface CpuStorage extends Storage {
  /** The values. */
  readonly data: TypedArray;
}

class CpuBackend implements Backend {
  readonly name = "cpu";
  readonly counters: BackendCounters = newCounters();

  #wrap(data: TypedArray): CpuStorage {
    this.counters.bytesInUse += data.byteLength;
    this.counters.bytesAllocated += data.byteLength;
    return { backend: this, refs: 0, bytes: data.byteLength, data };
  }

  alloc(dtype: DType, size: number): Storage {
    return this.#wrap(allocArray(dtype, size));
  }

  fromArray(data: TypedArray): Storage {
    return this.#wrap(data.slice());
  }

  /** Wraps `data` without copying (the caller gives up ownership). */
  adopt(data: TypedArray): Storage {
    return this.#wrap(data);
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
  }

  run<P>(op: OpDef<P>, inputs: Storage[], inMetas: Meta[], outMetas: Meta[], params: P): Storage[] {
    if (!op.cpu) {
      throw new Error(`Cannot run op ${op.name} on the CPU backend: it has no CPU kernel`);
    }
    const ins = inputs.map((s) => (s as CpuStorage).data);
    const outs = outMetas.map((m) => {
      let n = 1;
      for (const d of m.shape) n *= d;
      return allocArray(m.dtype, n);
    });
    this.counters.dispatches++;
    op.cpu(ins, outs, { inputs: inMetas, outputs: outMetas, params });
    return outs.map((o) => this.#wrap(o));
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
