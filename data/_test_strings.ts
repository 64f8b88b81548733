// Varied test strings for comparing tokenizers: Chinese, English, code, emoji, whitespace runs,
// added tokens inside text, numbers, contractions and random code points. Deterministic per seed.

import { Rng } from "./random.ts";

const ZH = [
  "你好，世界！",
  "白日依山尽，黄河入海流。欲穷千里目，更上一层楼。",
  "这是一个测试，看看分词器是否能正确处理中文。",
  "Transformer 通过自注意力机制建模上下文关系",
  "床前明月光，疑是地上霜。舉頭望明月，低頭思故鄉。",
  "《静夜思》的作者是李白。",
  "今天天气怎么样？我想去公园散步……",
  "机器学习（Machine Learning）是人工智能的一个分支。",
  "「引号」『双引号』【方括号】〔龟甲〕",
  "一二三四五六七八九十百千万亿",
  "１２３４５６７８９０ＡＢＣ全角字符",
];
const EN = [
  "Hello world",
  "The sun sets in the west",
  "I'm 3.14 it's 2025!",
  "They'll say we've done it, but you'd better check what's REALLY there.",
  "don't can't won't shouldn't Y'ALL 'S 'd 'll",
  "e-mail: someone@example.com, url: https://example.org/a?b=c&d=e#f",
  "Numbers: 1,234,567.89 -42 +7 3e-10 0x1F 007",
  "CamelCaseWords and snake_case_words and kebab-case-words",
];
const CODE = [
  "function add(a, b) {\n  return a + b;\n}\n",
  "for (let i = 0; i < n; i++) {\n\tsum += xs[i] * 2;\n}",
  "def f(x):\n    if x > 0:\n        return x ** 2\n    return -x\n",
  "SELECT id, name FROM users WHERE age >= 18 ORDER BY name;",
  '{"role": "user", "content": "你好"}',
  '<div class="a">&nbsp;</div>',
  '#include <stdio.h>\nint main(){printf("%d\\n", 1<<3);}',
];
const EMOJI = [
  "😀",
  "👍🏽",
  "👨‍👩‍👧‍👦",
  "🇨🇳🇺🇸",
  "❤️",
  "🤖✨🔥",
  "emoji 😀 test",
  "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 𝟙𝟚𝟛",
  "𠀀𠀁𪚥",
];
const WS = [
  " ",
  "  ",
  "   ",
  "\n",
  "\n\n",
  "\n\n\n",
  "\t",
  "\t\t",
  "\r\n",
  " \n ",
  "\u00a0",
  "\u3000",
  "\u2003\u2003",
  "  \n\t  ",
  "\u2028",
];
const SPECIAL = [
  "<|im_start|>",
  "<|im_end|>",
  "<|endoftext|>",
  "<think>",
  "</think>",
  "<tool_call>",
  "</tool_call>",
  "<|im_start|>assistant\n",
  "<|im_end|>\n",
  "<|buffer3|>",
  "<|im_start",
  "im_end|>",
  "<|",
  "|>",
  "<think",
];
const PUNCT = [
  "!",
  "?",
  "...",
  "——",
  "、",
  "。",
  "，",
  "；",
  ":",
  "'",
  "''",
  '"',
  "(",
  ")",
  "-",
  "_",
  "~",
];

/** Random code point, avoiding lone surrogates and U+0085/U+FEFF (see pretokenize.ts). */
function randomCodePoint(rng: Rng): string {
  for (;;) {
    const r = rng.float();
    const cp = r < 0.5
      ? 0x20 + rng.int(0x250)
      : r < 0.8
      ? 0x3000 + rng.int(0x6000)
      : r < 0.95
      ? rng.int(0x10000)
      : 0x10000 + rng.int(0x20000);
    if (cp >= 0xd800 && cp <= 0xdfff) continue;
    if (cp === 0x85 || cp === 0xfeff) continue;
    return String.fromCodePoint(cp);
  }
}

/**
 * @param count How many strings.
 * @param seed PRNG seed.
 * @returns `count` varied strings (the first ones are the plain fragments themselves).
 */
export function testStrings(count: number, seed = 1): string[] {
  const rng = new Rng(seed);
  const pools = [ZH, EN, CODE, EMOJI, WS, SPECIAL, PUNCT];
  const out: string[] = [...ZH, ...EN, ...CODE, ...EMOJI, ...WS, ...SPECIAL, ""];
  while (out.length < count) {
    const parts = 1 + rng.int(8);
    let s = "";
    for (let p = 0; p < parts; p++) {
      const r = rng.float();
      if (r < 0.12) {
        let t = "";
        const k = 1 + rng.int(12);
        for (let i = 0; i < k; i++) t += randomCodePoint(rng);
        s += t;
      } else {
        const pool = pools[rng.int(pools.length)];
        let frag = rng.pick(pool);
        if (rng.float() < 0.3 && frag.length > 2) {
          const a = rng.int(frag.length), b = a + rng.int(frag.length - a + 1);
          frag = frag.slice(a, b);
        }
        s += frag;
      }
      if (rng.float() < 0.3) s += rng.pick(WS);
    }
    out.push(s);
  }
  return out.slice(0, count);
}
