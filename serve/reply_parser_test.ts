import assert from "node:assert/strict";
import { type ReplyDelta, ReplyParser, StopMatcher } from "./reply_parser.ts";

/** Feeds `text` in pieces of `n` characters (tags split across pieces) and joins the deltas. */
function run(
  text: string,
  n: number,
  options: { openThinking?: boolean; parseTools?: boolean } = {},
): { reasoning: string; content: string; tools: string[]; deltas: ReplyDelta[] } {
  const p = new ReplyParser(options);
  const deltas: ReplyDelta[] = [];
  for (let i = 0; i < text.length; i += n) deltas.push(...p.push(text.slice(i, i + n)));
  deltas.push(...p.end());
  let reasoning = "", content = "";
  for (const d of deltas) {
    if ("reasoning_content" in d) reasoning += d.reasoning_content;
    else content += d.content;
  }
  assert.equal(reasoning, p.reasoning);
  assert.equal(content, p.content);
  return {
    reasoning,
    content,
    tools: p.toolCalls.map((t) => `${t.function.name} ${t.function.arguments}`),
    deltas,
  };
}

Deno.test("ReplyParser: open thinking → reasoning until </think>, then content", () => {
  for (const n of [1, 2, 3, 7, 100]) {
    const r = run("I should greet.\n</think>\n\nHello there!", n, { openThinking: true });
    assert.equal(r.reasoning, "I should greet.");
    assert.equal(r.content, "Hello there!");
  }
});

Deno.test("ReplyParser: a think block the model opens itself is reasoning", () => {
  for (const n of [1, 4, 100]) {
    const r = run("<think>\nhmm\n</think>\n\nAnswer: 42", n);
    assert.equal(r.reasoning, "hmm");
    assert.equal(r.content, "Answer: 42");
  }
});

Deno.test("ReplyParser: without think tags everything is content, newlines kept inside", () => {
  const r = run("line one\n\nline two <thinking is fine>", 3);
  assert.equal(r.content, "line one\n\nline two <thinking is fine>");
  assert.equal(r.reasoning, "");
});

Deno.test("ReplyParser: an unclosed think block stays reasoning (cut by max_tokens)", () => {
  const r = run("still thinking about", 2, { openThinking: true });
  assert.equal(r.reasoning, "still thinking about");
  assert.equal(r.content, "");
});

Deno.test("ReplyParser: tool calls are lifted out of the content", () => {
  const text =
    'Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "北京"}}\n' +
    '</tool_call>\n<tool_call>\n{"name": "get_time", "arguments": {}}\n</tool_call>';
  for (const n of [1, 5, 1000]) {
    const r = run(text, n, { parseTools: true });
    assert.equal(r.content, "Let me check.");
    assert.deepEqual(r.tools, ['get_weather {"city":"北京"}', "get_time {}"]);
  }
  // without tools in the request the block is plain content
  assert.equal(run(text, 3).content, text);
});

Deno.test("ReplyParser: a malformed or unfinished tool call is returned as content", () => {
  const bad = run("<tool_call>not json</tool_call> ok", 2, { parseTools: true });
  assert.equal(bad.content, "<tool_call>not json</tool_call> ok");
  assert.deepEqual(bad.tools, []);
  const cut = run('x <tool_call>{"name": "f", "argu', 3, { parseTools: true });
  assert.equal(cut.content, 'x<tool_call>{"name": "f", "argu');
});

Deno.test("StopMatcher: cuts before the first stop sequence, across pieces", () => {
  const text = "abc STOP def END";
  for (const n of [1, 2, 3, 16]) {
    const m = new StopMatcher(["END", "STOP"]);
    let out = "";
    for (let i = 0; i < text.length && !m.stopped; i += n) out += m.push(text.slice(i, i + n));
    out += m.flush();
    assert.equal(out, "abc ");
    assert.ok(m.stopped);
  }
  const m = new StopMatcher(["xyz"]);
  assert.equal(m.push("ab") + m.push("cx") + m.push("y") + m.flush(), "abcxy");
  assert.ok(!m.stopped);
});
