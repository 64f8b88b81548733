import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModel, saveModel, saveModelPth, stateDict } from "./hf.ts";
import { configFromAnyHF, hfConfigFor, type HfLayout } from "./layouts.ts";
import { type RawTensor, saveSafetensors } from "./safetensors.ts";
import { forward, init } from "../nn/model/minimind.ts";
import { config, type MiniMindConfig } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";
import { compare } from "../tests/_util.ts";
import { tensor } from "../nn/creation.ts";
import { flatten, type Tree } from "../nn/tree.ts";
import { tinyModel, tokenizer } from "../tests/_serve.ts";

Deno.test("saveModel → loadModel round-trips config, every parameter and the tokenizer", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { cfg, params } = tinyModel();
    const tok = await tokenizer();
    await saveModel(dir, { cfg, params, tokenizer: tok });
    for (
      const f of ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    ) {
      assert.ok((await Deno.stat(join(dir, f))).isFile, f);
    }
    const hf = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    assert.equal(hf.hidden_size, 64);
    assert.equal(hf.num_hidden_layers, 2);
    const back = await loadModel(dir);
    assert.deepEqual(back.cfg, cfg);
    const a = flatten(params as unknown as Tree), b = flatten(back.params as unknown as Tree);
    assert.deepEqual(Object.keys(b).sort(), Object.keys(a).sort());
    for (const k of Object.keys(a)) assert.deepEqual(b[k].dataSync(), a[k].dataSync(), k);
    assert.ok(back.tokenizer);
    assert.deepEqual(back.tokenizer.encode("你好，世界！"), [1968, 294, 1950, 1364]);
    assert.equal(
      back.tokenizer.applyChatTemplate([{ role: "user", content: "hi" }]),
      tok.applyChatTemplate([{ role: "user", content: "hi" }]),
    );
    const ids = tensor([[1, 5, 9]], [1, 3], "i32");
    assert.deepEqual(
      forward(back.cfg, back.params, ids).logits.dataSync(),
      forward(cfg, params, ids).logits.dataSync(),
    );
    // the weights file alone carries its config
    const alone = await loadModel(join(dir, "model.safetensors"));
    assert.deepEqual(alone.cfg, cfg);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadModel: clear errors for missing files and mismatched configs", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await assert.rejects(loadModel(join(dir, "nope")), /Cannot load a model from .*nope/);
    await assert.rejects(loadModel(dir), /config.json is missing/);
    const { cfg, params } = tinyModel();
    await saveModel(dir, { cfg, params });
    await assert.rejects(
      loadModel(dir, { config: { hiddenSize: 128, numHiddenLayers: 2 } }),
      /hidden_size 128, model.embed_tokens.weight is \[6400, 64\]/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const LAYOUT_CASES: [string, HfLayout, MiniMindConfig][] = [
  [
    "minimind2 dense → llama",
    "llama",
    config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 2, vocabSize: 300 }),
  ],
  [
    "minimind2 → minimind",
    "minimind",
    config("minimind2-moe", { hiddenSize: 64, numHiddenLayers: 1, vocabSize: 300 }),
  ],
  [
    "minimind3 dense → qwen3",
    "qwen3",
    config("minimind3", {
      hiddenSize: 64,
      numHiddenLayers: 2,
      vocabSize: 300,
      numAttentionHeads: 4,
      numKeyValueHeads: 2,
      tieWordEmbeddings: false,
    }),
  ],
  [
    "minimind3 MoE → qwen3 (Qwen3MoeForCausalLM)",
    "qwen3",
    config("minimind3-moe", {
      hiddenSize: 64,
      numHiddenLayers: 2,
      vocabSize: 300,
      moeIntermediateSize: 32,
    }),
  ],
];

Deno.test("saveModel layouts → loadModel: bit-exact in f32, within rounding in f16/bf16", async () => {
  const dir = await Deno.makeTempDir();
  const tok = await tokenizer();
  try {
    for (const [label, layout, cfg] of LAYOUT_CASES) {
      const params = init(cfg, key(3));
      const a = flatten(params as unknown as Tree);
      for (const [dtype, tol] of [["f32", 0], ["f16", 2 ** -11], ["bf16", 2 ** -8]] as const) {
        const out = join(dir, `${layout}-${cfg.generation}-${cfg.useMoe}-${dtype}`);
        await saveModel(out, { cfg, params, tokenizer: tok }, { layout, dtype });
        const hf = JSON.parse(await Deno.readTextFile(join(out, "config.json")));
        const arch = {
          llama: "LlamaForCausalLM",
          qwen3: cfg.useMoe ? "Qwen3MoeForCausalLM" : "Qwen3ForCausalLM",
          minimind: "MiniMindForCausalLM",
        }[layout];
        assert.deepEqual(hf.architectures, [arch], label);
        assert.equal(hf.torch_dtype, { f32: "float32", f16: "float16", bf16: "bfloat16" }[dtype]);
        if (layout === "minimind") {
          assert.equal(hf.auto_map.AutoModelForCausalLM, "model_minimind.MiniMindForCausalLM");
        }
        for (
          const f of [
            "tokenizer.json",
            "tokenizer_config.json",
            "chat_template.jinja",
            "generation_config.json",
          ]
        ) {
          assert.ok((await Deno.stat(join(out, f))).isFile, `${label}: ${f}`);
        }
        const back = await loadModel(out);
        assert.deepEqual(back.cfg, cfg, `${label} ${dtype}`);
        const b = flatten(back.params as unknown as Tree);
        assert.deepEqual(Object.keys(b).sort(), Object.keys(a).sort());
        for (const k of Object.keys(a)) {
          const x = a[k].dataSync(), y = b[k].dataSync();
          if (tol === 0) assert.deepEqual(y, x, `${label} ${k}`);
          else {
            const r = compare(y, x, { atol: 1e-7, rtol: tol, label: `${label} ${dtype} ${k}` });
            assert.ok(r.ok, r.message);
          }
        }
        assert.equal(
          back.tokenizer?.applyChatTemplate([{ role: "user", content: "你好" }]),
          tok.applyChatTemplate([{ role: "user", content: "你好" }]),
        );
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadModel: transformers-5 fused Qwen3-MoE experts and pytorch_model.bin folders", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const [, , cfg] = LAYOUT_CASES[3];
    const params = init(cfg, key(4));
    const sd = await stateDict(cfg, params);
    // fuse each layer's experts as transformers ≥ 5 saves them
    const fused: Record<string, RawTensor> = {};
    const e = cfg.numExperts, i = cfg.moeIntermediateSize, h = cfg.hiddenSize;
    for (const [k, t] of Object.entries(sd)) {
      const m = /^(.*\.mlp\.experts)\.(\d+)\.(gate|up|down)_proj\.weight$/.exec(k);
      if (!m) fused[k] = t;
    }
    for (let l = 0; l < cfg.numHiddenLayers; l++) {
      const p = `model.layers.${l}.mlp.experts`;
      const gu = new Uint8Array(e * 2 * i * h * 4), dn = new Uint8Array(e * h * i * 4);
      for (let x = 0; x < e; x++) {
        gu.set(sd[`${p}.${x}.gate_proj.weight`].data, x * 2 * i * h * 4);
        gu.set(sd[`${p}.${x}.up_proj.weight`].data, (x * 2 * i * h + i * h) * 4);
        dn.set(sd[`${p}.${x}.down_proj.weight`].data, x * h * i * 4);
      }
      fused[`${p}.gate_up_proj`] = { dtype: "F32", shape: [e, 2 * i, h], data: gu };
      fused[`${p}.down_proj`] = { dtype: "F32", shape: [e, h, i], data: dn };
    }
    const out = join(dir, "fused");
    await Deno.mkdir(out);
    await saveSafetensors(join(out, "model.safetensors"), fused, { format: "pt" });
    await Deno.writeTextFile(join(out, "config.json"), JSON.stringify(hfConfigFor(cfg, "qwen3")));
    const back = await loadModel(out);
    const a = flatten(params as unknown as Tree), b = flatten(back.params as unknown as Tree);
    for (const k of Object.keys(a)) assert.deepEqual(b[k].dataSync(), a[k].dataSync(), k);
    // MiniMind layout with pytorch_model.bin (convert_torch2transformers_minimind's format)
    const bin = join(dir, "bin");
    await Deno.mkdir(bin);
    await saveModelPth(join(bin, "pytorch_model.bin"), { cfg, params }, "f32");
    await Deno.writeTextFile(
      join(bin, "config.json"),
      JSON.stringify(hfConfigFor(cfg, "minimind")),
    );
    const back2 = await loadModel(bin);
    const c = flatten(back2.params as unknown as Tree);
    for (const k of Object.keys(a)) assert.deepEqual(c[k].dataSync(), a[k].dataSync(), k);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("saveModel: layouts a model cannot take are refused with the one to use", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const [, , moe2] = LAYOUT_CASES[1], [, , m3] = LAYOUT_CASES[2], [, , v2] = LAYOUT_CASES[0];
    const p = (c: MiniMindConfig) => init(c, key(1));
    await assert.rejects(
      saveModel(dir, { cfg: moe2, params: p(moe2) }, { layout: "llama" }),
      /MiniMind2-MoE .* use --to minimind/,
    );
    await assert.rejects(
      saveModel(dir, { cfg: m3, params: p(m3) }, { layout: "llama" }),
      /use --to qwen3/,
    );
    await assert.rejects(
      saveModel(dir, { cfg: v2, params: p(v2) }, { layout: "qwen3" }),
      /use --to llama/,
    );
    assert.throws(
      () =>
        configFromAnyHF({
          model_type: "llama",
          hidden_size: 64,
          num_attention_heads: 4,
          head_dim: 32,
          intermediate_size: 8,
          num_hidden_layers: 1,
          vocab_size: 8,
        }),
      /head_dim 32 ≠ hidden_size\/num_attention_heads = 16/,
    );
    assert.throws(
      () => configFromAnyHF({ model_type: "gpt2" }),
      /model_type "gpt2" is not minimind, llama, qwen3 or qwen3_moe/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadModel: config sizes are checked against the weights before anything is allocated", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { cfg, params } = tinyModel();
    await saveModel(dir, { cfg, params });
    const hf = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    const withConfig = async (patch: Record<string, unknown>) => {
      await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ ...hf, ...patch }));
      return loadModel(dir);
    };
    const t0 = performance.now();
    await assert.rejects(
      withConfig({ num_hidden_layers: 1e7 }),
      /num_hidden_layers 10000000, the weights have 2 layers/,
    );
    assert.ok(performance.now() - t0 < 2000, "refused before building 1e7 layers");
    await assert.rejects(
      withConfig({ rms_norm_eps: 0 }),
      /rmsNormEps must be a positive number, got 0/,
    );
    await assert.rejects(withConfig({ rms_norm_eps: -1e-5 }), /rmsNormEps must be a positive/);
    await assert.rejects(withConfig({ rope_theta: "1e6" }), /ropeTheta must be a positive number/);
    await assert.rejects(withConfig({ rope_theta: -10000 }), /ropeTheta must be a positive number/);
    const yarn = { inference_rope_scaling: true };
    await assert.rejects(
      withConfig({ ...yarn, rope_scaling: { type: "yarn", factr: 4 } }),
      /unknown ropeScaling field "factr"/,
    );
    await assert.rejects(
      withConfig({ ...yarn, rope_scaling: { type: "yarn", factor: -2 } }),
      /ropeScaling.factor must be a positive number, got -2/,
    );
    await assert.rejects(
      withConfig({ ...yarn, rope_scaling: { type: "yarn", beta_fast: 1, beta_slow: 32 } }),
      /betaFast > betaSlow/,
    );
    await assert.rejects(
      withConfig({ ...yarn, rope_scaling: { original_max_position_embeddings: 0.5 } }),
      /originalMaxPositionEmbeddings must be a positive integer, got 0.5/,
    );
    const ok = await withConfig({ ...yarn, rope_scaling: { type: "yarn", factor: 4 } });
    assert.equal(ok.cfg.ropeScaling?.factor, 4);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("loadModel: a sharded index may only name files inside the model folder", async () => {
  const root = await Deno.makeTempDir();
  const dir = join(root, "model");
  try {
    const { cfg, params } = tinyModel();
    await saveModel(dir, { cfg, params });
    await Deno.rename(join(dir, "model.safetensors"), join(root, "outside.safetensors"));
    for (const file of ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors"]) {
      await Deno.writeTextFile(
        join(dir, "model.safetensors.index.json"),
        JSON.stringify({ weight_map: { "model.embed_tokens.weight": file } }),
      );
      await assert.rejects(loadModel(dir), /is not a file name inside/, file);
    }
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
