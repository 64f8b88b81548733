import assert from "node:assert/strict";
import { tensor } from "../nn/creation.ts";
import { init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { fixture } from "../tests/_util.ts";
import { criticValues, initValueHead } from "./critic.ts";
import {
  parseChatPrompt,
  poetryReward,
  repetitionPenalty,
  RewardError,
  rewardModelMessages,
  ruleComponents,
  rulesReward,
  scoreRewards,
  ValueHeadRewardModel,
} from "./rewards.ts";
import type { RewardFunction } from "./rewards.ts";

const tok = await Tokenizer.fromFile(fixture("minimind/minimind2"));
const PROMPT =
  "<|im_start|>system\n你是诗人<|im_end|>\n<|im_start|>user\n写一首五言绝句，题为《登樓》。" +
  "<|im_end|>\n<|im_start|>assistant\n";

Deno.test("repetitionPenalty: duplicate trigrams of \\w+|[^\\w\\s] tokens, capped at 0.5", () => {
  assert.equal(repetitionPenalty("a b c d"), 0); // trigrams abc, bcd
  // "a b a b a b": 4 trigrams, 2 distinct → min(0.5, 2/4) = 0.5
  assert.equal(repetitionPenalty("a b a b a b"), 0.5);
  // 5 trigrams "x y z x y z w": xyz yzx zxy xyz yzw → 1 duplicate → 1/5
  assert.equal(repetitionPenalty("X y z x Y z w"), 0.2);
  assert.equal(repetitionPenalty("床前，明月。"), 0); // 床前 ， 明月 。
});

Deno.test("ruleComponents: MiniMind's length, think and repetition terms", () => {
  assert.deepEqual(ruleComponents("短").components, { length: -0.5, repetition: 0 });
  const think = "想".repeat(20);
  const r = ruleComponents(`${think}</think>\n${"答".repeat(25)}`);
  assert.deepEqual(r.components, { length: 0.5, think: 1.0, think_count: 0.25, repetition: 0 });
  assert.equal(r.answer, "答".repeat(25));
  const two = ruleComponents(`短</think>a</think>${"x ".repeat(12)}`);
  assert.equal(two.components.think, -0.5);
  assert.equal(two.components.think_count, -0.25);
});

Deno.test("parseChatPrompt and rewardModelMessages: LMForRewardModel's input", () => {
  const m = parseChatPrompt(PROMPT);
  assert.deepEqual(m, [
    { role: "system", content: "你是诗人" },
    { role: "user", content: "写一首五言绝句，题为《登樓》。" },
  ]);
  assert.deepEqual(rewardModelMessages(m, "答"), [
    {
      role: "user",
      content: "system: 你是诗人\n以上是对话历史。我的新问题是：\n写一首五言绝句，题为《登樓》。",
    },
    { role: "assistant", content: "答" },
  ]);
  assert.deepEqual(rewardModelMessages(m.slice(1), "答")[0].content, m[1].content);
});

Deno.test("rulesReward: rule terms plus the reward model's score clipped to ±3", async () => {
  const rm = { score: (b: readonly unknown[]) => Promise.resolve(b.map((_, i) => [7, -0.5][i])) };
  const s = await scoreRewards(rulesReward(rm), [
    { prompt: PROMPT, response: "短" },
    { prompt: PROMPT, response: "长".repeat(30) },
  ]);
  assert.deepEqual(s[0], {
    total: -0.5 + 3,
    components: { length: -0.5, repetition: 0, model: 3 },
  });
  assert.equal(s[1].total, 0.5 - 0.5);
});

Deno.test("poetryReward: components from the record's form, else from the prompt", async () => {
  const poem = "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。";
  const [a, b] = await scoreRewards(poetryReward(), [
    { prompt: PROMPT, response: poem },
    {
      prompt: "x",
      response: poem,
      record: { form: { name: "七言绝句", lines: 4, chars_per_line: 7 } },
    },
  ]);
  assert.deepEqual(a, { total: 3, components: { form: 1, rhyme: 1, tone: 1, repeat: 0 } });
  assert.equal(b.components.form, 0.5); // right line count, no line of 7
  await assert.rejects(
    () => scoreRewards(poetryReward(), [{ prompt: "no form here", response: poem }]),
    (e: Error) => e instanceof RewardError && e.message.includes("no form here"),
  );
});

Deno.test("scoreRewards: a throw or a NaN stops with the prompt named", async () => {
  const nan: RewardFunction = {
    name: "bad",
    score: (xs) => xs.map((_, i) => ({ total: i === 1 ? NaN : 0, components: {} })),
  };
  await assert.rejects(
    () => scoreRewards(nan, [{ prompt: "p0", response: "" }, { prompt: "写诗p1", response: "r" }]),
    (e: Error) =>
      e instanceof RewardError && e.message.includes('prompt [1] "写诗p1"') &&
      e.message.includes("total = NaN"),
  );
  const comp: RewardFunction = {
    name: "c",
    score: (xs) => xs.map(() => ({ total: 1, components: { rhyme: Infinity } })),
  };
  await assert.rejects(
    () => scoreRewards(comp, [{ prompt: "p", response: "" }]),
    /rhyme = Infinity/,
  );
  const thrower: RewardFunction = {
    name: "t",
    score: () => {
      throw new Error("boom");
    },
  };
  await assert.rejects(
    () => scoreRewards(thrower, [{ prompt: "提示甲", response: "" }]),
    (e: Error) => e instanceof RewardError && /提示甲/.test(e.message) && /boom/.test(e.message),
  );
});

Deno.test("ValueHeadRewardModel: the critic's value at the last token of the rendered pair", async () => {
  const cfg = config("minimind2-small", {
    hiddenSize: 32,
    numHiddenLayers: 1,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    vocabSize: tok.vocabSize,
  });
  const params = { ...init(cfg, key(1)), value_head: initValueHead(cfg, key(2)) };
  const rm = new ValueHeadRewardModel({ cfg, params, tokenizer: tok });
  const messages = parseChatPrompt(PROMPT);
  const [got] = await rm.score([{ messages, response: "答" }]);
  const ids = tok.encode(tok.applyChatTemplate(rewardModelMessages(messages, "答")));
  const all = await criticValues(cfg, params, tensor(Int32Array.from(ids), [1, ids.length], "i32"))
    .data();
  assert.equal(got, all[ids.length - 1]);
  assert.ok(Number.isFinite(got));
});
