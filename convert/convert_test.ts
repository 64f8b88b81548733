import assert from "node:assert/strict";
import { join } from "node:path";
import { main } from "./convert.ts";
import { loadModel, saveModel } from "./hf.ts";
import { savePth } from "./pth.ts";
import * as lora from "./lora.ts";
import { forward } from "../nn/model/minimind.ts";
import { tensor } from "../nn/creation.ts";
import { normalArray } from "../nn/random.ts";
import { key } from "../nn/random.ts";
import { flatten, type Tree } from "../nn/tree.ts";
import { tinyModel, tokenizer } from "../tests/_serve.ts";
import { compare } from "../tests/_util.ts";

const FIX = new URL("../tests/fixtures/convert/", import.meta.url).pathname;

async function quiet<T>(f: () => Promise<T>): Promise<T> {
  const log = console.log;
  console.log = () => {};
  try {
    return await f();
  } finally {
    console.log = log;
  }
}

Deno.test("convert: a PyTorch .pth → llama folder keeps PyTorch's logits; flags that contradict it are named", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const expected = JSON.parse(await Deno.readTextFile(join(FIX, "expected.json")));
    const out = join(dir, "llama");
    const args = ["--in", join(FIX, "tiny_v2_f32.pth"), "--out", out, "--to", "llama"];
    assert.equal(
      await quiet(() => main([...args, "--dtype", "f32", "--num_attention_heads", "4"])),
      0,
    );
    const hf = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
    assert.deepEqual(hf.architectures, ["LlamaForCausalLM"]);
    assert.equal(hf.num_attention_heads, 4);
    const m = await loadModel(out);
    const ids = tensor([expected.ids], [1, expected.ids.length], "i32");
    const r = compare(
      forward(m.cfg, m.params, ids).logits.dataSync(),
      expected.files["tiny_v2_f32.pth"],
      { atol: 2e-5, rtol: 1e-5 },
    );
    assert.ok(r.ok, r.message);
    await assert.rejects(
      main([...args, "--num_attention_heads", "4", "--hidden_size", "48"]),
      /--hidden_size 48 disagrees with model.embed_tokens.weight \[64, 32\]; set --hidden_size 32/,
    );
    await assert.rejects(
      main([...args, "--num_attention_heads", "4", "--num_key_value_heads", "4"]),
      /--num_key_value_heads 4 disagrees .*; set --num_key_value_heads 2/,
    );
    await assert.rejects(main([...args, "--dtype", "q8_0"]), /Q8_0 exists only in GGUF/);
    await assert.rejects(
      main([
        "--in",
        join(FIX, "tiny_v2_f32.pth"),
        "--out",
        join(dir, "x.gguf"),
        "--to",
        "gguf",
        "--num_attention_heads",
        "4",
      ]),
      /GGUF embeds the tokenizer.*--tokenizer_path/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("convert: trainer weights → gguf and .pth, a layout the model cannot take is refused; --merge_lora folds a .pth adapter in", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { cfg, params } = tinyModel();
    const src = join(dir, "src");
    await saveModel(src, { cfg, params, tokenizer: await tokenizer() });
    const weights = join(src, "model.safetensors");
    const gguf = join(dir, "m.gguf");
    assert.equal(
      await quiet(() => main(["--in", weights, "--out", gguf, "--to", "gguf", "--dtype", "q8_0"])),
      0,
    );
    const head = (await Deno.readFile(gguf)).subarray(0, 8);
    assert.deepEqual([...head], [0x47, 0x47, 0x55, 0x46, 3, 0, 0, 0]);
    await assert.rejects(
      main(["--in", weights, "--out", join(dir, "q"), "--to", "qwen3"]),
      /use --to llama/,
    );
    // adapters as MiniMind's save_lora writes them (.pth), B random so the merge changes W
    const adapters = flatten(lora.init(cfg, key(5), { rank: 4 }));
    const raw: Record<string, { dtype: "F32"; shape: number[]; data: Uint8Array }> = {};
    let seed = 0;
    for (const [k, t] of Object.entries(adapters)) {
      const v = k.endsWith("B.weight")
        ? normalArray(key(++seed), t.size)
        : (t.dataSync() as Float32Array);
      const f = Float32Array.from(v, (x) => k.endsWith("B.weight") ? 0.1 * x : x);
      raw[k] = { dtype: "F32", shape: [...t.shape], data: new Uint8Array(f.buffer) };
    }
    const loraPath = join(dir, "lora_ci_64.pth");
    await savePth(loraPath, raw);
    const pth = join(dir, "merged.pth");
    const code = await quiet(() =>
      main([
        "--in",
        weights,
        "--out",
        pth,
        "--to",
        "pth",
        "--dtype",
        "f32",
        "--merge_lora",
        loraPath,
        "--num_attention_heads",
        String(cfg.numAttentionHeads),
      ])
    );
    assert.equal(code, 0);
    const back = await loadModel(pth, { flags: { num_attention_heads: cfg.numAttentionHeads } });
    const want = flatten(lora.merge(params, await lora.load(loraPath, params)) as unknown as Tree);
    const got = flatten(back.params as unknown as Tree);
    const q = "model.layers.0.self_attn.q_proj.weight";
    assert.notDeepEqual(want[q].dataSync(), flatten(params as unknown as Tree)[q].dataSync());
    for (const k of Object.keys(want)) assert.deepEqual(got[k].dataSync(), want[k].dataSync(), k);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
