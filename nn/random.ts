/**
 * Key-based PRNG (JAX style): a key is an explicit value, `split` derives independent keys, and
 * samplers are pure functions of (key, shape). Numbers are generated on the host with
 * Threefry-2x32 (20 rounds) and uploaded, so every backend sees identical values.
 * @module
 */
import type { DType } from "./dtype.ts";
import { allocArray } from "./dtype.ts";
import { checkShape, sizeOf } from "./shape.ts";
import type { Tensor } from "./tensor.ts";
import { tensor } from "./creation.ts";
import type { CreateOptions } from "./creation.ts";

/** A PRNG key: two 32-bit words. Keys are values; use `split` to derive new ones. */
export type Key = readonly [number, number];

const ROT = [13, 15, 26, 6, 17, 29, 16, 24];

function rotl(x: number, r: number): number {
  return ((x << r) | (x >>> (32 - r))) >>> 0;
}

/** Threefry-2x32 with 20 rounds: (key, counter) → two random words. */
export function threefry2x32(key: Key, c0: number, c1: number): [number, number] {
  const k0 = key[0] >>> 0, k1 = key[1] >>> 0;
  const k2 = (0x1bd11bda ^ k0 ^ k1) >>> 0;
  const ks = [k0, k1, k2];
  let x0 = (c0 + k0) >>> 0, x1 = (c1 + k1) >>> 0;
  for (let r = 0; r < 5; r++) {
    for (let i = 0; i < 4; i++) {
      x0 = (x0 + x1) >>> 0;
      x1 = rotl(x1, ROT[(r % 2) * 4 + i]) ^ x0;
    }
    x0 = (x0 + ks[(r + 1) % 3]) >>> 0;
    x1 = (x1 + ks[(r + 2) % 3] + r + 1) >>> 0;
  }
  return [x0, x1];
}

/**
 * A key from an integer seed.
 *
 * @param seed any integer (the low 64 bits are used)
 * @returns the key
 * @example
 * ```ts
 * import { random } from "@minimind/ts";
 * const [k1, k2] = random.split(random.key(0));
 * const w = random.normal(k1, [4, 4]);
 * ```
 */
export function key(seed: number): Key {
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 4294967296) >>> 0;
  return [hi, lo];
}

/**
 * Derives `n` independent keys.
 *
 * @param k parent key
 * @param n how many (default 2)
 * @returns the new keys
 */
export function split(k: Key, n = 2): Key[] {
  const out: Key[] = [];
  for (let i = 0; i < n; i++) out.push(threefry2x32(k, 0, i));
  return out;
}

/**
 * Derives a key from a key and an integer (e.g. a step or layer index).
 *
 * @param k parent key
 * @param data the integer
 * @returns the new key
 */
export function foldIn(k: Key, data: number): Key {
  return threefry2x32(k, 1, data >>> 0);
}

/** `n` uniform floats in [0, 1) with 32 random bits each (host side). */
export function uniformArray(k: Key, n: number): Float64Array {
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const [a, b] = threefry2x32(k, 2, i >>> 1);
    out[i] = a / 4294967296;
    if (i + 1 < n) out[i + 1] = b / 4294967296;
  }
  return out;
}

/** `n` standard normals (Box–Muller on `uniformArray`, host side). */
export function normalArray(k: Key, n: number): Float64Array {
  const u = uniformArray(k, n + (n % 2));
  const out = new Float64Array(n);
  for (let i = 0; i < n; i += 2) {
    const r = Math.sqrt(-2 * Math.log(1 - u[i]));
    const th = 2 * Math.PI * u[i + 1];
    out[i] = r * Math.cos(th);
    if (i + 1 < n) out[i + 1] = r * Math.sin(th);
  }
  return out;
}

/** Options of the samplers. */
export interface SampleOptions extends CreateOptions {
  /** Element type (default f32). */
  dtype?: DType;
}

/**
 * Uniform samples in [minval, maxval).
 *
 * @param k key
 * @param shape output shape
 * @param options bounds and dtype
 * @returns the samples
 */
export function uniform(
  k: Key,
  shape: readonly number[],
  options: SampleOptions & { minval?: number; maxval?: number } = {},
): Tensor {
  checkShape(shape);
  const lo = options.minval ?? 0, hi = options.maxval ?? 1;
  const u = uniformArray(k, sizeOf(shape));
  const arr = allocArray(options.dtype ?? "f32", u.length);
  for (let i = 0; i < u.length; i++) arr[i] = lo + (hi - lo) * u[i];
  return tensor(arr, shape, options.dtype ?? "f32", options);
}

/**
 * Normal samples.
 *
 * @param k key
 * @param shape output shape
 * @param options mean, std and dtype
 * @returns the samples
 */
export function normal(
  k: Key,
  shape: readonly number[],
  options: SampleOptions & { mean?: number; std?: number } = {},
): Tensor {
  checkShape(shape);
  const m = options.mean ?? 0, s = options.std ?? 1;
  const z = normalArray(k, sizeOf(shape));
  const arr = allocArray(options.dtype ?? "f32", z.length);
  for (let i = 0; i < z.length; i++) arr[i] = m + s * z[i];
  return tensor(arr, shape, options.dtype ?? "f32", options);
}

/**
 * Random integers in [low, high) (i32).
 *
 * @param k key
 * @param shape output shape
 * @param low inclusive lower bound
 * @param high exclusive upper bound
 * @returns the samples
 */
export function randint(
  k: Key,
  shape: readonly number[],
  low: number,
  high: number,
  options: CreateOptions = {},
): Tensor {
  const u = uniformArray(k, sizeOf(shape));
  const arr = new Int32Array(u.length);
  for (let i = 0; i < u.length; i++) arr[i] = low + Math.floor(u[i] * (high - low));
  return tensor(arr, shape, "i32", options);
}

/**
 * A random permutation of 0..n−1 (Fisher–Yates).
 *
 * @param k key
 * @param n length
 * @returns the permutation
 */
export function permutation(k: Key, n: number): Int32Array {
  const u = uniformArray(k, n);
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(u[i] * (i + 1));
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}
