import assert from "node:assert/strict";
import type { Poem } from "../data/corpus/poetry.ts";
import { builtinTools } from "./builtin.ts";
import { embeddedTasks, sftRecord } from "./tasks.ts";

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
