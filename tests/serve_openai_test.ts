// The official `openai` npm client against a real server on a random loopback port: streaming
// and non-streaming chat, usage, stop sequences, legacy completions, models, and errors surfacing
// as the client's typed exceptions.
import assert from "node:assert/strict";
import OpenAI from "openai";
import { startServer } from "../serve.ts";
import { tinyApp } from "./_serve.ts";

const KEY = "sk-minimind-test";

async function withServer(fn: (client: OpenAI, url: string) => Promise<void>): Promise<void> {
  const app = await tinyApp({ apiKey: KEY });
  const server = startServer(app, { port: 0 });
  const client = new OpenAI({
    baseURL: `${server.url}/v1`,
    apiKey: KEY,
    maxRetries: 0,
    timeout: 30_000,
  });
  try {
    await fn(client, server.url);
  } finally {
    await server.shutdown();
  }
}

const HELLO = [{ role: "user" as const, content: "你好" }];

Deno.test("openai client: chat completions, JSON and streaming, with usage and stop", async () => {
  await withServer(async (client) => {
    const models = await client.models.list();
    assert.deepEqual(models.data.map((m) => m.id), ["minimind"]);

    const r = await client.chat.completions.create({
      model: "minimind",
      messages: HELLO,
      max_tokens: 12,
      seed: 9,
      temperature: 0.9,
    });
    assert.equal(r.object, "chat.completion");
    const text = r.choices[0].message.content ?? "";
    assert.equal(r.choices[0].finish_reason, "length");
    assert.equal(r.usage?.prompt_tokens, 18);
    assert.equal(r.usage?.completion_tokens, 12);
    assert.equal(r.usage?.total_tokens, 30);

    const stream = await client.chat.completions.create({
      model: "minimind",
      messages: HELLO,
      max_completion_tokens: 12,
      seed: 9,
      temperature: 0.9,
      stream: true,
      stream_options: { include_usage: true },
    });
    let streamed = "", finish: string | null = null, role: string | undefined;
    let usage: OpenAI.CompletionUsage | null | undefined = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      const c = chunk.choices[0];
      if (!c) continue;
      role ??= c.delta.role;
      streamed += c.delta.content ?? "";
      if (c.finish_reason) finish = c.finish_reason;
    }
    assert.equal(role, "assistant");
    assert.equal(streamed, text);
    assert.equal(finish, "length");
    // the second request reused the first one's prompt from the prefix cache
    assert.deepEqual(usage, { ...r.usage, prompt_tokens_details: { cached_tokens: 17 } });

    // a stop sequence taken from the reply itself
    const stop = text.slice(3, 5);
    const cut = await client.chat.completions.create({
      model: "minimind",
      messages: HELLO,
      max_tokens: 12,
      seed: 9,
      temperature: 0.9,
      stop: [stop],
    });
    assert.equal(cut.choices[0].message.content, text.slice(0, text.indexOf(stop)));
    assert.equal(cut.choices[0].finish_reason, "stop");

    // the streaming helper of the SDK sees the same text
    const runner = client.chat.completions.stream({
      model: "minimind",
      messages: HELLO,
      max_tokens: 12,
      seed: 9,
      temperature: 0.9,
    });
    const final = await runner.finalChatCompletion();
    assert.equal(final.choices[0].message.content, text);

    // log-probs: the SDK's stream helper puts the streamed entries back together as in JSON
    const ask = { model: "minimind", messages: HELLO, max_tokens: 12, seed: 9, temperature: 0.9 };
    const lp = await client.chat.completions.create({ ...ask, logprobs: true, top_logprobs: 2 });
    const entries = lp.choices[0].logprobs?.content ?? [];
    assert.equal(entries.length, 12);
    assert.ok(entries.every((e) => e.top_logprobs.length === 2 && e.logprob <= 0));
    const lpRunner = client.chat.completions.stream({ ...ask, logprobs: true, top_logprobs: 2 });
    const lpFinal = await lpRunner.finalChatCompletion();
    assert.deepEqual(lpFinal.choices[0].logprobs?.content, entries);
  });
});

Deno.test("openai client: legacy completions and typed errors", async () => {
  await withServer(async (client, url) => {
    const c = await client.completions.create({
      model: "minimind",
      prompt: "床前明月光",
      max_tokens: 6,
      seed: 1,
    });
    assert.equal(c.object, "text_completion");
    assert.equal(c.usage?.completion_tokens, 6);

    await assert.rejects(
      client.chat.completions.create({ model: "gpt-4o", messages: HELLO }),
      (e: unknown) => {
        assert.ok(e instanceof OpenAI.BadRequestError);
        assert.equal(e.status, 400);
        assert.equal(e.param, "model");
        assert.equal(e.code, "model_not_found");
        return true;
      },
    );
    await assert.rejects(
      client.chat.completions.create({ model: "minimind", messages: HELLO, temperature: 7 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "temperature",
    );
    await assert.rejects(
      client.chat.completions.create({ model: "minimind", messages: HELLO, n: 17 }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "n",
    );
    // n choices, each its own sample; the SDK's stream helper puts the streamed ones together
    const ask = {
      model: "minimind",
      messages: HELLO,
      n: 3,
      max_tokens: 8,
      seed: 4,
      temperature: 1,
    };
    const three = await client.chat.completions.create(ask);
    assert.deepEqual(three.choices.map((c) => c.index), [0, 1, 2]);
    assert.equal(new Set(three.choices.map((c) => c.message.content)).size, 3);
    assert.equal(three.usage?.completion_tokens, 24);
    const streamed = await client.chat.completions.stream(ask).finalChatCompletion();
    assert.deepEqual(
      streamed.choices.map((c) => c.message.content),
      three.choices.map((c) => c.message.content),
    );
    const wrong = new OpenAI({ baseURL: `${url}/v1`, apiKey: "sk-wrong", maxRetries: 0 });
    await assert.rejects(
      wrong.models.list(),
      (e: unknown) => e instanceof OpenAI.AuthenticationError && e.status === 401,
    );
    // the page and /health need no key
    const health = await fetch(`${url}/health`);
    assert.equal((await health.json()).status, "ok");
  });
});

Deno.test("openai client: aborting a stream stops generation on the server", async () => {
  const app = await tinyApp();
  const server = startServer(app, { port: 0 });
  try {
    const client = new OpenAI({ baseURL: `${server.url}/v1`, apiKey: "none", maxRetries: 0 });
    const stream = await client.chat.completions.create({
      model: "minimind",
      messages: HELLO,
      max_tokens: 4000,
      temperature: 1,
      top_k: 0,
      stream: true,
    } as OpenAI.ChatCompletionCreateParamsStreaming);
    let n = 0;
    for await (const _ of stream) if (++n >= 5) break; // leaving the loop aborts the request
    const deadline = Date.now() + 5000;
    while (app.stats().running > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(app.stats().running, 0, "the generation stopped");
    const t = app.stats().tokens;
    assert.ok(t < 4000, `${t} tokens`);
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(app.stats().tokens, t);
    // and a non-streaming request whose client gives up is cancelled too (plain fetch: the
    // SDK rejects at once on abort but, under Deno, leaves the connection open)
    const ctl = new AbortController();
    const pending = fetch(`${server.url}/v1/chat/completions`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ messages: HELLO, max_tokens: 4000, temperature: 1, top_k: 0 }),
      signal: ctl.signal,
    }).catch((e) => e);
    while (app.stats().running === 0) await new Promise((r) => setTimeout(r, 5));
    ctl.abort();
    assert.ok((await pending) instanceof Error);
    const deadline2 = Date.now() + 5000;
    while (app.stats().running > 0 && Date.now() < deadline2) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(app.stats().running, 0, "the non-streaming generation stopped");
  } finally {
    await server.shutdown();
  }
});

Deno.test("openai client: the Responses API (stateless) — output_text, its event stream, a JSON schema, errors", async () => {
  await withServer(async (client) => {
    const chat = await client.chat.completions.create({
      model: "minimind",
      messages: [{ role: "system", content: "你是诗人。" }, ...HELLO],
      max_tokens: 10,
      temperature: 0,
    });
    const ask = {
      model: "minimind",
      instructions: "你是诗人。",
      input: "你好",
      max_output_tokens: 10,
      temperature: 0,
    };
    // the same template, scheduler and sampler as the chat route
    const r = await client.responses.create(ask);
    assert.equal(r.object, "response");
    assert.equal(r.output_text, chat.choices[0].message.content);
    assert.equal(r.status, "incomplete");
    assert.equal(r.incomplete_details?.reason, "max_output_tokens");
    assert.equal(r.usage?.input_tokens, chat.usage?.prompt_tokens);
    assert.equal(r.usage?.output_tokens, 10);
    // streamed: the SDK's accumulator checks the events' items and ids against the final response
    const stream = client.responses.stream(ask);
    const types = new Set<string>();
    for await (const ev of stream) types.add(ev.type);
    const final = await stream.finalResponse();
    assert.equal(final.output_text, r.output_text);
    for (
      const t of [
        "response.created",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_item.done",
        "response.incomplete",
      ]
    ) assert.ok(types.has(t), t);
    // a message-item input and a JSON schema: the output is one object of it
    const js = await client.responses.create({
      model: "minimind",
      input: [{ role: "user", content: [{ type: "input_text", text: "你好" }] }],
      max_output_tokens: 40,
      temperature: 0,
      text: {
        format: {
          type: "json_schema",
          name: "answer",
          schema: {
            type: "object",
            properties: { ok: { type: "boolean" } },
            required: ["ok"],
            additionalProperties: false,
          },
        },
      },
    });
    assert.equal(js.status, "completed");
    assert.equal(typeof JSON.parse(js.output_text).ok, "boolean");
    // reasoning: the reply opens in a think block; the random model never closes it, so all of it
    // is one reasoning item (and the message is empty), streamed the same way
    const think = { model: "minimind", input: "你好", max_output_tokens: 8, temperature: 0 };
    const rs = await client.responses.create({ ...think, reasoning: { effort: "high" } });
    const item = rs.output[0] as unknown as { type: string; content: { text: string }[] };
    assert.equal(item.type, "reasoning");
    assert.ok(item.content[0].text.length > 0);
    const rstream = client.responses.stream({ ...think, reasoning: { effort: "high" } });
    for await (const _ of rstream) { /* the accumulator checks the events */ }
    const streamedItem = (await rstream.finalResponse()).output[0] as unknown as typeof item;
    assert.equal(streamedItem.type, "reasoning");
    assert.equal(streamedItem.content[0].text, item.content[0].text);
    await assert.rejects(
      client.responses.create({ model: "minimind", input: "hi", previous_response_id: "resp_1" }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "previous_response_id",
    );
    await assert.rejects(
      client.responses.create({
        model: "minimind",
        input: [{ type: "web_search_call" } as unknown as OpenAI.Responses.ResponseInputItem],
      }),
      (e: unknown) => e instanceof OpenAI.BadRequestError && e.param === "input[0].type",
    );
  });
});
