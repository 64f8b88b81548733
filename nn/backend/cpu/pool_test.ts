import assert from "node:assert/strict";
import { cpuArray, cpuBackend } from "./mod.ts";
import { add, tensor, zeros } from "../../../mod.ts";

const N = 1 << 15; // 128 KiB of f32: pooled

Deno.test("the CPU pool reuses a freed array of the same dtype and length, zeroed", () => {
  const c = cpuBackend.counters;
  const a = cpuBackend.alloc("f32", N);
  const arr = cpuArray(a);
  arr.fill(7);
  cpuBackend.free(a);
  const hits = c.poolHits, allocated = c.bytesAllocated;
  const b = cpuBackend.alloc("f32", N);
  assert.equal(cpuArray(b), arr, "the same array comes back");
  assert.equal(c.poolHits, hits + 1);
  assert.equal(c.bytesAllocated, allocated, "nothing newly allocated");
  assert.ok(cpuArray(b).every((x) => x === 0), "a reused array is zeroed");
  const other = cpuBackend.alloc("i32", N); // another dtype: not served from the f32 list
  assert.notEqual(cpuArray(other).buffer, arr.buffer);
  cpuBackend.free(b);
  cpuBackend.free(other);
});

Deno.test("the CPU pool never reuses an adopted array, nor small ones", () => {
  const mine = new Float32Array(N).fill(3);
  const s = cpuBackend.adopt(mine);
  cpuBackend.free(s);
  const t = cpuBackend.alloc("f32", N);
  assert.notEqual(cpuArray(t), mine);
  assert.ok(mine.every((x) => x === 3), "the caller's array is untouched");
  cpuBackend.free(t);
  const small = cpuBackend.alloc("f32", 16);
  const sa = cpuArray(small);
  cpuBackend.free(small);
  const small2 = cpuBackend.alloc("f32", 16);
  assert.notEqual(cpuArray(small2), sa);
  cpuBackend.free(small2);
});

Deno.test("the CPU pool empties itself rather than grow past its limit", () => {
  const limit = cpuBackend.poolLimitBytes;
  cpuBackend.poolLimitBytes = 3 * (N + 4) * 4; // room for three
  cpuBackend.emptyPool();
  try {
    const xs = [0, 1, 2, 3].map(() => cpuBackend.alloc("f32", N + 4));
    const arrs = xs.map(cpuArray);
    for (const x of xs.slice(0, 3)) cpuBackend.free(x);
    assert.equal(cpuBackend.pooledBytes, 3 * (N + 4) * 4);
    cpuBackend.free(xs[3]); // would pass the limit: the pool is emptied instead
    assert.equal(cpuBackend.pooledBytes, 0);
    const y = cpuBackend.alloc("f32", N + 4);
    assert.ok(!arrs.includes(cpuArray(y)));
    cpuBackend.free(y);
  } finally {
    cpuBackend.poolLimitBytes = limit;
  }
});

Deno.test("ops on pooled outputs compute the same values step after step", async () => {
  const x = zeros([N]);
  const one = tensor([1]);
  for (let i = 0; i < 3; i++) {
    const y = add(x, one); // its output array is recycled from the previous iteration
    const v = await y.data();
    assert.ok(v.every((e) => e === 1));
    y.dispose();
  }
  x.dispose();
  one.dispose();
});
