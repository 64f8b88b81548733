import assert from "node:assert/strict";
import { init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import { generate } from "../nn/model/generate.ts";
import type { GenerationPiece } from "../nn/model/generate.ts";
import { key } from "../nn/random.ts";
import { scope } from "../nn/scope.ts";
import { policyLogProbs, rollout, rolloutTensors } from "./rollout.ts";

const cfg = config("minimind2-small", {
  hiddenSize: 32,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: 64,
});
const model = { cfg, params: init(cfg, key(3)) };
const PROMPTS = [[5, 9, 12, 7], [3], [8, 8]];

Deno.test("rollout: the generator's tokens, MiniMind's layout, old log-probs = a full forward", async () => {
  const opts = { maxNewTokens: 6, seed: 11, temperature: 0.8, topP: 0.85, topK: 50, eos: 63 };
  const first = await rollout(model, PROMPTS, opts);
  // stop row 0 at its 3rd token: same seed, that token as eos
  const eos = first.response[2];
  const r = await rollout(model, PROMPTS, { ...opts, eos });
  // the same tokens as generate() with the same sampler settings
  const want: number[][] = PROMPTS.map(() => []);
  for await (
    const p of generate(model, PROMPTS, { ...opts, eos }) as AsyncGenerator<GenerationPiece>
  ) {
    if (p.token >= 0) want[p.index].push(p.token);
  }
  assert.deepEqual(r.lengths, want.map((w) => w.length));
  assert.equal(r.lengths[0], want[0].indexOf(eos) + 1); // eos included
  const P = 4, R = r.responseWidth, W = P + R;
  assert.equal(r.promptWidth, P);
  assert.equal(R, Math.max(...r.lengths));
  for (let i = 0; i < 3; i++) {
    assert.deepEqual([...r.response.subarray(i * R, i * R + r.lengths[i])], want[i]);
    const m = [...r.mask.subarray(i * R, (i + 1) * R)];
    assert.deepEqual(m, m.map((_, j) => (j < r.lengths[i] ? 1 : 0)));
    const p = PROMPTS[i];
    assert.deepEqual([...r.ids.subarray(i * W + P - p.length, i * W + P)], p);
    assert.deepEqual(
      [...r.attention.subarray(i * W, (i + 1) * W)],
      [...Array(P - p.length).fill(0), ...Array(p.length + R).fill(1)],
    );
  }
  // log-probs from the decode's cache path = one forward over prompt + response
  const lp = await scope(() => policyLogProbs(cfg, model.params, rolloutTensors(r)).logp).data();
  for (let i = 0; i < r.rows * R; i++) {
    assert.ok(Number.isFinite(lp[i]), `log-prob ${i} is ${lp[i]}`);
    if (r.mask[i]) {
      assert.ok(Math.abs(lp[i] - r.oldLogp[i]) < 2e-5, `[${i}] ${lp[i]} vs ${r.oldLogp[i]}`);
    }
  }
  // a minibatch of rows
  const sub = rolloutTensors(r, [2, 0]);
  assert.deepEqual(sub.response.shape, [2, R]);
  assert.deepEqual([...(await sub.response.data()).subarray(R, R + 3)], [
    ...r.response.subarray(0, 3),
  ]);
});

Deno.test("rollout: old log-probs across several log-prob batches (40 tokens, a row ending at 21) = a full forward", async () => {
  const opts = { maxNewTokens: 40, seed: 5, temperature: 1, topP: 1, topK: 0, eos: -1 };
  const first = await rollout(model, PROMPTS, opts);
  const eos = first.response[20]; // row 0 stops at its 21st token: past the first batch of 16
  const r = await rollout(model, PROMPTS, { ...opts, eos });
  assert.equal(r.lengths[0], [...first.response.subarray(0, 40)].indexOf(eos) + 1);
  assert.ok(r.lengths[0] > 16 && r.responseWidth > 32, `lengths ${r.lengths}`);
  const R = r.responseWidth;
  const lp = await scope(() => policyLogProbs(cfg, model.params, rolloutTensors(r)).logp).data();
  for (let i = 0; i < r.rows * R; i++) {
    if (r.mask[i]) {
      assert.ok(Math.abs(lp[i] - r.oldLogp[i]) < 2e-5, `[${i}] ${lp[i]} vs ${r.oldLogp[i]}`);
    }
  }
});
