// slice, pad and concat against index arithmetic on random shapes: the CPU block copy merges the
// trailing axes a block spans fully into one run, so every mix of full and partial axes is covered.
import assert from "node:assert/strict";
import { tensor } from "../creation.ts";
import { concat, pad, slice } from "./movement.ts";

/** Deterministic small ints (xorshift). */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

const strides = (shape: number[]) =>
  shape.map((_, i) => shape.slice(i + 1).reduce((a, b) => a * b, 1));
const size = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** Every multi-index of `shape`, in row-major order. */
function* indices(shape: number[]): Generator<number[]> {
  const n = size(shape), st = strides(shape);
  for (let f = 0; f < n; f++) yield shape.map((d, i) => Math.floor(f / st[i]) % d);
}

const flat = (idx: number[], shape: number[]) =>
  idx.reduce((a, v, i) => a + v * strides(shape)[i], 0);

Deno.test("slice, pad and concat match index arithmetic on random shapes (full and partial axes)", () => {
  const r = rng(7);
  for (let trial = 0; trial < 60; trial++) {
    const rank = 1 + Math.floor(r() * 4);
    const shape = Array.from({ length: rank }, () => 1 + Math.floor(r() * 5));
    const x = Float32Array.from({ length: size(shape) }, (_, i) => i + 1);
    const t = tensor(x, shape);
    // slice: each axis either whole or a random sub-range
    const begin = shape.map((d) => (r() < 0.5 ? 0 : Math.floor(r() * d)));
    const end = shape.map((
      d,
      i,
    ) => (r() < 0.5 ? d : begin[i] + 1 + Math.floor(r() * (d - begin[i]))));
    const sShape = shape.map((_, i) => end[i] - begin[i]);
    const got = slice(t, begin, end).dataSync();
    for (const idx of indices(sShape)) {
      const want = x[flat(idx.map((v, i) => v + begin[i]), shape)];
      assert.equal(got[flat(idx, sShape)], want, `slice ${shape} [${begin}:${end}] at ${idx}`);
    }
    // pad: zeros before/after on random axes
    const before = shape.map(() => (r() < 0.5 ? 0 : Math.floor(r() * 3)));
    const after = shape.map(() => (r() < 0.5 ? 0 : Math.floor(r() * 3)));
    const pShape = shape.map((d, i) => d + before[i] + after[i]);
    const padded = pad(t, before, after).dataSync();
    for (const idx of indices(pShape)) {
      const inside = idx.every((v, i) => v >= before[i] && v < before[i] + shape[i]);
      const want = inside ? x[flat(idx.map((v, i) => v - before[i]), shape)] : 0;
      assert.equal(padded[flat(idx, pShape)], want, `pad ${shape} +${before}/${after} at ${idx}`);
    }
    // concat along a random axis with a second tensor of another length there
    const axis = Math.floor(r() * rank);
    const shape2 = shape.map((d, i) => (i === axis ? 1 + Math.floor(r() * 4) : d));
    const y = Float32Array.from({ length: size(shape2) }, (_, i) => -(i + 1));
    const cShape = shape.map((d, i) => (i === axis ? d + shape2[i] : d));
    const joined = concat([t, tensor(y, shape2)], axis).dataSync();
    for (const idx of indices(cShape)) {
      const want = idx[axis] < shape[axis]
        ? x[flat(idx, shape)]
        : y[flat(idx.map((v, i) => (i === axis ? v - shape[axis] : v)), shape2)];
      assert.equal(
        joined[flat(idx, cShape)],
        want,
        `concat ${shape} + ${shape2} on ${axis} at ${idx}`,
      );
    }
  }
});
