/**
 * `Tensor`: a handle onto a backend storage with a shape and a dtype. Ops are free functions
 * (`nn/ops/`), never methods, so adding an op never edits this file.
 * @module
 */
import type { Backend, Storage } from "./backend/backend.ts";
import type { DType, TypedArray } from "./dtype.ts";
import type { Meta } from "./op.ts";
import { fmt, sizeOf } from "./shape.ts";
import { track } from "./scope_stack.ts";

/** @internal One autodiff trace a tensor takes part in: the tape and the value's id on it. */
export interface TraceEntry {
  /** The tape (opaque to everything but the autodiff engine). */
  readonly tape: object;
  /** Index of the value on that tape. */
  readonly id: number;
}

let nextTensorId = 1;

/** A handle onto device memory with a shape and a dtype. Read it with `await t.data()`. */
export class Tensor {
  /** Sizes of the axes, row-major. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** Number of elements. */
  readonly size: number;
  /** Unique id of this handle (debugging). */
  readonly id: number;
  /** @internal Autodiff traces this value belongs to (engine-owned). */
  _tr: TraceEntry[] | undefined;
  #storage: Storage | null;

  /**
   * Wraps `storage` (incrementing its reference count). Prefer the creation functions
   * (`tensor`, `zeros`, …); this constructor is for backends and the engine.
   *
   * @param storage the buffer
   * @param shape axis sizes
   * @param dtype element type
   * @param scoped register with the current `scope` (default true)
   */
  constructor(storage: Storage, shape: readonly number[], dtype: DType, scoped = true) {
    this.shape = shape;
    this.dtype = dtype;
    this.size = sizeOf(shape);
    this.id = nextTensorId++;
    this._tr = undefined;
    this.#storage = storage;
    storage.refs++;
    if (scoped) track(this);
  }

  /** The storage; throws if this handle was disposed. */
  get storage(): Storage {
    if (this.#storage === null) {
      throw new Error(
        `Cannot use tensor #${this.id} ${fmt(this.shape)} ${this.dtype}: it was disposed`,
      );
    }
    return this.#storage;
  }

  /** The backend holding the data. */
  get backend(): Backend {
    return this.storage.backend;
  }

  /** Whether `dispose()` was called. */
  get disposed(): boolean {
    return this.#storage === null;
  }

  /** Rank (number of axes). */
  get rank(): number {
    return this.shape.length;
  }

  /**
   * Copies the values to the host. On WebGPU this is a sync point (~11 ms in Deno 2.9).
   *
   * @returns a typed array of `size` elements
   */
  data(): Promise<TypedArray> {
    const s = this.storage;
    return s.backend.read(s, this.dtype, this.size);
  }

  /**
   * Copies the values to the host synchronously. Only the CPU backend supports it.
   *
   * @returns a typed array of `size` elements
   */
  dataSync(): TypedArray {
    const s = this.storage;
    if (!s.backend.readSync) {
      throw new Error(
        `Cannot read tensor ${
          fmt(this.shape)
        } synchronously on backend "${s.backend.name}": use await t.data()`,
      );
    }
    return s.backend.readSync(s, this.dtype, this.size);
  }

  /**
   * Reads a one-element tensor as a number.
   *
   * @returns the value
   */
  async item(): Promise<number> {
    if (this.size !== 1) {
      throw new Error(`Cannot call item() on a tensor of shape ${fmt(this.shape)}`);
    }
    return (await this.data())[0];
  }

  /** Releases this handle; the storage is freed when no handle refers to it. Idempotent. */
  dispose(): void {
    const s = this.#storage;
    if (s === null) return;
    this.#storage = null;
    this._tr = undefined;
    if (--s.refs === 0) s.backend.free(s);
  }

  /** A short description, e.g. `Tensor([2, 3] f32 on cpu)`. */
  toString(): string {
    return `Tensor(${fmt(this.shape)} ${this.dtype}${
      this.#storage ? " on " + this.#storage.backend.name : ", disposed"
    })`;
  }
}

/** @internal Typed-array view of a CPU storage (kernels and tests). */
export function cpuData(t: Tensor): TypedArray {
  return t.dataSync();
}

/** Shape and dtype of a tensor, as op shape rules see it. */
export function metaOf(t: Tensor): Meta {
  return { shape: t.shape, dtype: t.dtype };
}

/** Type guard for tensors. */
export function isTensor(x: unknown): x is Tensor {
  return x instanceof Tensor;
}

/** @internal Unused-data type re-export for backends. */
export type { TypedArray };
