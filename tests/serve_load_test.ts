// Bounded load test on a real server (random loopback port): 32 concurrent streaming clients with
// fixed seeds, different prompts, lengths and sampling settings, more than the batch holds (so
// requests queue, join and leave the running batch continuously). Every stream must end with
// `data: [DONE]` and equal, delta for delta, the same request run alone.
import assert from "node:assert/strict";
import { startServer } from "../serve.ts";
import { sseData, tinyApp } from "./_serve.ts";

const CLIENTS = 32;

function request(i: number): Record<string, unknown> {
  const prompts = [
    "你好",
    "写一首关于春天的诗",
    "What is 2 + 2?",
    "床前明月光，疑是地上霜。",
    "Tell me a story",
  ];
  return {
    model: "minimind",
    messages: [{ role: "user", content: prompts[i % prompts.length] + " #" + i }],
    max_tokens: 8 + (i * 7) % 29,
    seed: 1000 + i,
    temperature: [0.7, 1, 1.2, 0][i % 4],
    top_p: [0.92, 1, 0.8][i % 3],
    top_k: [50, 0, 20][(i >> 1) % 3],
    stream: true,
    stream_options: { include_usage: true },
  };
}

interface Outcome {
  deltas: string[];
  finish: string;
  completionTokens: number;
  done: boolean;
}

async function stream(url: string, body: Record<string, unknown>): Promise<Outcome> {
  const res = await fetch(`${url}/v1/chat/completions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  assert.equal(res.status, 200);
  const data = sseData(await res.text());
  const done = data.at(-1) === "[DONE]";
  const chunks = data.filter((d) => d !== "[DONE]").map((d) => JSON.parse(d));
  const deltas: string[] = [];
  let finish = "", completionTokens = -1;
  for (const c of chunks) {
    if (c.usage) completionTokens = c.usage.completion_tokens;
    const ch = c.choices[0];
    if (!ch) continue;
    if (ch.delta.content) deltas.push(ch.delta.content);
    if (ch.finish_reason) finish = ch.finish_reason;
  }
  return { deltas, finish, completionTokens, done };
}

Deno.test("load: 32 concurrent seeded streams all finish with [DONE] and equal their sequential runs", async () => {
  const app = await tinyApp({ scheduler: { maxBatch: 12, maxQueue: 64 } });
  const server = startServer(app, { port: 0 });
  try {
    const t0 = performance.now();
    const together = await Promise.all(
      Array.from({ length: CLIENTS }, (_, i) => stream(server.url, request(i))),
    );
    const tConc = performance.now() - t0;
    const stats = app.stats();
    assert.equal(stats.maxBatchSeen, 12, "the batch filled up");
    const t1 = performance.now();
    const alone: Outcome[] = [];
    for (let i = 0; i < CLIENTS; i++) alone.push(await stream(server.url, request(i)));
    const tSeq = performance.now() - t1;
    for (let i = 0; i < CLIENTS; i++) {
      assert.ok(together[i].done, `stream ${i} ends with [DONE]`);
      assert.ok(together[i].finish === "length" || together[i].finish === "stop", `stream ${i}`);
      assert.ok(together[i].completionTokens > 0);
      assert.deepEqual(together[i], alone[i], `stream ${i} equals its sequential run`);
    }
    console.log(
      `load: ${CLIENTS} streams concurrently in ${tConc.toFixed(0)} ms, one at a time in ${
        tSeq.toFixed(0)
      } ms; ${stats.steps} decode steps, largest batch ${stats.maxBatchSeen}`,
    );
  } finally {
    await server.shutdown();
  }
});
