// Serving on the WebGPU backend (the software adapter in CI): the batched engine and the GPU
// sampling op give the same seeded replies as the CPU backend.
import assert from "node:assert/strict";
import { defaultBackend, useBackend } from "../nn/backend/select.ts";
import { init } from "../nn/model/minimind.ts";
import { key } from "../nn/random.ts";
import { createApp } from "../serve/mod.ts";
import { openWebGpuForTests } from "./_webgpu.ts";
import { postJson, TINY_CFG, tokenizer } from "./_serve.ts";

async function replies(): Promise<string[]> {
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
    return out;
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
    assert.deepEqual(await replies(), cpu);
  } finally {
    useBackend(prev);
  }
});
