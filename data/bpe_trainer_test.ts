import assert from "node:assert/strict";
import { Tokenizer as OracleTokenizer } from "@huggingface/tokenizers";
import {
  byteLevelAlphabet,
  countWords,
  MINIMIND_SPECIAL_TOKENS,
  Tokenizer,
  trainBpe,
  trainTokenizer,
} from "./mod.ts";
import { testStrings } from "./_test_strings.ts";
import { fixture } from "../tests/_util.ts";

const TEXTS = [
  ...testStrings(1500, 21),
  ..."白日依山尽，黄河入海流。欲穷千里目，更上一层楼。".repeat(200).split("。"),
  "low lower lowest newer newest wider widest",
];

Deno.test("trainBpe() merges the most frequent pair first, ties by smallest ids", () => {
  // "ab" ×5, "bc" ×3: the first merge is (a, b); then "ab"+"c" can follow in "abc".
  const { merges, vocab } = trainBpe(["ab ab ab abc abc", "bc"], {
    vocabSize: 256 + 4,
    specialTokens: [],
  });
  assert.deepEqual(merges[0], ["a", "b"]);
  assert.equal(vocab["ab"], 256);
  // Counts: (Ġ,ab) ×4 ... the trainer is HF's: every merge adds one token here.
  assert.equal(Object.keys(vocab).length, 260);
  // A tie between (x, y) and (y, z) (both once) goes to the smaller pair of ids.
  const tie = trainBpe(["xyz"], { vocabSize: 257, specialTokens: [] });
  assert.deepEqual(tie.merges, [["x", "y"]]);
});

Deno.test("trainBpe() stops when no pair is left, and honours minFrequency", () => {
  const { merges } = trainBpe(["ab"], { vocabSize: 1000, specialTokens: [] });
  assert.deepEqual(merges, [["a", "b"]]);
  const none = trainBpe(["ab ab"], { vocabSize: 1000, specialTokens: [], minFrequency: 3 });
  assert.deepEqual(none.merges, []);
  assert.throws(
    () => trainBpe(["x"], { vocabSize: 100 }),
    /Cannot train BPE with vocab_size 100: it must be at least 256/,
  );
});

Deno.test("countWords() cuts special tokens out before pre-tokenizing", () => {
  const { counts } = countWords(["<|im_start|>hi there<|im_end|> hi"], MINIMIND_SPECIAL_TOKENS);
  assert.deepEqual([...counts.entries()].sort(), [[" hi", 1], [" there", 1], ["hi", 1]]);
});

Deno.test("trainTokenizer() writes MiniMind's layout that @huggingface/tokenizers agrees with", async () => {
  const tok = trainTokenizer(TEXTS, { vocabSize: 800 });
  assert.equal(tok.vocabSize, 800);
  assert.equal(tok.model.merges.length, 800 - 36 - 256);
  assert.deepEqual([tok.padId, tok.bosId, tok.eosId], [0, 1, 2]);
  MINIMIND_SPECIAL_TOKENS.forEach((t, i) => assert.equal(tok.tokenToId(t), i));
  byteLevelAlphabet().forEach((ch, i) => assert.equal(tok.idToToken(36 + i), ch));
  assert.equal(tok.specialIds.size, 21);
  assert.equal(tok.tokenToId("<think>"), 25);
  const dir = await Deno.makeTempDir();
  try {
    await tok.save(dir);
    const json = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer.json`));
    const config = JSON.parse(await Deno.readTextFile(`${dir}/tokenizer_config.json`));
    const reference = JSON.parse(
      await Deno.readTextFile(
        fixture("minimind/minimind-3/tokenizer_config.json"),
      ),
    );
    assert.equal(config.chat_template, reference.chat_template);
    assert.deepEqual(config.added_tokens_decoder, reference.added_tokens_decoder);
    assert.deepEqual(config.additional_special_tokens, reference.additional_special_tokens);
    const oracle = new OracleTokenizer(json, config);
    const back = await Tokenizer.fromFile(dir);
    for (const s of testStrings(1000, 22)) {
      const ids = tok.encode(s);
      assert.deepEqual(oracle.encode(s, { add_special_tokens: false }).ids, ids, JSON.stringify(s));
      assert.deepEqual(back.encode(s), ids);
      if (ids.length > 0) assert.equal(tok.decode(ids), oracle.decode(ids));
    }
    const prompt = tok.applyChatTemplate([{ role: "user", content: "你好" }], {
      addGenerationPrompt: true,
    });
    assert.equal(
      prompt,
      "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("trainTokenizer() is deterministic and compresses its training text", () => {
  const a = trainTokenizer(TEXTS, { vocabSize: 600 });
  const b = trainTokenizer(TEXTS, { vocabSize: 600 });
  assert.deepEqual(a.model.merges, b.model.merges);
  const text = "白日依山尽，黄河入海流。";
  assert.ok(a.encode(text).length < new TextEncoder().encode(text).length / 2);
  assert.equal(a.decode(a.encode(text)), text);
});
