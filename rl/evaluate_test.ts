import assert from "node:assert/strict";
import { init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";
import { scope } from "../nn/scope.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { composePrompt } from "../train/scores.ts";
import type { FormPrompt } from "../train/scores.ts";
import { POEM_FORMS } from "../data/corpus/poetry.ts";
import { fixture } from "../tests/_util.ts";
import { evaluatePoetry } from "./evaluate.ts";
import { k3Kl, sequenceMean } from "./losses.ts";
import { policyLogProbs, rollout, rolloutTensors } from "./rollout.ts";

const tok = await Tokenizer.fromFile(fixture("minimind/minimind2"));
const cfg = config("minimind2-small", {
  hiddenSize: 32,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: tok.vocabSize,
});
const model = { cfg, params: init(cfg, key(3)), tokenizer: tok };
const PROMPTS: FormPrompt[] = ["春曉", "秋夜", "山居"].map((title, i) => ({
  title,
  form: POEM_FORMS[i],
}));

Deno.test("evaluatePoetry()'s KL over a group wider than its forward chunks is the group's mean", async () => {
  // 3 titles × 8 samples = 24 rows in one rollout group: the reference runs 16 rows, then 8
  const ref = init(cfg, key(4));
  const opts = { samples: 8, batchSize: 24, maxNewTokens: 6 };
  const got = await evaluatePoetry(model, PROMPTS, { ...opts, ref });
  assert.equal(got.count, 24);
  // the same draws (seed 0 for the first group), and the KL of the whole group in one forward
  const ids = PROMPTS.flatMap((p) =>
    Array.from({ length: 8 }, () =>
      tok.encode(
        tok.applyChatTemplate([{ role: "user", content: composePrompt(p) }], {
          addGenerationPrompt: true,
        }),
      ))
  );
  const r = await rollout(model, ids, {
    maxNewTokens: 6,
    temperature: 0.8,
    topP: 0.85,
    topK: 50,
    seed: 0,
  });
  const t = scope(() => {
    const x = rolloutTensors(r);
    return sequenceMean(k3Kl(x.oldLogp, policyLogProbs(cfg, ref, x).logp), x.mask);
  });
  const want = await t.item();
  t.dispose();
  assert.ok(want > 0, `a different reference has a KL: ${want}`);
  assert.ok(Math.abs(got.kl - want) <= 1e-6 * want, `chunked ${got.kl}, whole group ${want}`);
  // against itself the policy's KL is zero (to the float rounding of decode vs forward)
  const self = await evaluatePoetry(model, PROMPTS, { ...opts, ref: model.params });
  assert.ok(Math.abs(self.kl) < 1e-5, `KL to itself ${self.kl}`);
});
