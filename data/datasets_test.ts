import assert from "node:assert/strict";
import {
  DataLoader,
  DPODataset,
  IGNORE_INDEX,
  PlainTextDataset,
  PretrainDataset,
  RLAIFDataset,
  SFTDataset,
  Tokenizer,
} from "./mod.ts";
import { fixture } from "../tests/_util.ts";

const vectors = JSON.parse(
  Deno.readTextFileSync(fixture("vectors/vectors.json")),
) as Record<string, Record<string, Record<string, unknown>>>;
const tok = await Tokenizer.fromFile(fixture("minimind/minimind-3/tokenizer.json"));

const hello = {
  conversations: [{ role: "user", content: "你好" }, { role: "assistant", content: "你好！" }],
};

Deno.test("PretrainDataset matches §10 vector 10", () => {
  const v = vectors.pretrain_example as unknown as {
    text: string;
    max_length: number;
    input_ids: number[];
    labels: number[];
  };
  const ds = new PretrainDataset([{ text: v.text }], tok, { maxLength: v.max_length });
  const s = ds.get(0);
  assert.deepEqual([...s.inputIds], v.input_ids);
  assert.deepEqual([...s.labels], v.labels);
  // Truncation keeps room for bos and eos.
  const long = new PretrainDataset([{ text: "白日依山尽 ".repeat(20) }], tok, { maxLength: 10 });
  const l = long.get(0);
  assert.equal(l.inputIds[0], 1);
  assert.equal(l.inputIds[9], 2);
  assert.ok(!l.labels.includes(IGNORE_INDEX));
});

Deno.test("SFTDataset matches §10 vector 9 (empty think removed and kept)", () => {
  const ex = vectors.sft_example;
  const removed = ex["empty_think_removed(80%)"] as { input_ids: number[]; labels: number[] };
  const kept = ex["empty_think_kept(20%)"] as { input_ids: number[]; labels: number[] };
  const always = new SFTDataset([hello], tok, {
    maxLength: 32,
    addSystemRatio: 0,
    emptyThinkRatio: 0,
  });
  assert.deepEqual(always.assistantStart, [1, 1388, 570, 811, 234]);
  assert.deepEqual(always.assistantEnd, [2, 234]);
  assert.deepEqual([...always.get(0).inputIds], removed.input_ids);
  assert.deepEqual([...always.get(0).labels], removed.labels);
  const never = new SFTDataset([hello], tok, {
    maxLength: 32,
    addSystemRatio: 0,
    emptyThinkRatio: 1,
  });
  assert.deepEqual([...never.get(0).inputIds], kept.input_ids);
  assert.deepEqual([...never.get(0).labels], kept.labels);
});

Deno.test("SFTDataset: seeded augmentation rates, determinism and multi-turn labels", () => {
  const records = Array.from({ length: 2000 }, () => hello);
  const ds = new SFTDataset(records, tok, { maxLength: 64 });
  let withSystem = 0, keptThink = 0;
  for (let i = 0; i < records.length; i++) {
    const p = ds.prompt(i);
    if (p.startsWith("<|im_start|>system")) withSystem++;
    if (p.includes("<think>")) keptThink++;
    assert.equal(p, ds.prompt(i), "same (seed, epoch, index) → same sample");
  }
  assert.ok(Math.abs(withSystem / 2000 - 0.2) < 0.04, `system rate ${withSystem / 2000}`);
  assert.ok(Math.abs(keptThink / 2000 - 0.2) < 0.04, `kept-think rate ${keptThink / 2000}`);
  let differs = 0;
  for (let i = 0; i < 200; i++) if (ds.prompt(i, 0) !== ds.prompt(i, 1)) differs++;
  assert.ok(differs > 20, "another epoch draws other augmentations");

  const multi = new SFTDataset(
    [{
      conversations: [
        { role: "system", content: "SYS" },
        { role: "user", content: "a" },
        { role: "assistant", content: "b", reasoning_content: "r" },
        { role: "user", content: "c" },
        { role: "assistant", content: "d" },
      ],
    }],
    tok,
    { maxLength: 128, emptyThinkRatio: 1 },
  );
  const s = multi.get(0);
  const targets = [...s.labels].filter((x) => x !== IGNORE_INDEX);
  assert.equal(
    tok.decode(targets),
    "<think>\nr\n</think>\n\nb<|im_end|>\n<think>\n\n</think>\n\nd<|im_end|>\n",
  );
  // Truncated inside an answer: the span runs to the end.
  const cut = new SFTDataset([hello], tok, {
    maxLength: 14,
    addSystemRatio: 0,
    emptyThinkRatio: 0,
  });
  assert.deepEqual([...cut.get(0).labels].slice(12), [1968, 1364]);
});

Deno.test("SFTDataset: tools and tool_calls given as JSON strings (MiniMind's format)", () => {
  const tools = [{ type: "function", function: { name: "f", parameters: {} } }];
  const ds = new SFTDataset(
    [{
      conversations: [
        { role: "system", content: "S", tools: JSON.stringify(tools) },
        { role: "user", content: "q" },
        {
          role: "assistant",
          content: "",
          tool_calls: JSON.stringify([{ name: "f", arguments: { x: 1 } }]),
        },
        { role: "tool", content: "42" },
        { role: "assistant", content: "42" },
      ],
    }],
    tok,
    { maxLength: 256, emptyThinkRatio: 1 },
  );
  const p = ds.prompt(0);
  assert.ok(p.startsWith("<|im_start|>system\nS\n\n# Tools"), p);
  assert.ok(p.includes('<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call>'), p);
  assert.ok(p.includes("<|im_start|>user\n<tool_response>\n42\n</tool_response><|im_end|>"));
});

Deno.test("DPODataset: x/y/mask for chosen and rejected", () => {
  const u = { role: "user", content: "你好" };
  const ds = new DPODataset(
    [{
      chosen: [u, { role: "assistant", content: "你好！" }],
      rejected: [u, { role: "assistant", content: "再见" }],
    }],
    tok,
    { maxLength: 32, emptyThinkRatio: 0 },
  );
  const s = ds.get(0);
  const ids = (vectors.sft_example["empty_think_removed(80%)"] as { input_ids: number[] })
    .input_ids;
  assert.deepEqual([...s.xChosen], ids.slice(0, -1));
  assert.deepEqual([...s.yChosen], ids.slice(1));
  // mask[1:] is 1 on the assistant tokens 12..15 of the unshifted ids.
  const mask = new Array(32).fill(0);
  for (let j = 12; j < 16; j++) mask[j] = 1;
  assert.deepEqual([...s.maskChosen], mask.slice(1));
  assert.equal(s.xRejected.length, 31);
  assert.equal(
    tok.decode([...s.yRejected].filter((_, j) => s.maskRejected[j])),
    "再见<|im_end|>\n",
  );
});

Deno.test("DPODataset: a line missing chosen or rejected is named by file:line when opened", () => {
  const dir = Deno.makeTempDirSync();
  try {
    const u = { role: "user", content: "你好" };
    const a = { role: "assistant", content: "好" };
    const path = `${dir}/dpo.jsonl`;
    const good = JSON.stringify({ chosen: [u, a], rejected: [u, a] });
    Deno.writeTextFileSync(
      path,
      [good, good, JSON.stringify({ chosen: [u, a], reject: [u, a] }), good].join("\n") + "\n",
    );
    assert.throws(
      () => new DPODataset(path, tok, { maxLength: 32, cacheDir: null }),
      (e: Error) =>
        e.message.includes(`${path}:3`) && e.message.includes('"rejected"') &&
        e.message.includes('"reject"'),
    );
    Deno.writeTextFileSync(path, JSON.stringify({ rejected: [u, a] }) + "\n");
    assert.throws(
      () => new DPODataset(path, tok, { maxLength: 32, cacheDir: null }),
      (e: Error) => e.message.includes(`${path}:1`) && e.message.includes('"chosen"'),
    );
    // skipping bad lines keeps the good ones
    Deno.writeTextFileSync(path, [good, JSON.stringify({ chosen: [u, a] }), good].join("\n"));
    const ds = new DPODataset(path, tok, { maxLength: 32, cacheDir: null, skipBadLines: true });
    assert.equal(ds.length, 2);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
});

Deno.test("RLAIFDataset: prompt with generation prompt, open_thinking ratio", () => {
  const rec = {
    conversations: [{ role: "user", content: "写诗" }, { role: "assistant", content: "无" }],
    form: { lines: 4, chars_per_line: 5 },
  };
  const ds = new RLAIFDataset(Array.from({ length: 1000 }, () => rec), tok, {
    thinkingRatio: 0.9,
    addSystemRatio: 0,
  });
  let open = 0;
  for (let i = 0; i < 1000; i++) {
    const s = ds.get(i);
    assert.equal(s.answer, "");
    assert.deepEqual(s.record.form, rec.form);
    if (s.prompt.endsWith("<|im_start|>assistant\n<think>\n")) open++;
    else assert.ok(s.prompt.endsWith("<|im_start|>assistant\n<think>\n\n</think>\n\n"));
    assert.ok(s.prompt.startsWith("<|im_start|>user\n写诗<|im_end|>\n"));
  }
  assert.ok(Math.abs(open / 1000 - 0.9) < 0.04, `open_thinking rate ${open / 1000}`);
});

Deno.test("PlainTextDataset: line and packed modes", () => {
  const text = "床前明月光，疑是地上霜。\n\n举头望明月，低头思故乡。\n";
  const line = PlainTextDataset.fromText(text, tok, { maxLength: 16 });
  assert.equal(line.length, 2);
  const s = line.get(1);
  assert.equal(s.inputIds[0], tok.bosId);
  assert.equal(tok.decode(s.inputIds, { skipSpecialTokens: true }), "举头望明月，低头思故乡。");
  const packed = PlainTextDataset.fromText(text, tok, { maxLength: 8, mode: "packed" });
  const stream = [
    tok.bosId,
    ...tok.encode("床前明月光，疑是地上霜。"),
    tok.eosId,
    tok.bosId,
    ...tok.encode("举头望明月，低头思故乡。"),
    tok.eosId,
  ];
  assert.equal(packed.length, Math.floor(stream.length / 8));
  for (let i = 0; i < packed.length; i++) {
    assert.deepEqual([...packed.get(i).inputIds], stream.slice(i * 8, i * 8 + 8));
    assert.deepEqual([...packed.get(i).labels], stream.slice(i * 8, i * 8 + 8));
  }
  assert.throws(() => packed.get(packed.length), /Cannot read sample/);
});

Deno.test("DataLoader: seeded shuffle, batching, resume skip, trimming", () => {
  const records = Array.from({ length: 10 }, (_, i) => ({ text: "x".repeat(i + 1) }));
  const ds = new PretrainDataset(records, tok, { maxLength: 16 });
  const loader = new DataLoader(ds, { batchSize: 4, seed: 7 });
  assert.equal(loader.batchesPerEpoch, 3);
  const e0 = [...loader.batches(0)];
  assert.deepEqual(e0.map((b) => b.batch), [4, 4, 2]);
  assert.deepEqual(e0.flatMap((b) => b.indices).sort((a, b) => a - b), [...Array(10).keys()]);
  assert.deepEqual([...loader.batches(0)].map((b) => b.indices), e0.map((b) => b.indices));
  assert.notDeepEqual([...loader.batches(1)].map((b) => b.indices), e0.map((b) => b.indices));
  const b = e0[0];
  assert.equal(b.seqLen, 16);
  assert.equal(b.inputIds.length, 4 * 16);
  for (let r = 0; r < 4; r++) {
    assert.deepEqual([...b.inputIds.subarray(r * 16, r * 16 + 16)], [
      ...ds.get(b.indices[r]).inputIds,
    ]);
  }
  const resumed = [...loader.batches(0, { skip: 2 })];
  assert.equal(resumed.length, 1);
  assert.deepEqual(resumed[0].indices, e0[2].indices);
  assert.equal(resumed[0].step, 2);
  assert.equal(new DataLoader(ds, { batchSize: 4, dropLast: true }).batchesPerEpoch, 2);
  const plain = new DataLoader(ds, { batchSize: 10, shuffle: false });
  assert.deepEqual([...plain.batches()][0].indices, [...Array(10).keys()]);
  const trimmed = [...new DataLoader(ds, { batchSize: 10, trimPadding: true }).batches()][0];
  const longest = Math.max(...records.map((r) => tok.encode(r.text).length)) + 2;
  assert.equal(trimmed.seqLen, longest);
  // Ragged samples are right-padded per field.
  const ragged = new DataLoader({
    length: 2,
    get: (i: number) => ({
      inputIds: Int32Array.from(i ? [5, 6, 7] : [5]),
      labels: Int32Array.from(i ? [5, 6, 7] : [5]),
    }),
  }, { batchSize: 2, shuffle: false });
  const rb = [...ragged.batches()][0];
  assert.deepEqual([...rb.inputIds], [5, 0, 0, 5, 6, 7]);
  assert.deepEqual([...rb.labels], [5, -100, -100, 5, 6, 7]);
});
