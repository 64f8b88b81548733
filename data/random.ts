// A small seeded PRNG (xoshiro128**, seeded through splitmix32) for everything random in data/:
// shuffles, the SFT/RLAIF augmentations and the corpus builder. Same seed → same stream on every
// machine, which is what makes resume and the cached corpus deterministic.

function splitmix32(state: number): [number, number] {
  state = (state + 0x9e3779b9) | 0;
  let z = state;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [(z ^ (z >>> 16)) >>> 0, state];
}

/**
 * Mixes any number of integers and strings into one 32-bit seed (FNV-1a over their text, then
 * splitmix). Used to give every (seed, epoch, sample) its own independent stream.
 *
 * @param parts Values to mix, e.g. `(seed, epoch, index)`.
 * @returns A 32-bit unsigned seed.
 * @example
 * ```ts
 * import { mixSeed } from "./random.ts";
 * mixSeed(42, 0, 7) === mixSeed(42, 0, 7); // true
 * ```
 */
export function mixSeed(...parts: (number | string)[]): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    const s = typeof p === "number" ? String(p) : p;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
    h = Math.imul(h ^ 0x1f, 0x01000193); // separator, so (1, 23) ≠ (12, 3)
  }
  return splitmix32(h)[0];
}

/**
 * Seeded random numbers (xoshiro128**).
 *
 * @example
 * ```ts
 * import { Rng } from "./random.ts";
 * const rng = new Rng(42);
 * rng.float(); // in [0, 1)
 * rng.shuffle([1, 2, 3]); // a permutation, the same for seed 42 everywhere
 * ```
 */
export class Rng {
  #s0: number;
  #s1: number;
  #s2: number;
  #s3: number;

  /**
   * Seeds the generator.
   * @param seed Any integer (its low 32 bits are used).
   */
  constructor(seed: number) {
    let st = seed | 0;
    let v: number;
    [v, st] = splitmix32(st);
    this.#s0 = v | 0;
    [v, st] = splitmix32(st);
    this.#s1 = v | 0;
    [v, st] = splitmix32(st);
    this.#s2 = v | 0;
    [v, st] = splitmix32(st);
    this.#s3 = v | 0;
  }

  /**
   * Draws 32 random bits.
   * @returns The next 32-bit unsigned integer.
   */
  next(): number {
    const r = Math.imul(rotl(Math.imul(this.#s1, 5), 7), 9);
    const t = this.#s1 << 9;
    this.#s2 ^= this.#s0;
    this.#s3 ^= this.#s1;
    this.#s1 ^= this.#s2;
    this.#s0 ^= this.#s3;
    this.#s2 ^= t;
    this.#s3 = rotl(this.#s3, 11);
    return r >>> 0;
  }

  /**
   * Draws a uniform float.
   * @returns A float in [0, 1) with 32 random bits.
   */
  float(): number {
    return this.next() / 4294967296;
  }

  /**
   * Draws a uniform integer.
   * @param n Upper bound (exclusive), 1 ≤ n ≤ 2^32.
   * @returns A uniform integer in [0, n).
   */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  /**
   * Picks a random element.
   * @param items A non-empty array.
   * @returns One element chosen uniformly.
   */
  pick<T>(items: readonly T[]): T {
    return items[this.int(items.length)];
  }

  /**
   * Fisher–Yates shuffle in place.
   * @param items The array to shuffle.
   * @returns The same array.
   */
  shuffle<T, A extends { length: number; [i: number]: T }>(items: A): A {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(i + 1);
      const t = items[i];
      items[i] = items[j];
      items[j] = t;
    }
    return items;
  }
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
