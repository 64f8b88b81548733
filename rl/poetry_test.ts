import assert from "node:assert/strict";
import { poetryScore, readLine, rhymeGroup } from "./poetry.ts";

const JUEJU5 = { name: "五言绝句", lines: 4, charsPerLine: 5 };
const LVSHI5 = { name: "五言律诗", lines: 8, charsPerLine: 5 };

Deno.test("rhymeGroup: 中华新韵's fourteen groups from pinyin finals", () => {
  assert.equal(rhymeGroup("l", "iu"), "尤");
  assert.equal(rhymeGroup("l", "ou"), "尤");
  assert.equal(rhymeGroup("sh", "uang"), "唐");
  assert.equal(rhymeGroup("x", "iang"), "唐");
  assert.equal(rhymeGroup("zh", "i"), "支"); // zhi
  assert.equal(rhymeGroup("q", "i"), "齐"); // qi
  assert.equal(rhymeGroup("j", "ü"), "齐");
  assert.equal(rhymeGroup("", "ng"), "");
});

Deno.test("readLine: traditional characters, tones 1–2 are level (平)", () => {
  const r = readLine("低頭思故鄉");
  assert.deepEqual(r.map((x) => x.level), [true, true, true, false, true]);
  assert.equal(r[4].group, "唐");
  assert.equal(readLine("一層")[0].level, true); // no tone sandhi: 一 is yī
});

Deno.test("poetryScore: 登鹳雀楼 is a regulated 五言绝句 (every check holds)", () => {
  const s = poetryScore("白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。", JUEJU5);
  assert.deepEqual(s, { total: 3, form: 1, rhyme: 1, tone: 1, repeat: 0 });
});

Deno.test("poetryScore: 静夜思 rhymes (霜/鄉) and passes 7 of its 12 tone checks", () => {
  // hand count: line 1 alternates (1/1); line 2: 是/上 same ✗, 对 at 2nd ✓ at 4th ✗, ends 平 ✓
  // (2/4); line 3: 頭/明 same ✗, 粘 ✗, ends 仄 ✓ (1/3); line 4: ✓, 对 ✗ ✓, ends 平 ✓ (3/4)
  const s = poetryScore("床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。", JUEJU5);
  assert.equal(s.rhyme, 1);
  assert.equal(s.tone, 7 / 12);
  assert.equal(s.form, 1);
});

Deno.test("poetryScore: a parroted couplet earns no rhyme and pays for repeats", () => {
  const s = poetryScore("白日依山尽，黄河入海流。白日依山尽，黄河入海流。", JUEJU5);
  assert.equal(s.rhyme, 0); // 流 counted once
  assert.equal(s.repeat, 0.5);
  assert.equal(s.total, s.form + s.rhyme + s.tone - 0.5);
});

Deno.test("poetryScore: wrong shape → partial form, no tone; rhyme counts the requested even lines", () => {
  const s = poetryScore("白日依山尽，黄河入海流。欲穷千里目，更上一层楼。", LVSHI5);
  assert.equal(s.form, 0.25); // line count wrong; 4 of 8 lines of the right length
  assert.equal(s.tone, 0);
  assert.equal(s.rhyme, 1 / 3); // 流/楼 agree: 1 of the 3 rhymes an 8-line poem needs after the first
  assert.deepEqual(poetryScore("", JUEJU5), { total: 0, form: 0, rhyme: 0, tone: 0, repeat: 0 });
});
