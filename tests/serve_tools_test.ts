// The server's tool flow with a scripted engine (it "says" a calculator call, then reads the tool
// response from its prompt and answers): with `tools` (serve.ts --tools builtin) the server runs
// the call and generates again; without, the call goes back to the client (OpenAI behaviour).
import assert from "node:assert/strict";
import { builtinTools } from "../agent/builtin.ts";
import { toolSchema } from "../serve/tools.ts";
import { postJson, scriptedEngine, sseData, tinyApp, tokenizer } from "./_serve.ts";

const CALC = toolSchema(builtinTools([])[0]);
const WEATHER = {
  type: "function",
  function: { name: "get_weather", description: "weather", parameters: { type: "object" } },
};

/** The scripted model: a tool call first, then an answer quoting the tool response. */
function script(prompt: string): string {
  const lastTurn = prompt.slice(prompt.lastIndexOf("<|im_start|>user"));
  const response = /<tool_response>\n([\s\S]*?)\n<\/tool_response>/.exec(lastTurn);
  if (response) return `结果是 ${response[1]}。`;
  if (prompt.includes('"get_weather"')) {
    return '<tool_call>\n{"name": "get_weather", "arguments": {}}\n</tool_call>';
  }
  return '<tool_call>\n{"name": "calculate_math", "arguments": {"expression": "12*37"}}\n</tool_call>';
}

async function app(serverTools: boolean) {
  const tok = await tokenizer();
  return tinyApp({
    engine: scriptedEngine(tok, script),
    tools: serverTools ? builtinTools([]) : [],
  });
}

const ask = (extra: Record<string, unknown> = {}) => ({
  messages: [{ role: "user", content: "12 乘 37 是多少？" }],
  tools: [CALC],
  max_tokens: 64,
  ...extra,
});

Deno.test("serve --tools builtin: the server runs the call, feeds the result back and answers (JSON)", async () => {
  const a = await app(true);
  try {
    const listed = await (await a.request("/v1/tools")).json();
    assert.deepEqual(listed.data.map((t: typeof CALC) => t.function.name), [
      "calculate_math",
      "unit_converter",
      "date_calculator",
      "poetry_lookup",
    ]);
    const body = await (await postJson(a, "/v1/chat/completions", ask())).json();
    const choice = body.choices[0];
    assert.equal(choice.finish_reason, "stop");
    assert.equal(choice.message.content, "结果是 444。");
    assert.equal(choice.message.tool_calls, undefined, "nothing left for the client to run");
    const [ran] = choice.message.executed_tool_calls;
    assert.equal(ran.function.name, "calculate_math");
    assert.deepEqual(JSON.parse(ran.function.arguments), { expression: "12*37" });
    assert.equal(ran.result, "444");
    assert.equal(ran.error, null);
    assert.ok(
      body.usage.prompt_tokens > 0 && body.usage.completion_tokens > 10,
      "two turns counted",
    );
  } finally {
    await a.close();
  }
});

Deno.test("serve --tools builtin: streaming shows the executed call, then the answer", async () => {
  const a = await app(true);
  try {
    const res = await postJson(a, "/v1/chat/completions", ask({ stream: true }));
    const chunks = sseData(await res.text()).filter((d) => d !== "[DONE]").map((d) =>
      JSON.parse(d)
    );
    const deltas = chunks.map((c) => c.choices[0]?.delta ?? {});
    const at = deltas.findIndex((d) => d.executed_tool_calls);
    assert.ok(at > 0);
    assert.equal(deltas[at].executed_tool_calls[0].result, "444");
    const after = deltas.slice(at + 1).map((d) => d.content ?? "").join("");
    assert.equal(after, "结果是 444。");
    assert.equal(chunks.at(-1).choices[0].finish_reason, "stop");
  } finally {
    await a.close();
  }
});

Deno.test("serve (default): tool calls go back to the client; a client-side tool is never run by the server", async () => {
  const plain = await app(false);
  try {
    const body = await (await postJson(plain, "/v1/chat/completions", ask())).json();
    assert.equal(body.choices[0].finish_reason, "tool_calls");
    assert.equal(body.choices[0].message.tool_calls[0].function.name, "calculate_math");
    assert.equal(body.choices[0].message.executed_tool_calls, undefined);
    assert.deepEqual((await (await plain.request("/v1/tools")).json()).data, []);
  } finally {
    await plain.close();
  }
  const withTools = await app(true);
  try {
    const body =
      await (await postJson(withTools, "/v1/chat/completions", ask({ tools: [WEATHER] })))
        .json();
    assert.equal(body.choices[0].finish_reason, "tool_calls");
    assert.equal(body.choices[0].message.tool_calls[0].function.name, "get_weather");
    assert.equal(body.choices[0].message.executed_tool_calls, undefined);
  } finally {
    await withTools.close();
  }
});

Deno.test("serve --tools builtin: tool_choice forces the first turn's call; the turn after the result is free", async () => {
  const a = await app(true);
  try {
    for (
      const tool_choice of [
        "required",
        { type: "function", function: { name: "calculate_math" } },
      ]
    ) {
      const body = await (await postJson(a, "/v1/chat/completions", ask({ tool_choice }))).json();
      const choice = body.choices[0];
      // the scripted call fits the forced shape, runs, and the answer after it is not forced
      assert.equal(choice.finish_reason, "stop", JSON.stringify(tool_choice));
      assert.equal(choice.message.content, "结果是 444。");
      assert.equal(choice.message.executed_tool_calls[0].result, "444");
    }
  } finally {
    await a.close();
  }
});

Deno.test("serve /v1/responses: a function_call item, then the call's output in the next input", async () => {
  const a = await app(false);
  try {
    const tools = [{
      type: "function",
      name: "calculate_math",
      parameters: CALC.function.parameters,
    }];
    const input = [{ role: "user", content: "12 乘 37 是多少？" }];
    const r = await (await postJson(a, "/v1/responses", { input, tools, max_output_tokens: 64 }))
      .json();
    assert.equal(r.status, "completed");
    const call = r.output.find((o: { type: string }) => o.type === "function_call");
    assert.equal(call.name, "calculate_math");
    assert.deepEqual(JSON.parse(call.arguments), { expression: "12*37" });
    assert.match(call.call_id, /^call_/);
    // streamed: the call's item and its arguments' events
    const res = await postJson(a, "/v1/responses", {
      input,
      tools,
      max_output_tokens: 64,
      stream: true,
    });
    const text = await res.text();
    const events = [...text.matchAll(/^event: (.+)$/gm)].map((m) => m[1]);
    assert.deepEqual(events.slice(-4), [
      "response.function_call_arguments.delta",
      "response.function_call_arguments.done",
      "response.output_item.done",
      "response.completed",
    ]);
    // the client ran it: the next request carries the call and its output; the model answers
    const next = await (await postJson(a, "/v1/responses", {
      input: [
        ...input,
        {
          type: "function_call",
          call_id: call.call_id,
          name: call.name,
          arguments: call.arguments,
        },
        { type: "function_call_output", call_id: call.call_id, output: "444" },
      ],
      tools,
      max_output_tokens: 64,
    })).json();
    assert.equal(next.output[0].content[0].text, "结果是 444。"); // (output_text is the SDK's sum)
  } finally {
    await a.close();
  }
});
