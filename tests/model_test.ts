/**
 * Model tests that need no PyTorch: reference parameter counts and size rules, the numpy
 * forward vectors (spec §10 vector 16, in f64), RoPE/YaRN/RMSNorm/MoE-aux vectors, config
 * round trips for both generations, padding and attention-mask semantics, KV-cache decoding
 * (incremental = full, batched rows of different lengths, continuous batching), MoE dispatch
 * equivalence and the gated-MLP variant.
 * @module
 */
import assert from "node:assert/strict";
import {
  add,
  cacheLength,
  concatCacheRows,
  config,
  configFromHF,
  configToHF,
  countParams,
  defaultIntermediateSize,
  disposeCache,
  forward,
  init,
  lossFromLogits,
  matmul,
  mul,
  paramsFromFlat,
  paramShapes,
  PRESETS,
  random,
  rmsNorm,
  selectCacheRows,
  sigmoid,
  sliceAxis,
  tensor,
  tree,
  valueAndGrad,
} from "../mod.ts";
import type { MiniMindConfig, MiniMindParams, PresetName, Tensor } from "../mod.ts";
import { inverseFrequencies, ropeTableArrays, yarnBounds } from "../nn/model/layers/rope_table.ts";
import type { RopeSpec } from "../nn/model/layers/rope_table.ts";
import { mlp } from "../nn/model/layers/mlp.ts";
import { moe } from "../nn/model/layers/moe.ts";
import { loadSafetensors } from "../convert/safetensors.ts";
import { assertClose, fixture } from "./_util.ts";

// ---------------------------------------------------------------------------------------------
// sizes

const COUNTS: [PresetName, number, number][] = [
  ["minimind2-small", 25_829_888, 25_829_888],
  ["minimind2", 104_030_976, 104_030_976],
  ["minimind2-moe", 145_029_760, 91_945_600],
  ["minimind3", 63_912_192, 63_912_192],
  ["minimind3-moe", 198_416_640, 63_936_768],
];

for (const [preset, total, active] of COUNTS) {
  Deno.test(`countParams(${preset}) equals the reference (${total} total, ${active} active)`, () => {
    assert.deepEqual(countParams(config(preset)), { total, active });
  });
}

Deno.test("intermediate-size rules of both generations (§10 vector 2)", () => {
  assert.equal(defaultIntermediateSize("minimind3", 768), 2432);
  assert.equal(defaultIntermediateSize("minimind3", 512), 1664);
  assert.equal(defaultIntermediateSize("minimind2", 512), 1408);
  assert.equal(defaultIntermediateSize("minimind2", 640), 1728);
  assert.equal(defaultIntermediateSize("minimind2", 768), 2048);
  assert.equal(config("minimind2-small").intermediateSize, 1408);
  assert.equal(config("minimind2-moe").intermediateSize, 1728);
  assert.equal(config("minimind3").intermediateSize, 2432);
  assert.equal(config("minimind3-moe").moeIntermediateSize, 2432);
  // derived sizes follow overrides; explicit values win
  assert.equal(config("minimind2-small", { hiddenSize: 64 }).intermediateSize, 192);
  assert.equal(config("minimind2-small", { hiddenSize: 64 }).headDim, 8);
  assert.equal(config("minimind2-small", { intermediateSize: 100 }).intermediateSize, 100);
  assert.equal(config("minimind3", { hiddenSize: 512 }).intermediateSize, 1664);
});

Deno.test("init() gives every state-dict key with its shape; countParams agrees", () => {
  for (const preset of Object.keys(PRESETS) as PresetName[]) {
    const cfg = config(preset, { hiddenSize: 32, numHiddenLayers: 2, vocabSize: 50 });
    const params = init(cfg, random.key(1));
    const flat = tree.flatten(params);
    const shapes = paramShapes(cfg);
    assert.deepEqual(Object.keys(flat), shapes.map(([k]) => k), preset);
    let n = 0;
    for (const [k, s] of shapes) {
      assert.deepEqual(flat[k].shape, s, k);
      n += flat[k].size;
    }
    assert.equal(n, countParams(cfg).total, preset);
    tree.dispose(params);
  }
});

Deno.test("init() follows the reference distributions and is deterministic", () => {
  const v2 = config("minimind2-small", { hiddenSize: 64, numHiddenLayers: 1 });
  const p = tree.flatten(init(v2, random.key(7)));
  const absMax = (a: ArrayLike<number>) => {
    let m = 0;
    for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]));
    return m;
  };
  const q = p["model.layers.0.self_attn.q_proj.weight"].dataSync();
  assert(absMax(q) <= 1 / 8 && absMax(q) > 0.11, "U(±1/√64)");
  const emb = p["model.embed_tokens.weight"].dataSync(); // lm_head's U(±1/√H)
  assert(absMax(emb) <= 1 / 8 && absMax(emb) > 0.12);
  assert.deepEqual([...p["model.norm.weight"].dataSync()].every((x) => x === 1), true);
  const again = tree.flatten(init(v2, random.key(7)));
  assert.deepEqual(again["model.embed_tokens.weight"].dataSync(), emb);
  const m3 = tree.flatten(init(config("minimind3", { hiddenSize: 64 }), random.key(7)));
  const w = m3["model.embed_tokens.weight"].dataSync();
  const std = Math.sqrt(Array.from(w).reduce((a, x) => a + x * x, 0) / w.length);
  assert(Math.abs(std - 0.02) < 0.001, `std ${std}`);
});

Deno.test("paramsFromFlat() names a missing key and its shape, and rejects wrong shapes", () => {
  const cfg = config("minimind2-small", { hiddenSize: 16, numHiddenLayers: 1, vocabSize: 10 });
  const flat = { ...tree.flatten(init(cfg, random.key(0))) };
  const q = flat["model.layers.0.self_attn.q_proj.weight"];
  delete flat["model.layers.0.self_attn.q_proj.weight"];
  assert.throws(
    () => paramsFromFlat(cfg, flat),
    /missing model\.layers\.0\.self_attn\.q_proj\.weight \(expected shape \[16, 16\]\)/,
  );
  flat["model.layers.0.self_attn.q_proj.weight"] = tensor(new Float32Array(8), [2, 4]);
  assert.throws(
    () => paramsFromFlat(cfg, flat),
    /shape \[2, 4\] differs from the expected \[16, 16\]/,
  );
  flat["model.layers.0.self_attn.q_proj.weight"] = q;
  flat["lm_head.weight"] = flat["model.embed_tokens.weight"]; // PyTorch saves the tied key too
  paramsFromFlat(cfg, flat);
  flat["model.extra"] = q;
  assert.throws(
    () => paramsFromFlat(cfg, flat),
    /unexpected key\(s\) for this config: model\.extra/,
  );
  assert(paramsFromFlat(cfg, flat, { strict: false }));
});

// ---------------------------------------------------------------------------------------------
// config I/O

Deno.test("config() rejects unknown fields and inconsistent sizes with the values", () => {
  assert.throws(
    () => config("minimind2-small", { hidenSize: 3 } as never),
    /unknown config field "hidenSize"/,
  );
  assert.throws(
    () => config("minimind2-small", { numKeyValueHeads: 3 }),
    /numAttentionHeads 8 is not a multiple of numKeyValueHeads 3/,
  );
  assert.throws(() => config("nope" as PresetName), /unknown preset/);
  assert.throws(() => config("minimind2-small", { headDim: 32 }), /minimind2 has headDim/);
  assert.equal(config("minimind3", { headDim: 32 }).headDim, 32);
});

Deno.test("configToHF/configFromHF round-trip every preset of both generations", () => {
  for (const preset of Object.keys(PRESETS) as PresetName[]) {
    for (const extra of [{}, { inferenceRopeScaling: true }, { hiddenAct: "sigmoid" as const }]) {
      const cfg = config(preset, extra);
      const json = JSON.parse(JSON.stringify(configToHF(cfg)));
      assert.equal(json.model_type, "minimind");
      assert.deepEqual(configFromHF(json), cfg, preset);
    }
  }
});

Deno.test("configFromHF() accepts the golden config objects and infers the generation", async () => {
  for (
    const [name, gen] of [
      ["v2_dense", "minimind2"],
      ["v2_moe", "minimind2"],
      ["m3_dense", "minimind3"],
      ["m3_moe", "minimind3"],
    ] as const
  ) {
    const meta = JSON.parse(await Deno.readTextFile(fixture(`golden/${name}.json`)));
    const cfg = configFromHF(meta.config);
    assert.equal(cfg.generation, gen, name);
    assert.equal(cfg.headDim, meta.derived.head_dim);
    const back = configToHF(cfg);
    for (const [k, v] of Object.entries(meta.config)) assert.deepEqual(back[k], v, `${name}.${k}`);
    assert.deepEqual(
      Object.keys(back).filter((k) => k !== "model_type").sort(),
      Object.keys(meta.config).sort(),
    );
    assert.equal(countParams(cfg).total, meta.num_params_unique, name);
    // an explicit generation wins; unknown fields (HF adds many) are ignored
    assert.equal(
      configFromHF({ ...meta.config, architectures: ["X"] }, { generation: gen }).generation,
      gen,
    );
  }
  assert.equal(configFromHF({ hidden_size: 64 }).generation, "minimind2");
  assert.equal(configFromHF({ num_experts: 4 }).hiddenSize, 768);
  assert.equal(configFromHF({ hidden_size: 64 }).hiddenAct, "silu"); // old configs load unchanged
  assert.throws(() => configFromHF({ rope_scaling: { type: "linear" } }), /only yarn/);
});

// ---------------------------------------------------------------------------------------------
// RoPE / YaRN / RMSNorm vectors

const rspec = (hd: number, yarn = false): RopeSpec => ({
  headDim: hd,
  theta: 1e6,
  end: 32768,
  scaling: yarn ? config("minimind3", { inferenceRopeScaling: true }).ropeScaling : null,
});

Deno.test("RoPE inverse frequencies and tables match §10 vector 4", () => {
  const { invFreq } = inverseFrequencies(rspec(96), "f64");
  assertClose(
    invFreq.slice(0, 4),
    [1, 0.7498942093324559, 0.5623413251903491, 0.4216965034285823],
    {
      atol: 1e-15,
      rtol: 1e-13,
    },
  );
  assertClose([invFreq[47]], [1.3335214321633247e-6], { atol: 0, rtol: 1e-12 });
  const t = ropeTableArrays(rspec(96), 101, "f64");
  assertClose(t.cos.slice(96, 100), [0.5403023, 0.7317610, 0.8460091, 0.9123959], { atol: 1e-7 });
  assertClose(t.cos.slice(96 + 48, 96 + 52), [0.5403023, 0.7317610, 0.8460091, 0.9123959], {
    atol: 1e-7,
  });
  assertClose([t.cos[100 * 96 + 1], t.sin[100 * 96 + 1]], [
    0.9175973992600991,
    -0.39751102232655433,
  ], {
    atol: 1e-13,
  });
  const i64 = inverseFrequencies(rspec(64), "f64").invFreq;
  assertClose([i64[1], Math.cos(100 * i64[1])], [0.6493816315762113, -0.5102829429002417], {
    atol: 1e-13,
  });
});

Deno.test("YaRN bounds and multipliers match §10 vector 5 and the golden f32 multipliers", () => {
  assert.deepEqual(yarnBounds(rspec(96, true)), { low: 8, high: 21 });
  assert.deepEqual(yarnBounds(rspec(64, true)), { low: 5, high: 14 });
  assert.deepEqual(yarnBounds(rspec(80, true)), { low: 6, high: 17 });
  assert.deepEqual(yarnBounds(rspec(16, true)), { low: 1, high: 4 });
  const plain = inverseFrequencies(rspec(96), "f64").invFreq;
  const y = inverseFrequencies(rspec(96, true), "f64").invFreq;
  const mult = [...y].map((v, i) => v / plain[i]);
  for (let i = 0; i <= 8; i++) assertClose([mult[i]], [1], { atol: 1e-12 });
  assertClose([mult[9], mult[10]], [0.927885, 0.855769], { atol: 1e-6 });
  for (let i = 21; i < 48; i++) assertClose([mult[i]], [0.0625], { atol: 1e-12 });
  // float32 path, head_dim 16 (golden m3_dense "yarn")
  const p32 = inverseFrequencies(rspec(16), "f32").invFreq;
  const y32 = inverseFrequencies(rspec(16, true), "f32").invFreq;
  const want = [1.0, 1.0, 0.6874999403953552, 0.3749999701976776, 0.0625, 0.0625, 0.0625, 0.0625];
  assertClose([...y32].map((v, i) => v / p32[i]), want, { atol: 1e-7, rtol: 0 });
  // no YaRN when end / original_max ≤ 1
  const short = { ...rspec(16, true), end: 2048 };
  assert.deepEqual(inverseFrequencies(short, "f32").invFreq, p32);
});

Deno.test("RoPE and YaRN f32 tables match the PyTorch tables of m3_dense", async () => {
  const g = await loadSafetensors(fixture("golden/m3_dense.safetensors"));
  for (const [pre, yarn] of [["rope", false], ["rope_yarn", true]] as const) {
    const t = ropeTableArrays(rspec(16, yarn), 64, "f32");
    assertClose(t.cos, g[`${pre}.freqs_cos`].dataSync(), { atol: 1e-6, rtol: 0, label: pre });
    assertClose(t.sin, g[`${pre}.freqs_sin`].dataSync(), { atol: 1e-6, rtol: 0, label: pre });
  }
  tree.dispose(g);
});

Deno.test("RMSNorm([1, 2, 3, 4], eps 1e-6) matches §10 vector 6", () => {
  const y = rmsNorm(tensor([1, 2, 3, 4]), tensor([1, 1, 1, 1]), { eps: 1e-6 });
  assertClose(y.dataSync(), [0.3651483, 0.7302967, 1.0954450, 1.4605934], { atol: 1e-6 });
});

Deno.test("minimind3 MoE aux loss matches §10 vector 14", () => {
  // router = identity on log-probabilities, so softmax gives back the given scores
  const scores = [[.7, .1, .1, .1], [.6, .2, .1, .1], [.1, .1, .7, .1], [.4, .3, .2, .1]];
  const cfg = config("minimind3-moe", { hiddenSize: 4, numAttentionHeads: 1, numKeyValueHeads: 1 });
  const eye = tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]], undefined, "f64");
  const ex = () => {
    const w = (o: number, i: number) => ({ weight: tensor(new Float64Array(o * i), [o, i]) });
    return { gate_proj: w(2, 4), up_proj: w(2, 4), down_proj: w(4, 2) };
  };
  const x = tensor(scores.flat().map(Math.log), [1, 4, 4], "f64");
  const r = moe(cfg, { gate: { weight: eye }, experts: [ex(), ex(), ex(), ex()] }, x, {
    train: true,
  });
  assert.deepEqual([...r.routing.topkIdx.dataSync()], [0, 0, 2, 0]);
  assertClose(r.aux.dataSync(), [8.125e-4], { atol: 1e-15, rtol: 1e-12 });
  const ev = moe(cfg, { gate: { weight: eye }, experts: [ex(), ex(), ex(), ex()] }, x);
  assert.equal(ev.aux.dataSync()[0], 0);
});

// ---------------------------------------------------------------------------------------------
// §10 vector 16: the numpy transcription of HEAD (f64)

const NP = JSON.parse(await Deno.readTextFile(fixture("vectors/np_forward.json")));

function npConfig(moe: boolean): MiniMindConfig {
  return config(moe ? "minimind3-moe" : "minimind3", {
    hiddenSize: 64,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    vocabSize: 64,
    intermediateSize: 256,
    ...(moe ? { numExperts: 4, numExpertsPerTok: 1, moeIntermediateSize: 256 } : {}),
  });
}

/** Deterministic weights created in the numpy script's order with ordinal s. */
function npParams(cfg: MiniMindConfig): MiniMindParams {
  const shapes = new Map(paramShapes(cfg));
  const order = ["model.embed_tokens.weight"];
  for (let l = 0; l < cfg.numHiddenLayers; l++) {
    const p = `model.layers.${l}`;
    for (const n of ["q_proj", "k_proj", "v_proj", "o_proj", "q_norm", "k_norm"]) {
      order.push(`${p}.self_attn.${n}.weight`);
    }
    order.push(`${p}.input_layernorm.weight`, `${p}.post_attention_layernorm.weight`);
    const ffn = (pre: string) =>
      ["gate_proj", "up_proj", "down_proj"].map((n) => `${pre}.${n}.weight`);
    if (cfg.useMoe) {
      order.push(`${p}.mlp.gate.weight`);
      for (let e = 0; e < cfg.numExperts; e++) order.push(...ffn(`${p}.mlp.experts.${e}`));
    } else order.push(...ffn(`${p}.mlp`));
  }
  order.push("model.norm.weight");
  assert.equal(order.length, shapes.size);
  const flat: Record<string, Tensor> = {};
  order.forEach((k, s) => {
    const shape = shapes.get(k)!;
    const v = new Float64Array(shape.reduce((a, b) => a * b, 1));
    if (shape.length === 2) {
      for (let r = 0; r < shape[0]; r++) {
        for (let c = 0; c < shape[1]; c++) {
          v[r * shape[1] + c] = 0.02 * Math.sin(0.7 * r + 1.3 * c + s);
        }
      }
    } else for (let i = 0; i < v.length; i++) v[i] = 1 + 0.01 * Math.cos(0.5 * i + s);
    flat[k] = tensor(v, shape, "f64");
  });
  return paramsFromFlat(cfg, flat);
}

for (const kind of ["dense", "moe"] as const) {
  Deno.test(`forward() matches the numpy transcription of minimind-3 (§10 vector 16, ${kind}, f64)`, () => {
    const v = NP[kind];
    const cfg = npConfig(kind === "moe");
    assert.equal(countParams(cfg).total, v["num_params(tied counted once)"]);
    const params = npParams(cfg);
    const ids = tensor(v.input_ids, [1, v.input_ids.length], "i32");
    const r = forward(cfg, params, ids, { train: true });
    const lg = r.logits.dataSync(), vv = cfg.vocabSize, t = v.input_ids.length;
    assertClose(lg.slice(0, 5), v["logits[0][:5]"], { atol: 1e-12, rtol: 1e-9 });
    const last = lg.slice((t - 1) * vv, t * vv);
    assertClose(last.slice(0, 5), v["logits[-1][:5]"], { atol: 1e-12, rtol: 1e-9 });
    assert.equal(last.indexOf(Math.max(...last)), v.argmax_last);
    assertClose(lossFromLogits(r.logits, ids).dataSync(), [v["ce_loss(labels=input_ids)"]], {
      atol: 1e-12,
      rtol: 1e-10,
    });
    assertClose(r.auxLoss.dataSync(), [v["aux_loss(training mode)"]], { atol: 1e-15, rtol: 1e-9 });
    // incremental decoding of the last token equals the full forward
    const pre = forward(cfg, params, sliceAxis(ids, 1, 0, t - 1), { useCache: true });
    const step = forward(cfg, params, sliceAxis(ids, 1, t - 1, t), { cache: pre.cache });
    assertClose(step.logits.dataSync(), last, { atol: 1e-14, rtol: 0 });
  });
}

// ---------------------------------------------------------------------------------------------
// padding, masks, KV cache

function tiny(preset: PresetName, extra = {}): { cfg: MiniMindConfig; params: MiniMindParams } {
  const cfg = config(preset, {
    hiddenSize: 32,
    numHiddenLayers: 2,
    numAttentionHeads: 4,
    numKeyValueHeads: 2,
    vocabSize: 40,
    ...(preset.endsWith("moe") ? { intermediateSize: 48, moeIntermediateSize: 48 } : {}),
    ...extra,
  });
  return { cfg, params: init(cfg, random.key(3), { dtype: "f64" }) };
}

function rowsOf(x: Tensor, row: number, from: number, to: number): Float64Array {
  const [, t, v] = x.shape;
  return (x.dataSync() as Float64Array).slice((row * t + from) * v, (row * t + to) * v);
}

const ALL: PresetName[] = ["minimind2-small", "minimind2-moe", "minimind3", "minimind3-moe"];

for (const preset of ALL) {
  Deno.test(`right padding needs no mask and a key mask changes nothing for real tokens (${preset})`, () => {
    const { cfg, params } = tiny(preset);
    const real = [1, 5, 9, 17];
    const ref = forward(cfg, params, tensor([real], [1, 4], "i32")).logits;
    const padded = tensor([[...real, 0, 0, 0], [...real, 3, 4, 5]], [2, 7], "i32");
    const noMask = forward(cfg, params, padded).logits;
    const mask = tensor([[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 1]], [2, 7], "i32");
    const masked = forward(cfg, params, padded, { attentionMask: mask }).logits;
    for (const lg of [noMask, masked]) {
      for (const row of [0, 1]) assertClose(rowsOf(lg, row, 0, 4), ref.dataSync(), { atol: 1e-12 });
    }
    // the loss ignores labels of −100 (padding)
    const labels = tensor([[...real, -100, -100, -100]], [1, 7], "i32");
    const l1 = lossFromLogits(sliceAxis(noMask, 0, 0, 1), labels).dataSync()[0];
    const l2 = lossFromLogits(ref, tensor([real], [1, 4], "i32")).dataSync()[0];
    assertClose([l1], [l2], { atol: 1e-12 });
  });

  Deno.test(`incremental decoding equals the full forward (${preset}, f64)`, () => {
    const { cfg, params } = tiny(preset);
    const ids = tensor([[1, 5, 9, 17, 33, 2, 7], [4, 4, 8, 15, 16, 23, 42 % 40]], [2, 7], "i32");
    const full = forward(cfg, params, ids).logits;
    let r = forward(cfg, params, sliceAxis(ids, 1, 0, 3), { useCache: true });
    r = forward(cfg, params, sliceAxis(ids, 1, 3, 5), { cache: r.cache });
    assertClose(r.logits.dataSync(), sliceAxis(full, 1, 3, 5).dataSync(), { atol: 1e-13 });
    r = forward(cfg, params, sliceAxis(ids, 1, 5, 6), { cache: r.cache });
    r = forward(cfg, params, sliceAxis(ids, 1, 6, 7), { cache: r.cache, logitsToKeep: 1 });
    assert.equal(cacheLength(r.cache), 7);
    assertClose(r.logits.dataSync(), sliceAxis(full, 1, 6, 7).dataSync(), { atol: 1e-13 });
  });
}

Deno.test("batched decode with rows of different lengths (left padding, per-row positions)", () => {
  const { cfg, params } = tiny("minimind3");
  const a = [1, 5, 9, 17, 33, 2], b = [3, 4, 7];
  const alone = (ids: number[]) =>
    forward(cfg, params, tensor([ids], [1, ids.length], "i32")).logits;
  const ids = tensor([a, [0, 0, 0, ...b]], [2, 6], "i32");
  const mask = tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]], [2, 6], "i32");
  const pos = tensor([[0, 1, 2, 3, 4, 5], [0, 0, 0, 0, 1, 2]], [2, 6], "i32");
  const pre = forward(cfg, params, ids, { attentionMask: mask, positions: pos, useCache: true });
  assertClose(rowsOf(pre.logits, 0, 0, 6), alone(a).dataSync(), { atol: 1e-12 });
  assertClose(rowsOf(pre.logits, 1, 3, 6), alone(b).dataSync(), { atol: 1e-12 });
  // next token for both rows: the cache keeps the mask, positions continue per row
  const step = forward(cfg, params, tensor([[10], [11]], [2, 1], "i32"), {
    cache: pre.cache,
    positions: tensor([[6], [3]], [2, 1], "i32"),
  });
  const wantA = alone([...a, 10]), wantB = alone([...b, 11]);
  assertClose(rowsOf(step.logits, 0, 0, 1), rowsOf(wantA, 0, 6, 7), { atol: 1e-12 });
  assertClose(rowsOf(step.logits, 1, 0, 1), rowsOf(wantB, 0, 3, 4), { atol: 1e-12 });
});

Deno.test("continuous batching: join separately prefilled caches, decode, drop a row", () => {
  const { cfg, params } = tiny("minimind2-small");
  const a = [1, 5, 9, 17, 33, 2], b = [3, 4, 7];
  const alone = (ids: number[]) =>
    forward(cfg, params, tensor([ids], [1, ids.length], "i32")).logits;
  const ca = forward(cfg, params, tensor([a], [1, 6], "i32"), { useCache: true }).cache!;
  const cb = forward(cfg, params, tensor([b], [1, 3], "i32"), { useCache: true }).cache!;
  const joined = concatCacheRows([ca, cb]);
  assert.equal(cacheLength(joined), 6);
  assert.deepEqual([...joined.mask!.dataSync()], [1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 1]);
  const step = forward(cfg, params, tensor([[10], [11]], [2, 1], "i32"), {
    cache: joined,
    positions: tensor([[6], [3]], [2, 1], "i32"),
  });
  assertClose(rowsOf(step.logits, 0, 0, 1), rowsOf(alone([...a, 10]), 0, 6, 7), { atol: 1e-12 });
  assertClose(rowsOf(step.logits, 1, 0, 1), rowsOf(alone([...b, 11]), 0, 3, 4), { atol: 1e-12 });
  // row a finished: keep only row b and go on
  const onlyB = selectCacheRows(step.cache!, [1]);
  disposeCache(step.cache);
  const next = forward(cfg, params, tensor([[12]], [1, 1], "i32"), {
    cache: onlyB,
    positions: tensor([[4]], [1, 1], "i32"),
  });
  assertClose(next.logits.dataSync(), rowsOf(alone([...b, 11, 12]), 0, 4, 5), { atol: 1e-12 });
});

// ---------------------------------------------------------------------------------------------
// MoE dispatch, gated MLP variant

for (const preset of ["minimind2-moe", "minimind3-moe"] as const) {
  Deno.test(`sparse and dense MoE dispatch agree on logits, aux loss and gradients (${preset})`, () => {
    const { cfg, params } = tiny(preset);
    const ids = tensor([[1, 5, 9, 17, 33, 2], [4, 8, 15, 16, 23, 39]], [2, 6], "i32");
    const run = (dispatch: "sparse" | "dense") =>
      valueAndGrad((p: MiniMindParams) => {
        const r = forward(cfg, p, ids, { train: true, moeDispatch: dispatch });
        return [add(lossFromLogits(r.logits, ids), r.auxLoss), r.auxLoss];
      }, { hasAux: true })(params);
    const [[ls, as], gs] = run("sparse");
    const [[ld, ad], gd] = run("dense");
    assertClose(ls.dataSync(), ld.dataSync(), { atol: 1e-13 });
    assert(as.dataSync()[0] > 0);
    assertClose(as.dataSync(), ad.dataSync(), { atol: 1e-15 });
    const fs = tree.flatten(gs), fd = tree.flatten(gd);
    for (const k of Object.keys(fs)) {
      assertClose(fs[k].dataSync(), fd[k].dataSync(), { atol: 1e-13, label: k });
    }
  });
}

Deno.test("gated MLP variant: hiddenAct sigmoid computes up(x)·σ(gate(x)); default stays SwiGLU", () => {
  const { cfg, params } = tiny("minimind2-small", { hiddenAct: "sigmoid" });
  const p = params.model.layers[0].mlp as Parameters<typeof mlp>[0];
  const x = random.normal(random.key(5), [2, 3, 32], { dtype: "f64" });
  const want = matmul(
    mul(
      sigmoid(matmul(x, p.gate_proj.weight, { transB: true })),
      matmul(x, p.up_proj.weight, { transB: true }),
    ),
    p.down_proj.weight,
    { transB: true },
  );
  assertClose(mlp(p, x, "sigmoid").dataSync(), want.dataSync(), { atol: 1e-14 });
  const silu = forward({ ...cfg, hiddenAct: "silu" }, params, tensor([[1, 2, 3]], [1, 3], "i32"));
  const sig = forward(cfg, params, tensor([[1, 2, 3]], [1, 3], "i32"));
  assert.notDeepEqual(silu.logits.dataSync(), sig.logits.dataSync());
  assert.equal(config("minimind2-small").hiddenAct, "silu");
});

Deno.test("forward() errors name the shapes involved", () => {
  const { cfg, params } = tiny("minimind2-small");
  assert.throws(
    () => forward(cfg, params, tensor([1, 2, 3], [3], "i32")),
    /Cannot run forward on ids i32 \[3\]: expected integer ids \(B, T\)/,
  );
  assert.throws(
    () =>
      forward(cfg, params, tensor([[1, 2, 3]], [1, 3], "i32"), {
        attentionMask: tensor([[1, 1]], [1, 2], "i32"),
      }),
    /attention mask \[1, 2\] with ids \[1, 3\]/,
  );
  assert.throws(
    () => forward({ ...cfg, dropout: 0.1 }, params, tensor([[1]], [1, 1], "i32"), { train: true }),
    /Cannot train with dropout 0\.1/,
  );
});

Deno.test("deno task model-size: per-module table and the reference total", async () => {
  const { configFromArgs, formatModelSize, sizeRows } = await import("../bench/model_size.ts");
  const small = formatModelSize(configFromArgs([]));
  assert.match(small, /model\.layers\.\{l\}\.mlp\.gate_proj +\[1408, 512\] +8 +5,767,168/);
  assert.match(small, /Model Params: 25\.83M/);
  const moeCfg = configFromArgs(["--preset", "minimind3", "--use_moe", "1"]);
  assert.match(formatModelSize(moeCfg), /Model Params: 198\.42M-A63\.94M/);
  assert.equal(sizeRows(moeCfg).reduce((a, r) => a + r.params, 0), 198_416_640);
  assert.equal(
    configFromArgs(["--hidden_size=768", "--num_hidden_layers", "16"]).intermediateSize,
    2048,
  );
  assert.throws(() => configFromArgs(["--hiden_size", "3"]), /Cannot use --hiden_size/);
});
