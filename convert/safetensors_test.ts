import assert from "node:assert/strict";
import { tensor } from "../nn/creation.ts";
import {
  decodeRaw,
  loadSafetensors,
  parseSafetensors,
  readSafetensorsMetadata,
  saveSafetensors,
  serializeSafetensors,
  tensorsFromSafetensors,
  toHalf,
} from "./safetensors.ts";
import type { RawTensor, SafetensorsDType } from "./safetensors.ts";
import { fixture } from "../tests/_util.ts";

/** Builds a file by hand: header JSON (as given) + data bytes. */
function build(header: unknown, data: Uint8Array, pad = true): Uint8Array {
  let h = new TextEncoder().encode(JSON.stringify(header));
  if (pad && h.length % 8) {
    const p = new Uint8Array(h.length + 8 - (h.length % 8)).fill(0x20);
    p.set(h);
    h = p;
  }
  const out = new Uint8Array(8 + h.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(h.length), true);
  out.set(h, 8);
  out.set(data, 8 + h.length);
  return out;
}

function raw(dtype: SafetensorsDType, shape: number[], bytes: ArrayBufferView): RawTensor {
  return { dtype, shape, data: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength) };
}

Deno.test("safetensors: the golden files load (F32 and I64 as i32)", async () => {
  const t = await loadSafetensors(fixture("golden/v2_dense.safetensors"));
  assert.deepEqual(t.input_ids.shape, [2, 16]);
  assert.equal(t.input_ids.dtype, "i32");
  assert.equal(t.labels.dataSync()[31], -100);
  assert.equal(t.logits.dtype, "f32");
  assert.deepEqual(t.logits.shape, [2, 16, 6400]);
  assert.deepEqual(await readSafetensorsMetadata(fixture("golden/v2_dense.safetensors")), {
    format: "pt",
  });
});

Deno.test("safetensors: every dtype round-trips and converts as documented", async () => {
  const f16 = toHalf(new Float32Array([1, -2.5, 65504, 1e-7, 0.1]), [5], "F16");
  const bf16 = toHalf(new Float32Array([1, -2.5, 3.14159, 1e30]), [2, 2], "BF16");
  const bytes = await serializeSafetensors({
    f32: tensor([[1.5, -2], [3, 4]]),
    f64: tensor([1e-300, 2], [2], "f64"),
    i32: tensor([-7, 8, 9], [3], "i32"),
    u32: tensor([4000000000], [1], "u32"),
    i64: raw("I64", [3], new BigInt64Array([-5n, 0n, 2147483647n])),
    u8: raw("U8", [4], new Uint8Array([0, 1, 255, 3])),
    f16,
    bf16,
    empty: tensor(new Float32Array(0), [0, 3]),
  }, { format: "pt", note: "x" });
  const t = tensorsFromSafetensors(bytes);
  assert.deepEqual([...t.f32.dataSync()], [1.5, -2, 3, 4]);
  assert.deepEqual(t.f32.shape, [2, 2]);
  assert.deepEqual([...t.f64.dataSync()], [1e-300, 2]);
  assert.deepEqual([...t.i32.dataSync()], [-7, 8, 9]);
  assert.deepEqual([...t.u32.dataSync()], [4000000000]);
  assert.equal(t.i64.dtype, "i32");
  assert.deepEqual([...t.i64.dataSync()], [-5, 0, 2147483647]);
  assert.equal(t.u8.dtype, "u32");
  assert.deepEqual([...t.u8.dataSync()], [0, 1, 255, 3]);
  assert.equal(t.f16.dtype, "f32");
  const h = t.f16.dataSync();
  assert.deepEqual([h[0], h[1], h[2]], [1, -2.5, 65504]);
  assert(Math.abs(h[3] - 1e-7) < 6e-8 && Math.abs(h[4] - 0.1) < 1e-4);
  const b = t.bf16.dataSync();
  assert.deepEqual([b[0], b[1]], [1, -2.5]);
  assert(Math.abs(b[2] - 3.14159) < 0.02 && Math.abs(b[3] / 1e30 - 1) < 0.01);
  assert.deepEqual(t.empty.shape, [0, 3]);
  assert.deepEqual(parseSafetensors(bytes).metadata, { format: "pt", note: "x" });
});

Deno.test("safetensors: writer layout follows the reference (order, offsets, 8-byte padding)", async () => {
  const bytes = await serializeSafetensors({
    b: tensor([1], [1]),
    a: tensor([2], [1]),
    c: tensor([3], [1], "i32"),
    h: toHalf(new Float32Array([1]), [1], "F16"),
    z: raw("I64", [1], new BigInt64Array([1n])),
  }, { format: "pt" });
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  assert.equal(n % 8, 0);
  const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
  // __metadata__ first, then widest dtype first (I64, F32, I32, F16), names ascending
  assert.equal(
    text.trimEnd(),
    '{"__metadata__":{"format":"pt"},"z":{"dtype":"I64","shape":[1],"data_offsets":[0,8]},' +
      '"a":{"dtype":"F32","shape":[1],"data_offsets":[8,12]},' +
      '"b":{"dtype":"F32","shape":[1],"data_offsets":[12,16]},' +
      '"c":{"dtype":"I32","shape":[1],"data_offsets":[16,20]},' +
      '"h":{"dtype":"F16","shape":[1],"data_offsets":[20,22]}}',
  );
  assert.equal(bytes.length, 8 + n + 22);
});

Deno.test("safetensors: header errors name the problem and the values", () => {
  const data = new Uint8Array(8);
  const ok = { x: { dtype: "F32", shape: [2], data_offsets: [0, 8] } };
  parseSafetensors(build(ok, data));
  assert.throws(
    () => parseSafetensors(new Uint8Array(4), "f.st"),
    /Cannot read f\.st: 4 bytes is too short/,
  );
  const huge = build(ok, data);
  new DataView(huge.buffer).setBigUint64(0, 10n ** 12n, true);
  assert.throws(() => parseSafetensors(huge), /header length 1000000000000 exceeds/);
  const bad = build(ok, data);
  bad[8] = 0x5b; // '['
  assert.throws(() => parseSafetensors(bad), /is not valid JSON/);
  assert.throws(
    () => parseSafetensors(build({ x: { dtype: "F32", shape: [3], data_offsets: [0, 8] } }, data)),
    /"x".*data_offsets \[0, 8\] hold 8 bytes but F32 \[3\] needs 12/,
  );
  assert.throws(
    () => parseSafetensors(build({ x: { dtype: "F32", shape: [4], data_offsets: [0, 16] } }, data)),
    /run past the 8-byte data section \(file truncated\?\)/,
  );
  assert.throws(
    () =>
      parseSafetensors(
        build({
          x: { dtype: "F32", shape: [2], data_offsets: [0, 8] },
          y: { dtype: "F32", shape: [1], data_offsets: [4, 8] },
        }, data),
      ),
    /"y" starts at byte 4 but the previous one ends at 8 \(overlap\)/,
  );
  assert.throws(
    () => parseSafetensors(build({ x: { dtype: "F32", shape: [1], data_offsets: [0, 4] } }, data)),
    /cover 4 bytes but the data section has 8/,
  );
  assert.throws(
    () => parseSafetensors(build({ x: { dtype: "Q4", shape: [1], data_offsets: [0, 8] } }, data)),
    /unsupported dtype "Q4"/,
  );
  assert.throws(
    () => parseSafetensors(build({ x: { dtype: "F32", shape: [-2], data_offsets: [0, 8] } }, data)),
    /bad shape \[-2\]/,
  );
  assert.throws(
    () => decodeRaw(raw("I64", [1], new BigInt64Array([1n << 40n])), "ids"),
    /Cannot read I64 tensor "ids" as i32: element 0 = 1099511627776 is out of the i32 range/,
  );
});

Deno.test("safetensors: saveSafetensors writes atomically and loads back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/m.safetensors`;
    await saveSafetensors(path, { w: tensor([[1, 2, 3]]), ids: tensor([5], [1], "i32") }, {
      format: "pt",
    });
    const back = await loadSafetensors(path);
    assert.deepEqual([...back.w.dataSync()], [1, 2, 3]);
    assert.deepEqual(back.w.shape, [1, 3]);
    assert.deepEqual([...back.ids.dataSync()], [5]);
    const names = [];
    for await (const e of Deno.readDir(dir)) names.push(e.name);
    assert.deepEqual(names, ["m.safetensors"]); // no temp file left behind
    await assert.rejects(
      () => saveSafetensors(`${dir}/missing/m.safetensors`, { w: tensor([1]) }),
      /Cannot save safetensors file .*missing\/m\.safetensors/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
