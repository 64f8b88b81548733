// JSONL files of any size with bounded memory: one pass builds a line-offset index (start/end byte
// offsets and the 1-based line number of every record), cached on disk keyed by path, size and
// mtime; records are then read on demand with a seek. Blank lines are ignored; a malformed line is
// an error naming the file and line, or is counted and skipped with `skipBadLines`.

import { createHash } from "node:crypto";
import { join, resolve } from "node:path";

/** A JSONL problem tied to a file and a 1-based line number. */
export class JsonlError extends Error {
  /**
   * Creates the error.
   * @param file The JSONL path.
   * @param line 1-based line number.
   * @param reason What is wrong.
   */
  constructor(readonly file: string, readonly line: number, readonly reason: string) {
    super(`Invalid JSONL record at ${file}:${line}: ${reason}`);
    this.name = "JsonlError";
  }
}

/** Options of {@link JsonlFile.open}. */
export interface JsonlOptions {
  /** Count and skip malformed lines instead of throwing (MiniMind's `--skip_bad_lines`). */
  skipBadLines?: boolean;
  /**
   * Parse every line while indexing, so that a bad line is reported before training starts
   * (default true). With false, a bad line throws when it is read.
   */
  validate?: boolean;
  /** Extra check on each parsed record: return an error message, or null when it is fine. */
  check?: (record: unknown) => string | null;
  /** Names the `check` (part of the cache key, so a different check re-validates). */
  checkName?: string;
  /** Folder for cached indexes (default `.cache/jsonl_index`); null disables the cache. */
  cacheDir?: string | null;
  /** Do not print the "Skipped N malformed line(s)" warning. */
  quiet?: boolean;
}

const INDEX_VERSION = 1;
const CHUNK = 1 << 22;

interface IndexHeader {
  version: number;
  path: string;
  size: number;
  mtime: number;
  key: string;
  count: number;
  badLines: number[];
  badReasons: string[];
}

/**
 * Random access to the records of a JSONL file through a line-offset index.
 *
 * @example
 * ```ts
 * import { JsonlFile } from "./jsonl.ts";
 * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
 * await Deno.writeTextFile(path, '{"text": "a"}\n{"text": "b"}\n');
 * const f = JsonlFile.open(path, { cacheDir: null });
 * f.length; // 2
 * f.get(1); // { text: "b" }
 * f.close();
 * ```
 */
export class JsonlFile {
  /** The file path as given. */
  readonly path: string;
  /** Number of records (non-blank, non-skipped lines). */
  readonly length: number;
  /** 1-based line numbers of malformed lines that were skipped. */
  readonly badLines: readonly number[];
  /** Why each skipped line was rejected (parallel to `badLines`). */
  readonly badReasons: readonly string[];
  readonly #starts: Float64Array;
  readonly #ends: Float64Array;
  readonly #lines: Uint32Array;
  readonly #check: ((record: unknown) => string | null) | undefined;
  #file: Deno.FsFile | null = null;
  #buf = new Uint8Array(1 << 16);
  readonly #decoder = new TextDecoder("utf-8", { fatal: true });

  private constructor(
    path: string,
    starts: Float64Array,
    ends: Float64Array,
    lines: Uint32Array,
    badLines: number[],
    badReasons: string[],
    check: ((record: unknown) => string | null) | undefined,
  ) {
    this.path = path;
    this.#starts = starts;
    this.#ends = ends;
    this.#lines = lines;
    this.length = lines.length;
    this.badLines = badLines;
    this.badReasons = badReasons;
    this.#check = check;
  }

  /**
   * Opens (and indexes, or loads the cached index of) a JSONL file.
   *
   * @param path File path.
   * @param options Bad-line policy, validation and index cache.
   * @returns The opened file; call `close()` when done.
   * @example
   * ```ts
   * import { JsonlFile } from "./jsonl.ts";
   * const path = await Deno.makeTempFile({ suffix: ".jsonl" });
   * await Deno.writeTextFile(path, '{"a": 1}\nnot json\n{"a": 2}\n');
   * const f = JsonlFile.open(path, { skipBadLines: true, cacheDir: null });
   * [f.length, f.badLines]; // [2, [2]]
   * ```
   */
  static open(path: string, options: JsonlOptions = {}): JsonlFile {
    let stat: Deno.FileInfo;
    try {
      stat = Deno.statSync(path);
    } catch (e) {
      throw new Error(`Cannot open JSONL file ${path}: ${(e as Error).message}`);
    }
    const validate = options.validate ?? true;
    const key = `${validate ? "v" : "n"}:${options.checkName ?? (options.check ? "check" : "")}`;
    const cacheDir = options.cacheDir === undefined ? ".cache/jsonl_index" : options.cacheDir;
    const abs = resolve(path);
    const mtime = stat.mtime?.getTime() ?? 0;
    const cacheFile = cacheDir === null ? null : join(
      cacheDir,
      createHash("sha256").update(`${abs}\0${key}`).digest("hex").slice(0, 24) + ".idx",
    );
    let index = cacheFile ? readIndex(cacheFile, abs, stat.size, mtime, key) : null;
    if (index === null) {
      index = buildIndex(path, validate, options.check);
      if (cacheFile) {
        writeIndex(cacheFile, {
          version: INDEX_VERSION,
          path: abs,
          size: stat.size,
          mtime,
          key,
          count: index.lines.length,
          badLines: index.badLines,
          badReasons: index.badReasons,
        }, index);
      }
    }
    if (index.badLines.length > 0 && !options.skipBadLines) {
      throw new JsonlError(
        path,
        index.badLines[0],
        `${index.badReasons[0]} (${index.badLines.length} bad line(s) in total; ` +
          `pass --skip_bad_lines / skipBadLines to skip them)`,
      );
    }
    if (index.badLines.length > 0 && !options.quiet) {
      console.warn(
        `Skipped ${index.badLines.length} malformed line(s) in ${path} ` +
          `(first: line ${index.badLines[0]}: ${index.badReasons[0]})`,
      );
    }
    return new JsonlFile(
      path,
      index.starts,
      index.ends,
      index.lines,
      index.badLines,
      index.badReasons,
      validate ? undefined : options.check,
    );
  }

  /**
   * Where a record sits in the file.
   * @param index Record index in [0, length).
   * @returns The 1-based line number of that record in the file.
   */
  lineNumber(index: number): number {
    this.#bounds(index);
    return this.#lines[index];
  }

  /**
   * Reads the raw text of a record.
   * @param index Record index in [0, length).
   * @returns The line without its line break.
   */
  text(index: number): string {
    this.#bounds(index);
    const start = this.#starts[index], len = this.#ends[index] - start;
    if (this.#buf.length < len) this.#buf = new Uint8Array(len * 2);
    const f = this.#file ??= Deno.openSync(this.path, { read: true });
    f.seekSync(start, Deno.SeekMode.Start);
    let got = 0;
    while (got < len) {
      const n = f.readSync(this.#buf.subarray(got, len));
      if (n === null || n === 0) {
        throw new JsonlError(this.path, this.#lines[index], "file shrank since it was indexed");
      }
      got += n;
    }
    try {
      return this.#decoder.decode(this.#buf.subarray(0, len));
    } catch {
      throw new JsonlError(this.path, this.#lines[index], "invalid UTF-8");
    }
  }

  /**
   * Reads and parses a record.
   * @param index Record index in [0, length).
   * @returns The parsed JSON value.
   */
  get(index: number): unknown {
    const text = this.text(index);
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      throw new JsonlError(this.path, this.#lines[index], (e as Error).message);
    }
    const problem = this.#check?.(value);
    if (problem) throw new JsonlError(this.path, this.#lines[index], problem);
    return value;
  }

  /**
   * Iterates over all records in file order.
   * @returns An iterator of parsed records.
   */
  *[Symbol.iterator](): Iterator<unknown> {
    for (let i = 0; i < this.length; i++) yield this.get(i);
  }

  /** Closes the file handle (reads reopen it). */
  close(): void {
    this.#file?.close();
    this.#file = null;
  }

  #bounds(index: number): void {
    if (!(index >= 0 && index < this.length) || !Number.isInteger(index)) {
      throw new RangeError(`Cannot read record ${index} of ${this.path}: it has ${this.length}`);
    }
  }
}

interface BuiltIndex {
  starts: Float64Array;
  ends: Float64Array;
  lines: Uint32Array;
  badLines: number[];
  badReasons: string[];
}

class Grow {
  a: Float64Array = new Float64Array(1024);
  n = 0;
  push(v: number): void {
    if (this.n === this.a.length) {
      const b = new Float64Array(this.a.length * 2);
      b.set(this.a);
      this.a = b;
    }
    this.a[this.n++] = v;
  }
}

function buildIndex(
  path: string,
  validate: boolean,
  check: ((record: unknown) => string | null) | undefined,
): BuiltIndex {
  const starts = new Grow(), ends = new Grow(), lines = new Grow();
  const badLines: number[] = [];
  const badReasons: string[] = [];
  const decoder = new TextDecoder("utf-8", { fatal: true });
  const file = Deno.openSync(path, { read: true });
  let buf = new Uint8Array(CHUNK);
  let carry = 0; // bytes of an unfinished line at the start of buf
  let carryStart = 0; // its file offset
  let lineNo = 0;
  const onLine = (bytes: Uint8Array, start: number) => {
    lineNo++;
    let len = bytes.length;
    if (len > 0 && bytes[len - 1] === 0x0d) len--; // CRLF
    let blank = true;
    for (let i = 0; i < len; i++) {
      const c = bytes[i];
      if (c !== 0x20 && c !== 0x09 && c !== 0x0d) {
        blank = false;
        break;
      }
    }
    if (blank) return;
    if (validate) {
      let problem: string | null = null;
      try {
        const value = JSON.parse(decoder.decode(bytes.subarray(0, len)));
        problem = check ? check(value) : null;
      } catch (e) {
        problem = e instanceof TypeError ? "invalid UTF-8" : (e as Error).message;
      }
      if (problem) {
        badLines.push(lineNo);
        badReasons.push(problem);
        return;
      }
    }
    starts.push(start);
    ends.push(start + len);
    lines.push(lineNo);
  };
  try {
    for (;;) {
      if (carry === buf.length) { // a line longer than the buffer
        const b = new Uint8Array(buf.length * 2);
        b.set(buf);
        buf = b;
      }
      const n = file.readSync(buf.subarray(carry));
      if (n === null || n === 0) break;
      const end = carry + n;
      let lineStart = 0;
      for (let i = carry; i < end; i++) {
        if (buf[i] === 0x0a) {
          onLine(buf.subarray(lineStart, i), carryStart + lineStart);
          lineStart = i + 1;
        }
      }
      carryStart += lineStart;
      carry = end - lineStart;
      buf.copyWithin(0, lineStart, end);
    }
    if (carry > 0) onLine(buf.subarray(0, carry), carryStart);
  } finally {
    file.close();
  }
  return {
    starts: starts.a.slice(0, starts.n),
    ends: ends.a.slice(0, ends.n),
    lines: Uint32Array.from(lines.a.subarray(0, lines.n)),
    badLines,
    badReasons,
  };
}

function readIndex(
  file: string,
  path: string,
  size: number,
  mtime: number,
  key: string,
): BuiltIndex | null {
  let bytes: Uint8Array;
  try {
    bytes = Deno.readFileSync(file);
  } catch {
    return null;
  }
  const headerLen = new DataView(bytes.buffer, bytes.byteOffset).getUint32(0, true);
  let header: IndexHeader;
  try {
    header = JSON.parse(new TextDecoder().decode(bytes.subarray(4, 4 + headerLen)));
  } catch {
    return null;
  }
  if (
    header.version !== INDEX_VERSION || header.path !== path || header.size !== size ||
    header.mtime !== mtime || header.key !== key
  ) return null;
  const n = header.count;
  const off = 4 + headerLen + ((8 - ((4 + headerLen) % 8)) % 8);
  if (bytes.length < off + n * 20) return null;
  const data = bytes.slice(off, off + n * 20);
  return {
    starts: new Float64Array(data.buffer, 0, n),
    ends: new Float64Array(data.buffer, n * 8, n),
    lines: new Uint32Array(data.buffer, n * 16, n),
    badLines: header.badLines,
    badReasons: header.badReasons,
  };
}

function writeIndex(file: string, header: IndexHeader, index: BuiltIndex): void {
  try {
    Deno.mkdirSync(join(file, ".."), { recursive: true });
    const h = new TextEncoder().encode(JSON.stringify(header));
    const off = 4 + h.length + ((8 - ((4 + h.length) % 8)) % 8);
    const n = header.count;
    const out = new Uint8Array(off + n * 20);
    new DataView(out.buffer).setUint32(0, h.length, true);
    out.set(h, 4);
    out.set(new Uint8Array(index.starts.buffer, index.starts.byteOffset, n * 8), off);
    out.set(new Uint8Array(index.ends.buffer, index.ends.byteOffset, n * 8), off + n * 8);
    out.set(new Uint8Array(index.lines.buffer, index.lines.byteOffset, n * 4), off + n * 16);
    const tmp = `${file}.${Deno.pid}.tmp`;
    Deno.writeFileSync(tmp, out);
    Deno.renameSync(tmp, file);
  } catch {
    // The cache is an optimisation: an unwritable cache folder only costs a re-index next time.
  }
}
