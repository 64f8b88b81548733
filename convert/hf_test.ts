import assert from "node:assert/strict";
import { join } from "node:path";
import { loadModel, saveModel } from "./hf.ts";
import { forward } from "../nn/model/minimind.ts";
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
