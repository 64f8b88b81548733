/**
 * PyTorch `.pth` state dicts (the zip format `torch.save` has written since 1.6): read through
 * {@link readZip} and a whitelisting {@link unpickle} that knows only the globals a state dict
 * needs (`torch._utils._rebuild_tensor_v2`, `torch._utils._rebuild_parameter`, the typed
 * storages, `torch.UntypedStorage`, `collections.OrderedDict`), and written in the same layout
 * (`<stem>/data.pkl`, `<stem>/data/<key>`, `<stem>/version`, `<stem>/byteorder`, data aligned to
 * 64 bytes) so `torch.load` and MiniMind's scripts read what we write.
 *
 * Every tensor's view (offset, sizes, strides) is checked against its storage's size before any
 * byte is copied; views are gathered into contiguous row-major bytes.
 * @module
 */
import { basename, extname } from "node:path";
import type { Tensor } from "../nn/tensor.ts";
import { tensor } from "../nn/creation.ts";
import type { CreateOptions } from "../nn/creation.ts";
import { PickleWriter, type PyCallable, type PyValue, unpickle } from "./pickle.ts";
import { readZip, writeZip, type ZipEntry, type ZipReadOptions } from "./zip.ts";
import { decodeRaw, DTYPE_BYTES, type RawTensor, type SafetensorsDType } from "./safetensors.ts";

/** Storage classes by pickled name, with the element type they hold. */
const STORAGES: Record<string, SafetensorsDType> = {
  FloatStorage: "F32",
  HalfStorage: "F16",
  BFloat16Storage: "BF16",
  DoubleStorage: "F64",
  LongStorage: "I64",
  IntStorage: "I32",
  ByteStorage: "U8",
  BoolStorage: "BOOL",
  UntypedStorage: "U8",
};

/** Storage class name written for each element type. */
const STORAGE_OF: Partial<Record<SafetensorsDType, string>> = {
  F32: "FloatStorage",
  F16: "HalfStorage",
  BF16: "BFloat16Storage",
  F64: "DoubleStorage",
  I64: "LongStorage",
  I32: "IntStorage",
  U8: "ByteStorage",
  BOOL: "BoolStorage",
};

interface StorageType {
  readonly qualname: string;
  readonly dtype: SafetensorsDType;
}

interface Storage {
  readonly key: string;
  readonly dtype: SafetensorsDType;
  readonly numel: number;
  readonly bytes: Uint8Array;
}

/** A parsed `.pth`: tensors by state-dict key, as raw little-endian bytes. */
export interface ParsedPth {
  /** Tensors in the file's key order (contiguous, row-major). */
  readonly tensors: Record<string, RawTensor>;
  /** Top-level keys whose values are not tensors (e.g. "epoch" in a resume checkpoint). */
  readonly skipped: string[];
}

/** Options of {@link parsePth} / {@link loadPth}. */
export type PthReadOptions = ZipReadOptions;

function isTensor(x: unknown): x is RawTensor {
  return typeof x === "object" && x !== null && "dtype" in x && "shape" in x &&
    (x as RawTensor).data instanceof Uint8Array;
}

function intArg(x: PyValue, what: string, fail: (m: string) => never): number {
  if (typeof x !== "number" || !Number.isInteger(x) || x < 0) {
    return fail(`${what} is ${String(x)}, not a non-negative integer`);
  }
  return x;
}

/**
 * Parses `.pth` bytes into raw tensors. Refuses — naming the problem — archives that are not
 * PyTorch zip files (including the pre-1.6 legacy format), pickles that use any global or opcode
 * outside a state dict's needs, storages whose record is missing or has another size than
 * declared, and tensor views that reach past their storage.
 *
 * @param bytes the file
 * @param source name for error messages
 * @param options zip limits
 * @returns the tensors and the names of non-tensor entries
 */
export function parsePth(
  bytes: Uint8Array,
  source = "pth data",
  options: PthReadOptions = {},
): ParsedPth {
  const fail = (msg: string): never => {
    throw new Error(`Cannot load ${source}: ${msg}`);
  };
  if (bytes.length >= 2 && bytes[0] === 0x80 && bytes[1] <= 5) {
    fail("it is a legacy (pre-PyTorch-1.6) pickle file; re-save it with a current torch.save");
  }
  if (bytes.length < 4 || bytes[0] !== 0x50 || bytes[1] !== 0x4b) {
    fail(
      `it does not start with a zip signature (got ${
        [...bytes.subarray(0, 4)].map((b) => b.toString(16).padStart(2, "0")).join(" ")
      }): not a PyTorch .pth file`,
    );
  }
  const entries = readZip(bytes, source, options);
  const pkl = entries.find((e) => /^[^/]+\/data\.pkl$/.test(e.name) || e.name === "data.pkl");
  if (!pkl) {
    fail(`no data.pkl among its entries (${entries.map((e) => e.name).slice(0, 8).join(", ")})`);
  }
  const prefix = pkl!.name.slice(0, pkl!.name.length - "data.pkl".length);
  const records = new Map<string, Uint8Array>();
  for (const e of entries) {
    if (e.name.startsWith(prefix + "data/")) records.set(e.name.slice(prefix.length + 5), e.data);
  }
  const storages = new Map<string, Storage>();
  const globals: Record<string, PyCallable> = {};
  for (const [name, dtype] of Object.entries(STORAGES)) {
    const qualname = `torch.${name}`;
    globals[qualname] = {
      qualname,
      dtype,
      call: () => fail(`${qualname} called directly (only storage ids may name it)`),
    } as PyCallable & StorageType;
  }
  const rebuild = (args: PyValue[]): RawTensor => {
    if (args.length < 4) return fail(`_rebuild_tensor_v2 got ${args.length} arguments`);
    const [st, off, size, stride] = args;
    if (!st || typeof st !== "object" || !("key" in st)) {
      return fail("_rebuild_tensor_v2's first argument is not a storage");
    }
    const s = st as Storage;
    if (!Array.isArray(size) || !Array.isArray(stride) || size.length !== stride.length) {
      return fail(`tensor on storage ${s.key}: malformed size/stride`);
    }
    const offset = intArg(off, `tensor on storage ${s.key}: storage offset`, fail);
    const shape = size.map((d, i) => intArg(d, `tensor on storage ${s.key}: size[${i}]`, fail));
    const strides = stride.map((d, i) =>
      intArg(d, `tensor on storage ${s.key}: stride[${i}]`, fail)
    );
    const n = shape.reduce((a, b) => a * b, 1);
    if (n > 0) {
      const last = offset + shape.reduce((a, d, i) => a + (d - 1) * strides[i], 0);
      if (last >= s.numel) {
        fail(
          `tensor on storage ${s.key} (offset ${offset}, size [${shape}], stride [${strides}]) ` +
            `reaches element ${last}, past the storage's ${s.numel} elements`,
        );
      }
    }
    const eb = DTYPE_BYTES[s.dtype];
    const out = new Uint8Array(n * eb);
    // row-major gather; a contiguous view is one copy
    let contiguous = true;
    for (let i = shape.length - 1, want = 1; i >= 0; i--) {
      if (shape[i] !== 1 && strides[i] !== want) contiguous = false;
      want *= shape[i];
    }
    if (contiguous) out.set(s.bytes.subarray(offset * eb, (offset + n) * eb));
    else {
      const idx = new Array(shape.length).fill(0);
      for (let k = 0; k < n; k++) {
        let src = offset;
        for (let i = 0; i < shape.length; i++) src += idx[i] * strides[i];
        out.set(s.bytes.subarray(src * eb, (src + 1) * eb), k * eb);
        for (let i = shape.length - 1; i >= 0; i--) {
          if (++idx[i] < shape[i]) break;
          idx[i] = 0;
        }
      }
    }
    return { dtype: s.dtype, shape, data: out };
  };
  globals["torch._utils._rebuild_tensor_v2"] = {
    qualname: "torch._utils._rebuild_tensor_v2",
    call: rebuild as (a: PyValue[]) => PyValue,
  };
  globals["torch._utils._rebuild_parameter"] = {
    qualname: "torch._utils._rebuild_parameter",
    call: (args) => {
      if (!isTensor(args[0])) return fail("_rebuild_parameter's data is not a tensor");
      return args[0];
    },
  };
  globals["collections.OrderedDict"] = {
    qualname: "collections.OrderedDict",
    call: (args) => {
      if (args.length) fail("OrderedDict called with arguments");
      return new Map<PyValue, PyValue>();
    },
    // state_dict() attaches `_metadata` (per-module versions) as the dict's attributes
    build: (obj) => obj,
  };
  const persistentLoad = (pid: PyValue): PyValue => {
    if (!Array.isArray(pid) || pid.length < 5 || pid[0] !== "storage") {
      return fail(`persistent id ${JSON.stringify(pid)} is not a storage reference`);
    }
    const [, type, key, , numel] = pid;
    const t = type as StorageType;
    if (!t || typeof t !== "object" || !("dtype" in t)) {
      return fail(`storage ${String(key)} has no storage type`);
    }
    if (typeof key !== "string") return fail(`storage key ${String(key)} is not a string`);
    const cached = storages.get(key);
    if (cached) return cached;
    const count = intArg(numel, `storage ${key}: element count`, fail);
    const rec = records.get(key);
    if (!rec) return fail(`storage ${key} has no record ${prefix}data/${key} in the archive`);
    const want = count * DTYPE_BYTES[t.dtype];
    if (rec.length !== want) {
      fail(
        `storage ${key} (${t.qualname}, ${count} elements) needs ${want} bytes, its record has ${rec.length}`,
      );
    }
    const s: Storage = { key, dtype: t.dtype, numel: count, bytes: rec };
    storages.set(key, s);
    return s;
  };
  const root = unpickle(pkl!.data, {
    globals,
    persistentLoad,
    source: `${source} (${pkl!.name})`,
  });
  if (!(root instanceof Map)) fail("its pickle is not a dict (a state dict was expected)");
  let dict = root as Map<PyValue, PyValue>;
  // MiniMind's *_resume.pth: {"model": state_dict, "optimizer": …, "epoch": …}
  if (![...dict.values()].some(isTensor) && dict.get("model") instanceof Map) {
    dict = dict.get("model") as Map<PyValue, PyValue>;
  }
  const tensors: Record<string, RawTensor> = {};
  const skipped: string[] = [];
  for (const [k, val] of dict) {
    if (isTensor(val)) tensors[String(k)] = val;
    else skipped.push(String(k));
  }
  return { tensors, skipped };
}

/**
 * Loads every tensor of a `.pth` state dict (F32/F16/BF16 → f32, F64 → f64, I64/I32 → i32,
 * U8/BOOL → u32). A MiniMind resume checkpoint's `model` entry is used when the top level holds
 * no tensors.
 *
 * @param path the file
 * @param options zip limits and the backend to load onto
 * @returns tensors by state-dict key
 * @example
 * ```ts ignore
 * import { loadPth } from "@minimind/ts";
 * const flat = await loadPth("out/full_sft_512.pth");
 * ```
 */
export async function loadPth(
  path: string,
  options: PthReadOptions & CreateOptions = {},
): Promise<Record<string, Tensor>> {
  const { tensors } = parsePth(await Deno.readFile(path), path, options);
  const out: Record<string, Tensor> = {};
  for (const [name, raw] of Object.entries(tensors)) {
    const { data, dtype } = decodeRaw(raw, name);
    out[name] = tensor(data, raw.shape, dtype, options);
  }
  return out;
}

/**
 * Serialises raw tensors as a `torch.save` state dict (an OrderedDict of tensors). Entries that
 * are the same object share one storage, as tied weights do in PyTorch.
 *
 * @param record raw tensors by key, in the order to write
 * @param stem the archive's top folder (PyTorch uses the file name without extension)
 * @returns the `.pth` bytes
 */
export function serializePth(
  record: Readonly<Record<string, RawTensor>>,
  stem = "archive",
): Uint8Array {
  const w = new PickleWriter();
  w.global("collections", "OrderedDict").emptyTuple().reduce().mark();
  const keys = new Map<RawTensor, string>();
  const files: ZipEntry[] = [];
  for (const [name, t] of Object.entries(record)) {
    const storage = STORAGE_OF[t.dtype];
    if (!storage) throw new Error(`Cannot save "${name}" to .pth: dtype ${t.dtype} has no storage`);
    const numel = t.shape.reduce((a, b) => a * b, 1);
    if (t.data.length !== numel * DTYPE_BYTES[t.dtype]) {
      throw new Error(
        `Cannot save "${name}" to .pth: ${t.data.length} bytes do not hold ${t.dtype} [${t.shape}]`,
      );
    }
    let key = keys.get(t);
    if (key === undefined) {
      key = String(keys.size);
      keys.set(t, key);
      files.push({ name: `${stem}/data/${key}`, data: t.data });
    }
    w.str(name);
    w.global("torch._utils", "_rebuild_tensor_v2").mark();
    w.mark().str("storage").global("torch", storage).str(key).str("cpu").int(numel).tuple()
      .persistentId();
    w.int(0);
    w.mark();
    for (const d of t.shape) w.int(d);
    w.tuple().mark();
    let stride = 1;
    const strides: number[] = [];
    for (let i = t.shape.length - 1; i >= 0; i--) {
      strides.unshift(stride);
      stride *= t.shape[i];
    }
    for (const s of strides) w.int(s);
    w.tuple();
    w.bool(false);
    w.global("collections", "OrderedDict").emptyTuple().reduce();
    w.tuple().reduce();
  }
  w.setItems();
  const enc = new TextEncoder();
  return writeZip([
    { name: `${stem}/data.pkl`, data: w.finish() },
    { name: `${stem}/byteorder`, data: enc.encode("little") },
    ...files,
    { name: `${stem}/version`, data: enc.encode("3\n") },
  ]);
}

/**
 * Writes raw tensors as a `.pth` state dict that `torch.load` reads (atomically: a temp file,
 * then a rename).
 *
 * @param path the output file
 * @param record raw tensors by key
 * @returns when the file is written
 */
export async function savePth(
  path: string,
  record: Readonly<Record<string, RawTensor>>,
): Promise<void> {
  const stem = basename(path, extname(path)).replace(/[^A-Za-z0-9_.-]/g, "_") || "archive";
  const tmp = `${path}.tmp-${crypto.randomUUID()}`;
  try {
    await Deno.writeFile(tmp, serializePth(record, stem));
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
}
