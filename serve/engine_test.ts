import assert from "node:assert/strict";
import { MiniMindEngine } from "./engine.ts";
import { forward } from "../nn/model/minimind.ts";
import { tensor } from "../nn/creation.ts";
import { scope } from "../nn/scope.ts";
import { assertClose } from "../tests/_util.ts";
import { tinyModel } from "../tests/_serve.ts";

/** Logits of the last position of `ids` from a fresh full forward (no cache). */
function reference(ids: number[]): Float32Array {
  const { cfg, params } = tinyModel();
  return scope(() => {
    const out = forward(cfg, params, tensor(Int32Array.from(ids), [1, ids.length], "i32"), {
      logitsToKeep: 1,
    });
    return out.logits.dataSync() as Float32Array;
  });
}

Deno.test("MiniMindEngine: rows of different lengths joining and leaving decode as if alone", () => {
  const e = new MiniMindEngine(tinyModel(), { trimAt: 2 });
  const V = e.vocabSize;
  const seqs = [[1, 5, 9, 17], [1, 33, 2, 8, 100, 7, 9], [1, 2]];
  const rows = seqs.map((s) => {
    const r = e.prefill(s);
    assertClose(r.logits.dataSync(), reference(s), { atol: 1e-5, label: "prefill" });
    r.logits.dispose();
    return r.row;
  });
  // step 1: all three together; step 2: the middle one leaves; step 3: a new one joins
  const feed = (live: number[], tok: number[]) => {
    const lg = e.decode(live.map((i) => rows[i]), tok);
    const all = lg.dataSync();
    live.forEach((i, j) => {
      seqs[i].push(tok[j]);
      assertClose(all.subarray(j * V, (j + 1) * V), reference(seqs[i]), {
        atol: 1e-5,
        label: `row ${i} at length ${seqs[i].length}`,
      });
    });
    lg.dispose();
  };
  feed([0, 1, 2], [40, 41, 42]);
  e.release(rows[1]);
  feed([0, 2], [43, 44]);
  assert.equal(e.batchShape.rows, 2);
  seqs.push([1, 60, 61, 62, 63, 64, 65, 66, 67, 68]);
  const r3 = e.prefill(seqs[3]);
  r3.logits.dispose();
  rows.push(r3.row);
  feed([0, 2, 3], [45, 46, 47]);
  feed([0, 2, 3], [48, 49, 50]);
  e.release(rows[0]);
  feed([2, 3], [51, 52]);
  // the rows left are 5 and 13 tokens long: unused leading columns were trimmed
  assert.deepEqual(e.batchShape, { rows: 2, length: 13 });
  e.dispose();
});

Deno.test("MiniMindEngine prefix cache: a prompt that extends a finished row prefills only the rest", () => {
  const e = new MiniMindEngine(tinyModel(), { prefixMinTokens: 4 });
  const ids = (n: number, from = 1) => Array.from({ length: n }, (_, i) => from + i * 7);
  // row A: prefilled, joins the batch, decodes 3 tokens, finishes
  const a = e.prefill(ids(10));
  assert.equal(a.cached, 0);
  a.logits.dispose();
  const other = e.prefill(ids(6, 500)); // a second row, so A lives in a shared, padded batch
  other.logits.dispose();
  const fed = [900, 901, 902];
  for (const t of fed) e.decode([a.row, other.row], [t, 5]).dispose();
  e.release(a.row);
  assert.deepEqual(
    { entries: e.prefixStats.entries, hits: e.prefixStats.hits },
    { entries: 1, hits: 0 },
  );
  // B starts with A's 13 tokens: it reuses them (the entry, used whole, is handed over)
  const bIds = [...ids(10), ...fed, 77, 78];
  const b = e.prefill(bIds);
  assert.equal(b.cached, 13);
  assertClose(b.logits.dataSync(), reference(bIds), { atol: 1e-5, label: "extends a row" });
  b.logits.dispose();
  assert.equal(e.prefixStats.entries, 0);
  // and it decodes on as if prefilled whole
  const step = e.decode([b.row], [79]);
  assertClose(step.dataSync(), reference([...bIds, 79]), { atol: 1e-5, label: "decode after" });
  step.dispose();
  e.release(b.row);
  // C shares only the first 11 of B's 16 tokens: a copy of those steps; B's entry stays
  const cIds = [...bIds.slice(0, 11), 300, 301];
  const c = e.prefill(cIds);
  assert.equal(c.cached, 11);
  assertClose(c.logits.dataSync(), reference(cIds), { atol: 1e-5, label: "shares a prefix" });
  c.logits.dispose();
  e.release(c.row);
  assert.equal(e.prefixStats.entries, 2);
  // the same prompt again reuses all but its last token
  const again = e.prefill(cIds);
  assert.equal(again.cached, cIds.length - 1);
  again.logits.dispose();
  e.release(again.row);
  assert.deepEqual(e.prefixStats.hits, 3);
  e.release(other.row);
  e.dispose();
});

Deno.test("MiniMindEngine prefix cache: the byte budget evicts the least recently used; 0 turns it off", () => {
  const one = new MiniMindEngine(tinyModel(), { prefixMinTokens: 4 });
  const r = one.prefill(Array.from({ length: 20 }, (_, i) => i + 1));
  r.logits.dispose();
  one.release(r.row);
  const rowBytes = one.prefixStats.bytes; // 20 steps × 2 layers × K and V
  assert.ok(rowBytes > 0);
  one.dispose();
  // room for two rows of 20 tokens
  const e = new MiniMindEngine(tinyModel(), { prefixMinTokens: 4, prefixCacheBytes: 2 * rowBytes });
  const run = (first: number) => {
    const x = e.prefill(Array.from({ length: 20 }, (_, i) => first + i));
    x.logits.dispose();
    e.release(x.row);
    return x.cached;
  };
  run(100);
  run(200);
  run(300); // evicts 100's row
  assert.deepEqual([e.prefixStats.entries, e.prefixStats.bytes], [2, 2 * rowBytes]);
  assert.equal(run(100), 0);
  assert.equal(run(300), 19);
  e.dispose();
  const off = new MiniMindEngine(tinyModel(), { prefixCacheBytes: 0 });
  for (let i = 0; i < 2; i++) {
    const x = off.prefill(Array.from({ length: 30 }, (_, j) => j + 1));
    assert.equal(x.cached, 0);
    x.logits.dispose();
    off.release(x.row);
  }
  assert.equal(off.prefixStats.entries, 0);
  off.dispose();
});
