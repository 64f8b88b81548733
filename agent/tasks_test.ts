import assert from "node:assert/strict";
import type { Poem } from "../data/corpus/poetry.ts";
import { builtinTools } from "./builtin.ts";
import { copyRecords, copyTexts, embeddedTasks, sftConversation, sftRecord } from "./tasks.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { fixture } from "../tests/_util.ts";

const POEMS: Poem[] = Array.from({ length: 50 }, (_, i) => ({
  kind: "tang",
  title: `題${"一二三四五六七八九十"[i % 10]}${i}`,
  author: `作者${i}`,
  paragraphs: ["床前明月光，疑是地上霜。"],
}));

Deno.test("embedded tasks: deterministic, four kinds, held-out questions never in train", async () => {
  const a = embeddedTasks(POEMS, { count: 400, seed: 3 });
  const b = embeddedTasks(POEMS, { count: 400, seed: 3 });
  assert.deepEqual(
    a.heldout.map((t) => t.messages[1].content),
    b.heldout.map((t) => t.messages[1].content),
  );
  assert.equal(a.train.length + a.heldout.length, 400);
  assert.ok(
    a.heldout.length > 20 && a.heldout.length < 70,
    `about 10% held out (${a.heldout.length})`,
  );
  const trainQ = new Set(a.train.map((t) => t.messages[1].content));
  assert.ok(a.heldout.every((t) => !trainQ.has(t.messages[1].content)));
  const kinds = new Set(a.train.map((t) => t.reference!.name));
  assert.deepEqual([...kinds].sort(), [
    "calculate_math",
    "date_calculator",
    "poetry_lookup",
    "unit_converter",
  ]);
  // every reference call solves its task, and the SFT answer contains the expected answer
  const tools = builtinTools(POEMS);
  for (const t of a.heldout) {
    const rec = await sftRecord(t, tools);
    const answer = String(rec.conversations.at(-1)!.content);
    for (const g of t.gt) {
      assert.ok(answer.includes(g), `${t.messages[1].content}: ${answer} lacks ${g}`);
    }
  }
});

/** Whether `needle` occurs as a contiguous run in `hay`. */
function hasRun(hay: readonly number[], needle: readonly number[]): boolean {
  outer: for (let i = 0; i + needle.length <= hay.length; i++) {
    for (let j = 0; j < needle.length; j++) if (hay[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

Deno.test("embedded tasks: the call copies the question and the answer copies the tool result, token for token", async () => {
  const tok = await Tokenizer.fromFile(fixture("minimind/minimind-3"));
  const ids = (s: string) => tok.encode(s, { addSpecialTokens: false });
  const { train } = embeddedTasks(POEMS, { count: 200, seed: 5 });
  const tools = builtinTools(POEMS);
  for (const t of train) {
    const conv = (await sftRecord(t, tools)).conversations;
    const question = ids(String(conv[1].content));
    // the template renders the arguments with tojson: `"key": value`, strings quoted
    const args = Object.values(JSON.parse(String(conv[2].tool_calls))[0].arguments);
    for (const v of args) {
      const rendered = typeof v === "number" ? ` ${v}` : String(v);
      assert.ok(hasRun(question, ids(rendered)), `${conv[1].content}: argument ${v}`);
    }
    const result = ids(String(conv[3].content)), answer = ids(String(conv[4].content));
    for (const g of t.gt) {
      assert.ok(hasRun(result, ids(g)), `${conv[3].content} lacks the tokens of ${g}`);
      assert.ok(hasRun(answer, ids(g)), `${conv[4].content} lacks the tokens of ${g}`);
    }
  }
});

Deno.test("sftConversation chains tasks of one tool after one system prompt", async () => {
  const { train } = embeddedTasks(POEMS, { count: 100, seed: 7 });
  const tools = builtinTools(POEMS);
  const math = train.filter((t) => t.reference!.name === "calculate_math").slice(0, 3);
  const conv = (await sftConversation(math, tools)).conversations;
  const exchange = ["user", "assistant", "tool", "assistant"];
  assert.deepEqual(conv.map((m) => m.role), ["system", ...exchange, ...exchange, ...exchange]);
  // each exchange is the task's own single-task record after its system prompt
  for (let i = 0; i < 3; i++) {
    const single = (await sftRecord(math[i], tools)).conversations;
    assert.deepEqual(conv.slice(1 + 4 * i, 5 + 4 * i), single.slice(1));
  }
  const other = train.find((t) => t.reference!.name !== "calculate_math")!;
  await assert.rejects(() => sftConversation([math[0], other], tools), /offers other tools/);
});

Deno.test("copyRecords: the user gives a run of task values, the assistant repeats it", () => {
  const { train } = embeddedTasks(POEMS, { count: 100, seed: 7 });
  const recs = copyRecords(train, 50, 1);
  assert.equal(recs.length, 50);
  assert.deepEqual(copyRecords(train, 50, 1), recs);
  const values = new Set(
    train.flatMap((t) => [...Object.values(t.reference!.arguments).map(String), ...t.gt]),
  );
  for (const { conversations: [user, assistant, ...rest] } of recs) {
    assert.equal(rest.length, 0);
    assert.equal(user.role, "user");
    assert.equal(assistant.role, "assistant");
    assert.equal(user.content, `照抄：${assistant.content}`);
    const items = String(assistant.content).split(/[ ，、]/);
    // titles may hold a space; every item is (part of) a task value
    assert.ok(items.every((x) => [...values].some((v) => v.includes(x))), String(user.content));
  }
  assert.throws(() => copyRecords([], 1, 1), /no values/);
});

Deno.test("copyTexts: a run of task values, a newline, the same run", () => {
  const { train } = embeddedTasks(POEMS, { count: 100, seed: 7 });
  const recs = copyTexts(train, 30, 1);
  assert.deepEqual(copyTexts(train, 30, 1), recs);
  for (const { text } of recs) {
    const [a, b, ...rest] = text.split("\n");
    assert.equal(rest.length, 0);
    assert.equal(a, b);
    assert.ok(a.split(/[ ，、]/).length >= 6, text);
  }
});
