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
