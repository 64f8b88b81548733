/**
 * safetensors read/write. Layout: 8-byte little-endian header length N, N bytes of JSON header
 * (`{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}`), then the
 * tensor bytes, row-major little-endian, offsets relative to the end of the header.
 *
 * Reading converts to tensor dtypes: F32/F16/BF16 → f32, F64 → f64, I32 → i32, I64 → i32
 * (values must fit), U32/U8/BOOL → u32. Writing follows the reference writer (`safetensors`
 * Rust crate): tensors ordered by dtype (widest first) then name, `__metadata__` first, header
 * padded with spaces to a multiple of 8; files are written atomically (temp file, fsync, rename).
 * @module
 */
import type { Tensor } from "../nn/tensor.ts";
import type { DType, TypedArray } from "../nn/dtype.ts";
import { tensor } from "../nn/creation.ts";
import type { CreateOptions } from "../nn/creation.ts";

/** Element types of the safetensors format handled here. */
export type SafetensorsDType =
  | "F64"
  | "F32"
  | "F16"
  | "BF16"
  | "I64"
  | "I32"
  | "U32"
  | "U8"
  | "BOOL";

/** Bytes per element of each safetensors dtype. */
export const DTYPE_BYTES: Record<SafetensorsDType, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  U32: 4,
  U8: 1,
  BOOL: 1,
};

// the reference writer's Dtype enum order (sorted descending when laying out the data)
const RANK: Record<SafetensorsDType, number> = {
  BOOL: 0,
  U8: 1,
  F16: 2,
  BF16: 3,
  I32: 4,
  U32: 5,
  F32: 6,
  F64: 7,
  I64: 8,
};

/** Header limit of the reference reader (100 MB). */
const MAX_HEADER = 100_000_000;

/** One tensor's raw bytes as stored in a file. */
export interface RawTensor {
  /** Stored element type. */
  readonly dtype: SafetensorsDType;
  /** Axis sizes. */
  readonly shape: readonly number[];
  /** The little-endian bytes (length = elements × element size). */
  readonly data: Uint8Array;
}

/** A parsed file: raw tensors in header order plus the metadata. */
export interface ParsedSafetensors {
  /** Tensors by name (header order). */
  readonly tensors: Record<string, RawTensor>;
  /** `__metadata__` (string → string), empty when absent. */
  readonly metadata: Record<string, string>;
}

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * Parses safetensors bytes, validating the header against the buffer size: every entry's byte
 * range must match its dtype and shape, and the ranges must tile the data section exactly.
 *
 * @param bytes the whole file
 * @param source name used in error messages (e.g. the path)
 * @returns raw tensors (views into `bytes`) and metadata
 */
export function parseSafetensors(
  bytes: Uint8Array,
  source = "safetensors data",
): ParsedSafetensors {
  if (bytes.length < 8) {
    throw new Error(
      `Cannot read ${source}: ${bytes.length} bytes is too short for a header length`,
    );
  }
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const n64 = dv.getBigUint64(0, true);
  if (n64 > BigInt(Math.min(MAX_HEADER, bytes.length - 8))) {
    throw new Error(
      `Cannot read ${source}: header length ${n64} exceeds the ${bytes.length - 8} bytes after it${
        n64 > BigInt(MAX_HEADER) ? " (limit 100 MB)" : ""
      }`,
    );
  }
  const n = Number(n64);
  let header: Record<string, unknown>;
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + n));
    if (!text.startsWith("{")) throw new Error("it does not start with '{'");
    header = JSON.parse(text);
  } catch (e) {
    throw new Error(
      `Cannot read ${source}: the ${n}-byte header is not valid JSON (${(e as Error).message})`,
    );
  }
  if (header === null || typeof header !== "object" || Array.isArray(header)) {
    throw new Error(`Cannot read ${source}: the header is not a JSON object`);
  }
  const dataStart = 8 + n, dataLen = bytes.length - dataStart;
  const metadata: Record<string, string> = {};
  const tensors: Record<string, RawTensor> = {};
  const ranges: [number, number, string][] = [];
  for (const [name, info] of Object.entries(header)) {
    if (name === "__metadata__") {
      if (info === null || typeof info !== "object" || Array.isArray(info)) {
        throw new Error(`Cannot read ${source}: __metadata__ is not an object`);
      }
      for (const [k, v] of Object.entries(info as Record<string, unknown>)) {
        if (typeof v !== "string") {
          throw new Error(`Cannot read ${source}: __metadata__.${k} is not a string`);
        }
        metadata[k] = v;
      }
      continue;
    }
    const e = info as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const dtype = e?.dtype as SafetensorsDType;
    if (typeof dtype !== "string" || !(dtype in DTYPE_BYTES)) {
      throw new Error(
        `Cannot read tensor "${name}" from ${source}: unsupported dtype ${
          JSON.stringify(e?.dtype)
        }`,
      );
    }
    const shape = e.shape;
    if (
      !Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)
    ) {
      throw new Error(
        `Cannot read tensor "${name}" from ${source}: bad shape ${JSON.stringify(shape)}`,
      );
    }
    const off = e.data_offsets;
    if (
      !Array.isArray(off) || off.length !== 2 || !off.every((d) => Number.isInteger(d) && d >= 0)
    ) {
      throw new Error(
        `Cannot read tensor "${name}" from ${source}: bad data_offsets ${JSON.stringify(off)}`,
      );
    }
    const [begin, end] = off as [number, number];
    const want = numel(shape) * DTYPE_BYTES[dtype];
    if (end < begin || end - begin !== want) {
      throw new Error(
        `Cannot read tensor "${name}" from ${source}: data_offsets [${begin}, ${end}] hold ${
          end - begin
        } bytes but ${dtype} [${shape.join(", ")}] needs ${want}`,
      );
    }
    if (end > dataLen) {
      throw new Error(
        `Cannot read tensor "${name}" from ${source}: data_offsets [${begin}, ${end}] run past the ${dataLen}-byte data section (file truncated?)`,
      );
    }
    ranges.push([begin, end, name]);
    tensors[name] = {
      dtype,
      shape: shape as number[],
      data: bytes.subarray(dataStart + begin, dataStart + end),
    };
  }
  // the ranges must tile [0, dataLen) without gaps or overlaps (the reference reader's rule)
  ranges.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
  let at = 0;
  for (const [begin, end, name] of ranges) {
    if (begin !== at) {
      throw new Error(
        `Cannot read ${source}: tensor "${name}" starts at byte ${begin} but the previous one ends at ${at} (${
          begin < at ? "overlap" : "gap"
        })`,
      );
    }
    at = end;
  }
  if (at !== dataLen) {
    throw new Error(
      `Cannot read ${source}: the tensors cover ${at} bytes but the data section has ${dataLen}`,
    );
  }
  return { tensors, metadata };
}

/** An aligned copy of `data` as an array of `Ctor` (a view when already aligned). */
function view<T>(
  data: Uint8Array,
  Ctor: { new (b: ArrayBufferLike, o: number, n: number): T; BYTES_PER_ELEMENT: number },
): T {
  const n = data.byteLength / Ctor.BYTES_PER_ELEMENT;
  if (data.byteOffset % Ctor.BYTES_PER_ELEMENT === 0) {
    return new Ctor(data.buffer, data.byteOffset, n);
  }
  return new Ctor(data.slice().buffer, 0, n);
}

function f16ToF32(h: number): number {
  const s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/**
 * Decodes a raw tensor to the typed array of the tensor dtype it loads as.
 *
 * @param raw a raw tensor
 * @param name its name (error messages)
 * @returns values and dtype
 */
export function decodeRaw(raw: RawTensor, name = "tensor"): { data: TypedArray; dtype: DType } {
  const d = raw.data;
  switch (raw.dtype) {
    case "F32":
      return { data: view(d, Float32Array), dtype: "f32" };
    case "F64":
      return { data: view(d, Float64Array), dtype: "f64" };
    case "I32":
      return { data: view(d, Int32Array), dtype: "i32" };
    case "U32":
      return { data: view(d, Uint32Array), dtype: "u32" };
    case "F16": {
      const h = view(d, Uint16Array), out = new Float32Array(h.length);
      for (let i = 0; i < h.length; i++) out[i] = f16ToF32(h[i]);
      return { data: out, dtype: "f32" };
    }
    case "BF16": {
      const h = view(d, Uint16Array), out = new Float32Array(h.length);
      const u = new Uint32Array(out.buffer);
      for (let i = 0; i < h.length; i++) u[i] = h[i] << 16;
      return { data: out, dtype: "f32" };
    }
    case "I64": {
      const w = view(d, Int32Array), out = new Int32Array(w.length / 2);
      for (let i = 0; i < out.length; i++) {
        const lo = w[2 * i], hi = w[2 * i + 1];
        // fits in i32 iff the high word is the sign extension of the low word
        if (hi !== (lo < 0 ? -1 : 0)) {
          const v = BigInt(hi) * 4294967296n + BigInt(lo >>> 0);
          throw new Error(
            `Cannot read I64 tensor "${name}" as i32: element ${i} = ${v} is out of the i32 range`,
          );
        }
        out[i] = lo;
      }
      return { data: out, dtype: "i32" };
    }
    case "U8":
    case "BOOL":
      return { data: Uint32Array.from(d), dtype: "u32" };
  }
}

/** Options of `loadSafetensors`. */
export type LoadSafetensorsOptions = CreateOptions;

/**
 * Loads every tensor of a safetensors file (F32/F16/BF16 → f32, F64 → f64, I32/I64 → i32,
 * U32/U8/BOOL → u32) onto the default backend.
 *
 * @param path the file
 * @param options backend to load onto
 * @returns tensors by name (header order)
 * @example
 * ```ts ignore
 * import { loadSafetensors } from "@minimind/ts";
 * const flat = await loadSafetensors("model.safetensors");
 * ```
 */
export async function loadSafetensors(
  path: string | URL,
  options: LoadSafetensorsOptions = {},
): Promise<Record<string, Tensor>> {
  const bytes = await Deno.readFile(path);
  return tensorsFromSafetensors(bytes, String(path), options);
}

/**
 * Like `loadSafetensors`, from bytes already in memory.
 *
 * @param bytes the file contents
 * @param source name for error messages
 * @param options backend
 * @returns tensors by name
 */
export function tensorsFromSafetensors(
  bytes: Uint8Array,
  source = "safetensors data",
  options: LoadSafetensorsOptions = {},
): Record<string, Tensor> {
  const { tensors } = parseSafetensors(bytes, source);
  const out: Record<string, Tensor> = {};
  for (const [name, raw] of Object.entries(tensors)) {
    const { data, dtype } = decodeRaw(raw, name);
    out[name] = tensor(data, raw.shape, dtype, options);
  }
  return out;
}

/**
 * Reads only the `__metadata__` of a file.
 *
 * @param path the file
 * @returns the metadata (empty when absent)
 */
export async function readSafetensorsMetadata(path: string | URL): Promise<Record<string, string>> {
  return parseSafetensors(await Deno.readFile(path), String(path)).metadata;
}

const TENSOR_DTYPE: Record<DType, SafetensorsDType> = {
  f32: "F32",
  f64: "F64",
  i32: "I32",
  u32: "U32",
  bf16: "BF16",
};

/**
 * Float32 values as raw F16 (round to nearest even) or BF16 (round to nearest even) bytes, for
 * writing half-precision files.
 *
 * @param values the values
 * @param shape axis sizes
 * @param dtype "F16" or "BF16"
 * @returns a raw tensor for `saveSafetensors`/`serializeSafetensors`
 */
export function toHalf(
  values: Float32Array,
  shape: readonly number[],
  dtype: "F16" | "BF16",
): RawTensor {
  const out = new Uint16Array(values.length);
  const u = new Uint32Array(values.buffer, values.byteOffset, values.length);
  for (let i = 0; i < values.length; i++) {
    const x = u[i];
    if (dtype === "BF16") {
      if ((x & 0x7fffffff) > 0x7f800000) out[i] = (x >>> 16) | 0x40; // NaN stays NaN
      else out[i] = (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
    } else out[i] = f32ToF16Bits(x);
  }
  return { dtype, shape, data: new Uint8Array(out.buffer) };
}

function f32ToF16Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const e = (x >>> 23) & 0xff, m = x & 0x7fffff;
  if (e === 0xff) return sign | 0x7c00 | (m ? 0x200 : 0);
  const he = e - 127 + 15;
  if (he >= 31) return sign | 0x7c00;
  if (he <= 0) {
    if (he < -10) return sign;
    const mm = m | 0x800000, shift = 14 - he;
    let r = mm >>> shift;
    const rem = mm & ((1 << shift) - 1), halfway = 1 << (shift - 1);
    if (rem > halfway || (rem === halfway && (r & 1))) r++;
    return sign | r;
  }
  let r = (he << 10) | (m >>> 13);
  const rem = m & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (r & 1))) r++;
  return sign | r;
}

/** What `serializeSafetensors` accepts per entry: a tensor or raw bytes. */
export type SafetensorsEntry = Tensor | RawTensor;

function isRaw(e: SafetensorsEntry): e is RawTensor {
  return typeof (e as RawTensor).dtype === "string" && (e as RawTensor).data instanceof Uint8Array;
}

/**
 * Serialises entries to safetensors bytes, laid out as the reference writer does.
 *
 * @param record tensors (read back from their device) or raw entries, by name
 * @param metadata optional `__metadata__` strings
 * @returns the file contents
 */
export async function serializeSafetensors(
  record: Readonly<Record<string, SafetensorsEntry>>,
  metadata?: Readonly<Record<string, string>>,
): Promise<Uint8Array> {
  const items: { name: string; raw: RawTensor }[] = [];
  for (const [name, e] of Object.entries(record)) {
    if (name === "__metadata__") throw new Error(`Cannot save a tensor named "__metadata__"`);
    if (isRaw(e)) {
      const want = numel(e.shape) * (DTYPE_BYTES[e.dtype] ?? NaN);
      if (e.data.byteLength !== want) {
        throw new Error(
          `Cannot save "${name}": ${e.data.byteLength} bytes do not hold ${e.dtype} [${
            e.shape.join(", ")
          }] (${want} bytes)`,
        );
      }
      items.push({ name, raw: e });
    } else {
      const vals = await e.data(); // sync point on WebGPU
      items.push({
        name,
        raw: {
          dtype: TENSOR_DTYPE[e.dtype],
          shape: e.shape,
          data: new Uint8Array(vals.buffer, vals.byteOffset, vals.byteLength),
        },
      });
    }
  }
  // widest dtype first, then by name: keeps every tensor aligned to its element size
  items.sort((a, b) =>
    RANK[b.raw.dtype] - RANK[a.raw.dtype] || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0)
  );
  const header: Record<string, unknown> = {};
  if (metadata) {
    for (const [k, v] of Object.entries(metadata)) {
      if (typeof v !== "string") {
        throw new Error(`Cannot save metadata "${k}": values must be strings`);
      }
    }
    header.__metadata__ = metadata;
  }
  let at = 0;
  for (const { name, raw } of items) {
    header[name] = {
      dtype: raw.dtype,
      shape: raw.shape,
      data_offsets: [at, at + raw.data.byteLength],
    };
    at += raw.data.byteLength;
  }
  let json = new TextEncoder().encode(JSON.stringify(header));
  const padLen = (8 - (json.length % 8)) % 8;
  if (padLen) {
    const p = new Uint8Array(json.length + padLen).fill(0x20);
    p.set(json);
    json = p;
  }
  const out = new Uint8Array(8 + json.length + at);
  new DataView(out.buffer).setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let o = 8 + json.length;
  for (const { raw } of items) {
    out.set(raw.data, o);
    o += raw.data.byteLength;
  }
  return out;
}

/**
 * Writes a safetensors file atomically: a temp file beside `path`, fsync, rename.
 *
 * @param path destination
 * @param record tensors or raw entries by name (e.g. `tree.flatten(params)`)
 * @param metadata optional `__metadata__` strings (e.g. `{ format: "pt" }`)
 * @returns when the file is in place
 * @example
 * ```ts ignore
 * import { saveSafetensors, tree } from "@minimind/ts";
 * await saveSafetensors("model.safetensors", tree.flatten(params), { format: "pt" });
 * ```
 */
export async function saveSafetensors(
  path: string,
  record: Readonly<Record<string, SafetensorsEntry>>,
  metadata?: Readonly<Record<string, string>>,
): Promise<void> {
  const bytes = await serializeSafetensors(record, metadata);
  const tmp = `${path}.tmp-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`;
  try {
    const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
    try {
      let off = 0;
      while (off < bytes.length) off += await f.write(bytes.subarray(off));
      await f.sync();
    } finally {
      f.close();
    }
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`Cannot save safetensors file ${path}: ${(e as Error).message}`);
  }
}
