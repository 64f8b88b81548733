/**
 * Checkpoints. Two kinds, both written atomically (temp file in the same folder, fsync, rename),
 * so a crash mid-write leaves the previous file intact:
 *
 * - **weights** — `out/pretrain_512.safetensors`, `out/full_sft_512.safetensors` (`_moe` suffix
 *   for MoE): the parameter tree under its HF names, the model config in the metadata;
 * - **resume state** — `checkpoints/pretrain_512_resume.safetensors`: the trainer's whole state
 *   (params, optimizer state, pending accumulated gradients, update count — and whatever else a
 *   trainer keeps, such as a critic or a reference model), plus a JSON metadata record (epoch,
 *   step, data position, seed, run arguments) so `--from_resume 1` continues bit-exactly.
 * @module
 */
import { dirname, join } from "node:path";
import type { Tree } from "../nn/tree.ts";
import { dispose, flatten } from "../nn/tree.ts";
import { Tensor } from "../nn/tensor.ts";
import { tensor } from "../nn/creation.ts";
import type { DType, TypedArray } from "../nn/dtype.ts";
import type { TrainState } from "./step.ts";
import { asTrainState } from "./trainer.ts";

const ST_DTYPE: Record<DType, string> = {
  f32: "F32",
  f64: "F64",
  i32: "I32",
  u32: "U32",
  bf16: "BF16",
};
const FROM_ST: Record<string, DType> = { F32: "f32", F64: "f64", I32: "i32", U32: "u32" };

/** A file name stem in MiniMind's convention: `{weight}_{hidden}{_moe}`. */
export function weightStem(weight: string, hiddenSize: number, useMoe: boolean): string {
  return `${weight}_${hiddenSize}${useMoe ? "_moe" : ""}`;
}

/**
 * Writes `chunks` to `path` atomically: a temp file beside it, fsync, rename over `path`.
 *
 * @param path destination
 * @param chunks the bytes, in order (produced lazily if an async iterable)
 */
export async function atomicWrite(
  path: string,
  chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
): Promise<void> {
  const dir = dirname(path);
  await Deno.mkdir(dir, { recursive: true });
  const tmp = join(dir, `.${path.split("/").pop()}.${Deno.pid}.${crypto.randomUUID()}.tmp`);
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    for await (const c of chunks) {
      let off = 0;
      while (off < c.length) off += await f.write(c.subarray(off));
    }
    await f.sync();
  } catch (e) {
    f.close();
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`Cannot write ${path}: ${(e as Error).message}`);
  }
  f.close();
  try {
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw new Error(`Cannot write ${path}: ${(e as Error).message}`);
  }
}

/** Encodes named tensors as safetensors (header JSON padded to 8 bytes, then the data), one tensor read at a time. */
async function* encodeSafetensors(
  named: Record<string, Tensor>,
  metadata: Record<string, string>,
): AsyncGenerator<Uint8Array> {
  const header: Record<string, unknown> = { __metadata__: metadata };
  let off = 0;
  for (const [name, t] of Object.entries(named)) {
    const n = t.size * (t.dtype === "f64" ? 8 : 4);
    header[name] = { dtype: ST_DTYPE[t.dtype], shape: [...t.shape], data_offsets: [off, off + n] };
    off += n;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (new TextEncoder().encode(json).length % 8)) % 8);
  const hb = new TextEncoder().encode(json);
  const len = new Uint8Array(8);
  new DataView(len.buffer).setBigUint64(0, BigInt(hb.length), true);
  yield len;
  yield hb;
  for (const t of Object.values(named)) {
    const a = await t.data(); // sync point (checkpoint)
    yield new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  }
}

/** A decoded safetensors file: raw arrays (not yet tensors) and the metadata. */
interface Decoded {
  arrays: Record<string, { dtype: DType; shape: number[]; data: TypedArray }>;
  metadata: Record<string, string>;
}

async function decodeSafetensors(path: string, bytes?: Uint8Array): Promise<Decoded> {
  let buf: Uint8Array;
  try {
    buf = bytes ?? await Deno.readFile(path);
  } catch (e) {
    throw new Error(`Cannot read checkpoint ${path}: ${(e as Error).message}`);
  }
  const bad = (why: string) => new Error(`Cannot read checkpoint ${path}: ${why}`);
  if (buf.length < 8) throw bad("the file is shorter than 8 bytes");
  const n = Number(new DataView(buf.buffer, buf.byteOffset).getBigUint64(0, true));
  if (8 + n > buf.length) throw bad(`header length ${n} exceeds the file size ${buf.length}`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(new TextDecoder().decode(buf.subarray(8, 8 + n)));
  } catch (e) {
    throw bad(`invalid header JSON (${(e as Error).message})`);
  }
  const base = 8 + n;
  const out: Decoded = { arrays: {}, metadata: {} };
  for (const [name, e] of Object.entries(header)) {
    if (name === "__metadata__") {
      out.metadata = e as unknown as Record<string, string>;
      continue;
    }
    const dtype = FROM_ST[e.dtype];
    if (!dtype) throw bad(`tensor ${name} has unsupported dtype ${e.dtype}`);
    const [b, end] = e.data_offsets;
    if (base + end > buf.length) throw bad(`tensor ${name} runs past the end of the file`);
    const bytes = buf.slice(base + b, base + end);
    const data = dtype === "f32"
      ? new Float32Array(bytes.buffer)
      : dtype === "f64"
      ? new Float64Array(bytes.buffer)
      : dtype === "i32"
      ? new Int32Array(bytes.buffer)
      : new Uint32Array(bytes.buffer);
    out.arrays[name] = { dtype, shape: e.shape, data };
  }
  return out;
}

/** JSON shape of a tree with tensors replaced by `{"$t": name}` (numbers, nulls kept). */
type Spec = unknown;

function specOf(tree: Tree, prefix: string, named: Record<string, Tensor>): Spec {
  if (tree instanceof Tensor) {
    named[prefix] = tree;
    return { $t: prefix };
  }
  const at = (k: string | number) => (prefix ? `${prefix}.${k}` : String(k));
  if (Array.isArray(tree)) return tree.map((c, i) => specOf(c, at(i), named));
  if (tree !== null && typeof tree === "object") {
    const o: Record<string, Spec> = {};
    for (const [k, v] of Object.entries(tree)) o[k] = specOf(v as Tree, at(k), named);
    return o;
  }
  return tree ?? null;
}

function fromSpec(spec: Spec, arrays: Decoded["arrays"], path: string): Tree {
  if (Array.isArray(spec)) return spec.map((s) => fromSpec(s, arrays, path));
  if (spec !== null && typeof spec === "object") {
    const o = spec as Record<string, Spec>;
    if (typeof o.$t === "string") {
      const a = arrays[o.$t];
      if (!a) throw new Error(`Cannot read checkpoint ${path}: tensor ${o.$t} is missing`);
      return tensor(a.data, a.shape, a.dtype);
    }
    const out: Record<string, Tree> = {};
    for (const [k, v] of Object.entries(o)) out[k] = fromSpec(v, arrays, path);
    return out;
  }
  return spec as Tree;
}

/**
 * Saves final weights: the params under their dotted HF names, the config as JSON metadata.
 *
 * @param path `.safetensors` destination
 * @param params parameter tree
 * @param metadata extra string metadata (e.g. `{ config: JSON.stringify(cfg) }`)
 */
export async function saveWeights(
  path: string,
  params: Tree,
  metadata: Record<string, string> = {},
): Promise<void> {
  await atomicWrite(path, encodeSafetensors(flatten(params), { format: "pt", ...metadata }));
}

/**
 * Loads weights written by {@link saveWeights} (or any safetensors file of f32/i32 tensors).
 *
 * @param path `.safetensors` file
 * @returns flat `{name: tensor}` and the metadata
 */
export async function loadWeights(
  path: string,
): Promise<{ tensors: Record<string, Tensor>; metadata: Record<string, string> }> {
  const d = await decodeSafetensors(path);
  const tensors: Record<string, Tensor> = {};
  for (const [k, a] of Object.entries(d.arrays)) tensors[k] = tensor(a.data, a.shape, a.dtype);
  return { tensors, metadata: d.metadata };
}

/** Where a run stands, saved beside the tensors of a resume checkpoint. */
export interface ResumeInfo {
  /** 0-based epoch in progress. */
  epoch: number;
  /** Micro-batches of that epoch already consumed. */
  step: number;
  /** Epochs of the run. */
  epochs: number;
  /** Micro-batches per epoch when saved. */
  iters: number;
  /** Data-order seed (the loader shuffles with seed + epoch). */
  seed: number;
  /** Tokens processed so far. */
  tokens: number;
  /** Training seconds so far. */
  elapsedS: number;
  /** Ranks of the run that saved it (1 without data parallel); a resume needs as many. */
  worldSize: number;
  /** Anything else the trainer wants back (run arguments, model config). */
  extra: Record<string, unknown>;
}

/**
 * Saves a resumable checkpoint (atomically): every tensor of the trainer's state under its dotted
 * path, the state's other leaves (counters, a running baseline) and `info` as JSON metadata.
 *
 * @param path `.safetensors` destination
 * @param state the whole state (a `TrainState`, or a trainer's own tree with a critic, a reference
 *   model, …)
 * @param info epoch, data position, seed, extras
 */
export async function saveResume(path: string, state: Tree, info: ResumeInfo): Promise<void> {
  const named: Record<string, Tensor> = {};
  const meta = {
    format: "minimind-resume-v2",
    state: JSON.stringify(specOf(state, "", named)),
    info: JSON.stringify(info),
  };
  await atomicWrite(path, encodeSafetensors(named, meta));
}

/**
 * Loads a resumable checkpoint written by {@link saveResume} (or by the v1 format, which held
 * only a `TrainState`).
 *
 * @param path the file
 * @returns the train state (new tensors) and the saved info
 */
export function loadResume(path: string): Promise<{ state: TrainState; info: ResumeInfo }>;
/**
 * Loads a resumable checkpoint, rebuilding a trainer's own state with `restore`.
 *
 * @param path the file
 * @param restore the saved tree (new tensors) → the trainer's state; throws naming a missing field
 * @param bytes the file's contents when already read (data parallel: rank 0's copy, sent to all)
 * @returns the state and the saved info
 */
export function loadResume<S>(
  path: string,
  restore: (saved: Tree, path: string) => S,
  bytes?: Uint8Array,
): Promise<{ state: S; info: ResumeInfo }>;
export async function loadResume(
  path: string,
  restore: (saved: Tree, path: string) => unknown = asTrainState,
  bytes?: Uint8Array,
): Promise<{ state: unknown; info: ResumeInfo }> {
  const d = await decodeSafetensors(path, bytes);
  const format = d.metadata.format;
  if (format !== "minimind-resume-v1" && format !== "minimind-resume-v2") {
    throw new Error(`Cannot resume from ${path}: it is not a resume checkpoint (format ${format})`);
  }
  const s = JSON.parse(d.metadata.state);
  const info = JSON.parse(d.metadata.info) as ResumeInfo;
  // v1: {spec: {params, optState, grads}, micro, updates}
  const saved = format === "minimind-resume-v2"
    ? fromSpec(s, d.arrays, path)
    : { ...(fromSpec(s.spec, d.arrays, path) as object), micro: s.micro, updates: s.updates };
  try {
    return { state: restore(saved as Tree, path), info };
  } catch (e) {
    dispose(saved as Tree);
    throw e;
  }
}
