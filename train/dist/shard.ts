/**
 * Data sharding for data parallel, as PyTorch's `DistributedSampler`: rank r of N takes every
 * N-th sample of the epoch's shuffled order, starting at r, and batches them by b. Step k of rank r
 * therefore holds rows r, r+N, r+2N, … of step k of a one-process run with batch N·b and the same
 * seed — together the ranks see exactly that global batch. Unlike `DistributedSampler`, the last
 * batch is not padded with repeated samples: a rank with nothing left gets an empty batch
 * (`batch === 0`) and takes part with weight 0, so the run stays the one-process run.
 * @module
 */
import type { Batch, DataLoader } from "../../data/loader.ts";

/** Rank r's view of a loader whose batch size is the global one (N·b). */
export class ShardedLoader<T extends object> {
  /** The global loader (its batch size is N·b). */
  readonly global: DataLoader<T>;
  /** This rank. */
  readonly rank: number;
  /** Ranks. */
  readonly size: number;

  /**
   * Shards `global`'s batches.
   *
   * @param global a loader with the global batch size N·b
   * @param rank this rank
   * @param size number of ranks N
   */
  constructor(global: DataLoader<T>, rank: number, size: number) {
    if (
      !(Number.isInteger(size) && size >= 1 && Number.isInteger(rank) && rank >= 0 && rank < size)
    ) {
      throw new Error(`Cannot shard data for rank ${rank} of ${size}: need 0 ≤ rank < size`);
    }
    if (global.batchSize % size !== 0) {
      throw new Error(
        `Cannot shard a global batch of ${global.batchSize} over ${size} ranks: not a multiple`,
      );
    }
    this.global = global;
    this.rank = rank;
    this.size = size;
  }

  /** Batches per epoch (the global loader's: every rank runs every step). */
  get batchesPerEpoch(): number {
    return this.global.batchesPerEpoch;
  }

  /** Rows of this rank per step (b). */
  get batchSize(): number {
    return this.global.batchSize / this.size;
  }

  /**
   * This rank's part of each global batch of an epoch.
   *
   * @param epoch epoch number (seeds the shuffle, as the global loader's)
   * @param options `skip`: global batches already consumed (resume)
   * @returns batches whose `step` is the global step; `batch === 0` when this rank has no rows
   */
  *batches(epoch = 0, options: { skip?: number } = {}): Generator<Batch<T>> {
    const order = this.global.order(epoch);
    const B = this.global.batchSize, n = order.length;
    for (let step = options.skip ?? 0; step < this.batchesPerEpoch; step++) {
      const rows: number[] = [];
      for (let p = step * B + this.rank; p < Math.min((step + 1) * B, n); p += this.size) {
        rows.push(order[p]);
      }
      if (rows.length === 0) {
        yield { batch: 0, seqLen: 0, indices: [], step } as unknown as Batch<T>;
        continue;
      }
      const ds = this.global.dataset;
      yield this.global.collate(rows.map((i) => ds.get(i, epoch)), rows, step);
    }
  }
}
