import assert from "node:assert/strict";
import { runToolCall } from "../serve/tools.ts";
import type { Poem } from "../data/corpus/poetry.ts";
import { builtinTools, convertUnit } from "./builtin.ts";

const POEMS: Poem[] = [
  {
    kind: "tang",
    title: "靜夜思",
    author: "李白",
    paragraphs: ["床前明月光，疑是地上霜。", "舉頭望明月，低頭思故鄉。"],
  },
  {
    kind: "tang",
    title: "登鸛雀樓",
    author: "王之渙",
    paragraphs: ["白日依山盡，黃河入海流。", "欲窮千里目，更上一層樓。"],
  },
];
const tools = builtinTools(POEMS);
const run = (name: string, args: unknown) =>
  runToolCall(tools, {
    id: "c",
    type: "function",
    function: { name, arguments: JSON.stringify(args) },
  });

Deno.test("builtin tools: calculator, units, dates, poetry", async () => {
  assert.equal((await run("calculate_math", { expression: "(12+30)*3/7" })).message.content, "18");
  const e = await run("calculate_math", { expression: "1/0" });
  assert.equal(e.error, "failed");
  assert.match(String(e.message.content), /Division by zero/);
  assert.equal(
    (await run("unit_converter", { value: 5, from_unit: "km", to_unit: "m" })).message.content,
    "5000 m",
  );
  assert.equal(convertUnit(212, "°F", "C"), 100);
  assert.ok(Math.abs(convertUnit(1, "mile", "km") - 1.609344) < 1e-12);
  assert.equal(convertUnit(2, "斤", "kg"), 1);
  assert.throws(() => convertUnit(1, "kg", "m"), /cannot convert mass \('kg'\) to length/);
  assert.throws(() => convertUnit(1, "parsec", "m"), /unknown unit 'parsec'/);
  assert.deepEqual(
    JSON.parse(
      String((await run("date_calculator", { date: "2024-02-28", add_days: 2 })).message.content),
    ),
    { date: "2024-03-01", weekday: "星期五" },
  );
  assert.deepEqual(
    JSON.parse(
      String(
        (await run("date_calculator", { date: "2024-01-01", until: "2025-01-01" })).message.content,
      ),
    ),
    { days: 366 },
  );
  assert.match(
    String((await run("date_calculator", { date: "2024-02-30" })).message.content),
    /'2024-02-30' is not a calendar date/,
  );
  assert.equal(
    (await run("poetry_lookup", { query: "《靜夜思》" })).message.content,
    "《靜夜思》李白：床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
  );
  assert.match(
    String((await run("poetry_lookup", { query: "黃河入海流" })).message.content),
    /^《登鸛雀樓》王之渙/,
  );
  assert.match(
    String((await run("poetry_lookup", { query: "春曉" })).message.content),
    /no poem matches/,
  );
});
