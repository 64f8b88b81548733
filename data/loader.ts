// DataLoader: seeded per-epoch shuffle, batching into row-major [B, T] typed arrays, padding of
// ragged samples, optional trimming of all-padding columns, and skipping of already-consumed
// batches when resuming (MiniMind's SkipBatchSampler) without computing them.

import type { Dataset } from "./datasets.ts";
import { mixSeed, Rng } from "./random.ts";

/** Options of {@link DataLoader}. */
export interface DataLoaderOptions {
  /** Samples per batch B. */
  batchSize: number;
  /** Shuffle each epoch with Rng(mixSeed(seed, epoch)) (default true). */
  shuffle?: boolean;
  /** Shuffle seed (default 42, as MiniMind's `setup_seed(42 + epoch)`). */
  seed?: number;
  /** Drop a last incomplete batch (default false, like PyTorch). */
  dropLast?: boolean;
  /**
   * Pad value per typed-array field for ragged samples and for trimming: default −100 for
   * `labels`, 0 for fields starting with `mask`, `padId` otherwise.
   */
  padValues?: Record<string, number>;
  /** Pad id for id fields (default 0). */
  padId?: number;
  /**
   * Drop trailing columns that are padding in every row and every field (the loss is unchanged
   * for right-padded causal LM batches; steps get cheaper). Default false.
   */
  trimPadding?: boolean;
}

/**
 * A batch: every typed-array field of the samples stacked row-major into one Int32Array of
 * `batch * seqLen` values; other fields collected into arrays.
 */
export type Batch<T> =
  & { [K in keyof T]: T[K] extends Int32Array ? Int32Array : T[K][] }
  & {
    /** Rows B. */
    batch: number;
    /** Columns T of the typed-array fields (0 when there are none). */
    seqLen: number;
    /** Dataset indices of the rows. */
    indices: number[];
    /** Position of this batch within its epoch. */
    step: number;
  };

/**
 * Batches a {@link Dataset} for training.
 *
 * @example
 * ```ts
 * import { DataLoader, PretrainDataset, Tokenizer } from "./mod.ts";
 * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
 * const ds = new PretrainDataset([{ text: "a" }, { text: "b" }, { text: "c" }], tok, { maxLength: 8 });
 * const loader = new DataLoader(ds, { batchSize: 2 });
 * for (const b of loader.batches(0)) {
 *   b.inputIds; // Int32Array of b.batch * b.seqLen ids, row-major
 * }
 * ```
 */
export class DataLoader<T extends object> {
  /** The dataset. */
  readonly dataset: Dataset<T>;
  /** Batch size B. */
  readonly batchSize: number;
  readonly #shuffle: boolean;
  readonly #seed: number;
  readonly #dropLast: boolean;
  readonly #padValues: Record<string, number>;
  readonly #padId: number;
  readonly #trim: boolean;

  /**
   * Creates a loader.
   * @param dataset Samples to batch.
   * @param options Batch size, shuffling, padding.
   */
  constructor(dataset: Dataset<T>, options: DataLoaderOptions) {
    if (!(options.batchSize >= 1) || !Number.isInteger(options.batchSize)) {
      throw new Error(`Cannot create DataLoader with batchSize ${options.batchSize}`);
    }
    this.dataset = dataset;
    this.batchSize = options.batchSize;
    this.#shuffle = options.shuffle ?? true;
    this.#seed = options.seed ?? 42;
    this.#dropLast = options.dropLast ?? false;
    this.#padValues = options.padValues ?? {};
    this.#padId = options.padId ?? 0;
    this.#trim = options.trimPadding ?? false;
  }

  /** Batches per epoch. */
  get batchesPerEpoch(): number {
    const n = this.dataset.length;
    return this.#dropLast ? Math.floor(n / this.batchSize) : Math.ceil(n / this.batchSize);
  }

  /**
   * The sample order of an epoch.
   * @param epoch Epoch number.
   * @returns A permutation of 0..length−1 (identity when not shuffling).
   */
  order(epoch: number): Uint32Array {
    const n = this.dataset.length;
    const idx = new Uint32Array(n);
    for (let i = 0; i < n; i++) idx[i] = i;
    if (this.#shuffle) new Rng(mixSeed(this.#seed, epoch)).shuffle(idx);
    return idx;
  }

  /**
   * Yields the batches of one epoch, optionally starting after `skip` batches (resume).
   *
   * @param epoch Epoch number (seeds the shuffle and the samples' augmentations).
   * @param options `skip`: batches already consumed in this epoch.
   * @returns A generator of batches.
   */
  *batches(epoch = 0, options: { skip?: number } = {}): Generator<Batch<T>> {
    const order = this.order(epoch);
    const total = this.batchesPerEpoch;
    for (let step = options.skip ?? 0; step < total; step++) {
      const rows = Array.from(
        order.subarray(step * this.batchSize, (step + 1) * this.batchSize),
      );
      yield this.collate(rows.map((i) => this.dataset.get(i, epoch)), rows, step);
    }
  }

  #padFor(key: string): number {
    if (key in this.#padValues) return this.#padValues[key];
    if (key === "labels") return -100;
    if (key.startsWith("mask")) return 0;
    return this.#padId;
  }

  /**
   * Stacks samples into a batch (public for custom sampling).
   * @param samples The rows.
   * @param indices Their dataset indices.
   * @param step Batch position in the epoch.
   * @returns The batch.
   */
  collate(samples: T[], indices: number[] = [], step = 0): Batch<T> {
    const B = samples.length;
    if (B === 0) throw new Error("Cannot collate an empty batch");
    const keys = Object.keys(samples[0]) as (keyof T & string)[];
    const arrayKeys = keys.filter((k) => samples[0][k] instanceof Int32Array);
    let T = 0;
    for (const k of arrayKeys) {
      for (const s of samples) T = Math.max(T, (s[k] as Int32Array).length);
    }
    if (this.#trim && arrayKeys.length > 0) {
      let keep = 0;
      for (const k of arrayKeys) {
        const pad = this.#padFor(k);
        for (const s of samples) {
          const a = s[k] as Int32Array;
          let j = a.length;
          while (j > keep && a[j - 1] === pad) j--;
          keep = Math.max(keep, j);
        }
      }
      T = Math.max(1, keep);
    }
    const out: Record<string, unknown> = { batch: B, seqLen: T, indices, step };
    for (const k of keys) {
      if (arrayKeys.includes(k)) {
        const pad = this.#padFor(k);
        const buf = new Int32Array(B * T).fill(pad);
        samples.forEach((s, r) => {
          const a = s[k];
          if (!(a instanceof Int32Array)) {
            throw new Error(`Cannot collate field "${k}": row ${r} is not an Int32Array`);
          }
          buf.set(a.length > T ? a.subarray(0, T) : a, r * T);
        });
        out[k] = buf;
      } else {
        out[k] = samples.map((s) => s[k]);
      }
    }
    return out as Batch<T>;
  }
}
