import assert from "node:assert/strict";
import { join } from "node:path";
import { Tokenizer } from "../data/tokenizer.ts";
import { DPODataset, SFTDataset } from "../data/datasets.ts";
import type { Dataset, DPOSample, LMSample } from "../data/datasets.ts";
import { flatten } from "../nn/tree.ts";
import type { Tree } from "../nn/tree.ts";
import { init } from "../nn/model/minimind.ts";
import { config, configToHF } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";
import { fixture } from "../tests/_util.ts";
import { parseFlags } from "../cli.ts";
import type { FlagTable } from "../cli.ts";
import { loadResume, saveWeights } from "./checkpoint.ts";
import { Progress } from "./progress.ts";
import { POST_FLAGS, reasonBatch, reasonSpecialIds, reasonTagIds, runPost } from "./posttrain.ts";
import type { PostArgs, PostKind } from "./posttrain.ts";
import * as lora from "../convert/lora.ts";

const tok = await Tokenizer.fromFile(fixture("minimind/minimind2"));
const quiet = () => new Progress({ tty: false, write: () => {} });
const POEMS = [
  "床前明月光，疑是地上霜。\n舉頭望明月，低頭思故鄉。",
  "白日依山盡，黃河入海流。\n欲窮千里目，更上一層樓。",
  "春眠不覺曉，處處聞啼鳥。\n夜來風雨聲，花落知多少。",
];
const convs = Array.from({ length: 12 }, (_, i) => ({
  conversations: [
    { role: "user", content: `写一首诗 ${i}` },
    {
      role: "assistant",
      content: `<think>\n四句五言\n</think>\n<answer>\n${POEMS[i % 3]}\n</answer>`,
    },
  ],
}));
const pairs = Array.from({ length: 12 }, (_, i) => ({
  chosen: [{ role: "user", content: `诗 ${i}` }, { role: "assistant", content: POEMS[i % 3] }],
  rejected: [{ role: "user", content: `诗 ${i}` }, {
    role: "assistant",
    content: POEMS[(i + 1) % 3].slice(0, 9),
  }],
}));

function tiny(hidden: number, layers: number, vocab = tok.vocabSize, useMoe = false) {
  return config("minimind2-small", {
    hiddenSize: hidden,
    numHiddenLayers: layers,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    vocabSize: vocab,
    useMoe,
  });
}

async function writeModel(
  path: string,
  hidden: number,
  layers: number,
  vocab?: number,
  useMoe = false,
) {
  const cfg = tiny(hidden, layers, vocab, useMoe);
  await saveWeights(path, init(cfg, key(hidden)) as unknown as Tree, {
    config: JSON.stringify(configToHF(cfg)),
  });
}

function parse(kind: PostKind, dir: string, extra: string[]) {
  return parseFlags(
    [
      ...["--hidden_size", "32", "--num_hidden_layers", "2", "--batch_size", "2"],
      ...["--max_seq_len", "40", "--learning_rate", "1e-3", "--log_interval", "1"],
      ...["--save_interval", "1000", "--epochs", "2", "--device", "cpu"],
      ...["--save_dir", join(dir, "out"), "--checkpoint_dir", join(dir, "ck")],
      ...extra,
    ],
    POST_FLAGS[kind] as FlagTable,
    "test",
  ) as unknown as { values: PostArgs; given: Set<string> };
}

function dataset(kind: PostKind): Dataset<LMSample> | Dataset<DPOSample> {
  return kind === "dpo"
    ? new DPODataset(pairs, tok, { maxLength: 40 })
    : new SFTDataset(convs, tok, { maxLength: 40, emptyThinkRatio: 0 });
}

async function bits(t: Tree): Promise<Record<string, number[]>> {
  const out: Record<string, number[]> = {};
  for (const [k, v] of Object.entries(flatten(t))) {
    const d = await v.data();
    out[k] = [...new Uint32Array(d.buffer, d.byteOffset, d.length)];
  }
  return out;
}

const EXTRA: Record<PostKind, string[]> = {
  lora: ["--lora_rank", "4", "--learning_rate", "1e-2"],
  dpo: ["--beta", "0.1", "--dpo_reduction", "mean"],
  distill: ["--teacher_weight", "TEACHER"],
  reason: ["--from_weight", "full_sft"],
};

for (const kind of ["lora", "dpo", "distill", "reason"] as const) {
  Deno.test(`deno task ${kind}: --from_resume 1 continues bit-exactly (8 steps = 5 + resume + 3)`, async () => {
    const dirs = [await Deno.makeTempDir(), await Deno.makeTempDir()];
    try {
      const runs = [];
      for (const d of dirs) {
        await Deno.mkdir(join(d, "out"), { recursive: true });
        await writeModel(join(d, "out", "full_sft_32.safetensors"), 32, 2);
        await writeModel(join(d, "out", "teacher_48.safetensors"), 48, 3);
      }
      const extra = (d: string) =>
        EXTRA[kind].map((x) => x === "TEACHER" ? join(d, "out", "teacher_48.safetensors") : x);
      const hooks = { tokenizer: tok, progress: quiet(), handleSigint: false, log: () => {} };
      const straight = await runPost(
        kind,
        parse(kind, dirs[0], [...extra(dirs[0]), "--max_steps", "8"]),
        {
          ...hooks,
          dataset: dataset(kind),
        },
      );
      const first = await runPost(
        kind,
        parse(kind, dirs[1], [...extra(dirs[1]), "--max_steps", "8"]),
        {
          ...hooks,
          dataset: dataset(kind),
          stopAfter: 5,
        },
      );
      assert.ok(first.interrupted);
      const { state } = await loadResume(first.files.resume);
      const second = await runPost(
        kind,
        parse(kind, dirs[1], [...extra(dirs[1]), "--max_steps", "8", "--from_resume", "1"]),
        { ...hooks, dataset: dataset(kind) },
      );
      runs.push(straight, second);
      assert.equal(second.steps, 8);
      assert.deepEqual([...first.losses, ...second.losses], straight.losses);
      assert(straight.losses.every(Number.isFinite));
      assert.deepEqual(await bits(second.params), await bits(straight.params));
      if (kind === "lora") {
        // the resume checkpoint and the weights file hold the adapters only
        const keys = Object.keys(flatten(state.params));
        assert(keys.length > 0 && keys.every((k) => k.includes(".lora.")), keys.join());
        assert.match(straight.files.weights, /out\/lora\/lora_ci_32\.safetensors$/);
        const ad = await lora.load(straight.files.weights);
        assert.equal(lora.count(ad), 2 * 2 * (4 * 32 + 32 * 4));
        const moments = flatten(state.optState);
        assert.equal(Object.values(moments).reduce((s, t) => s + t.size, 0), 2 * lora.count(ad));
      } else {
        assert.match(
          straight.files.weights,
          new RegExp(
            `${{ dpo: "dpo", distill: "full_dist", reason: "reason" }[kind]}_32\\.safetensors$`,
          ),
        );
      }
    } finally {
      for (const d of dirs) await Deno.remove(d, { recursive: true });
    }
  });
}

Deno.test("deno task distill learns from an MoE teacher", async () => {
  const d = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(d, "out"), { recursive: true });
    await writeModel(join(d, "out", "full_sft_32.safetensors"), 32, 2);
    const teacher = join(d, "out", "moe_48.safetensors");
    await writeModel(teacher, 48, 2, undefined, true);
    const lines: string[] = [];
    const r = await runPost(
      "distill",
      parse("distill", d, ["--teacher_weight", teacher, "--max_steps", "2"]),
      {
        tokenizer: tok,
        dataset: dataset("distill"),
        progress: quiet(),
        handleSigint: false,
        log: (m) => lines.push(m),
      },
    );
    assert.equal(r.steps, 2);
    assert(r.losses.every(Number.isFinite));
    assert.match(lines.join("\n"), /Teacher: .*moe_48\.safetensors \(hidden 48, 2 layers, MoE/);
  } finally {
    await Deno.remove(d, { recursive: true });
  }
});

Deno.test("deno task distill refuses a teacher with another vocabulary before training", async () => {
  const d = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(d, "out"), { recursive: true });
    await writeModel(join(d, "out", "full_sft_32.safetensors"), 32, 2);
    const teacher = join(d, "out", "other_32.safetensors");
    await writeModel(teacher, 32, 1, 300);
    await assert.rejects(
      () =>
        runPost("distill", parse("distill", d, ["--teacher_weight", teacher]), {
          tokenizer: tok,
          dataset: dataset("distill"),
          progress: quiet(),
          handleSigint: false,
          log: () => {},
        }),
      /its vocabulary has 300 tokens but the tokenizer has 6400/,
    );
    // nothing was trained or written
    assert(!(await Deno.stat(join(d, "out", "full_dist_32.safetensors")).catch(() => null)));
  } finally {
    await Deno.remove(d, { recursive: true });
  }
});

function reasonSample(content: string) {
  const ds = new SFTDataset(
    [{
      conversations: [{ role: "user", content: "写一首诗 <x>" }, { role: "assistant", content }],
    }],
    tok,
    { maxLength: 64, emptyThinkRatio: 0, addSystemRatio: 0 },
  );
  const s = ds.get(0);
  return { s, batch: { ...s, batch: 1, seqLen: s.inputIds.length, indices: [0], step: 0 } };
}

Deno.test("reason weights (--tag_loss span): 10 on whole tag spans in the reply only", () => {
  const tags = reasonTagIds(tok);
  // a reply with stray tag fragments: "<" and ">" outside any tag, "answer" as a plain word
  const { s, batch } = reasonSample(
    "<think>\n四句 a<b>c answer\n</think>\n<answer>\n诗\n</answer>",
  );
  const b = reasonBatch(tags, "span")(batch);
  const w = b.weights.dataSync();
  const n = s.inputIds.length;
  // expected: find each tag's ids among the masked targets by hand
  const want = new Float32Array(n);
  const y = (t: number) => s.inputIds[t + 1];
  const masked = (t: number) => t + 1 < n && s.labels[t + 1] !== -100;
  for (let t = 0; t + 1 < n; t++) want[t] = masked(t) ? 1 : 0;
  let spans = 0;
  for (const tag of tags) {
    for (let t = 0; t + tag.length < n; t++) {
      if (tag.every((id, k) => masked(t + k) && y(t + k) === id)) {
        spans++;
        for (let k = 0; k < tag.length; k++) want[t + k] = 10;
      }
    }
  }
  assert.equal(spans, 4, "each tag once in the reply");
  assert.deepEqual([...w.slice(0, n - 1)], [...want.slice(0, n - 1)]);
  // exactly the tags' tokens carry 10: no stray fragment, nothing in the prompt
  const tens = [...w].filter((v) => v === 10).length;
  assert.equal(tens, tags.reduce((a, t) => a + t.length, 0));
  for (let t = 0; t + 1 < n; t++) if (!masked(t)) assert.equal(w[t], 0);
  // the stray "<" of "a<b" and the prompt's "<x>" keep weight 1 and 0
  const lt = tok.encode("<", { addSpecialTokens: false });
  if (lt.length === 1) {
    for (let t = 0; t + 1 < n; t++) {
      if (y(t) === lt[0] && want[t] !== 10) assert.equal(w[t], masked(t) ? 1 : 0);
    }
  }
  let ones = 0;
  for (let t = 0; t + 1 < n; t++) if (masked(t)) ones++;
  assert.equal(b.count, ones);
});

Deno.test("reason weights (--tag_loss ids, MiniMind2): 10 on every tag id, prompt included", () => {
  const special = reasonSpecialIds(tok);
  assert(special.size >= 2);
  const { s, batch } = reasonSample("<think>\n四句五言\n</think>\n<answer>\n诗\n</answer>");
  const b = reasonBatch(reasonTagIds(tok), "ids")(batch);
  const w = b.weights.dataSync();
  const n = s.inputIds.length;
  let tens = 0, ones = 0, promptTens = 0;
  for (let t = 0; t + 1 < n; t++) {
    const y = s.inputIds[t + 1];
    if (special.has(y)) {
      assert.equal(w[t], 10);
      tens++;
      if (s.labels[t + 1] === -100) promptTens++;
    } else assert.equal(w[t], s.labels[t + 1] !== -100 ? 1 : 0);
    if (s.labels[t + 1] !== -100) ones++;
  }
  assert(tens >= 4, `${tens} tag tokens`);
  assert(promptTens >= 1, "the prompt's <x> fragments are up-weighted too, as in V2");
  assert.equal(b.count, ones);
});
