import assert from "node:assert/strict";
import { tensor } from "../nn/creation.ts";
import { type SampleRow, sampleRows, stepLogprobs } from "./sampling.ts";
import type { SamplingSettings } from "./validate.ts";

const GREEDY: SamplingSettings = {
  temperature: 0,
  topP: 1,
  topK: 0,
  repetitionPenalty: 1,
  presencePenalty: 0,
  frequencyPenalty: 0,
};

Deno.test("sampleRows: OpenAI's presence and frequency penalties, per row within one group", async () => {
  const row = [0, 1, 3, 2.5];
  const logits = tensor(new Float32Array([...row, ...row, ...row, ...row]), [4, 4]);
  const r = (s: Partial<SamplingSettings>, counts: [number, number][]): SampleRow => ({
    sampling: { ...GREEDY, ...s },
    u: 0.5,
    counts: new Map(counts),
  });
  const got = await sampleRows(logits, [
    r({}, [[2, 5]]), // no penalty: the counts are not read
    r({ frequencyPenalty: 0.3 }, [[2, 1]]), // 3 − 0.3 = 2.7 > 2.5
    r({ frequencyPenalty: 0.3 }, [[2, 2]]), // 3 − 0.6 = 2.4 < 2.5
    r({ presencePenalty: 0.6, frequencyPenalty: 0.1 }, [[2, 1], [3, 3]]), // 2.3 vs 2.5 − 0.9
  ]);
  assert.deepEqual([...got.ids], [2, 2, 3, 2]);
  assert.deepEqual(got.logprobs, [null, null, null, null]);
  // log-probs are of the raw logits, before the penalty
  const lp = await sampleRows(logits, [
    { ...r({ frequencyPenalty: 2 }, [[2, 1]]), logprobs: 2 },
    r({}, []),
    r({}, []),
    { ...r({}, []), logprobs: 0 },
  ]);
  assert.equal(lp.ids[0], 3);
  const lse = Math.log(row.reduce((s, x) => s + Math.exp(x), 0));
  assert.ok(Math.abs(lp.logprobs[0]!.logprob - (2.5 - lse)) < 1e-6);
  assert.deepEqual(lp.logprobs[0]!.top.map((t) => t.id), [2, 3]);
  assert.equal(lp.logprobs[1], null);
  assert.deepEqual(lp.logprobs[3]!.top, []);
  logits.dispose();
});

Deno.test("stepLogprobs: log-softmax in f64, top list sorted with ties by id, NaN never ranks", () => {
  const row = [1, NaN, 5, 5, -Infinity, 2];
  const s = stepLogprobs(Float64Array.from(row.map((x) => (Number.isNaN(x) ? 0 : x))), 0, 3);
  const lse = Math.log(Math.exp(1) + 1 + 2 * Math.exp(5) + Math.exp(2));
  assert.ok(Math.abs(s.logprob - (1 - lse)) < 1e-12);
  assert.deepEqual(s.top.map((t) => t.id), [2, 3, 5]);
  const n = stepLogprobs([NaN, 1, 0], 1, 3);
  assert.deepEqual(n.top.map((t) => t.id), [1, 2]);
  assert.deepEqual(stepLogprobs([0, 1], 0, 0).top, []);
});
