import assert from "node:assert/strict";
import { join } from "node:path";
import {
  analyzePoem,
  buildCorpus,
  DPODataset,
  formScore,
  PretrainDataset,
  RLAIFDataset,
  SFTDataset,
  Tokenizer,
} from "../mod.ts";
import { fixture } from "../../tests/_util.ts";

const tok = await Tokenizer.fromFile(fixture("minimind/minimind-3/tokenizer.json"));

const SMALL = { pretrainBytes: 300_000, sftSamples: 800, dpoPairs: 200, rlPrompts: 100 };

function lines(path: string): string[] {
  return Deno.readTextFileSync(path).split("\n").filter((l) => l.length > 0);
}

Deno.test("buildCorpus() writes MiniMind-format files that the datasets read", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const c = await buildCorpus({ dir, ...SMALL });
    assert.equal(c.cached, false);
    const m = c.manifest;
    assert.ok(m.poems.kept > 60_000, `kept ${m.poems.kept}`);
    assert.equal(m.files["sft.jsonl"].records, 800);
    assert.equal(m.files["dpo.jsonl"].records, 200);
    assert.equal(m.files["rl.jsonl"].records, 100);
    const preBytes = m.files["pretrain.jsonl"].bytes;
    assert.ok(preBytes > 250_000 && preBytes < 400_000, `pretrain ${preBytes} bytes`);

    const pre = new PretrainDataset(c.pretrain, tok, { maxLength: 128, cacheDir: null });
    assert.ok(pre.length > 500);
    assert.equal(pre.get(0).inputIds[0], tok.bosId);
    const sft = new SFTDataset(c.sft, tok, { maxLength: 256, cacheDir: null });
    for (let i = 0; i < 50; i++) {
      assert.ok(sft.get(i).labels.some((x) => x !== -100), `SFT sample ${i} has targets`);
    }
    const dpo = new DPODataset(c.dpo, tok, { maxLength: 256, cacheDir: null });
    const d = dpo.get(0);
    assert.ok(d.maskChosen.some((x) => x === 1) && d.maskRejected.some((x) => x === 1));
    const rl = new RLAIFDataset(c.rl, tok, { cacheDir: null });
    const r = rl.get(0);
    assert.ok(r.prompt.includes("<|im_start|>assistant\n"));
    const form = r.record.form as { name: string; lines: number; chars_per_line: number };
    assert.ok(["五言绝句", "七言绝句", "五言律诗", "七言律诗"].includes(form.name));
    assert.ok(r.prompt.includes(form.name));

    // DPO: the chosen answer has the asked form, the rejected one does not.
    for (const line of lines(c.dpo).slice(0, 100)) {
      const rec = JSON.parse(line);
      const ask = rec.chosen[0].content as string;
      const name = ["五言绝句", "七言绝句", "五言律诗", "七言律诗"].find((f) => ask.includes(f))!;
      const want = {
        name,
        lines: name.endsWith("绝句") ? 4 : 8,
        charsPerLine: name.startsWith("五") ? 5 : 7,
      };
      assert.equal(formScore(rec.chosen[1].content, want), 1, rec.chosen[1].content);
      assert.ok(
        rec.rejected[1].content !== rec.chosen[1].content,
        "rejected differs from chosen",
      );
    }
    // Held-out poems appear in no training file.
    const train = Deno.readTextFileSync(c.pretrain) + Deno.readTextFileSync(c.sft) +
      Deno.readTextFileSync(c.dpo);
    for (const line of lines(c.heldoutPretrain).slice(0, 200)) {
      const body = (JSON.parse(line).text as string).split("\n").slice(1).join("\n");
      assert.ok(!train.includes(JSON.stringify(body).slice(1, -1)), "held-out poem leaked");
    }
    assert.ok(lines(c.heldoutSft).length === m.poems.heldout);

    // Cached: the second call returns at once with the same paths.
    const again = await buildCorpus({ dir, ...SMALL });
    assert.equal(again.cached, true);
    assert.equal(again.sft, c.sft);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("buildCorpus() is deterministic: two builds are byte-identical", async () => {
  const a = await Deno.makeTempDir(), b = await Deno.makeTempDir();
  try {
    const opts = { pretrainBytes: 100_000, sftSamples: 300, dpoPairs: 50, rlPrompts: 50 };
    const ca = await buildCorpus({ dir: a, ...opts });
    const cb = await buildCorpus({ dir: b, ...opts, force: true });
    for (const k of ["pretrain", "sft", "dpo", "rl", "heldoutPretrain", "heldoutSft"] as const) {
      assert.equal(Deno.readTextFileSync(ca[k]), Deno.readTextFileSync(cb[k]), k);
    }
    const other = await buildCorpus({ dir: a, ...opts, seed: 7 });
    assert.notEqual(other.dir, ca.dir);
    assert.notEqual(Deno.readTextFileSync(other.sft), Deno.readTextFileSync(ca.sft));
  } finally {
    await Deno.remove(a, { recursive: true });
    await Deno.remove(b, { recursive: true });
  }
});

Deno.test("analyzePoem() and formScore() check line count and length", () => {
  const jueju = "白日依山尽，黄河入海流。\n欲穷千里目，更上一层楼。";
  assert.deepEqual(analyzePoem(jueju).lines.length, 4);
  const f = { name: "五言绝句", lines: 4, charsPerLine: 5 };
  assert.equal(formScore(jueju, f), 1);
  assert.equal(formScore("白日依山尽，黄河入海流。", f), 0.25);
  assert.equal(formScore("", f), 0);
  assert.ok(formScore("白日依山，黄河入海流。\n欲穷千里目，更上一层楼。", f) < 1);
});

Deno.test("buildCorpus() never reuses a build from another source or a file changed since", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // a tiny chinese-poetry folder: 30 five-character quatrains and no ci
    const src = join(dir, "src");
    await Deno.mkdir(join(src, "quantangshi"), { recursive: true });
    await Deno.mkdir(join(src, "songci"), { recursive: true });
    const han = "春江花月夜山水云风雨雪天地日星河海松竹梅兰菊";
    const line = (i: number, j: number) =>
      Array.from({ length: 5 }, (_, k) => han[(i * 7 + j * 3 + k) % han.length]).join("");
    const poems = Array.from({ length: 30 }, (_, i) => ({
      title: `诗${han[i % han.length]}`,
      author: "佚名",
      paragraphs: [`${line(i, 0)}，${line(i, 1)}。`, `${line(i, 2)}，${line(i, 3)}。`],
    }));
    await Deno.writeTextFile(join(src, "quantangshi", "poet.tang.0.json"), JSON.stringify(poems));
    await Deno.writeTextFile(join(src, "songci", "ci.song.0.json"), "[]");
    const small = await buildCorpus({ dir, sourceDir: src, ...SMALL });
    assert.equal(small.manifest.poems.read, 30);
    // the package's corpus with the same options is its own build, not the small one
    const full = await buildCorpus({ dir, ...SMALL });
    assert.notEqual(full.dir, small.dir);
    assert.equal(full.cached, false);
    assert.ok(full.manifest.poems.read > 70_000);
    // a file that changed since (truncated) is built again, byte for byte as before
    const before = await Deno.readFile(full.pretrain);
    await Deno.writeFile(full.pretrain, before.subarray(0, 1000));
    const again = await buildCorpus({ dir, ...SMALL });
    assert.equal(again.cached, false);
    assert.deepEqual(await Deno.readFile(again.pretrain), before);
    assert.equal((await buildCorpus({ dir, ...SMALL })).cached, true);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
