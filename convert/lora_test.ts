import assert from "node:assert/strict";
import { join } from "node:path";
import { forward, init } from "../nn/model/minimind.ts";
import { config, configToHF } from "../nn/model/minimind_config.ts";
import { key, normalArray } from "../nn/random.ts";
import { tensor } from "../nn/creation.ts";
import { flatten, unflatten } from "../nn/tree.ts";
import type { Tree } from "../nn/tree.ts";
import { saveWeights } from "../train/checkpoint.ts";
import { loadModel } from "./hf.ts";
import * as lora from "./lora.ts";
import { main as mergeMain } from "./merge_lora.ts";
import { main as evalMain } from "../train/eval_llm.ts";
import { Tokenizer } from "../data/tokenizer.ts";
import { fixture } from "../tests/_util.ts";

const tok = await Tokenizer.fromFile(fixture("minimind/minimind2"));

const cfg = config("minimind2-small", {
  hiddenSize: 32,
  numHiddenLayers: 2,
  numAttentionHeads: 4,
  numKeyValueHeads: 2,
  vocabSize: tok.vocabSize,
});

Deno.test("deno task merge_lora writes merged weights whose logits equal the unmerged forward", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const params = init(cfg, key(3));
    await saveWeights(join(dir, "full_sft_32.safetensors"), params as unknown as Tree, {
      config: JSON.stringify(configToHF(cfg)),
    });
    const flat = flatten(lora.init(cfg, key(4), { rank: 2 }));
    for (const k of Object.keys(flat)) {
      if (!k.endsWith("B.weight")) continue;
      const z = normalArray(key(k.length), flat[k].size);
      flat[k] = tensor(Float32Array.from(z, (v) => 0.1 * v), flat[k].shape, "f32");
    }
    await Deno.mkdir(join(dir, "lora"));
    await lora.save(join(dir, "lora", "lora_ci_32.safetensors"), unflatten(flat));
    const code = await mergeMain([
      ...["--save_dir", dir, "--hidden_size", "32", "--lora_weight", "lora_ci"],
    ]);
    assert.equal(code, 0);
    const merged = await loadModel(join(dir, "merge_ci_32.safetensors"));
    assert(!Object.keys(flatten(merged.params as unknown as Tree)).some((k) => k.includes("lora")));
    const ids = tensor([[1, 2, 3, 4, 5]], [1, 5], "i32");
    const applied = await lora.applyFile(params, lora.resolvePath("lora_ci", dir, cfg));
    const a = await forward(cfg, applied, ids).logits.data();
    const b = await forward(merged.cfg, merged.params, ids).logits.data();
    const base = await forward(cfg, params, ids).logits.data();
    let d = 0, moved = 0;
    for (let i = 0; i < a.length; i++) {
      d = Math.max(d, Math.abs(a[i] - b[i]));
      moved = Math.max(moved, Math.abs(a[i] - base[i]));
    }
    assert(d < 1e-5, `merged vs unmerged ${d}`);
    assert(moved > 1e-3, `the adapters change the logits (${moved})`);
    // deno task eval applies them unmerged
    await tok.save(dir);
    const out: string[] = [];
    const log = console.log;
    console.log = (...a: unknown[]) => out.push(a.join(" "));
    try {
      const code = await evalMain([
        ...["--load_from", join(dir, "full_sft_32.safetensors"), "--lora_weight", "lora_ci"],
        ...["--save_dir", dir, "--mode", "auto", "--max_new_tokens", "2", "--device", "cpu"],
      ]);
      assert.equal(code, 0);
    } finally {
      console.log = log;
    }
    assert(
      out.some((l) => /^LoRA: .*lora_ci_32\.safetensors \(512 adapter params, unmerged\)/.test(l)),
      out.join("\n"),
    );
    // adapters of another width: the first mismatching key and both shapes
    const wide = init(
      config("minimind2-small", {
        hiddenSize: 64,
        numHiddenLayers: 2,
        numAttentionHeads: 4,
        numKeyValueHeads: 2,
        vocabSize: tok.vocabSize,
      }),
      key(0),
    );
    await assert.rejects(
      () => lora.applyFile(wide, join(dir, "lora", "lora_ci_32.safetensors")),
      /q_proj\.lora\.A\.weight has shape \[2, 32\] but this model needs \[2, 64\]/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
