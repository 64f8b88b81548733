/**
 * The `Backend` interface: raw devices that own buffers and run op kernels. A backend knows
 * buffers, dtypes and kernels, not gradients.
 * @module
 */
import type { DType, TypedArray } from "../dtype.ts";
import type { KernelOp, Meta } from "../op.ts";

/** A reference-counted device buffer. Tensors are handles onto a storage. */
export interface Storage {
  /** The backend that owns the buffer. */
  readonly backend: Backend;
  /** Number of live tensor handles (and tape references) on this storage. */
  refs: number;
  /** Size in bytes. */
  readonly bytes: number;
}

/** Counters a backend keeps (tests and benchmarks read them). */
export interface BackendCounters {
  /** Kernel launches. */
  dispatches: number;
  /** Command-buffer submissions (WebGPU). */
  submits: number;
  /** Device-to-host synchronisations. */
  syncs: number;
  /** Bytes currently allocated by live storages. */
  bytesInUse: number;
  /** Bytes ever newly allocated from the device. */
  bytesAllocated: number;
  /** Allocations served from the buffer pool. */
  poolHits: number;
}

/** A compute device. */
export interface Backend {
  /** `"cpu"` or `"webgpu"`. */
  readonly name: string;
  /** Zero-filled storage for `size` elements of `dtype`. */
  alloc(dtype: DType, size: number): Storage;
  /** Storage holding a copy of `data`. */
  fromArray(data: TypedArray): Storage;
  /** Reads a storage back to the host. */
  read(s: Storage, dtype: DType, size: number): Promise<TypedArray>;
  /** Synchronous read, where the device allows it (CPU); undefined otherwise. */
  readSync?(s: Storage, dtype: DType, size: number): TypedArray;
  /** Releases a storage whose refcount reached zero. */
  free(s: Storage): void;
  /** Runs `op`'s kernel on `inputs`, returning one new storage per output meta. */
  run<P>(
    op: KernelOp<P>,
    inputs: Storage[],
    inMetas: Meta[],
    outMetas: Meta[],
    params: P,
  ): Storage[];
  /** Counters since start (or since the last reset). */
  readonly counters: BackendCounters;
  /** Waits until every queued kernel has finished (no-op on CPU). */
  sync(): Promise<void>;
  /**
   * Prepares every kernel `fn` would run without running any (WebGPU compiles the pipelines in
   * parallel), so the first real step does not stall on compilation. Absent where there is
   * nothing to prepare (CPU). Resolves to the number of kernels prepared.
   */
  warmup?(fn: () => unknown): Promise<number>;
}

/** Fresh zeroed counters. */
export function newCounters(): BackendCounters {
  return { dispatches: 0, submits: 0, syncs: 0, bytesInUse: 0, bytesAllocated: 0, poolHits: 0 };
}
