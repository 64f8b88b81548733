// Serving on the WebGPU backend (the software adapter in CI): the batched engine and the GPU
// sampling op give the same seeded replies as the CPU backend — batched, from the prefix cache, in
// JSON mode (the mask as an addend on the device), with n = 2 and with log-probs.
import assert from "node:assert/strict";
import { defaultBackend, useBackend } from "../nn/backend/select.ts";
import { init } from "../nn/model/minimind.ts";
import { key } from "../nn/random.ts";
import { createApp } from "../serve/mod.ts";
import { openWebGpuForTests } from "./_webgpu.ts";
import { postJson, TINY_CFG, tokenizer } from "./_serve.ts";

async function replies(): Promise<{ texts: string[]; logprobs: number[] }> {
  const app = createApp({
    model: { cfg: TINY_CFG, params: init(TINY_CFG, key(7)) },
    tokenizer: await tokenizer(),
  });
  try {
    const ask = async (seed: number) => {
      const r = await postJson(app, "/v1/chat/completions", {
        messages: [{ role: "user", content: "你好" }],
        max_tokens: 10 + seed,
        seed,
        temperature: 1,
        top_p: 0.9,
      });
      assert.equal(r.status, 200);
      return (await r.json()).choices[0].message.content as string;
    };
    const out = await Promise.all([1, 2, 3].map(ask));
    assert.equal(app.stats().maxBatchSeen, 3);
    // then: the same prompt again (the prefix cache), JSON mode, n = 2, log-probs
    const chat = async (body: Record<string, unknown>) => {
      const r = await postJson(app, "/v1/chat/completions", {
        messages: [{ role: "user", content: "你好" }],
        max_tokens: 12,
        temperature: 1,
        ...body,
      });
      assert.equal(r.status, 200, await r.clone().text());
      return await r.json();
    };
    const again = await chat({ max_tokens: 11, seed: 1, top_p: 0.9 });
    assert.ok(again.usage.prompt_tokens_details.cached_tokens > 0);
    out.push(again.choices[0].message.content);
    const json = await chat({ seed: 4, response_format: { type: "json_object" } });
    const two = await chat({ seed: 5, n: 2 });
    const lp = await chat({ seed: 6, logprobs: true, top_logprobs: 2 });
    out.push(
      json.choices[0].message.content,
      ...two.choices.map((c: { message: { content: string } }) => c.message.content),
      lp.choices[0].message.content,
    );
    const logprobs = lp.choices[0].logprobs.content.flatMap((
      e: { logprob: number; top_logprobs: { logprob: number }[] },
    ) => [e.logprob, ...e.top_logprobs.map((t) => t.logprob)]);
    return { texts: out, logprobs };
  } finally {
    await app.close();
  }
}

Deno.test("serve on WebGPU: batched seeded replies equal the CPU backend's", async () => {
  const cpu = await replies();
  const gpu = await openWebGpuForTests();
  const prev = defaultBackend();
  useBackend(gpu);
  try {
    const got = await replies();
    assert.deepEqual(got.texts, cpu.texts);
    assert.equal(got.logprobs.length, cpu.logprobs.length);
    got.logprobs.forEach((v, i) => assert.ok(Math.abs(v - cpu.logprobs[i]) < 1e-4, `logprob ${i}`));
  } finally {
    useBackend(prev);
  }
});
