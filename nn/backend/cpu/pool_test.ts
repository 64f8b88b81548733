import assert from "node:assert/strict";
import { cpuArray, cpuBackend } from "./mod.ts";
import { add, tensor, zeros } from "../../../mod.ts";

const N = 1 << 15; // 128 KiB of f32: large enough to pool

// these tests are about the pool of plain arrays (shared ones: threads/threads_test.ts)
cpuBackend.sharedArrays = false;

/** Makes `size` a recurring size (freed, then requested again) and returns nothing pooled. */
function makeRecurring(size: number): void {
  cpuBackend.free(cpuBackend.alloc("f32", size)); // freed once: not pooled
  cpuBackend.free(cpuBackend.alloc("f32", size)); // requested again after a free: now pooled
}

Deno.test("the CPU pool reuses a freed array of a recurring size, zeroed", () => {
  cpuBackend.emptyPool();
  const c = cpuBackend.counters;
  const a = cpuBackend.alloc("f32", N);
  cpuBackend.free(a);
  assert.equal(cpuBackend.pooledBytes, 0, "a size freed for the first time is not pooled");
  const b = cpuBackend.alloc("f32", N); // wanted again after a free: the size recurs
  assert.notEqual(cpuArray(b), cpuArray(a));
  cpuArray(b).fill(7);
  cpuBackend.free(b);
  assert.equal(cpuBackend.pooledBytes, N * 4);
  const hits = c.poolHits, allocated = c.bytesAllocated;
  const d = cpuBackend.alloc("f32", N);
  assert.equal(cpuArray(d), cpuArray(b), "the same array comes back");
  assert.equal(c.poolHits, hits + 1);
  assert.equal(c.bytesAllocated, allocated, "nothing newly allocated");
  assert.ok(cpuArray(d).every((x) => x === 0), "a reused array is zeroed");
  const other = cpuBackend.alloc("i32", N); // another dtype: not served from the f32 list
  assert.notEqual(cpuArray(other).buffer, cpuArray(b).buffer);
  cpuBackend.free(d);
  cpuBackend.free(other);
});

Deno.test("the CPU pool leaves one-off sizes (a growing KV cache) to the GC", () => {
  cpuBackend.emptyPool();
  for (let t = 1; t <= 50; t++) {
    // each step replaces the cache with one a row longer
    const cache = [0, 1, 2, 3].map(() => cpuBackend.alloc("f32", N + 64 * t));
    for (const x of cache) cpuBackend.free(x);
  }
  assert.equal(cpuBackend.pooledBytes, 0);
});

Deno.test("the CPU pool never reuses an adopted array, nor small ones", () => {
  cpuBackend.emptyPool();
  makeRecurring(N);
  const mine = new Float32Array(N).fill(3);
  cpuBackend.free(cpuBackend.adopt(mine));
  const t = cpuBackend.alloc("f32", N);
  assert.notEqual(cpuArray(t), mine);
  assert.ok(mine.every((x) => x === 3), "the caller's array is untouched");
  cpuBackend.free(t);
  for (let i = 0; i < 3; i++) cpuBackend.free(cpuBackend.alloc("f32", 16));
  const small = cpuBackend.alloc("f32", 16);
  const sa = cpuArray(small);
  cpuBackend.free(small);
  const small2 = cpuBackend.alloc("f32", 16);
  assert.notEqual(cpuArray(small2), sa);
  cpuBackend.free(small2);
});

Deno.test("the CPU pool empties itself rather than grow past its limit", () => {
  const limit = cpuBackend.poolLimitBytes;
  cpuBackend.emptyPool();
  cpuBackend.poolLimitBytes = 3 * (N + 4) * 4; // room for three
  try {
    makeRecurring(N + 4);
    assert.equal(cpuBackend.pooledBytes, (N + 4) * 4);
    const held = cpuBackend.alloc("f32", N + 4); // take it back out: the pool is empty
    const xs = [0, 1, 2, 3].map(() => cpuBackend.alloc("f32", N + 4));
    const arrs = xs.map(cpuArray);
    for (const x of xs.slice(0, 3)) cpuBackend.free(x);
    assert.equal(cpuBackend.pooledBytes, 3 * (N + 4) * 4);
    cpuBackend.free(xs[3]); // would pass the limit: the pool is emptied instead
    assert.equal(cpuBackend.pooledBytes, 0);
    const y = cpuBackend.alloc("f32", N + 4);
    assert.ok(!arrs.includes(cpuArray(y)));
    cpuBackend.free(y);
    cpuBackend.free(held);
  } finally {
    cpuBackend.poolLimitBytes = limit;
  }
});

Deno.test("ops on pooled outputs compute the same values step after step", async () => {
  const x = zeros([N]);
  const one = tensor([1]);
  for (let i = 0; i < 4; i++) {
    const y = add(x, one); // from the third iteration its output array is recycled
    const v = await y.data();
    assert.ok(v.every((e) => e === 1));
    y.dispose();
  }
  x.dispose();
  one.dispose();
});

Deno.test("the CPU pool holds no more than the live storages (or its floor); trim() empties it", () => {
  const floor = cpuBackend.poolFloorBytes;
  cpuBackend.emptyPool();
  cpuBackend.poolFloorBytes = 2 * N * 4; // two arrays
  try {
    makeRecurring(N);
    const live = cpuBackend.alloc("f32", 4 * N); // 4 arrays' worth stays live
    const xs = Array.from({ length: 10 }, () => cpuBackend.alloc("f32", N));
    for (const x of xs) cpuBackend.free(x);
    const bound = Math.max(cpuBackend.poolFloorBytes, cpuBackend.counters.bytesInUse);
    assert.ok(cpuBackend.pooledBytes <= bound, `${cpuBackend.pooledBytes} > ${bound}`);
    assert.ok(cpuBackend.pooledBytes >= 2 * N * 4, "it still pools up to the bound");
    cpuBackend.trim();
    assert.equal(cpuBackend.pooledBytes, 0);
    cpuBackend.free(live);
  } finally {
    cpuBackend.poolFloorBytes = floor;
  }
});
