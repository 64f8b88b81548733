/**
 * A whitelisting reader of Python pickles (protocols 2–5, the data-only opcodes) and a writer of
 * the protocol-2 subset `torch.save` emits. Reading never executes anything: `GLOBAL` /
 * `STACK_GLOBAL` look the name up in a caller-given table of JS functions and refuse any other name
 * (`os.system`, `builtins.eval`, …) before it can be called; opcodes that build arbitrary objects
 * (`INST`, `OBJ`, `NEWOBJ`, extension registry) are refused by name.
 * @module
 */

/** A Python value as read here: dicts become `Map`s, tuples and lists arrays. */
export type PyValue =
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | PyValue[]
  | Map<PyValue, PyValue>
  | PyCallable
  | object;

/** A whitelisted global: a JS function standing in for the Python callable. */
export interface PyCallable {
  /** `module.name` it was looked up as. */
  readonly qualname: string;
  /** Builds the value `REDUCE` produces from the argument tuple. */
  readonly call: (args: PyValue[]) => PyValue;
  /** Applies `BUILD` state to a value this callable produced (default: refuse). */
  readonly build?: (obj: PyValue, state: PyValue) => PyValue;
}

/** What the reader may use. */
export interface UnpickleOptions {
  /** Allowed globals by exact `module.name`. */
  globals: Readonly<Record<string, PyCallable>>;
  /** Resolves `BINPERSID` ids (PyTorch: storages). */
  persistentLoad?: (pid: PyValue) => PyValue;
  /** Name used in error messages. */
  source?: string;
}

const OP_NAMES: Record<number, string> = {
  0x69: "INST",
  0x6f: "OBJ",
  0x81: "NEWOBJ",
  0x92: "NEWOBJ_EX",
  0x82: "EXT1",
  0x83: "EXT2",
  0x84: "EXT4",
  0x50: "PERSID",
  0x52: "REDUCE",
};

const MARK = Symbol("mark");

function isCallable(v: unknown): v is PyCallable {
  return typeof v === "object" && v !== null && "qualname" in v && "call" in v;
}

/**
 * Reads a pickle. Supports the opcodes of data pickles (containers, numbers, strings, bytes,
 * memo, marks, frames, persistent ids) plus `GLOBAL`/`STACK_GLOBAL`/`REDUCE`/`BUILD` restricted to
 * `options.globals`. Anything else throws an error that names the opcode or the global and the
 * byte offset.
 *
 * @param bytes the pickle
 * @param options allowed globals, persistent-id resolver
 * @returns the unpickled value
 */
export function unpickle(bytes: Uint8Array, options: UnpickleOptions): PyValue {
  const src = options.source ?? "pickle";
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const dec = new TextDecoder("utf-8", { fatal: true });
  const stack: (PyValue | typeof MARK)[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  // which allowed callable made each object (BUILD asks it to apply the state)
  const builders = new WeakMap<object, PyCallable>();
  let p = 0;
  const fail = (msg: string): never => {
    throw new Error(`Cannot unpickle ${src}: ${msg}`);
  };
  const need = (n: number) => {
    if (p + n > bytes.length) fail(`truncated at byte ${p} (needs ${n} more bytes)`);
  };
  const pop = (): PyValue => {
    if (!stack.length) fail(`stack underflow at byte ${p}`);
    const x = stack.pop()!;
    if (x === MARK) return fail(`unexpected mark at byte ${p}`);
    return x;
  };
  const popMark = (): PyValue[] => {
    if (!marks.length) fail(`no mark at byte ${p}`);
    const at = marks.pop()!;
    const items = stack.splice(at).slice(1);
    if (items.includes(MARK)) fail(`mark mismatch at byte ${p}`);
    return items as PyValue[];
  };
  const top = (): PyValue => {
    const x = stack[stack.length - 1];
    if (x === undefined || x === MARK) return fail(`empty stack at byte ${p}`);
    return x;
  };
  const str = (n: number): string => {
    need(n);
    const s = dec.decode(bytes.subarray(p, p + n));
    p += n;
    return s;
  };
  const line = (): string => {
    const end = bytes.indexOf(0x0a, p);
    if (end < 0) fail(`unterminated line at byte ${p}`);
    const s = new TextDecoder().decode(bytes.subarray(p, end));
    p = end + 1;
    return s;
  };
  const lookup = (module: string, name: string): PyCallable => {
    const q = `${module}.${name}`;
    const g = options.globals[q];
    if (!g) {
      fail(
        `global ${q} is not allowed (a PyTorch state dict uses only ${
          Object.keys(options.globals).join(", ")
        }); refusing to load it`,
      );
    }
    return g;
  };
  const setItems = (d: PyValue, items: PyValue[]) => {
    if (!(d instanceof Map)) fail(`SETITEMS on a non-dict at byte ${p}`);
    for (let i = 0; i + 1 < items.length; i += 2) {
      (d as Map<PyValue, PyValue>).set(items[i], items[i + 1]);
    }
  };
  const long = (n: number): number | bigint => {
    need(n);
    let x = 0n;
    for (let i = n - 1; i >= 0; i--) x = (x << 8n) | BigInt(bytes[p + i]);
    if (n > 0 && bytes[p + n - 1] & 0x80) x -= 1n << BigInt(8 * n);
    p += n;
    return x >= BigInt(Number.MIN_SAFE_INTEGER) && x <= BigInt(Number.MAX_SAFE_INTEGER)
      ? Number(x)
      : x;
  };
  while (true) {
    need(1);
    const at = p, op = bytes[p++];
    switch (op) {
      case 0x80: // PROTO
        need(1);
        if (bytes[p] > 5) fail(`protocol ${bytes[p]} is newer than 5`);
        p++;
        break;
      case 0x95: // FRAME
        need(8);
        p += 8;
        break;
      case 0x2e: // STOP
        if (stack.length !== 1) fail(`STOP with ${stack.length} values on the stack`);
        return pop();
      case 0x28: // MARK
        marks.push(stack.length);
        stack.push(MARK);
        break;
      case 0x4e: // NONE
        stack.push(null);
        break;
      case 0x88: // NEWTRUE
        stack.push(true);
        break;
      case 0x89: // NEWFALSE
        stack.push(false);
        break;
      case 0x4b: // BININT1
        need(1);
        stack.push(bytes[p++]);
        break;
      case 0x4d: // BININT2
        need(2);
        stack.push(v.getUint16(p, true));
        p += 2;
        break;
      case 0x4a: // BININT
        need(4);
        stack.push(v.getInt32(p, true));
        p += 4;
        break;
      case 0x8a: { // LONG1
        need(1);
        const n = bytes[p++];
        stack.push(long(n));
        break;
      }
      case 0x8b: { // LONG4
        need(4);
        const n = v.getInt32(p, true);
        p += 4;
        if (n < 0 || n > 1024) fail(`LONG4 of ${n} bytes at byte ${at}`);
        stack.push(long(n));
        break;
      }
      case 0x47: // BINFLOAT (big-endian)
        need(8);
        stack.push(v.getFloat64(p, false));
        p += 8;
        break;
      case 0x58: { // BINUNICODE
        need(4);
        const n = v.getUint32(p, true);
        p += 4;
        stack.push(str(n));
        break;
      }
      case 0x8c: { // SHORT_BINUNICODE
        need(1);
        const n = bytes[p++];
        stack.push(str(n));
        break;
      }
      case 0x8d: { // BINUNICODE8
        need(8);
        const n = Number(v.getBigUint64(p, true));
        p += 8;
        stack.push(str(n));
        break;
      }
      case 0x42: // BINBYTES
      case 0x43: // SHORT_BINBYTES
      case 0x54: // BINSTRING (py2 str)
      case 0x55: { // SHORT_BINSTRING
        const short = op === 0x43 || op === 0x55;
        need(short ? 1 : 4);
        const n = short ? bytes[p] : v.getUint32(p, true);
        p += short ? 1 : 4;
        need(n);
        const b = bytes.slice(p, p + n);
        p += n;
        stack.push(op === 0x54 || op === 0x55 ? new TextDecoder("latin1").decode(b) : b);
        break;
      }
      case 0x5d: // EMPTY_LIST
      case 0x29: // EMPTY_TUPLE
        stack.push([]);
        break;
      case 0x7d: // EMPTY_DICT
        stack.push(new Map());
        break;
      case 0x74: // TUPLE
      case 0x6c: // LIST
        stack.push(popMark());
        break;
      case 0x85: // TUPLE1
        stack.push([pop()]);
        break;
      case 0x86: { // TUPLE2
        const b = pop(), a = pop();
        stack.push([a, b]);
        break;
      }
      case 0x87: { // TUPLE3
        const c = pop(), b = pop(), a = pop();
        stack.push([a, b, c]);
        break;
      }
      case 0x61: { // APPEND
        const x = pop(), l = top();
        if (!Array.isArray(l)) fail(`APPEND to a non-list at byte ${at}`);
        (l as PyValue[]).push(x);
        break;
      }
      case 0x65: { // APPENDS
        const items = popMark(), l = top();
        if (!Array.isArray(l)) fail(`APPENDS to a non-list at byte ${at}`);
        (l as PyValue[]).push(...items);
        break;
      }
      case 0x64: { // DICT
        const d = new Map<PyValue, PyValue>();
        setItems(d, popMark());
        stack.push(d);
        break;
      }
      case 0x73: { // SETITEM
        const val = pop(), key = pop();
        setItems(top(), [key, val]);
        break;
      }
      case 0x75: { // SETITEMS
        const items = popMark();
        setItems(top(), items);
        break;
      }
      case 0x71: // BINPUT
        need(1);
        memo.set(bytes[p++], top());
        break;
      case 0x72: // LONG_BINPUT
        need(4);
        memo.set(v.getUint32(p, true), top());
        p += 4;
        break;
      case 0x94: // MEMOIZE
        memo.set(memo.size, top());
        break;
      case 0x68: // BINGET
      case 0x6a: { // LONG_BINGET
        const long4 = op === 0x6a;
        need(long4 ? 4 : 1);
        const k = long4 ? v.getUint32(p, true) : bytes[p];
        p += long4 ? 4 : 1;
        if (!memo.has(k)) fail(`memo key ${k} is unset at byte ${at}`);
        stack.push(memo.get(k)!);
        break;
      }
      case 0x30: // POP
        pop();
        break;
      case 0x31: // POP_MARK
        popMark();
        break;
      case 0x32: // DUP
        stack.push(top());
        break;
      case 0x63: { // GLOBAL
        const module = line(), name = line();
        stack.push(lookup(module, name));
        break;
      }
      case 0x93: { // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof name !== "string" || typeof module !== "string") {
          fail(`STACK_GLOBAL with non-string names at byte ${at}`);
        }
        stack.push(lookup(module as string, name as string));
        break;
      }
      case 0x51: { // BINPERSID
        const pid = pop();
        if (!options.persistentLoad) fail(`persistent id at byte ${at} but no loader`);
        stack.push(options.persistentLoad!(pid));
        break;
      }
      case 0x52: { // REDUCE
        const args = pop(), fn = pop();
        if (!isCallable(fn)) fail(`REDUCE on a value that is not an allowed global at byte ${at}`);
        if (!Array.isArray(args)) fail(`REDUCE arguments are not a tuple at byte ${at}`);
        const made = (fn as PyCallable).call(args as PyValue[]);
        if (typeof made === "object" && made !== null) builders.set(made, fn as PyCallable);
        stack.push(made);
        break;
      }
      case 0x62: { // BUILD
        const state = pop(), obj = top();
        const maker = builders.get(obj as object);
        if (!maker?.build) fail(`BUILD on an object that accepts no state at byte ${at}`);
        stack[stack.length - 1] = maker!.build!(obj, state);
        break;
      }
      default:
        fail(
          `opcode ${
            OP_NAMES[op] ?? "0x" + op.toString(16).padStart(2, "0")
          } at byte ${at} is not ` +
            "allowed (only the data opcodes of a PyTorch state dict are)",
        );
    }
  }
}

/**
 * Emits protocol-2 pickle opcodes (the subset `torch.save` writes). Callers compose values from
 * these calls in pickle's postfix order.
 */
export class PickleWriter {
  #chunks: number[] = [];
  #enc = new TextEncoder();

  /** Starts a protocol-2 pickle. */
  constructor() {
    this.#chunks.push(0x80, 2);
  }

  #u32(n: number): void {
    this.#chunks.push(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  }

  /**
   * Pushes a global by module and name (`GLOBAL`).
   * @param module Python module
   * @param name attribute name
   * @returns this
   */
  global(module: string, name: string): this {
    this.#chunks.push(0x63, ...this.#enc.encode(`${module}\n${name}\n`));
    return this;
  }

  /**
   * Pushes a str (`BINUNICODE`).
   * @param s the string
   * @returns this
   */
  str(s: string): this {
    const b = this.#enc.encode(s);
    this.#chunks.push(0x58);
    this.#u32(b.length);
    for (const x of b) this.#chunks.push(x);
    return this;
  }

  /**
   * Pushes an int (`BININT1`/`BININT` or `LONG1` for values outside the i32 range).
   * @param n a safe integer
   * @returns this
   */
  int(n: number): this {
    if (!Number.isSafeInteger(n)) throw new RangeError(`Cannot pickle ${n}: not a safe integer`);
    if (n >= 0 && n < 256) this.#chunks.push(0x4b, n);
    else if (n >= -(2 ** 31) && n < 2 ** 31) {
      this.#chunks.push(0x4a);
      this.#u32(n >>> 0);
    } else {
      let x = BigInt(n);
      const out: number[] = [];
      while (x !== 0n && x !== -1n) {
        out.push(Number(x & 0xffn));
        x >>= 8n;
      }
      // keep the sign bit right
      if ((n > 0 && out[out.length - 1] & 0x80) || (n < 0 && !(out[out.length - 1] & 0x80))) {
        out.push(n > 0 ? 0 : 0xff);
      }
      this.#chunks.push(0x8a, out.length, ...out);
    }
    return this;
  }

  /**
   * Pushes a bool.
   * @param b the value
   * @returns this
   */
  bool(b: boolean): this {
    this.#chunks.push(b ? 0x88 : 0x89);
    return this;
  }

  /**
   * Pushes a mark (starts a tuple or a batch of dict items).
   * @returns this
   */
  mark(): this {
    this.#chunks.push(0x28);
    return this;
  }

  /**
   * Pops to the mark into a tuple (`TUPLE`).
   * @returns this
   */
  tuple(): this {
    this.#chunks.push(0x74);
    return this;
  }

  /**
   * Pushes `()`.
   * @returns this
   */
  emptyTuple(): this {
    this.#chunks.push(0x29);
    return this;
  }

  /**
   * Calls the callable under the argument tuple (`REDUCE`).
   * @returns this
   */
  reduce(): this {
    this.#chunks.push(0x52);
    return this;
  }

  /**
   * Turns the tuple on top into a persistent id (`BINPERSID`).
   * @returns this
   */
  persistentId(): this {
    this.#chunks.push(0x51);
    return this;
  }

  /**
   * Adds the key/value pairs since the mark to the dict below it (`SETITEMS`).
   * @returns this
   */
  setItems(): this {
    this.#chunks.push(0x75);
    return this;
  }

  /**
   * Ends the pickle (`STOP`) and returns its bytes.
   * @returns the pickle
   */
  finish(): Uint8Array {
    this.#chunks.push(0x2e);
    return Uint8Array.from(this.#chunks);
  }
}
