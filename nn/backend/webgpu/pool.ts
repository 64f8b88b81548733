/**
 * Size-bucketed pool of device buffers. Buckets are 2^k and 1.5·2^k bytes (≤ 33 % waste);
 * freed buffers go back to their bucket's free list and are handed out again, newest first.
 * A buffer remembers the last command batch that touched it, so uploads can pick one that no
 * unsubmitted command refers to.
 * @module
 */

/** A pooled device buffer. */
export interface PooledBuffer {
  /** The device buffer. */
  readonly buffer: GPUBuffer;
  /** Capacity in bytes (the bucket size). */
  readonly capacity: number;
  /** Unique id (bind-group cache keys). */
  readonly id: number;
  /** Id of the last command batch that used it (0 = never). */
  lastUse: number;
}

/** Smallest bucket. */
const MIN_BUCKET = 256;

/** The bucket size for `bytes`. */
export function bucketOf(bytes: number): number {
  if (bytes <= MIN_BUCKET) return MIN_BUCKET;
  const p = 2 ** Math.ceil(Math.log2(bytes));
  const mid = (p / 4) * 3;
  return bytes <= mid ? mid : p;
}

/** The pool. `usage` applies to every buffer it creates. */
export class BufferPool {
  readonly #device: GPUDevice;
  readonly #usage: number;
  readonly #free = new Map<number, PooledBuffer[]>();
  #nextId = 1;
  /** Bytes of every buffer this pool created and has not destroyed. */
  bytesHeld = 0;
  /** Bytes sitting in free lists. */
  bytesFree = 0;

  /**
   * @param device the device
   * @param usage buffer usage flags
   */
  constructor(device: GPUDevice, usage: number) {
    this.#device = device;
    this.#usage = usage;
  }

  /**
   * A buffer of at least `bytes`. With `cleanBefore`, only a buffer whose `lastUse` is below it
   * qualifies (no pending command refers to it). Returns whether it is new (zero-filled).
   */
  acquire(bytes: number, cleanBefore = Infinity): { buf: PooledBuffer; fresh: boolean } {
    const cap = bucketOf(bytes);
    const list = this.#free.get(cap);
    if (list) {
      for (let i = list.length - 1; i >= 0; i--) {
        if (list[i].lastUse < cleanBefore) {
          const buf = list[i];
          list.splice(i, 1);
          this.bytesFree -= cap;
          return { buf, fresh: false };
        }
      }
    }
    let buffer: GPUBuffer;
    try {
      buffer = this.#device.createBuffer({ size: cap, usage: this.#usage });
    } catch (e) {
      throw new Error(
        `Cannot allocate a WebGPU buffer of ${cap} bytes (${this.bytesHeld} held): ${
          (e as Error).message
        }`,
      );
    }
    this.bytesHeld += cap;
    return { buf: { buffer, capacity: cap, id: this.#nextId++, lastUse: 0 }, fresh: true };
  }

  /** Returns a buffer to its free list. */
  release(buf: PooledBuffer): void {
    let list = this.#free.get(buf.capacity);
    if (!list) this.#free.set(buf.capacity, list = []);
    list.push(buf);
    this.bytesFree += buf.capacity;
  }

  /** Destroys every free buffer (returns the bytes given back). */
  trim(): number {
    let n = 0;
    for (const list of this.#free.values()) {
      for (const b of list) {
        b.buffer.destroy();
        n += b.capacity;
      }
    }
    this.#free.clear();
    this.bytesHeld -= n;
    this.bytesFree = 0;
    return n;
  }
}
