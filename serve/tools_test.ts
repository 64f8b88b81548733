import assert from "node:assert/strict";
import type { ChatMessage } from "../data/chat_template.ts";
import { checkArguments, runAgentLoop, runToolCall, type Tool } from "./tools.ts";

const add: Tool = {
  name: "add",
  description: "a + b",
  parameters: {
    type: "object",
    properties: { a: { type: "number" }, b: { type: "number" } },
    required: ["a", "b"],
  },
  run: ({ a, b }) => String(Number(a) + Number(b)),
};
const boom: Tool = {
  name: "boom",
  description: "always throws",
  parameters: { type: "object" },
  run: () => {
    throw new Error("kaput");
  },
};
let sleeperAborted = false;
const sleeper: Tool = {
  name: "sleep",
  description: "never returns in time",
  parameters: { type: "object" },
  run: (_args, { signal }) =>
    new Promise((resolve) => {
      const t = setTimeout(() => resolve("late"), 5000);
      signal.addEventListener("abort", () => {
        sleeperAborted = true;
        clearTimeout(t);
        resolve("aborted");
      });
    }),
};
const TOOLS = [add, boom, sleeper];

/** A scripted model: returns its replies in order and records what it was shown. */
function scripted(replies: string[]) {
  const seen: ChatMessage[][] = [];
  return {
    seen,
    gen: (messages: readonly ChatMessage[]) => {
      seen.push([...messages]);
      return Promise.resolve(replies.shift() ?? "no more");
    },
  };
}

const call = (name: string, args: unknown) =>
  `<tool_call>\n${JSON.stringify({ name, arguments: args })}\n</tool_call>`;
const errorOf = (m: ChatMessage) => JSON.parse(String(m.content)).error as string;

Deno.test("loop: a call is run, its result fed back, and the next turn answers", async () => {
  const m = scripted([call("add", { a: 2, b: 40 }), "The sum is 42."]);
  const r = await runAgentLoop(m.gen, [{ role: "user", content: "2+40?" }], { tools: TOOLS });
  assert.equal(r.final, "The sum is 42.");
  assert.equal(r.calls, 1);
  assert.equal(r.malformed, 0);
  assert.equal(r.unfinished, false);
  assert.deepEqual(r.messages.map((x) => x.role), ["user", "assistant", "tool", "assistant"]);
  const tool = r.messages[2];
  assert.equal(tool.content, "42");
  assert.equal(tool.name, "add");
  const calls = r.messages[1].tool_calls as { id: string; function: { arguments: unknown } }[];
  assert.equal(tool.tool_call_id, calls[0].id);
  assert.deepEqual(
    calls[0].function.arguments,
    { a: 2, b: 40 },
    "an object: rendered as the template renders training data",
  );
  assert.equal(m.seen[1].length, 3, "the second turn sees the call and its result");
});

Deno.test("loop: malformed, unknown, bad-argument, throwing and timed-out calls become error messages", async () => {
  sleeperAborted = false;
  const m = scripted([
    "<tool_call>{not json</tool_call>" + call("nope", {}) + call("add", { a: "x", b: 1 }) +
    call("boom", {}),
    call("sleep", {}),
    '<tool_call>{"name": "add"',
    "done",
  ]);
  const t0 = performance.now();
  const r = await runAgentLoop(m.gen, [{ role: "user", content: "go" }], {
    tools: TOOLS,
    maxTurns: 4,
    timeoutMs: 50,
  });
  assert.ok(performance.now() - t0 < 2000, "the sleeping tool was not waited for");
  assert.equal(r.final, "done");
  const [t1, t2, t3] = r.turns;
  const kinds = t1.outcomes.map((o) => o.error);
  assert.deepEqual(kinds, ["unknown_tool", "bad_arguments", "failed", "malformed"]);
  assert.match(errorOf(t1.outcomes[0].message), /unknown tool 'nope'; available: add, boom, sleep/);
  assert.match(errorOf(t1.outcomes[1].message), /argument 'a' must be of type number, got "x"/);
  assert.match(errorOf(t1.outcomes[2].message), /boom failed: kaput/);
  assert.match(errorOf(t1.outcomes[3].message), /malformed tool call.*\{not json/);
  assert.deepEqual(t2.outcomes.map((o) => o.error), ["timeout"]);
  assert.match(errorOf(t2.outcomes[0].message), /sleep timed out after 50 ms/);
  assert.ok(sleeperAborted, "the timed-out tool's signal was aborted");
  assert.deepEqual(t3.outcomes.map((o) => o.error), ["malformed"], "an unclosed call");
  assert.equal(r.calls, 4);
  assert.equal(r.malformed, 2);
  // every tool message is in the conversation the model saw next
  assert.equal(m.seen[1].filter((x) => x.role === "tool").length, 4);
});

Deno.test("loop: stops at maxTurns and reports the episode unfinished", async () => {
  const m = scripted([call("add", { a: 1, b: 1 }), call("add", { a: 2, b: 2 })]);
  const r = await runAgentLoop(m.gen, [{ role: "user", content: "x" }], {
    tools: TOOLS,
    maxTurns: 2,
  });
  assert.equal(r.turns.length, 2);
  assert.equal(r.unfinished, true);
  assert.equal(r.final, "");
});

Deno.test("runToolCall: results are capped; checkArguments checks required, types and enums", async () => {
  const big: Tool = { ...add, name: "big", run: () => "x".repeat(5000) };
  const r = await runToolCall([big], {
    id: "c1",
    type: "function",
    function: { name: "big", arguments: '{"a":1,"b":2}' },
  }, { maxChars: 100 });
  assert.equal(r.error, null);
  assert.equal(r.message.content, "x".repeat(100) + "…(truncated)");
  const s = { type: "object", properties: { u: { type: "string", enum: ["a"] } }, required: ["u"] };
  assert.equal(checkArguments(s, { u: "a" }), null);
  assert.match(checkArguments(s, {})!, /missing required argument 'u'/);
  assert.match(checkArguments(s, { u: "b" })!, /must be one of \["a"\]/);
  assert.match(checkArguments(s, [1])!, /must be a JSON object/);
});
