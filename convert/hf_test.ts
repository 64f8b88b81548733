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
      /shape \[6400, 64\] differs from the expected \[6400, 128\]/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
