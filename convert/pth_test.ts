import assert from "node:assert/strict";
import { join } from "node:path";
import { deflateSync, zipSync } from "fflate";
import { loadModel, saveModelPth, stateDict } from "./hf.ts";
import { parsePth, serializePth } from "./pth.ts";
import { PickleWriter } from "./pickle.ts";
import { readZip, writeZip } from "./zip.ts";
import { forward, init } from "../nn/model/minimind.ts";
import { config } from "../nn/model/minimind_config.ts";
import { key } from "../nn/random.ts";
import { tensor } from "../nn/creation.ts";
import { flatten, type Tree } from "../nn/tree.ts";
import { tinyModel } from "../tests/_serve.ts";
import { compare, needsTool, torchMissing } from "../tests/_util.ts";

const torch = await torchMissing();

const FIX = new URL("../tests/fixtures/convert/", import.meta.url).pathname;
const enc = new TextEncoder();

function pthOf(pickle: Uint8Array, records: Record<string, Uint8Array> = {}): Uint8Array {
  return writeZip([
    { name: "evil/data.pkl", data: pickle },
    ...Object.entries(records).map(([k, data]) => ({ name: `evil/data/${k}`, data })),
    { name: "evil/version", data: enc.encode("3\n") },
  ]);
}

Deno.test("pth: PyTorch-written fixtures load with PyTorch's logits (f32, f16, bf16, minimind-3 MoE)", async () => {
  const expected = JSON.parse(await Deno.readTextFile(join(FIX, "expected.json")));
  const ids = tensor([expected.ids], [1, expected.ids.length], "i32");
  for (const [file, want] of Object.entries(expected.files as Record<string, number[]>)) {
    const m = await loadModel(join(FIX, file), { flags: { num_attention_heads: 4 } });
    assert.equal(m.cfg.vocabSize, 64, file);
    assert.equal(m.cfg.hiddenSize, 32, file);
    assert.equal(m.cfg.numHiddenLayers, 2, file);
    assert.equal(m.cfg.numKeyValueHeads, 2, file);
    assert.equal(m.cfg.tieWordEmbeddings, true, file);
    if (file.startsWith("tiny_m3")) {
      assert.equal(m.cfg.generation, "minimind3");
      assert.equal(m.cfg.useMoe, true);
      assert.equal(m.cfg.numExperts, 4);
      assert.equal(m.cfg.moeIntermediateSize, 32);
    }
    const logits = forward(m.cfg, m.params, ids).logits.dataSync();
    const r = compare(logits, want, { atol: 2e-5, rtol: 1e-5, label: file });
    assert.ok(r.ok, r.message);
  }
});

Deno.test("pth: shapes that contradict a flag name the flag and the value to set", async () => {
  const f = join(FIX, "tiny_v2_f32.pth");
  await assert.rejects(
    loadModel(f, { flags: { hidden_size: 512 } }),
    /--hidden_size 512 disagrees with model.embed_tokens.weight \[64, 32\]; set --hidden_size 32/,
  );
  await assert.rejects(
    loadModel(f, { flags: { num_attention_heads: 4, use_moe: 1 } }),
    /--use_moe 1 disagrees .* set --use_moe 0/,
  );
  await assert.rejects(
    loadModel(f, { flags: { num_attention_heads: 3 } }),
    /--num_attention_heads 3 does not divide hidden_size 32/,
  );
  await assert.rejects(
    loadModel(join(FIX, "tiny_m3_moe_f16.pth"), { flags: { preset: "minimind2-small" } }),
    /--preset minimind2-small is a minimind2 model, but the weights are minimind3.*set --preset minimind3/,
  );
});

Deno.test("pth: ours → .pth → ours is bit-exact in f32 and within rounding in f16/bf16", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { cfg, params } = tinyModel();
    const a = flatten(params as unknown as Tree);
    for (const [dtype, tol] of [["f32", 0], ["f16", 2 ** -11], ["bf16", 2 ** -8]] as const) {
      const path = join(dir, `m_${dtype}.pth`);
      await saveModelPth(path, { cfg, params }, dtype);
      const back = await loadModel(path, { flags: { num_attention_heads: cfg.numAttentionHeads } });
      assert.deepEqual(back.cfg, cfg);
      const b = flatten(back.params as unknown as Tree);
      for (const k of Object.keys(a)) {
        const x = a[k].dataSync(), y = b[k].dataSync();
        if (tol === 0) assert.deepEqual(y, x, k);
        else {
          const r = compare(y, x, { atol: 1e-7, rtol: tol, label: `${dtype} ${k}` });
          assert.ok(r.ok, r.message);
        }
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pth: a MiniMind2-MoE state dict's config is read back from its shapes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const cfg = config("minimind2-moe", { hiddenSize: 64, numHiddenLayers: 2, vocabSize: 96 });
    const params = init(cfg, key(2));
    const path = join(dir, "full_sft_64_moe.pth");
    await saveModelPth(path, { cfg, params }, "bf16");
    const back = await loadModel(path);
    assert.deepEqual(back.cfg, cfg);
    assert.equal(back.cfg.nSharedExperts, 1);
    assert.equal(back.cfg.nRoutedExperts, 4);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

const torchLoad = needsTool(
  "pth: torch.load (python3-torch) reads what we write, weights_only included",
  torch,
);
Deno.test({
  ...torchLoad,
  fn: async () => {
    torchLoad.need();
    const dir = await Deno.makeTempDir();
    try {
      const { cfg, params } = tinyModel();
      const path = join(dir, "full_sft_64.pth");
      await saveModelPth(path, { cfg, params }, "f16");
      const sd = await stateDict(cfg, params, "f16", true);
      const script = `
import sys, json, torch
d = torch.load(sys.argv[1], map_location="cpu", weights_only=True)
print(json.dumps({k: [str(v.dtype), list(v.shape), float(v.float().sum())] for k, v in d.items()}))
`;
      const out = await new Deno.Command("/usr/bin/python3", {
        args: ["-c", script, path],
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      const got = JSON.parse(new TextDecoder().decode(out.stdout));
      assert.deepEqual(Object.keys(got), Object.keys(sd));
      assert.ok(
        "lm_head.weight" in got,
        "a tied lm_head is listed, as MiniMind's strict load needs",
      );
      for (const [k, raw] of Object.entries(sd)) {
        assert.equal(got[k][0], "torch.float16", k);
        assert.deepEqual(got[k][1], [...raw.shape], k);
      }
      const emb = flatten(params as unknown as Tree)["model.embed_tokens.weight"].dataSync();
      const sum = (emb as Float32Array).reduce((s, x) => s + x, 0);
      assert.ok(Math.abs(got["model.embed_tokens.weight"][2] - sum) < 1e-2);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

const resumePth = needsTool(
  "pth: a MiniMind resume checkpoint (model + optimizer + step) loads its model",
  torch,
);
Deno.test({
  ...resumePth,
  fn: async () => {
    resumePth.need();
    const dir = await Deno.makeTempDir();
    try {
      const path = join(dir, "full_sft_32_resume.pth");
      const script = `
import sys, torch
m = torch.nn.Linear(3, 2, bias=False)
opt = torch.optim.AdamW(m.parameters())
m(torch.ones(1, 3)).sum().backward(); opt.step()
torch.save({"model": m.state_dict(), "optimizer": opt.state_dict(), "epoch": 1, "step": 7,
            "world_size": 1, "wandb_id": None}, sys.argv[1])
print(m.weight.detach().reshape(-1).tolist())
`;
      const out = await new Deno.Command("/usr/bin/python3", {
        args: ["-c", script, path],
        stderr: "piped",
      }).output();
      assert.ok(out.success, new TextDecoder().decode(out.stderr));
      const want = JSON.parse(new TextDecoder().decode(out.stdout));
      const p = parsePth(await Deno.readFile(path), path);
      assert.deepEqual(Object.keys(p.tensors), ["weight"]);
      assert.deepEqual(
        [...new Float32Array(p.tensors.weight.data.slice().buffer)],
        want.map(Math.fround),
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test("pth: a pickle calling os.system is refused by name, nothing runs", () => {
  for (const [module, name] of [["os", "system"], ["posix", "system"], ["builtins", "eval"]]) {
    const w = new PickleWriter().global(module, name).mark().str("touch /tmp/pwned").tuple()
      .reduce();
    assert.throws(
      () => parsePth(pthOf(w.finish()), "evil.pth"),
      new RegExp(`global ${module}\\.${name} is not allowed .*refusing to load it`),
    );
  }
});

Deno.test("pth: unknown globals and object-building opcodes are refused by name", () => {
  const w = new PickleWriter().global("torch.nn.modules.linear", "Linear").emptyTuple().reduce();
  assert.throws(
    () => parsePth(pthOf(w.finish()), "evil.pth"),
    /global torch\.nn\.modules\.linear\.Linear is not allowed/,
  );
  // INST 'os system' (protocol 0 object building) — refused as an opcode before any lookup
  const inst = Uint8Array.from([0x80, 2, 0x28, ...enc.encode("ios\nsystem\n"), 0x2e]);
  assert.throws(() => parsePth(pthOf(inst), "evil.pth"), /opcode INST at byte 3 is not allowed/);
  // REDUCE on a storage class (allowed name, not callable)
  const st = new PickleWriter().global("torch", "FloatStorage").emptyTuple().reduce();
  assert.throws(
    () => parsePth(pthOf(st.finish()), "evil.pth"),
    /torch\.FloatStorage called directly/,
  );
});

Deno.test("pth: a zip bomb is refused before inflating", () => {
  const huge = new Uint8Array(50 * 2 ** 20); // 50 MiB of zeros → ~50 KiB deflated
  const bomb = zipSync({ "bomb/data.pkl": [huge, { level: 9 }] });
  assert.throws(
    () => parsePth(bomb, "bomb.pth"),
    /deflated entry "bomb\/data.pkl" declares 52428800 bytes from \d+ compressed \(ratio \d+ > 200: zip bomb\?\)/,
  );
  // a lying declared size is caught after inflating into a buffer of the declared size
  const lie = zipSync({ "x/data.pkl": [new Uint8Array(1000).fill(7), { level: 0 }] });
  assert.throws(() => readZip(lie, "x", { maxTotalBytes: 100 }), /more than the limit of 100/);
  // overlapping entries (two directory records pointing at the same data)
  const one = writeZip([{ name: "a", data: new Uint8Array(100) }]);
  const dv = new DataView(one.buffer);
  const eocd = one.length - 22,
    cd = dv.getUint32(eocd + 16, true),
    cdLen = dv.getUint32(eocd + 12, true);
  const twice = new Uint8Array(cd + 2 * cdLen + 22);
  twice.set(one.subarray(0, cd + cdLen));
  twice.set(one.subarray(cd, cd + cdLen), cd + cdLen);
  twice.set(one.subarray(eocd), cd + 2 * cdLen);
  const tv = new DataView(twice.buffer);
  tv.setUint16(cd + 2 * cdLen + 8, 2, true);
  tv.setUint16(cd + 2 * cdLen + 10, 2, true);
  tv.setUint32(cd + 2 * cdLen + 12, 2 * cdLen, true);
  assert.throws(() => readZip(twice, "overlap.zip"), /entries "a" and "a" overlap/);
  // deflate output that is not a pth at all is still rejected cleanly
  assert.throws(() => parsePth(deflateSync(huge.subarray(0, 10)), "raw"), /not a PyTorch \.pth/);
});

Deno.test("pth: a truncated zip is refused", () => {
  const raw = { w: { dtype: "F32" as const, shape: [4], data: new Uint8Array(16) } };
  const bytes = serializePth(raw);
  for (const cut of [bytes.length - 10, Math.floor(bytes.length / 2), 100]) {
    assert.throws(
      () => parsePth(bytes.subarray(0, cut), "cut.pth"),
      /Cannot read cut\.pth: no end-of-central-directory record .*truncated/,
    );
  }
  // directory intact but pointing past the end of the file
  const dv = new DataView(bytes.buffer);
  const cd = dv.getUint32(bytes.length - 22 + 16, true);
  const moved = bytes.slice();
  new DataView(moved.buffer).setUint32(cd + 42, bytes.length + 1000, true);
  assert.throws(
    () => parsePth(moved, "hole.pth"),
    /entry "archive\/data.pkl": local header at offset \d+ is missing \(truncated file\?\)/,
  );
  // a flipped data byte fails the CRC
  const bad = bytes.slice();
  bad[30 + dv.getUint16(26, true) + dv.getUint16(28, true) + 5] ^= 0xff;
  assert.throws(
    () => parsePth(bad, "bad.pth"),
    /entry "archive\/data.pkl": CRC-32 [0-9a-f]+ ≠ recorded [0-9a-f]+ \(corrupt\)/,
  );
});

Deno.test("pth: a storage offset or view past the storage's end is refused", () => {
  const four = new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer);
  const rebuild = (offset: number, size: number[], stride: number[], record = four) => {
    const w = new PickleWriter();
    w.global("collections", "OrderedDict").emptyTuple().reduce().mark().str("w");
    w.global("torch._utils", "_rebuild_tensor_v2").mark();
    w.mark().str("storage").global("torch", "FloatStorage").str("0").str("cpu").int(4).tuple()
      .persistentId();
    w.int(offset).mark();
    for (const d of size) w.int(d);
    w.tuple().mark();
    for (const s of stride) w.int(s);
    w.tuple().bool(false);
    w.global("collections", "OrderedDict").emptyTuple().reduce().tuple().reduce().setItems();
    return pthOf(w.finish(), { "0": record });
  };
  assert.deepEqual(
    [...new Float32Array(parsePth(rebuild(1, [3], [1]), "ok.pth").tensors.w.data.buffer)],
    [2, 3, 4],
  );
  // a transposed (strided) view is gathered row-major
  assert.deepEqual(
    [...new Float32Array(parsePth(rebuild(0, [2, 2], [1, 2]), "t.pth").tensors.w.data.buffer)],
    [1, 3, 2, 4],
  );
  assert.throws(
    () => parsePth(rebuild(2, [3], [1]), "evil.pth"),
    /tensor on storage 0 \(offset 2, size \[3\], stride \[1\]\) reaches element 4, past the storage's 4 elements/,
  );
  assert.throws(() => parsePth(rebuild(9, [1], [1]), "evil.pth"), /past the storage's 4 elements/);
  assert.throws(() => parsePth(rebuild(0, [2, 2], [3, 1]), "evil.pth"), /reaches element 4/);
  // a storage whose record is shorter than its declared element count
  assert.throws(
    () => parsePth(rebuild(0, [1], [1], four.subarray(0, 8)), "short.pth"),
    /storage 0 \(torch\.FloatStorage, 4 elements\) needs 16 bytes, its record has 8/,
  );
});

Deno.test("pth: legacy and non-zip files get a clear error", () => {
  assert.throws(
    () => parsePth(Uint8Array.from([0x80, 2, 0x8a, 0x0a]), "old.pth"),
    /legacy \(pre-PyTorch-1\.6\) pickle file/,
  );
  assert.throws(() => parsePth(enc.encode("hello"), "x.pth"), /not a PyTorch \.pth file/);
});
