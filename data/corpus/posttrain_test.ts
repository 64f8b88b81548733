import assert from "node:assert/strict";
import { join } from "node:path";
import { ciStyleData, linePattern, patternAgreement } from "./posttrain.ts";

Deno.test("linePattern counts the characters of each line", () => {
  assert.deepEqual(linePattern("百歲春霞。玉寺斜邊雨。\n兩人到日风鄉，不敢無来。"), [4, 5, 6, 4]);
});

Deno.test("patternAgreement: right line positions over the longer pattern", () => {
  assert.equal(patternAgreement([4, 7, 4, 7], [4, 7, 4, 7]), 1);
  assert.equal(patternAgreement([7, 7, 7, 7], [7, 7, 7, 7, 7, 7]), 4 / 6);
  assert.equal(patternAgreement([7, 7, 5, 5, 5, 5, 5, 5, 5], [7, 7, 5, 5, 5, 5, 5, 5]), 8 / 9);
  assert.equal(patternAgreement([5, 7], [7, 5]), 0);
  assert.equal(patternAgreement([], [7]), 0);
});

Deno.test("ciStyleData keeps the chosen tunes, their canonical pattern, training poems only", async () => {
  const dir = await Deno.makeTempDir();
  const ci = (tune: string, body: string) => JSON.stringify({ text: `《${tune}》 某\n${body}` });
  const wanxi =
    "一二三四五六七，一二三四五六七。一二三四五六七。\n一二三四五六七，一二三四五六七。一二三四五六七。";
  const jianzi = "一二三四，一二三四五六七。一二三四，一二三四五六七。";
  await Deno.writeTextFile(
    join(dir, "pretrain.jsonl"),
    [
      ci("浣溪沙", wanxi),
      ci("浣溪沙", wanxi),
      ci("浣溪沙", "一二三四五，一二三四五。"), // off-pattern: dropped
      ci("减字木兰花", jianzi),
      ci("清平乐", "一二三四，一二三四五。"), // not a chosen tune
    ].join("\n"),
  );
  await Deno.writeTextFile(join(dir, "heldout.jsonl"), ci("浣溪沙", wanxi));
  const d = ciStyleData(join(dir, "pretrain.jsonl"), join(dir, "heldout.jsonl"), 1, [
    "浣溪沙",
    "减字木兰花",
  ]);
  assert.deepEqual(d.patterns, { "浣溪沙": [7, 7, 7, 7, 7, 7], "减字木兰花": [4, 7, 4, 7] });
  assert.equal(d.train.length, 3);
  assert.equal(d.heldout.length, 1);
  for (const r of d.train) {
    assert.match(r.conversations[0].content, /《(浣溪沙|减字木兰花)》/);
    assert.ok([wanxi, jianzi].includes(r.conversations[1].content));
  }
  await Deno.remove(dir, { recursive: true });
});
