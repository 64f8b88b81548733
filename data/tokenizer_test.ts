import assert from "node:assert/strict";
import { Tokenizer as OracleTokenizer } from "@huggingface/tokenizers";
import { MAX_PIECE_CHARS, Tokenizer } from "./tokenizer.ts";
import { MINIMIND_CHAT_TEMPLATE } from "./chat_template.ts";
import { pretokenize } from "./pretokenize.ts";
import { testStrings } from "./_test_strings.ts";
import { fixture } from "../tests/_util.ts";

const M3 = fixture("minimind/minimind-3");
const M2 = fixture("minimind/minimind2");

function readJson(path: string): Record<string, unknown> {
  return JSON.parse(Deno.readTextFileSync(path));
}

const vectors = readJson(fixture("vectors/vectors.json")) as Record<string, never>;
const templateCases = readJson(fixture("vectors/template_cases.json")) as Record<
  string,
  { input: Record<string, unknown>; output: string }
>;

const m3 = await Tokenizer.fromFile(`${M3}/tokenizer.json`);
const m2 = await Tokenizer.fromFile(`${M2}/tokenizer.json`);

Deno.test("Tokenizer.encode() matches the §10 vectors (minimind-3)", () => {
  const cases = vectors.tokenizer_encode as Record<string, number[]>;
  assert.ok(Object.keys(cases).length >= 8);
  for (const [text, ids] of Object.entries(cases)) {
    assert.deepEqual(m3.encode(text), ids, `encode(${JSON.stringify(text)})`);
    assert.equal(m3.decode(ids), text);
  }
});

Deno.test("Tokenizer loads MiniMind's special ids, sizes and template", () => {
  assert.equal(m3.vocabSize, 6400);
  assert.equal(m3.model.merges.length, 6108);
  assert.equal(m3.addedTokens.length, 36);
  assert.equal(m2.vocabSize, 6400);
  assert.equal(m2.model.merges.length, 6141);
  assert.equal(m2.addedTokens.length, 3);
  for (const t of [m2, m3]) {
    assert.deepEqual([t.padId, t.bosId, t.eosId], [0, 1, 2]);
    assert.equal(t.tokenToId("<|im_end|>"), 2);
  }
  assert.equal(m3.idToToken(36), "!");
  assert.equal(m2.idToToken(3), "!");
  assert.equal(m3.specialIds.size, 21); // ids 21–35 (<think>, <tool_call>, …) are not special
  assert.equal(m3.tokenToId("<think>"), 25);
  assert.equal(m3.config.chat_template, MINIMIND_CHAT_TEMPLATE);
});

Deno.test("Tokenizer: generation prompt ids match §10 vector 8", () => {
  const gp = vectors.gen_prompt_ids as Record<string, number[]>;
  const msgs = [{ role: "user", content: "你好" }];
  const off = m3.applyChatTemplate(msgs, { addGenerationPrompt: true, openThinking: false });
  assert.deepEqual(m3.encode(off), gp["user 你好, open_thinking=False"]);
  const on = m3.applyChatTemplate(msgs, { addGenerationPrompt: true, openThinking: true });
  assert.deepEqual(m3.encode(on), gp["user 你好, open_thinking=True"]);
});

Deno.test("applyChatTemplate() renders every template case byte-identically", () => {
  assert.equal(Object.keys(templateCases).length, 6);
  for (const [name, c] of Object.entries(templateCases)) {
    const { messages, ...vars } = c.input;
    const got = m3.applyChatTemplate(messages as never, vars);
    assert.equal(got, c.output, name);
  }
});

Deno.test("applyChatTemplate() camelCase options and MiniMind2's enable_thinking", () => {
  const msgs = [{ role: "user", content: "hi" }];
  assert.equal(
    m3.applyChatTemplate(msgs, { addGenerationPrompt: true, openThinking: true }),
    m3.applyChatTemplate(msgs, { add_generation_prompt: true, open_thinking: true }),
  );
  const v2 = m2.applyChatTemplate(msgs, { addGenerationPrompt: true });
  assert.equal(
    v2,
    "<|im_start|>system\nYou are a helpful assistant<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n" +
      "<|im_start|>assistant\n",
  );
  const v2off = m2.applyChatTemplate(msgs, { addGenerationPrompt: true, enableThinking: false });
  assert.ok(v2off.endsWith("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
});

Deno.test("pretokenize() follows the GPT-2 pattern with Unicode White_Space", () => {
  assert.deepEqual(pretokenize("I'm  here!"), ["I", "'m", " ", " here", "!"]);
  assert.deepEqual(pretokenize("a\n\nb  "), ["a", "\n", "\n", "b", "  "]);
  assert.deepEqual(pretokenize("a   b\t"), ["a", "  ", " b", "\t"]);
  assert.deepEqual(pretokenize(" 's ?'s 12ab"), [" '", "s", " ?'", "s", " 12", "ab"]);
  assert.deepEqual(pretokenize("x\u3000\u3000y"), ["x", "\u3000", "\u3000", "y"]);
  // U+0085 is whitespace for HF (Oniguruma) though not for JavaScript's \s; U+FEFF the reverse.
  assert.deepEqual(pretokenize("a\u0085\u0085b"), ["a", "\u0085", "\u0085", "b"]);
  assert.deepEqual(pretokenize("a \ufeffb"), ["a", " \ufeff", "b"]);
  for (const s of testStrings(300, 9)) assert.equal(pretokenize(s).join(""), s);
});

const ORACLE_COUNT = 3000;

for (const [name, dir, ours] of [["minimind-3", M3, m3], ["minimind2", M2, m2]] as const) {
  Deno.test(`encode()/decode() agree with @huggingface/tokenizers on ${ORACLE_COUNT} strings (${name})`, () => {
    const oracle = new OracleTokenizer(
      readJson(`${dir}/tokenizer.json`),
      readJson(`${dir}/tokenizer_config.json`),
    );
    const strings = testStrings(ORACLE_COUNT, name === "minimind2" ? 2 : 1);
    let specialsSeen = 0;
    for (const s of strings) {
      const want = oracle.encode(s, { add_special_tokens: false }).ids;
      const got = ours.encode(s);
      assert.deepEqual(got, want, `encode(${JSON.stringify(s)})`);
      if (got.some((id) => id < 3)) specialsSeen++;
      if (got.length > 0) {
        assert.equal(ours.decode(got), oracle.decode(got), `decode(${JSON.stringify(s)})`);
        assert.equal(
          ours.decode(got, { skipSpecialTokens: true }),
          oracle.decode(got, { skip_special_tokens: true }),
        );
      }
    }
    assert.ok(specialsSeen > 100, `only ${specialsSeen} strings contained special tokens`);
  });
}

Deno.test("decode() of random ids agrees with the oracle (invalid UTF-8 → U+FFFD)", () => {
  const oracle = new OracleTokenizer(
    readJson(`${M3}/tokenizer.json`),
    readJson(`${M3}/tokenizer_config.json`),
  );
  let seed = 12345;
  for (let k = 0; k < 500; k++) {
    const ids: number[] = [];
    const n = 1 + (k % 9);
    for (let i = 0; i < n; i++) {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      ids.push(seed % 6400);
    }
    assert.equal(m3.decode(ids), oracle.decode(ids), `decode(${ids})`);
  }
});

Deno.test("decodeStream() never splits a character and concatenates to decode()", () => {
  for (const s of testStrings(400, 5)) {
    const ids = m3.encode(s);
    for (const skip of [false, true]) {
      const stream = m3.decodeStream({ skipSpecialTokens: skip });
      let text = "";
      for (const id of ids) {
        const piece = stream.push(id);
        assert.ok(!/[\ud800-\udbff]$/.test(piece), "piece ends in a high surrogate");
        assert.ok(!piece.includes("\ufffd") || s.includes("\ufffd") || /[\ud800-\udfff]/.test(s));
        text += piece;
      }
      text += stream.flush();
      assert.equal(text, m3.decode(ids, { skipSpecialTokens: skip }));
    }
  }
  // "😀" is 4 bytes spread over several byte tokens: nothing comes out until the last one.
  const ids = m3.encode("😀");
  assert.ok(ids.length > 1);
  const stream = m3.decodeStream();
  const outs = ids.map((id) => stream.push(id));
  assert.deepEqual(outs.slice(0, -1).join(""), "");
  assert.equal(outs.at(-1), "😀");
  // An unfinished character comes out of flush() as U+FFFD.
  const cut = m3.decodeStream();
  assert.equal(cut.push(ids[0]), "");
  assert.equal(cut.flush(), "\ufffd");
});

Deno.test("Tokenizer.save() round-trips and writes HF-loadable files", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await m3.save(dir);
    const back = await Tokenizer.fromFile(dir);
    const oracle = new OracleTokenizer(
      JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`)),
      JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`)),
    );
    for (const s of testStrings(200, 3)) {
      assert.deepEqual(back.encode(s), m3.encode(s));
      assert.deepEqual(oracle.encode(s, { add_special_tokens: false }).ids, m3.encode(s));
    }
    assert.equal(back.config.chat_template, MINIMIND_CHAT_TEMPLATE);
    const text = await Deno.readTextFile(`${dir}/tokenizer.json`);
    assert.ok(text.indexOf('"<|endoftext|>": 0') < text.indexOf('"!": 36'), "vocab in id order");
    assert.deepEqual(
      JSON.parse(text).model.vocab,
      (JSON.parse(await Deno.readTextFile(`${M3}/tokenizer.json`)) as never as {
        model: { vocab: unknown };
      }).model.vocab,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("Tokenizer: legacy string merges, TemplateProcessing and clear load errors", () => {
  const json = m2.toJSON();
  json.model.merges = (json.model.merges as [string, string][]).map(([a, b]) => `${a} ${b}`);
  json.post_processor = {
    type: "TemplateProcessing",
    single: [{ SpecialToken: { id: "<|im_start|>", type_id: 0 } }, {
      Sequence: { id: "A", type_id: 0 },
    }],
    pair: [],
    special_tokens: { "<|im_start|>": { id: "<|im_start|>", ids: [1], tokens: ["<|im_start|>"] } },
  };
  const t = Tokenizer.fromJSON(json, m2.config);
  assert.deepEqual(t.encode("Hello world"), [1, ...m2.encode("Hello world")]);
  assert.deepEqual(t.encode("Hello world", { addSpecialTokens: false }), m2.encode("Hello world"));
  const bad = m2.toJSON();
  bad.model.merges = [["Ġ", "zzz"]];
  assert.throws(() => Tokenizer.fromJSON(bad), /Cannot load merge #0 .*zzz is not in the vocab/);
  const wp = m2.toJSON();
  wp.pre_tokenizer = { type: "Whitespace" };
  assert.throws(() => Tokenizer.fromJSON(wp), /pre_tokenizer Whitespace is not supported/);
  assert.throws(
    () => m2.toJSON() && Tokenizer.fromJSON(m2.toJSON()).applyChatTemplate([]),
    /no chat_template/,
  );
});

Deno.test("Tokenizer: added-token lstrip/rstrip/single_word follow HF", () => {
  const json = m2.toJSON();
  json.added_tokens = [
    ...json.added_tokens!,
    { id: 6400, content: "<mask>", lstrip: true, rstrip: true, special: true, normalized: false },
    { id: 6401, content: "cat", single_word: true, special: false, normalized: false },
  ];
  const t = Tokenizer.fromJSON(json, m2.config);
  assert.deepEqual(t.encode("a  <mask>  b"), [...m2.encode("a"), 6400, ...m2.encode("b")]);
  assert.deepEqual(t.encode("cat concat"), [6401, ...m2.encode(" concat")]);
  assert.equal(t.vocabSize, 6402);
});

/** A seeded string of `n` characters drawn from `alphabet`, with no space or punctuation. */
function word(n: number, alphabet: string, seed: number): string {
  const chars = [...alphabet], out: string[] = [];
  let x = seed;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    out.push(chars[(x >>> 8) % chars.length]);
  }
  return out.join(""); // a flat string: a += rope would be flattened inside the timed code
}

const LETTERS = "abcdefghijklmnopqrstuvwxyz";
const HAN = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动";

Deno.test("BpeModel merges long pieces like HF (priority queue, equal ranks left to right)", () => {
  const oracle = new OracleTokenizer(
    readJson(`${M3}/tokenizer.json`),
    readJson(`${M3}/tokenizer_config.json`),
  );
  const utf8 = new TextEncoder();
  for (const [i, w] of [word(3000, LETTERS, 1), word(900, HAN, 2), "a".repeat(2049)].entries()) {
    const bytes = utf8.encode(w), got: number[] = [];
    m3.model.encodeBytes(bytes, bytes.length, got);
    assert.deepEqual(got, oracle.encode(w, { add_special_tokens: false }).ids, `word ${i}`);
  }
});

Deno.test("BpeModel: a 1 MB piece encodes in well under 2.5 s (rescanning all pairs: ~8 s)", () => {
  const bytes = new TextEncoder().encode(word(1 << 20, LETTERS, 3));
  const out: number[] = [];
  const t0 = performance.now();
  m3.model.encodeBytes(bytes, bytes.length, out);
  const ms = performance.now() - t0;
  assert.ok(out.length > 100_000 && out.length < bytes.length, `${out.length} ids`);
  assert.ok(ms < 2500, `1 MB piece took ${ms.toFixed(0)} ms`);
});

Deno.test("Tokenizer: words over MAX_PIECE_CHARS encode in chunks; the word cache stays bounded", () => {
  const t = Tokenizer.fromJSON(m3.toJSON(), m3.config);
  const long = word(2 * MAX_PIECE_CHARS + 100, HAN, 4);
  const chunks = [long.slice(0, 1024), long.slice(1024, 2048), long.slice(2048)];
  assert.deepEqual(t.encode(long), chunks.flatMap((c) => t.encode(c)));
  // ten long words of 200 K characters each: the cache held ~22 MB of them before it was bounded
  for (let i = 0; i < 10; i++) t.encode(word(200_000, LETTERS, 10 + i));
  assert.ok(t.wordCacheBytes > 0 && t.wordCacheBytes <= 8 << 20, `${t.wordCacheBytes} bytes`);
  // a surrogate pair at the chunk edge stays whole
  const emoji = "a".repeat(MAX_PIECE_CHARS - 1) + "😀b";
  assert.equal(t.decode(t.encode(emoji)), emoji);
});

Deno.test("Tokenizer.encodeAsync() gives encode()'s ids and lets timers run during a 1 MB text", async () => {
  const text = word(1 << 20, LETTERS, 5);
  const ticks: number[] = [];
  const timer = setInterval(() => ticks.push(performance.now()), 5);
  const t0 = performance.now();
  const ids = await m3.encodeAsync(text, { sliceMs: 10 });
  clearInterval(timer);
  const ms = performance.now() - t0;
  assert.deepEqual(ids, m3.encode(text));
  assert.ok(ticks.length >= 2, `only ${ticks.length} timer ticks in ${ms.toFixed(0)} ms`);
  const gaps = ticks.map((t, i) => t - (ticks[i - 1] ?? t0));
  // 10 ms slices; the bound is loose for a loaded machine (a blocking encode stalls ~600 ms here)
  assert.ok(Math.max(...gaps) < 250, `longest stall ${Math.max(...gaps).toFixed(0)} ms`);
  // stopAfter: the first ids of the full encoding, at least that many
  const first = await m3.encodeAsync(text, { stopAfter: 1000 });
  assert.ok(first.length >= 1000 && first.length < ids.length, `${first.length} ids`);
  assert.deepEqual(first, ids.slice(0, first.length));
});

Deno.test("Tokenizer: ids out of range, negative or not integers are load errors", () => {
  for (
    const [bad, want] of [
      [1e9, /id 1000000000; ids must be integers in 0\.\.6436/],
      [
        -1,
        /id -1;/,
      ],
      ["5", /id "5";/],
      [2.5, /id 2\.5;/],
    ] as const
  ) {
    const json = m3.toJSON();
    json.model.vocab = { ...json.model.vocab, "zz-extra": bad as number };
    assert.throws(() => Tokenizer.fromJSON(json, m3.config), want);
    const added = m3.toJSON();
    added.added_tokens = [...added.added_tokens!, { id: bad as number, content: "<x>" }];
    assert.throws(() => Tokenizer.fromJSON(added, m3.config), /added token "<x>" has id/);
  }
});
