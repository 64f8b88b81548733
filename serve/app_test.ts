import assert from "node:assert/strict";
import { postJson, sseData, tinyApp, tinyModel, tokenizer } from "../tests/_serve.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { createApp } from "./app.ts";
import { cpuBackend } from "../nn/backend/cpu/mod.ts";

const HELLO = [{ role: "user", content: "你好" }];

async function chat(app: Awaited<ReturnType<typeof tinyApp>>, body: Record<string, unknown>) {
  const res = await postJson(app, "/v1/chat/completions", { messages: HELLO, ...body });
  assert.equal(res.status, 200, await res.clone().text());
  return await res.json();
}

/** Joins the streamed deltas of an SSE chat reply; checks the chunk protocol on the way. */
function joinStream(text: string) {
  const data = sseData(text);
  assert.equal(data.at(-1), "[DONE]");
  const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
  assert.deepEqual(chunks[0].choices[0].delta, { role: "assistant", content: "" });
  let content = "", reasoning = "", finish = null, usage = null;
  for (const c of chunks) {
    assert.equal(c.object, "chat.completion.chunk");
    assert.equal(c.id, chunks[0].id);
    assert.equal(c.model, "minimind");
    if (c.usage) usage = c.usage;
    if (!c.choices.length) continue;
    const ch = c.choices[0];
    content += ch.delta.content ?? "";
    reasoning += ch.delta.reasoning_content ?? "";
    if (ch.finish_reason) {
      assert.equal(finish, null, "one finish_reason");
      finish = ch.finish_reason;
    }
  }
  return { chunks, content, reasoning, finish, usage };
}

Deno.test("serve: /health, /v1/models, unknown routes and methods", async () => {
  const app = await tinyApp();
  try {
    const h = await app.request("/health");
    assert.equal(h.status, 200);
    assert.equal((await h.json()).status, "ok");
    const m = await (await app.request("/v1/models")).json();
    assert.equal(m.object, "list");
    assert.deepEqual(m.data.map((x: { id: string }) => x.id), ["minimind"]);
    assert.equal((await app.request("/v1/models/minimind")).status, 200);
    const nm = await app.request("/v1/models/gpt-4");
    assert.equal(nm.status, 404);
    assert.equal((await nm.json()).error.code, "model_not_found");
    const nf = await app.request("/v1/nothing");
    assert.equal(nf.status, 404);
    const body = await nf.json();
    assert.deepEqual(Object.keys(body.error).sort(), ["code", "message", "param", "type"]);
    assert.equal(body.error.type, "not_found_error");
    const get = await app.request("/v1/chat/completions");
    assert.equal(get.status, 405);
    const page = await app.request("/");
    assert.equal(page.status, 200);
    assert.match(page.headers.get("content-type")!, /text\/html/);
    assert.match(await page.text(), /id="stop"/);
  } finally {
    await app.close();
  }
});

Deno.test("serve: chat JSON reply has the OpenAI shape, usage and finish_reason length", async () => {
  const app = await tinyApp();
  try {
    const r = await chat(app, { max_tokens: 6, seed: 3 });
    assert.equal(r.object, "chat.completion");
    assert.match(r.id, /^chatcmpl-/);
    assert.equal(r.model, "minimind");
    assert.equal(r.choices.length, 1);
    assert.equal(r.choices[0].message.role, "assistant");
    assert.equal(typeof r.choices[0].message.content, "string");
    assert.equal(r.choices[0].finish_reason, "length");
    // the prompt is the template's 18 tokens for [user 你好] (spec §10.8)
    assert.deepEqual(r.usage, {
      prompt_tokens: 18,
      completion_tokens: 6,
      total_tokens: 24,
      prompt_tokens_details: { cached_tokens: 0 },
    });
    // max_completion_tokens wins over max_tokens (llama.cpp's priority)
    const r2 = await chat(app, { max_tokens: 9, max_completion_tokens: 3, seed: 3 });
    assert.equal(r2.usage.completion_tokens, 3);
  } finally {
    await app.close();
  }
});

Deno.test("serve: a seed fixes the reply; streaming and JSON agree; include_usage", async () => {
  const app = await tinyApp();
  try {
    const body = { max_tokens: 12, seed: 42, temperature: 1, top_p: 0.9, top_k: 40 };
    const a = await chat(app, body);
    const b = await chat(app, body);
    assert.equal(a.choices[0].message.content, b.choices[0].message.content);
    // b reused a's prompt from the prefix cache: all but its last token
    assert.equal(a.usage.prompt_tokens_details.cached_tokens, 0);
    assert.equal(b.usage.prompt_tokens_details.cached_tokens, 17);
    const res = await postJson(app, "/v1/chat/completions", {
      messages: HELLO,
      ...body,
      stream: true,
      stream_options: { include_usage: true },
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type")!, /text\/event-stream/);
    const s = joinStream(await res.text());
    assert.equal(s.content, a.choices[0].message.content);
    assert.equal(s.finish, "length");
    assert.deepEqual(s.usage, b.usage);
    // usage chunk: choices [] and the only non-null usage; the others carry usage: null
    const last = s.chunks.at(-1);
    assert.deepEqual(last.choices, []);
    for (const c of s.chunks.slice(0, -1)) assert.equal(c.usage, null);
    // without include_usage there is no usage anywhere
    const plain = joinStream(
      await (await postJson(app, "/v1/chat/completions", {
        messages: HELLO,
        ...body,
        stream: true,
      })).text(),
    );
    assert.equal(plain.usage, null);
    assert.equal(plain.content, s.content);
    // greedy (temperature 0) ignores the seed
    const g1 = await chat(app, { max_tokens: 8, temperature: 0, seed: 1 });
    const g2 = await chat(app, { max_tokens: 8, temperature: 0, seed: 2 });
    assert.equal(g1.choices[0].message.content, g2.choices[0].message.content);
  } finally {
    await app.close();
  }
});

Deno.test("serve: open_thinking streams the reply as reasoning_content", async () => {
  const app = await tinyApp();
  try {
    const body = { max_tokens: 10, seed: 5, chat_template_kwargs: { open_thinking: true } };
    const r = await chat(app, body);
    const msg = r.choices[0].message;
    // a random model never closes the think block: everything it says is reasoning
    assert.ok(msg.reasoning_content.length > 0);
    assert.equal(msg.content, "");
    const s = joinStream(
      await (await postJson(app, "/v1/chat/completions", {
        messages: HELLO,
        ...body,
        stream: true,
      })).text(),
    );
    assert.equal(s.reasoning, msg.reasoning_content);
    assert.equal(s.content, "");
  } finally {
    await app.close();
  }
});

Deno.test("serve: stop sequences cut the reply and finish with stop", async () => {
  const app = await tinyApp();
  try {
    const base = { max_tokens: 24, seed: 11, temperature: 0.9 };
    const full: string = (await chat(app, base)).choices[0].message.content;
    assert.ok(full.length > 6, full);
    const stop = full.slice(4, 6);
    const cut = full.slice(0, full.indexOf(stop));
    const r = await chat(app, { ...base, stop });
    assert.equal(r.choices[0].message.content, cut);
    assert.equal(r.choices[0].finish_reason, "stop");
    assert.ok(r.usage.completion_tokens < 24);
    const s = joinStream(
      await (await postJson(app, "/v1/chat/completions", {
        messages: HELLO,
        ...base,
        stop: ["\u0000never", stop],
        stream: true,
      })).text(),
    );
    assert.equal(s.content, cut);
    assert.equal(s.finish, "stop");
  } finally {
    await app.close();
  }
});

Deno.test("serve: /v1/completions, JSON and SSE, text or token-id prompts", async () => {
  const app = await tinyApp();
  try {
    const res = await postJson(app, "/v1/completions", {
      prompt: "白日依山尽",
      max_tokens: 5,
      seed: 2,
    });
    assert.equal(res.status, 200);
    const r = await res.json();
    assert.equal(r.object, "text_completion");
    assert.equal(r.choices[0].finish_reason, "length");
    assert.deepEqual(r.usage, {
      prompt_tokens: 5,
      completion_tokens: 5,
      total_tokens: 10,
      prompt_tokens_details: { cached_tokens: 0 }, // shorter than the cache's 16-token minimum
    });
    const ids = await (await postJson(app, "/v1/completions", {
      prompt: [2178, 1053, 2472, 2302, 1932],
      max_tokens: 5,
      seed: 2,
    })).json();
    assert.equal(ids.choices[0].text, r.choices[0].text);
    const sres = await postJson(app, "/v1/completions", {
      prompt: "白日依山尽",
      max_tokens: 5,
      seed: 2,
      stream: true,
      stream_options: { include_usage: true },
    });
    const data = sseData(await sres.text());
    assert.equal(data.at(-1), "[DONE]");
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    const text = chunks.map((c) => c.choices[0]?.text ?? "").join("");
    assert.equal(text, r.choices[0].text);
    assert.equal(chunks.at(-2).choices[0].finish_reason, "length");
    assert.deepEqual(chunks.at(-1).usage, r.usage);
    // default max_tokens is OpenAI's 16 for this endpoint
    const d = await (await postJson(app, "/v1/completions", { prompt: "a", seed: 1 })).json();
    assert.ok(d.usage.completion_tokens <= 16);
    const bad = await postJson(app, "/v1/completions", { prompt: [1, 99999] });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.param, "prompt[1]");
  } finally {
    await app.close();
  }
});

Deno.test("serve: bad requests are 400s naming the field", async () => {
  const app = await tinyApp();
  try {
    const cases: [unknown, number, string | null, string?][] = [
      ["{not json", 400, null, "invalid_json"],
      ["[1, 2]", 400, null],
      ["", 400, null],
      [{ messages: "hi" }, 400, "messages"],
      [{}, 400, "messages"],
      [{ messages: [] }, 400, "messages"],
      [{ messages: [{ role: "wizard", content: "x" }] }, 400, "messages[0].role"],
      [{ messages: [{ role: "user" }] }, 400, "messages[0].content"],
      [{ messages: [{ role: "user", content: 5 }] }, 400, "messages[0].content"],
      [
        { messages: [{ role: "user", content: [{ type: "image_url" }] }] },
        400,
        "messages[0].content[0].type",
      ],
      [{ messages: HELLO, temperature: "hot" }, 400, "temperature"],
      [{ messages: HELLO, temperature: 3 }, 400, "temperature"],
      [{ messages: HELLO, top_p: 0 }, 400, "top_p"],
      [{ messages: HELLO, top_k: 1.5 }, 400, "top_k"],
      [{ messages: HELLO, max_tokens: 0 }, 400, "max_tokens"],
      [{ messages: HELLO, max_tokens: 10 ** 9 }, 400, "max_tokens"],
      [{ messages: HELLO, max_completion_tokens: "9" }, 400, "max_completion_tokens"],
      [{ messages: HELLO, n: 17 }, 400, "n"],
      [{ messages: HELLO, stop: 7 }, 400, "stop"],
      [{ messages: HELLO, stop: ["a", 3] }, 400, "stop[1]"],
      [{ messages: HELLO, stop: ["a", "b", "c", "d", "e"] }, 400, "stop"],
      [{ messages: HELLO, seed: "x" }, 400, "seed"],
      [{ messages: HELLO, stream: "yes" }, 400, "stream"],
      [
        { messages: HELLO, stream_options: { include_usage: 1 } },
        400,
        "stream_options.include_usage",
      ],
      [{ messages: HELLO, tools: [{ type: "function" }] }, 400, "tools[0].function.name"],
      [
        { messages: HELLO, chat_template_kwargs: { open_thinking: "no" } },
        400,
        "chat_template_kwargs.open_thinking",
      ],
      [{ messages: HELLO, model: "gpt-4o" }, 400, "model", "model_not_found"],
      [{ messages: HELLO, model: 4 }, 400, "model"],
      [{ messages: HELLO, logprobs: "yes" }, 400, "logprobs"],
    ];
    for (const [body, status, param, code] of cases) {
      const res = await postJson(app, "/v1/chat/completions", body);
      const label = JSON.stringify(body);
      assert.equal(res.status, status, label);
      const e = (await res.json()).error;
      assert.equal(e.type, "invalid_request_error", label);
      assert.equal(e.param, param, label);
      if (code) assert.equal(e.code, code, label);
      assert.ok(e.message.length > 0);
    }
  } finally {
    await app.close();
  }
});

Deno.test("serve: body and token limits (413, context_length_exceeded, max_tokens clamp)", async () => {
  const app = await tinyApp({ limits: { maxBodyBytes: 2000, maxContextTokens: 40 } });
  try {
    const big = JSON.stringify({ messages: [{ role: "user", content: "x".repeat(5000) }] });
    const r1 = await postJson(app, "/v1/chat/completions", big);
    assert.equal(r1.status, 413);
    assert.equal((await r1.json()).error.code, "request_too_large");
    // a chunked body without Content-Length is cut off while reading
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(big));
        c.close();
      },
    });
    const r2 = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: stream,
    });
    assert.equal(r2.status, 413);
    const long = await postJson(app, "/v1/chat/completions", {
      messages: [{ role: "user", content: "你好".repeat(30) }],
    });
    assert.equal(long.status, 400);
    const e = (await long.json()).error;
    assert.equal(e.code, "context_length_exceeded");
    assert.equal(e.param, "messages");
    // prompt 18 + max_tokens 100 > 40: the reply is clamped to the 22 tokens left
    const r = await chat(app, { max_tokens: 100, seed: 1, temperature: 1, top_k: 0 });
    assert.equal(r.usage.total_tokens <= 40, true);
  } finally {
    await app.close();
  }
});

Deno.test("serve: API key (Bearer) guards /v1, OpenAI-style 401; /health and / stay public", async () => {
  const app = await tinyApp({ apiKey: "sk-test-123" });
  const tok = await tokenizer();
  try {
    const none = await app.request("/v1/models");
    assert.equal(none.status, 401);
    const e = (await none.json()).error;
    assert.equal(e.type, "authentication_error");
    assert.equal(e.code, "missing_api_key");
    const wrong = await app.request("/v1/models", { headers: { authorization: "Bearer nope" } });
    assert.equal(wrong.status, 401);
    assert.equal((await wrong.json()).error.code, "invalid_api_key");
    const ok = await app.request("/v1/models", {
      headers: { authorization: "Bearer sk-test-123" },
    });
    assert.equal(ok.status, 200);
    const chatRes = await postJson(
      app,
      "/v1/chat/completions",
      { messages: HELLO, max_tokens: 2 },
      {
        authorization: "Bearer sk-test-123",
      },
    );
    assert.equal(chatRes.status, 200);
    await chatRes.body?.cancel();
    assert.equal((await app.request("/health")).status, 200);
    assert.equal((await app.request("/")).status, 200);
    assert.throws(() => createApp({ model: tinyModel(), tokenizer: tok, apiKey: "" }), /empty/);
  } finally {
    await app.close();
  }
});

Deno.test("serve: concurrent requests are decoded together and match their sequential runs", async () => {
  const app = await tinyApp({ scheduler: { maxBatch: 8 } });
  try {
    const seeds = [1, 2, 3, 4, 5, 6];
    // mixed settings in one batch: JSON mode, penalties and log-probs are per row
    const extra = (seed: number) =>
      [
        {},
        { response_format: { type: "json_object" } },
        { frequency_penalty: 1.5 },
        { presence_penalty: -1, logprobs: true },
      ][seed % 4];
    const ask = (seed: number) =>
      chat(app, { max_tokens: 10 + seed, seed, temperature: 1, top_p: 0.95, ...extra(seed) })
        .then((r) => r.choices[0]);
    const together = await Promise.all(seeds.map(ask));
    assert.ok(app.stats().maxBatchSeen >= 4, `largest batch ${app.stats().maxBatchSeen}`);
    const alone: { message: { content: string }; logprobs: unknown }[] = [];
    for (const s of seeds) alone.push(await ask(s));
    assert.deepEqual(together.map((c) => c.message.content), alone.map((c) => c.message.content));
    // a batched step's logits round differently from a lone one's: the log-probs agree closely
    together.forEach((c, i) => {
      const lp = (x: { logprobs: unknown }) =>
        (x.logprobs as { content: { logprob: number }[] } | null)?.content.map((e) => e.logprob);
      const [a, b] = [lp(c), lp(alone[i])];
      assert.equal(a?.length, b?.length);
      a?.forEach((v, j) => assert.ok(Math.abs(v - b![j]) < 1e-5, `seed ${seeds[i]} token ${j}`));
    });
  } finally {
    await app.close();
  }
});

Deno.test("serve: a full queue answers 429; a request that waits too long answers 503", async () => {
  const post = (app: Awaited<ReturnType<typeof tinyApp>>, signal?: AbortSignal) =>
    Promise.resolve(app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        messages: HELLO,
        max_tokens: 2000,
        seed: 1,
        temperature: 1,
        top_k: 0,
      }),
      signal,
    }));
  const app = await tinyApp({ scheduler: { maxBatch: 1, maxQueue: 1, queueTimeoutMs: 60_000 } });
  try {
    const ctl = new AbortController();
    const until = async (f: () => boolean) => {
      for (let i = 0; i < 1000 && !f(); i++) await new Promise((r) => setTimeout(r, 5));
    };
    const first = post(app, ctl.signal); // runs
    await until(() => app.stats().running === 1);
    const second = post(app, ctl.signal); // waits
    await until(() => app.stats().waiting === 1);
    const third = await post(app); // refused
    assert.equal(third.status, 429);
    assert.equal(third.headers.get("retry-after"), "1");
    const e = (await third.json()).error;
    assert.equal(e.type, "rate_limit_error");
    assert.equal(e.code, "rate_limit_exceeded");
    assert.equal(app.stats().running + app.stats().waiting, 2);
    ctl.abort(); // both clients leave: the running one stops, the waiting one never starts
    assert.equal((await first).status, 200);
    assert.equal((await second).status, 503);
  } finally {
    await app.close();
  }
  const slow = await tinyApp({ scheduler: { maxBatch: 1, maxQueue: 4, queueTimeoutMs: 30 } });
  try {
    const ctl = new AbortController();
    const first = post(slow, ctl.signal);
    for (let i = 0; i < 1000 && slow.stats().running === 0; i++) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const second = await post(slow);
    assert.equal(second.status, 503);
    assert.equal((await second.json()).error.code, "overloaded");
    ctl.abort();
    assert.equal((await first).status, 200);
  } finally {
    await slow.close();
  }
});

Deno.test("serve: a client that goes away stops its generation", async () => {
  const app = await tinyApp();
  try {
    const ctl = new AbortController();
    const res = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({
        messages: HELLO,
        max_tokens: 4000,
        stream: true,
        temperature: 1,
        top_k: 0,
      }),
      signal: ctl.signal,
    });
    const reader = res.body!.getReader();
    await reader.read();
    await reader.read();
    ctl.abort();
    await reader.cancel().catch(() => {});
    const deadline = Date.now() + 5000;
    while (app.stats().running > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const t1 = app.stats().tokens;
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(app.stats().tokens, t1, "no tokens after the client left");
    assert.equal(app.stats().running, 0);
    assert.ok(t1 < 4000);
  } finally {
    await app.close();
  }
});

Deno.test("serve: a seeded reply is exactly what mm.generate samples for that seed", async () => {
  const { generate } = await import("../nn/model/generate.ts");
  const { tinyModel, tokenizer } = await import("../tests/_serve.ts");
  const tok = await tokenizer();
  const app = await tinyApp();
  try {
    const settings = { temperature: 0.9, top_p: 0.9, top_k: 40 };
    for (const seed of [3, 77]) {
      const r = await chat(app, { max_tokens: 16, seed, ...settings });
      const prompt = tok.encode(tok.applyChatTemplate(HELLO, { addGenerationPrompt: true }));
      let text = "";
      for await (
        const piece of generate({ ...tinyModel(), tokenizer: tok }, prompt, {
          maxNewTokens: 16,
          seed,
          temperature: 0.9,
          topP: 0.9,
          topK: 40,
        })
      ) text += piece;
      assert.equal(r.choices[0].message.content, text, `seed ${seed}`);
    }
  } finally {
    await app.close();
  }
});

Deno.test("serve: no device memory is left behind by finished, stopped or cancelled requests", async () => {
  const { defaultBackend } = await import("../nn/backend/select.ts");
  const app = await tinyApp({ scheduler: { maxBatch: 4 } });
  try {
    const settle = async () => {
      for (let i = 0; i < 200 && app.stats().running + app.stats().waiting > 0; i++) {
        await new Promise((r) => setTimeout(r, 5));
      }
    };
    await chat(app, { max_tokens: 4, seed: 1 }); // warm-up: RoPE tables and other caches
    await settle(); // the finished row is released at the scheduler's next iteration
    const before = defaultBackend().counters.bytesInUse;
    const kept = () => app.stats().prefixCache!.bytes; // finished rows kept for reuse, bounded
    const keptBefore = kept();
    const ctl = new AbortController();
    const jobs = [
      ...[1, 2, 3, 4, 5].map((seed) => chat(app, { max_tokens: 5 + seed, seed })),
      chat(app, { max_tokens: 20, seed: 9, stop: ["e", "a", "o", "i"] }),
      Promise.resolve(app.request("/v1/chat/completions", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ messages: HELLO, max_tokens: 500, stream: true }),
        signal: ctl.signal,
      })).then(async (r) => {
        const reader = r.body!.getReader();
        await reader.read();
        ctl.abort();
        await reader.cancel().catch(() => {});
      }),
    ];
    await Promise.all(jobs);
    await settle();
    assert.ok(kept() > 0 && kept() <= 64 * 2 ** 20);
    assert.equal(defaultBackend().counters.bytesInUse - before, kept() - keptBefore);
  } finally {
    await app.close();
  }
});

Deno.test("serve: tools are rendered by the chat template; tool turns in the history are accepted", async () => {
  const app = await tinyApp();
  try {
    const tools = [{
      type: "function",
      function: {
        name: "get_weather",
        description: "Weather of a city",
        parameters: {
          type: "object",
          properties: { city: { type: "string" } },
          required: ["city"],
        },
      },
    }];
    const plain = await chat(app, { max_tokens: 1, seed: 1 });
    const withTools = await chat(app, { max_tokens: 1, seed: 1, tools });
    assert.ok(withTools.usage.prompt_tokens > plain.usage.prompt_tokens + 40);
    const none = await chat(app, { max_tokens: 1, seed: 1, tools, tool_choice: "none" });
    assert.equal(none.usage.prompt_tokens, plain.usage.prompt_tokens);
    const history = [
      { role: "system", content: "You are MiniMind." },
      { role: "user", content: "北京天气？" },
      {
        role: "assistant",
        content: null,
        tool_calls: [{
          id: "call_1",
          type: "function",
          function: { name: "get_weather", arguments: '{"city": "北京"}' },
        }],
      },
      { role: "tool", tool_call_id: "call_1", content: '{"temp": 21}' },
    ];
    const r = await postJson(app, "/v1/chat/completions", {
      messages: history,
      tools,
      max_tokens: 3,
    });
    assert.equal(r.status, 200);
    const body = await r.json();
    assert.ok(body.usage.prompt_tokens > withTools.usage.prompt_tokens);
  } finally {
    await app.close();
  }
});

Deno.test("serve: repetition_penalty, OpenAI's penalties and logit_bias, unfiltered sampling: what generate samples", async () => {
  const { generate } = await import("../nn/model/generate.ts");
  const { tinyModel, tokenizer } = await import("../tests/_serve.ts");
  const tok = await tokenizer();
  const app = await tinyApp();
  try {
    const prompt = tok.encode(tok.applyChatTemplate(HELLO, { addGenerationPrompt: true }));
    for (
      const s of [
        { repetition_penalty: 1.5, top_k: 20 },
        { top_k: 0, top_p: 1, temperature: 1.1 },
        // OpenAI's penalties and bias: the server's sampler and generate share one formula
        { frequency_penalty: 1.2, presence_penalty: 0.4, logit_bias: { "300": 3, "301": -50 } },
        { min_p: 0.3, top_k: 0, top_p: 1, temperature: 1.3 },
      ]
    ) {
      const r = await chat(app, { max_tokens: 12, seed: 5, temperature: 0.8, top_p: 0.9, ...s });
      let text = "";
      for await (
        const piece of generate({ ...tinyModel(), tokenizer: tok }, prompt, {
          maxNewTokens: 12,
          seed: 5,
          temperature: (s as { temperature?: number }).temperature ?? 0.8,
          topP: s.top_p ?? 0.9,
          topK: s.top_k,
          repetitionPenalty: (s as { repetition_penalty?: number }).repetition_penalty ?? 1,
          frequencyPenalty: (s as { frequency_penalty?: number }).frequency_penalty,
          minP: (s as { min_p?: number }).min_p,
          presencePenalty: (s as { presence_penalty?: number }).presence_penalty,
          logitBias: "logit_bias" in s
            ? new Map(
              Object.entries(s.logit_bias as Record<string, number>).map((
                [k, v],
              ) => [Number(k), v]),
            )
            : undefined,
        })
      ) text += piece;
      assert.equal(r.choices[0].message.content, text, JSON.stringify(s));
    }
  } finally {
    await app.close();
  }
});

Deno.test("serve: /v1/models lists the given id and the 'minimind' alias; requests may name either", async () => {
  const app = await tinyApp({ modelId: "full_sft_192" });
  try {
    const m = await (await app.request("/v1/models")).json();
    assert.deepEqual(m.data.map((x: { id: string }) => x.id), ["full_sft_192", "minimind"]);
    assert.equal((await app.request("/v1/models/minimind")).status, 200);
    assert.equal((await app.request("/v1/models/full_sft_192")).status, 200);
    for (const model of ["minimind", "full_sft_192"]) {
      const r = await postJson(app, "/v1/chat/completions", {
        model,
        messages: HELLO,
        max_tokens: 2,
      });
      assert.equal(r.status, 200, await r.clone().text());
      assert.equal((await r.json()).model, "full_sft_192");
    }
    const bad = await postJson(app, "/v1/chat/completions", { model: "gpt-4", messages: HELLO });
    assert.equal(bad.status, 400);
    assert.match((await bad.json()).error.message, /serves 'full_sft_192' \(alias 'minimind'\)/);
  } finally {
    await app.close();
  }
});

Deno.test("serve: other web origins get 403 (preflight, text/plain), own page and --cors origins pass; POST must be JSON", async () => {
  const app = await tinyApp();
  const open = await tinyApp({ corsOrigins: ["http://localhost:3000"] });
  const body = JSON.stringify({ messages: HELLO, max_tokens: 1 });
  try {
    const pre = await app.request("/v1/chat/completions", {
      method: "OPTIONS",
      headers: { origin: "http://evil.test", "access-control-request-method": "POST" },
    });
    assert.equal(pre.status, 403);
    assert.equal(pre.headers.get("access-control-allow-origin"), null);
    // a "simple" cross-site POST needs no preflight: it must be refused too
    const simple = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { origin: "http://evil.test", "content-type": "text/plain" },
      body,
    });
    assert.equal(simple.status, 403);
    const err = (await simple.json()).error;
    assert.equal(err.code, "origin_not_allowed");
    assert.match(err.message, /--cors http:\/\/evil\.test/);
    assert.equal(app.stats().steps, 0, "nothing ran");
    // the server's own page (same host and port) and clients without an Origin pass
    const own = await app.request("http://localhost/v1/models", {
      headers: { origin: "http://localhost" },
    });
    assert.equal(own.status, 200);
    assert.equal(own.headers.get("access-control-allow-origin"), null);
    // text/plain from a non-browser client: 415
    const plain = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "text/plain" },
      body,
    });
    assert.equal(plain.status, 415);
    assert.equal((await plain.json()).error.code, "unsupported_media_type");
    // --cors: the allowed origin gets CORS headers, others still 403
    const allowed = await open.request("/v1/chat/completions", {
      method: "OPTIONS",
      headers: { origin: "http://localhost:3000", "access-control-request-method": "POST" },
    });
    assert.equal(allowed.status, 204);
    assert.equal(allowed.headers.get("access-control-allow-origin"), "http://localhost:3000");
    const other = await open.request("/v1/models", { headers: { origin: "http://evil.test" } });
    assert.equal(other.status, 403);
    await other.body?.cancel();
  } finally {
    await app.close();
    await open.close();
  }
});

Deno.test("serve: a broken chat template refuses to start; failing at request time is a 500", async () => {
  const tok = await tokenizer();
  const broken = Tokenizer.fromJSON(tok.toJSON(), { ...tok.config, chat_template: "{% for %}" });
  assert.throws(
    () => createApp({ model: tinyModel(), tokenizer: broken }),
    /Cannot serve with this tokenizer's chat template: Cannot parse chat template/,
  );
  // renders the probe conversation, fails on a system message: the server's fault, not the client's
  const picky = Tokenizer.fromJSON(tok.toJSON(), {
    ...tok.config,
    chat_template: "{% for m in messages %}{% if m.role == 'system' %}{{ m.content.nope() }}" +
      "{% endif %}{{ m.content }}{% endfor %}",
  });
  const app = createApp({ model: tinyModel(), tokenizer: picky });
  try {
    const r = await postJson(app, "/v1/chat/completions", {
      messages: [{ role: "system", content: "s" }, ...HELLO],
      max_tokens: 1,
    });
    assert.equal(r.status, 500);
    const e = (await r.json()).error;
    assert.equal(e.type, "server_error");
    assert.equal(e.code, "chat_template_error");
  } finally {
    await app.close();
  }
});

Deno.test("serve: deep tool schemas blame 'tools', 1e309 is named, 405 has Allow", async () => {
  const app = await tinyApp();
  try {
    let schema: unknown = { type: "string" };
    for (let i = 0; i < 100; i++) schema = { type: "object", properties: { a: schema } };
    const deep = await postJson(app, "/v1/chat/completions", {
      messages: HELLO,
      tools: [{ type: "function", function: { name: "f", parameters: schema } }],
    });
    assert.equal(deep.status, 400);
    const e = (await deep.json()).error;
    assert.equal(e.param, "tools[0]");
    assert.match(e.message, /nested more than 32 levels/);
    const huge = await postJson(
      app,
      "/v1/chat/completions",
      '{"messages":[{"role":"user","content":"hi"}],"temperature":1e309}',
    );
    assert.equal(huge.status, 400);
    const he = (await huge.json()).error;
    assert.equal(he.param, "temperature");
    assert.match(he.message, /got Infinity \(a number outside the range of a double\)/);
    const hugeInt = await postJson(
      app,
      "/v1/chat/completions",
      '{"messages":[{"role":"user","content":"hi"}],"max_tokens":-1e309}',
    );
    assert.match((await hugeInt.json()).error.message, /expected an integer, got -Infinity/);
    const get = await app.request("/v1/completions", { method: "PUT" });
    assert.equal(get.status, 405);
    assert.equal(get.headers.get("allow"), "POST, OPTIONS");
    await get.body?.cancel();
  } finally {
    await app.close();
  }
});

Deno.test("serve: a body that stops arriving gets 408; a client gone mid-body a 400, not a logged 500", async () => {
  const app = await tinyApp({ limits: { bodyTimeoutMs: 200 } });
  const logged: unknown[] = [];
  const origError = console.error;
  console.error = (...a: unknown[]) => logged.push(a);
  try {
    const enc = new TextEncoder();
    const slow = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(enc.encode('{"messages": ['));
      }, // and nothing more
    });
    const t0 = performance.now();
    const r = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: slow,
    });
    assert.equal(r.status, 408);
    assert.equal((await r.json()).error.code, "request_timeout");
    assert.ok(performance.now() - t0 < 2000);
    const broken = new ReadableStream<Uint8Array>({
      pull(c) {
        c.enqueue(enc.encode('{"messages": ['));
        c.error(new Error("connection reset"));
      },
    });
    const r2 = await app.request("/v1/chat/completions", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: broken,
    });
    assert.equal(r2.status, 400);
    assert.equal((await r2.json()).error.code, "request_body_unreadable");
    assert.deepEqual(logged, []);
  } finally {
    console.error = origError;
    await app.close();
  }
});

Deno.test("serve: when the last request ends the CPU pool is given back", async () => {
  const app = await tinyApp({ scheduler: { maxBatch: 8 } });
  try {
    cpuBackend.emptyPool();
    // 8 rows decode together: their [8, 6400] logits recur every step and are pooled
    const replies = await Promise.all(
      [1, 2, 3, 4, 5, 6, 7, 8].map((seed) =>
        postJson(app, "/v1/chat/completions", { messages: HELLO, max_tokens: 12, seed })
          .then((r) => r.json())
      ),
    );
    assert.ok(replies.every((r) => r.usage.completion_tokens === 12));
    for (let i = 0; i < 50 && app.stats().running + app.stats().waiting > 0; i++) {
      await new Promise((r) => setTimeout(r, 10));
    }
    await new Promise((r) => setTimeout(r, 20)); // the loop notices it is idle
    assert.equal(cpuBackend.pooledBytes, 0);
  } finally {
    await app.close();
  }
});

Deno.test("serve: chat logprobs are mm.generate's raw log-probs, with top_logprobs; stream and JSON agree", async () => {
  const { generateBatch } = await import("../nn/model/generate.ts");
  const tok = await tokenizer();
  const app = await tinyApp();
  try {
    const body = {
      max_tokens: 8,
      temperature: 0,
      logprobs: true,
      top_logprobs: 3,
      ignore_eos: true,
    };
    const r = await chat(app, body);
    const lp = r.choices[0].logprobs;
    assert.equal(lp.refusal, null);
    assert.equal(lp.content.length, r.usage.completion_tokens);
    // the same greedy tokens and log π(token) from the library's generate (its own reduction)
    const prompt = tok.encode(tok.applyChatTemplate(HELLO, { addGenerationPrompt: true }));
    const want: { token: number; logprob: number }[] = [];
    for await (
      const p of generateBatch({ ...tinyModel(), tokenizer: tok }, [prompt], {
        maxNewTokens: 8,
        greedy: true,
        logprobs: true,
        eos: [],
      })
    ) if (p.token >= 0) want.push({ token: p.token, logprob: p.logprob! });
    assert.equal(want.length, 8);
    lp.content.forEach((e: Record<string, unknown>, i: number) => {
      const bytes = tok.tokenBytes(want[i].token)!;
      assert.deepEqual(e.bytes, [...bytes], `token ${i}`);
      assert.ok(Math.abs((e.logprob as number) - want[i].logprob) < 1e-4, `logprob ${i}`);
      const top = e.top_logprobs as { token: string; logprob: number; bytes: number[] }[];
      assert.equal(top.length, 3);
      // greedy: the sampled token is the most likely one; the list is sorted; a distribution
      assert.deepEqual(top[0].bytes, e.bytes);
      assert.equal(top[0].logprob, e.logprob);
      assert.ok(top[0].logprob >= top[1].logprob && top[1].logprob >= top[2].logprob);
      assert.ok(top.reduce((s, t) => s + Math.exp(t.logprob), 0) <= 1 + 1e-9);
      // text: the UTF-8 of its bytes, or OpenAI's "bytes:\xNN" form for part of a character
      const text = e.token as string;
      if (text.startsWith("bytes:")) {
        assert.equal(
          text,
          "bytes:" + [...bytes].map((b) => `\\x${b.toString(16).padStart(2, "0")}`).join(""),
        );
      } else assert.deepEqual([...new TextEncoder().encode(text)], [...bytes]);
    });
    // streamed: the same entries, spread over the chunks
    const res = await postJson(app, "/v1/chat/completions", {
      messages: HELLO,
      ...body,
      stream: true,
    });
    const s = joinStream(await res.text());
    assert.equal(s.content, r.choices[0].message.content);
    const streamed = s.chunks.flatMap((c) => c.choices[0]?.logprobs?.content ?? []);
    // (the stream reused the prompt from the prefix cache: log-probs agree to float rounding)
    const round = (es: { logprob: number; top_logprobs: { logprob: number }[] }[]) =>
      es.map((e) => ({
        ...e,
        logprob: +e.logprob.toFixed(4),
        top_logprobs: e.top_logprobs.map((t) => ({ ...t, logprob: +t.logprob.toFixed(4) })),
      }));
    assert.deepEqual(round(streamed), round(lp.content));
    // without logprobs: null, as before
    assert.equal((await chat(app, { max_tokens: 2 })).choices[0].logprobs, null);
  } finally {
    await app.close();
  }
});

Deno.test("serve: /v1/completions logprobs: tokens, token_logprobs, top maps, text offsets into the text", async () => {
  const app = await tinyApp();
  try {
    const body = {
      prompt: "你好，世界",
      max_tokens: 10,
      temperature: 0,
      logprobs: 2,
      ignore_eos: true,
    };
    const res = await postJson(app, "/v1/completions", body);
    assert.equal(res.status, 200);
    const r = await res.json();
    const { text, logprobs: lp } = r.choices[0];
    assert.equal(lp.tokens.length, 10);
    assert.equal(lp.token_logprobs.length, 10);
    lp.top_logprobs.forEach((m: Record<string, number>, i: number) => {
      const entries = Object.entries(m);
      assert.equal(entries.length, 2);
      // greedy: the sampled token heads its map
      assert.deepEqual(entries[0], [lp.tokens[i], lp.token_logprobs[i]]);
    });
    // the tokens' bytes make the text; each offset is where the token's text starts in it, a
    // token that ends part of a character counting from that character
    const bytesOf = (t: string) =>
      t.startsWith("bytes:")
        ? t.slice(6).split("\\x").slice(1).map((h) => parseInt(h, 16))
        : [...new TextEncoder().encode(t)];
    const dec = new TextDecoder();
    let seen = 0;
    lp.tokens.forEach((t: string, i: number) => {
      assert.equal(lp.text_offset[i], seen, `offset ${i}`);
      seen += dec.decode(Uint8Array.from(bytesOf(t)), { stream: true }).length;
    });
    assert.equal(new TextDecoder().decode(Uint8Array.from(lp.tokens.flatMap(bytesOf))), text);
    // streamed: the same arrays, chunk by chunk
    const sres = await postJson(app, "/v1/completions", { ...body, stream: true });
    const chunks = sseData(await sres.text()).slice(0, -1).map((d) => JSON.parse(d));
    const joined = { tokens: [], token_logprobs: [], top_logprobs: [], text_offset: [] } as Record<
      string,
      unknown[]
    >;
    for (const c of chunks) {
      const l = c.choices?.[0]?.logprobs;
      if (l) { for (const k of Object.keys(joined)) joined[k].push(...l[k]); }
    }
    assert.deepEqual(joined, lp);
  } finally {
    await app.close();
  }
});

Deno.test("serve: presence and frequency penalties reach the sampler; bad logprobs fields are 400s", async () => {
  const app = await tinyApp();
  try {
    const base = { max_tokens: 24, temperature: 0, ignore_eos: true };
    const plain = (await chat(app, base)).choices[0].message.content as string;
    const fp = (await chat(app, { ...base, frequency_penalty: 2 })).choices[0].message.content;
    const pp = (await chat(app, { ...base, presence_penalty: 2 })).choices[0].message.content;
    // the tiny random model repeats itself greedily; the penalties change the reply
    assert.notEqual(fp, plain);
    assert.notEqual(pp, plain);
    for (
      const [b, param] of [
        [{ top_logprobs: 2 }, "top_logprobs"],
        [{ logprobs: true, top_logprobs: 21 }, "top_logprobs"],
        [{ logprobs: 3 }, "logprobs"],
        [{ frequency_penalty: 2.5 }, "frequency_penalty"],
        [{ presence_penalty: "1" }, "presence_penalty"],
      ] as const
    ) {
      const res = await postJson(app, "/v1/chat/completions", { messages: HELLO, ...b });
      assert.equal(res.status, 400, JSON.stringify(b));
      assert.equal((await res.json()).error.param, param);
    }
    const bad = await postJson(app, "/v1/completions", { prompt: "hi", logprobs: 21 });
    assert.equal(bad.status, 400);
    assert.equal((await bad.json()).error.param, "logprobs");
  } finally {
    await app.close();
  }
});

Deno.test("serve: response_format json_object: the reply is one JSON object, and ends with it", async () => {
  const { rankedEngine, scriptedEngine } = await import("../tests/_serve.ts");
  const { ReplyConstraint, vocabBytes } = await import("../data/constrain.ts");
  const tok = await tokenizer();
  const json = { response_format: { type: "json_object" }, max_tokens: 40, temperature: 0 };
  // a model that writes an object and talks on: the reply stops at the object's end
  const talker = await tinyApp({ engine: scriptedEngine(tok, () => '{"a": [1, "x"]} and more') });
  // a model that prefers '"', then '}', then ':': greedy goes through key, colon, value and end
  const ranked = await tinyApp({ engine: rankedEngine(tok, ['"', "}", ":"], 50) });
  const app = await tinyApp();
  try {
    const free = await chat(talker, { max_tokens: 40, temperature: 0 });
    assert.equal(free.choices[0].message.content, '{"a": [1, "x"]} and more');
    const r = await chat(talker, json);
    assert.equal(r.choices[0].message.content, '{"a": [1, "x"]}');
    assert.equal(r.choices[0].finish_reason, "stop");
    const k = await chat(ranked, json);
    assert.equal(k.choices[0].message.content, '{"":""}');
    assert.equal(k.choices[0].finish_reason, "stop");
    // json_schema: the required keys in their order, an enum value, then the end
    const schema = {
      type: "object",
      properties: { name: { type: "string" }, n: { enum: [1, 10] }, extra: { type: "boolean" } },
      required: ["name", "n"],
    };
    const response_format = { type: "json_schema", json_schema: { name: "thing", schema } };
    const js = await chat(ranked, { ...json, response_format });
    assert.equal(js.choices[0].message.content, '{"name":"","n":1}');
    assert.equal(js.choices[0].finish_reason, "stop");
    // a random model: whatever it writes is a JSON object or (cut by max_tokens) the start of one
    const vocab = vocabBytes(6400, (id) => tok.tokenBytes(id), tok.specialIds);
    for (const seed of [1, 2, 3]) {
      const body = { ...json, temperature: 1, seed, max_tokens: 24 };
      const x = await chat(app, body);
      const text: string = x.choices[0].message.content;
      const c = new ReplyConstraint({ segments: [{ kind: "json" }] }, vocab, []);
      for (const id of tok.encode(text, { addSpecialTokens: false })) c.accept(id);
      if (x.choices[0].finish_reason === "stop") assert.equal(typeof JSON.parse(text), "object");
      else assert.equal(x.choices[0].finish_reason, "length");
      const res = await postJson(app, "/v1/chat/completions", {
        messages: HELLO,
        ...body,
        stream: true,
      });
      assert.equal(joinStream(await res.text()).content, text, `seed ${seed}`);
    }
  } finally {
    await Promise.all([talker.close(), ranked.close(), app.close()]);
  }
});

Deno.test("serve: tool_choice required / a named function makes the reply tool calls", async () => {
  const { rankedEngine } = await import("../tests/_serve.ts");
  const tok = await tokenizer();
  // get_weather's arguments need a city; calculate_math's take nothing
  const city = { type: "object", properties: { city: { type: "string" } }, required: ["city"] };
  const tools = ["get_weather", "calculate_math"].map((name) => ({
    type: "function",
    function: {
      name,
      parameters: name === "get_weather" ? city : { type: "object", properties: {} },
    },
  }));
  // prefers '"', '{' and '}' (empty strings and objects), then ending; with every other token at 0,
  // greedy spells the forced text out byte token by byte token (the lowest ids)
  const app = await tinyApp({ engine: rankedEngine(tok, ['"', "{", "}"], 97) });
  try {
    const auto = await chat(app, { tools, max_tokens: 40, temperature: 0 });
    // unconstrained, this model writes '"' forever
    assert.equal(auto.choices[0].message.content, '"'.repeat(40));
    assert.equal(auto.choices[0].message.tool_calls, undefined);
    for (const name of ["get_weather", "calculate_math"]) {
      const tool_choice = { type: "function", function: { name } };
      const r = await chat(app, { tools, tool_choice, max_tokens: 120, temperature: 0 });
      assert.equal(r.choices[0].finish_reason, "tool_calls");
      const calls = r.choices[0].message.tool_calls;
      assert.equal(calls.length, 1);
      // a named tool's arguments follow its parameters schema
      const args = name === "get_weather" ? '{"city":""}' : "{}";
      assert.deepEqual(calls[0].function, { name, arguments: args });
    }
    const req = await chat(app, {
      tools,
      tool_choice: "required",
      max_tokens: 120,
      temperature: 0,
    });
    assert.equal(req.choices[0].finish_reason, "tool_calls");
    assert.ok(
      ["get_weather", "calculate_math"].includes(
        req.choices[0].message.tool_calls[0].function.name,
      ),
    );
    // streamed: the same call
    const res = await postJson(app, "/v1/chat/completions", {
      messages: HELLO,
      tools,
      tool_choice: { type: "function", function: { name: "calculate_math" } },
      max_tokens: 120,
      temperature: 0,
      stream: true,
    });
    const s = joinStream(await res.text());
    assert.equal(s.finish, "tool_calls");
    const delta = s.chunks.find((c) => c.choices[0]?.delta.tool_calls)!.choices[0].delta;
    assert.equal(delta.tool_calls[0].function.name, "calculate_math");
    // bad choices are 400s naming the field
    for (
      const [b, param] of [
        [{ tool_choice: "required" }, "tool_choice"],
        [
          { tools, tool_choice: { type: "function", function: { name: "nope" } } },
          "tool_choice.function.name",
        ],
        [{ tools, tool_choice: "sometimes" }, "tool_choice"],
        [
          { tools, tool_choice: "required", response_format: { type: "json_object" } },
          "response_format",
        ],
        [
          { response_format: { type: "json_schema", json_schema: {} } },
          "response_format.json_schema.name",
        ],
        [
          {
            response_format: {
              type: "json_schema",
              json_schema: {
                name: "x",
                schema: { type: "object", properties: { a: { pattern: "^a" } } },
              },
            },
          },
          "response_format.json_schema.schema.properties.a.pattern",
        ],
        [
          {
            response_format: {
              type: "json_schema",
              json_schema: { name: "x", schema: { type: "array" } },
            },
          },
          "response_format.json_schema.schema",
        ],
      ] as const
    ) {
      const bad = await postJson(app, "/v1/chat/completions", { messages: HELLO, ...b });
      assert.equal(bad.status, 400, JSON.stringify(b));
      assert.equal((await bad.json()).error.param, param);
    }
  } finally {
    await app.close();
  }
});

Deno.test("serve: logit_bias moves the tokens it names, on both routes; bad entries are 400s", async () => {
  const { rankedEngine } = await import("../tests/_serve.ts");
  const tok = await tokenizer();
  const app = await tinyApp();
  try {
    const base = { max_tokens: 6, temperature: 0, ignore_eos: true };
    // a model that always says "a" (then "b"): −100 on "a" leaves "b"
    const [a] = tok.encode("a", { addSpecialTokens: false });
    const ranked = await tinyApp({ engine: rankedEngine(tok, ["a", "b"], 0) });
    try {
      assert.equal((await chat(ranked, base)).choices[0].message.content, "aaaaaa");
      const banned = await chat(ranked, { ...base, logit_bias: { [a]: -100 } });
      assert.equal(banned.choices[0].message.content, "bbbbbb");
    } finally {
      await ranked.close();
    }
    // +100 on a token makes the random model say nothing else
    const forced = await chat(app, { ...base, logit_bias: { "300": 100 } });
    assert.equal(forced.choices[0].message.content, tok.decode(Array(6).fill(300)));
    const legacy = await postJson(app, "/v1/completions", {
      prompt: "hi",
      ...base,
      logit_bias: { "300": 100 },
    });
    assert.equal((await legacy.json()).choices[0].text, tok.decode(Array(6).fill(300)));
    for (
      const [bias, param] of [
        [{ "-1": 5 }, "logit_bias.-1"],
        [{ "7": 101 }, "logit_bias.7"],
        [{ "99999": 1 }, "logit_bias.99999"],
        [[1, 2], "logit_bias"],
      ] as const
    ) {
      const res = await postJson(app, "/v1/chat/completions", {
        messages: HELLO,
        logit_bias: bias,
      });
      assert.equal(res.status, 400, JSON.stringify(bias));
      assert.equal((await res.json()).error.param, param);
    }
  } finally {
    await app.close();
  }
});

Deno.test("serve: n choices are generate's rows for the seed; usage counts the prompt once; SSE agrees", async () => {
  const { generateBatch } = await import("../nn/model/generate.ts");
  const tok = await tokenizer();
  const app = await tinyApp();
  try {
    const ask = { max_tokens: 10, seed: 11, temperature: 0.9, top_p: 0.9, top_k: 40, n: 3 };
    const r = await chat(app, ask);
    assert.deepEqual(r.choices.map((c: { index: number }) => c.index), [0, 1, 2]);
    const prompt = tok.encode(tok.applyChatTemplate(HELLO, { addGenerationPrompt: true }));
    const rows = ["", "", ""];
    for await (
      const p of generateBatch({ ...tinyModel(), tokenizer: tok }, [prompt, prompt, prompt], {
        maxNewTokens: 10,
        seed: 11,
        temperature: 0.9,
        topP: 0.9,
        topK: 40,
      })
    ) rows[p.index] += p.text;
    assert.deepEqual(
      r.choices.map((c: { message: { content: string } }) => c.message.content),
      rows,
    );
    const completion = r.choices.reduce(
      (s: number, c: { finish_reason: string }, i: number) =>
        s +
        (c.finish_reason === "length"
          ? 10
          : tok.encode(rows[i], { addSpecialTokens: false }).length + 1),
      0,
    );
    assert.deepEqual(r.usage, {
      prompt_tokens: prompt.length,
      completion_tokens: completion,
      total_tokens: prompt.length + completion,
      prompt_tokens_details: { cached_tokens: 0 },
    });
    // streamed: the chunks of the three choices interleave, each in order
    const res = await postJson(app, "/v1/chat/completions", {
      messages: HELLO,
      ...ask,
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = sseData(await res.text()).slice(0, -1).map((d) => JSON.parse(d));
    const text = ["", "", ""], finish: (string | null)[] = [null, null, null];
    for (const c of chunks) {
      for (const ch of c.choices) {
        text[ch.index] += ch.delta.content ?? "";
        if (ch.finish_reason) finish[ch.index] = ch.finish_reason;
      }
    }
    assert.deepEqual(text, rows);
    assert.deepEqual(finish, r.choices.map((c: { finish_reason: string }) => c.finish_reason));
    // (the streamed choices reused the prompt from the prefix cache)
    assert.deepEqual(chunks.at(-1).usage, {
      ...r.usage,
      prompt_tokens_details: { cached_tokens: 17 },
    });
    // the legacy route: n texts, each with its own log-probs
    const legacy = await postJson(app, "/v1/completions", {
      prompt: "你好",
      max_tokens: 5,
      n: 2,
      seed: 3,
      logprobs: 1,
      ignore_eos: true,
    });
    const l = await legacy.json();
    assert.equal(l.choices.length, 2);
    for (const c of l.choices) assert.equal(c.logprobs.tokens.length, 5);
    assert.equal(l.usage.completion_tokens, 10);
    assert.equal(l.usage.prompt_tokens, tok.encode("你好", { addSpecialTokens: false }).length);
  } finally {
    await app.close();
  }
});

Deno.test("serve: /tokenize and /detokenize (llama.cpp's and vLLM's shapes), behind the API key", async () => {
  const tok = await tokenizer();
  const app = await tinyApp({ apiKey: "k" });
  const auth: Record<string, string> = { authorization: "Bearer k" };
  try {
    const post = (path: string, body: unknown, headers = auth) =>
      postJson(app, path, body, headers);
    assert.equal((await post("/tokenize", { content: "hi" }, {})).status, 401);
    const text = "白日依山尽，黄河入海流😀";
    const a = await (await post("/tokenize", { content: text })).json();
    assert.deepEqual(a.tokens, tok.encode(text, { addSpecialTokens: false }));
    assert.equal(a.count, a.tokens.length);
    assert.equal(typeof a.max_model_len, "number");
    const b = await (await post("/tokenize", { prompt: text, with_pieces: true })).json();
    assert.deepEqual(b.tokens.map((t: { id: number }) => t.id), a.tokens);
    // the pieces' bytes make the text
    const bytes = b.tokens.flatMap((t: { piece: string }) =>
      t.piece.startsWith("bytes:")
        ? t.piece.slice(6).split("\\x").slice(1).map((h) => parseInt(h, 16))
        : [...new TextEncoder().encode(t.piece)]
    );
    assert.equal(new TextDecoder().decode(Uint8Array.from(bytes)), text);
    // messages: the chat template's prompt, the 18 tokens of [user 你好] (spec §10.8)
    const m = await (await post("/tokenize", { messages: HELLO })).json();
    assert.equal(m.count, 18);
    const d = await (await post("/detokenize", { tokens: a.tokens })).json();
    assert.deepEqual(d, { content: text, prompt: text });
    for (
      const [path, body, param] of [
        ["/tokenize", { content: 5 }, "content"],
        ["/tokenize", {}, "prompt"],
        ["/detokenize", { tokens: [1, -2] }, "tokens[1]"],
        ["/detokenize", { tokens: [1, 99999] }, "tokens[1]"],
        ["/detokenize", { tokens: "1 2" }, "tokens"],
      ] as const
    ) {
      const res = await post(path, body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal((await res.json()).error.param, param);
    }
  } finally {
    await app.close();
  }
});

Deno.test("serve: /v1/completions echo + logprobs scores the prompt (lm-eval's log-likelihood request); lists of prompts", async () => {
  const { forward } = await import("../nn/model/minimind.ts");
  const { tensor } = await import("../nn/creation.ts");
  const { scope } = await import("../nn/scope.ts");
  const tok = await tokenizer();
  const app = await tinyApp();
  try {
    // 300 tokens: more than one of the engine's 256-position scoring chunks
    const ids = Array.from({ length: 300 }, (_, i) => 3 + ((i * 37) % 6000));
    const r = await (await postJson(app, "/v1/completions", {
      prompt: [ids],
      max_tokens: 0,
      echo: true,
      logprobs: 1,
    })).json();
    const lp = r.choices[0].logprobs;
    assert.equal(r.choices[0].text, tok.decode(ids));
    assert.equal(lp.tokens.length, 300);
    assert.equal(lp.token_logprobs[0], null);
    assert.equal(lp.top_logprobs[0], null);
    assert.deepEqual(r.usage.completion_tokens, 0);
    // the log-softmax of one whole forward's logits, computed here
    const { cfg, params } = tinyModel();
    const logits = scope(() =>
      forward(cfg, params, tensor(Int32Array.from(ids), [1, 300], "i32"), { logitsToKeep: 300 })
        .logits.dataSync() as Float32Array
    );
    const V = cfg.vocabSize;
    for (let t = 1; t < 300; t++) {
      const row = logits.subarray((t - 1) * V, t * V);
      let mx = -Infinity, z = 0, best = 0;
      for (let j = 0; j < V; j++) if (row[j] > mx) [mx, best] = [row[j], j];
      for (let j = 0; j < V; j++) z += Math.exp(row[j] - mx);
      const want = row[ids[t]] - mx - Math.log(z);
      assert.ok(Math.abs(lp.token_logprobs[t] - want) < 1e-4, `position ${t}`);
      // the top-1 map: is the token the greedy choice? (lm-eval's is_greedy)
      const [[, topLp]] = Object.entries(lp.top_logprobs[t]) as [string, number][];
      assert.ok(Math.abs(topLp - (row[best] - mx - Math.log(z))) < 1e-4);
    }
    // echo with generation: the prompt, then its completion; offsets run across both
    const g = await (await postJson(app, "/v1/completions", {
      prompt: "白日依山尽",
      max_tokens: 3,
      echo: true,
      logprobs: 1,
      temperature: 0,
      ignore_eos: true,
    })).json();
    const plain = await (await postJson(app, "/v1/completions", {
      prompt: "白日依山尽",
      max_tokens: 3,
      temperature: 0,
      ignore_eos: true,
    })).json();
    assert.equal(g.choices[0].text, "白日依山尽" + plain.choices[0].text);
    const gl = g.choices[0].logprobs;
    assert.equal(gl.tokens.length, 5 + 3);
    assert.equal(gl.text_offset[5], "白日依山尽".length);
    // streamed: the echoed prompt first, then the completion
    const sres = await postJson(app, "/v1/completions", {
      prompt: "白日依山尽",
      max_tokens: 3,
      echo: true,
      temperature: 0,
      ignore_eos: true,
      stream: true,
    });
    const chunks = sseData(await sres.text()).slice(0, -1).map((d) => JSON.parse(d));
    assert.equal(chunks[0].choices[0].text, "白日依山尽");
    assert.equal(chunks.map((c) => c.choices[0].text).join(""), g.choices[0].text);
    // a list of prompts × n: choice i·n + j
    const many = await (await postJson(app, "/v1/completions", {
      prompt: ["白日依山尽", [2178, 1053]],
      n: 2,
      max_tokens: 2,
      seed: 1,
    })).json();
    assert.deepEqual(many.choices.map((c: { index: number }) => c.index), [0, 1, 2, 3]);
    assert.equal(many.usage.prompt_tokens, 5 + 2);
    for (
      const [body, param] of [
        [{ prompt: ["a", 5] }, "prompt[1]"],
        [{ prompt: ["a", [1, 99999]] }, "prompt[1][1]"],
        [{ prompt: "a", max_tokens: 0 }, "max_tokens"],
        [{ prompt: Array(33).fill("a"), n: 2 }, "n"],
      ] as const
    ) {
      const res = await postJson(app, "/v1/completions", body);
      assert.equal(res.status, 400, JSON.stringify(body));
      assert.equal((await res.json()).error.param, param);
    }
  } finally {
    await app.close();
  }
});
