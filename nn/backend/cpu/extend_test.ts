import assert from "node:assert/strict";
import { cpuArray, cpuBackend } from "./mod.ts";
import { concat, config, init, random, type Tensor, tensor } from "../../../mod.ts";
import { apply } from "../../apply.ts";
import { adamwOp } from "../../ops/adamw.ts";
import { decodeStep } from "../../model/generate.ts";
import {
  cacheLength,
  cacheRows,
  concatCacheRows,
  disposeCache,
  dropCacheSteps,
  type KvCache,
  selectCacheRows,
} from "../../model/layers/kv_cache.ts";

/** f32 values per time step: 16 KiB, so a cache of a few steps is large enough to extend. */
const ROW = 4096;

/** Time steps [t0, t0 + n) of a batch-1 cache: element j of step t is t·ROW + j (exact in f32). */
function steps(t0: number, n: number): Tensor {
  return tensor(Float32Array.from({ length: n * ROW }, (_, i) => t0 * ROW + i), [1, n, ROW]);
}

/** Asserts that x holds steps [0, its length) as `steps` makes them. */
function assertSteps(x: Tensor, what: string): void {
  const d = x.dataSync();
  for (let i = 0; i < d.length; i++) {
    if (d[i] !== i) assert.fail(`${what}: element ${i} is ${d[i]}, expected ${i}`);
  }
}

/** Whether b's array begins where a's does (b extends a in place). */
function extendsInPlace(a: Tensor, b: Tensor): boolean {
  const x = cpuArray(a.storage), y = cpuArray(b.storage);
  return x.buffer === y.buffer && x.byteOffset === y.byteOffset;
}

for (const shared of [false, true]) {
  const arrays = shared ? "shared arrays" : "plain arrays";

  Deno.test(`appends at batch 1 extend the array in place and leave every earlier value (${arrays})`, () => {
    cpuBackend.sharedArrays = shared;
    const before = cpuBackend.counters.bytesInUse;
    const versions = [steps(0, 16)];
    let inPlace = 0;
    const appended: Tensor[] = [];
    for (let t = 16; t < 80; t++) {
      const prev = versions[versions.length - 1];
      appended.push(steps(t, 1));
      const next = concat([prev, appended[appended.length - 1]], 1); // (1, t + 1, ROW)
      if (extendsInPlace(prev, next)) inPlace++;
      versions.push(next);
    }
    // 64 appends: new arrays only when the room runs out (half as much again each time)
    assert.ok(inPlace >= 60, `${inPlace} of 64 appends were in place`);
    versions.forEach((v, i) => assertSteps(v, `version ${i}`));
    for (const v of [...versions, ...appended]) v.dispose();
    assert.equal(cpuBackend.counters.bytesInUse, before, "every storage freed");
  });

  Deno.test(`two appends to one prefix: the second gets its own array (${arrays})`, () => {
    cpuBackend.sharedArrays = shared;
    const p0 = steps(0, 16);
    const p = concat([p0, steps(16, 1)], 1); // a new array with room
    const a = concat([p, steps(17, 1)], 1);
    assert.ok(extendsInPlace(p, a), "the first append is in place");
    const other = tensor(new Float32Array(ROW).fill(-1), [1, 1, ROW]);
    const b = concat([p, other], 1); // the room after p is a's now
    assert.ok(!extendsInPlace(p, b), "the second append copies");
    assertSteps(a, "a");
    assertSteps(p, "the prefix");
    const bd = b.dataSync();
    assert.ok(bd.subarray(0, 17 * ROW).every((x, i) => x === i), "b's prefix");
    assert.ok(bd.subarray(17 * ROW).every((x) => x === -1), "b's own step");
    // a keeps growing in place; p and b are untouched by it
    const a2 = concat([a, steps(18, 1)], 1);
    assert.ok(extendsInPlace(a, a2));
    assertSteps(a2, "a2");
    assertSteps(p, "the prefix after a2");
    for (const x of [p0, p, a, other, b, a2]) x.dispose();
  });

  Deno.test(`an extended array outlives the storages freed before it, whatever their order (${arrays})`, () => {
    cpuBackend.sharedArrays = shared;
    const before = cpuBackend.counters.bytesInUse;
    const free0 = cpuBackend.sharedBytes.free;
    const p0 = steps(0, 16), s16 = steps(16, 1), s17 = steps(17, 1);
    const p = concat([p0, s16], 1);
    const a = concat([p, s17], 1);
    const full = cpuArray(a.storage).buffer;
    // a plain array's length, made a size the pool keeps (freed, then wanted again)
    const fullLength = full.byteLength / 4;
    if (!shared) {
      for (let i = 0; i < 2; i++) cpuBackend.free(cpuBackend.alloc("f32", fullLength));
    }
    for (const x of [p0, s16, s17]) x.dispose();
    p.dispose(); // a still views the array
    // the backend hands out arrays of its length and of every nearby size: none may be a's
    const taken = [cpuBackend.alloc("f32", fullLength)];
    for (let n = 16; n <= 40; n++) taken.push(cpuBackend.alloc("f32", n * ROW));
    for (const x of taken) {
      assert.notEqual(cpuArray(x).buffer, full, `an array of ${cpuArray(x).length}`);
      cpuArray(x).fill(NaN);
    }
    for (const x of taken) cpuBackend.free(x);
    assertSteps(a, "a after its prefix was freed");
    a.dispose();
    assert.equal(cpuBackend.counters.bytesInUse, before, "every storage freed");
    if (shared) {
      assert.ok(cpuBackend.sharedBytes.free > free0, "the shared buffer is free again");
    }
  });

  Deno.test(`an in-place op never writes into an extended array (${arrays})`, () => {
    cpuBackend.sharedArrays = shared;
    const p0 = steps(0, 16);
    const p = concat([p0, steps(16, 1)], 1);
    const a = concat([p, steps(17, 1)], 1); // shares p's array
    const n = a.size;
    const g = tensor(new Float32Array(n).fill(1), [1, 18, ROW]);
    const m = tensor(new Float32Array(n), [1, 18, ROW]);
    const v = tensor(new Float32Array(n), [1, 18, ROW]);
    const prm = {
      lr: 0.5,
      beta1: 0.9,
      beta2: 0.999,
      eps: 1e-8,
      weightDecay: 0,
      step: 1,
      inPlace: true,
    };
    const [p1] = apply(adamwOp, [a, g, m, v], prm);
    assert.notEqual(cpuArray(p1.storage), cpuArray(a.storage), "a new array, not a's");
    assertSteps(a, "a");
    assertSteps(p, "its prefix");
    assert.equal(p1.dataSync()[5], 5 - 0.5, "the update itself");
    for (const x of [p0, p, a, g, m, v, p1]) x.dispose();
  });
}

// 4 KV heads × 64: 1 KiB a step, row and layer, so caches pass 64 KiB and are extended
const cfg = config("minimind2-small", {
  hiddenSize: 256,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 4,
  intermediateSize: 512,
  vocabSize: 300,
});
const model = { cfg, params: init(cfg, random.key(3)) };

Deno.test("decoding with appends in place gives the same logits as copying the cache, at batch 1 and 3", () => {
  const run = (b: number, inPlace: boolean): Float32Array[] => {
    cpuBackend.extendInPlace = inPlace;
    const state: { cache: KvCache | null } = { cache: null };
    const out: Float32Array[] = [];
    let inPlaceSteps = 0;
    try {
      const prompt = Int32Array.from({ length: b * 70 }, (_, i) => (i * 7) % 300);
      out.push(decodeStep(model, state, tensor(prompt, [b, 70], "i32")).dataSync() as Float32Array);
      for (let i = 0; i < 40; i++) {
        const before = cpuArray(state.cache!.layers[0].k.storage).buffer;
        const ids = Int32Array.from({ length: b }, (_, r) => (i * 13 + r) % 300);
        out.push(decodeStep(model, state, tensor(ids, [b, 1], "i32")).dataSync() as Float32Array);
        // the old cache is disposed, but its array lives on in the new one when extended
        if (cpuArray(state.cache!.layers[0].k.storage).buffer === before) {
          inPlaceSteps++;
        }
      }
      assert.equal(cacheLength(state.cache), 110);
      assert.equal(cacheRows(state.cache), b);
      if (inPlace) assert.ok(inPlaceSteps >= 30, `${inPlaceSteps} of 40 steps appended in place`);
      else assert.equal(inPlaceSteps, 0);
      return out;
    } finally {
      disposeCache(state.cache);
      cpuBackend.extendInPlace = true;
    }
  };
  for (const b of [1, 3]) {
    const copied = run(b, false), extended = run(b, true);
    copied.forEach((x, i) => assert.deepEqual(extended[i], x, `batch ${b}: logits of step ${i}`));
  }
});

Deno.test("continuous batching on extended caches (join, decode, drop a row, trim) gives the logits of copied ones", () => {
  const ids = (n: number, seed: number) =>
    tensor(Int32Array.from({ length: n }, (_, i) => (i * 11 + seed) % 300), [1, n], "i32");
  const step = (state: { cache: KvCache | null }, rows: number[], at: number[]) =>
    decodeStep(model, state, tensor(Int32Array.from(rows), [rows.length, 1], "i32"), {
      positions: tensor(Int32Array.from(at), [rows.length, 1], "i32"),
    }).dataSync() as Float32Array;
  const run = (inPlace: boolean): Float32Array[] => {
    cpuBackend.extendInPlace = inPlace;
    const out: Float32Array[] = [];
    const a = { cache: null as KvCache | null }, b = { cache: null as KvCache | null };
    const joined = { cache: null as KvCache | null };
    try {
      // two requests prefilled and decoded alone (batch 1), then joined: b's rows left-padded
      out.push(decodeStep(model, a, ids(80, 1)).dataSync() as Float32Array);
      out.push(decodeStep(model, b, ids(66, 2)).dataSync() as Float32Array);
      for (let i = 0; i < 6; i++) out.push(step(a, [i + 5], [80 + i]), step(b, [i + 9], [66 + i]));
      joined.cache = concatCacheRows([a.cache!, b.cache!]); // (86, 2, …)
      for (let i = 0; i < 12; i++) out.push(step(joined, [i + 20, i + 40], [86 + i, 72 + i]));
      // a finished: keep b, whose first 14 steps are padding, then trim them
      const kept = selectCacheRows(joined.cache, [1]);
      disposeCache(joined.cache);
      joined.cache = dropCacheSteps(kept, 14);
      disposeCache(kept);
      assert.equal(cacheLength(joined.cache), 84);
      for (let i = 0; i < 12; i++) out.push(step(joined, [i + 60], [84 + i]));
      return out;
    } finally {
      for (const c of [a, b, joined]) disposeCache(c.cache);
      cpuBackend.extendInPlace = true;
    }
  };
  const copied = run(false), extended = run(true);
  assert.equal(extended.length, copied.length);
  copied.forEach((x, i) => assert.deepEqual(extended[i], x, `logits ${i}`));
});
