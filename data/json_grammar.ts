/**
 * JSON read byte by byte, as constrained decoding needs it (`constrain.ts`): a cursor that takes
 * a byte or refuses it, guided by a schema node — any JSON value, any JSON object, or a compiled
 * subset of JSON Schema (`type`, `properties` in their order with `required`, `items`,
 * `minItems` / `maxItems`, `enum`, `const`). Strings are whole UTF-8; at most one whitespace
 * byte in a row between tokens; nesting at most {@linkcode MAX_DEPTH} deep. The cursor's state is
 * a handful of numbers and references (open containers are a persistent list), so trying a token
 * on a copy costs no allocation until a container opens or closes.
 * @module
 */

import { utf8Length } from "./tokenizer.ts";

/** Deepest nesting of arrays and objects the reader accepts. */
export const MAX_DEPTH = 32;
/** Most properties one schema object may list. */
export const MAX_PROPERTIES = 64;
/** Most nodes (sub-schemas) one schema may compile to. */
export const MAX_NODES = 1000;

// value kinds a node allows (bits)
const OBJ = 1, ARR = 2, STR = 4, NUM = 8, INT = 16, BOOL = 32, NULL = 64;
const ALL = OBJ | ARR | STR | NUM | INT | BOOL | NULL;
const TYPE_BITS: Record<string, number> = {
  object: OBJ,
  array: ARR,
  string: STR,
  number: NUM,
  integer: INT,
  boolean: BOOL,
  null: NULL,
};

/** The keys that may come next in a schema object, sorted, and their properties' indices. */
export interface KeyChoices {
  /** The keys as JSON text, quotes included, sorted ({@linkcode sortBytes}). */
  readonly texts: readonly Uint8Array[];
  /** index[i]: the property of texts[i]. */
  readonly index: readonly number[];
}

/** Where a match of one of several sorted byte strings stands (see {@linkcode stepChoice}). */
export interface ChoiceState {
  /** The texts [lo, hi) still match. */
  lo: number;
  hi: number;
  /** Bytes matched. */
  pos: number;
  /** A text ended at the last byte (it is texts[lo − 1]) while longer ones may go on. */
  endable: boolean;
}

/** Starts matching one of `n` texts. */
export function startChoice(st: ChoiceState, n: number): void {
  st.lo = 0;
  st.hi = n;
  st.pos = 0;
  st.endable = false;
}

/**
 * One byte of a match of one of several texts, sorted so that those still matching are a range
 * and a text that ends here is first in it (a prefix before its extensions). "took": b taken, and
 * if then `lo === hi` a text is complete (texts[lo − 1]); "end": b goes on none of them but a text
 * ended before it (texts[lo − 1]: the caller moves on and feeds b again); "no": refused.
 */
export function stepChoice(
  texts: readonly Uint8Array[],
  st: ChoiceState,
  b: number,
): "took" | "end" | "no" {
  let lo = st.lo, hi = st.hi;
  while (lo < hi && texts[lo][st.pos] !== b) lo++;
  while (hi > lo && texts[hi - 1][st.pos] !== b) hi--;
  if (lo === hi) return st.endable ? "end" : "no";
  st.pos++;
  st.endable = texts[lo].length === st.pos;
  st.lo = st.endable ? lo + 1 : lo;
  st.hi = hi;
  return "took";
}

/** One compiled (sub-)schema. */
export interface SchemaNode {
  /** Value kinds allowed (bits). */
  readonly types: number;
  /** Object properties in their order (null: any keys, values of `anyValue`). */
  readonly props: readonly { readonly node: SchemaNode; readonly required: boolean }[] | null;
  /** keys[i]: the keys allowed when properties i… remain (up to the first required one). */
  readonly keys: readonly KeyChoices[];
  /** requiredFrom[i]: a required property is at index i or later. */
  readonly requiredFrom: readonly boolean[];
  /** Array items (every element). */
  items: SchemaNode;
  /** Fewest array elements. */
  readonly minItems: number;
  /** Most array elements. */
  readonly maxItems: number;
  /** enum / const: the value is exactly one of these compact JSON texts (sorted), else null. */
  readonly literals: readonly Uint8Array[] | null;
}

const enc = new TextEncoder();

let anyValueNode: SchemaNode | undefined;

function node(types: number, extra: Partial<SchemaNode> = {}): SchemaNode {
  return {
    types,
    props: null,
    keys: [],
    requiredFrom: [false],
    items: anyValueNode!,
    minItems: 0,
    maxItems: Infinity,
    literals: null,
    ...extra,
  };
}

/** Any JSON value. */
export const ANY_VALUE: SchemaNode = (() => {
  const n = node(ALL);
  n.items = n;
  return anyValueNode = n;
})();
/** Any JSON object (`response_format: {"type": "json_object"}`). */
export const ANY_OBJECT: SchemaNode = node(OBJ);

/** Byte strings in lexicographic order (a prefix before its extensions). */
export function sortBytes<T>(list: T[], bytes: (x: T) => Uint8Array): T[] {
  return list.sort((x, y) => {
    const a = bytes(x), b = bytes(y);
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
    return a.length - b.length;
  });
}

/**
 * Compiles a schema whose root must be an object (OpenAI's rule for `json_schema`; a tool's
 * `parameters`).
 *
 * @param schema the schema
 * @param path how errors name the schema's root
 * @returns the root node
 * @throws SchemaError as {@linkcode compileSchema}, or when the root is not `{"type": "object"}`
 */
export function compileObjectSchema(schema: unknown, path = "schema"): SchemaNode {
  const root = compileSchema(schema, path);
  if (root.types !== OBJ || root.literals) {
    throw new SchemaError(path, 'the root must be {"type": "object", …}');
  }
  return root;
}

/** A schema the reader cannot follow: `path` names the place (`schema.properties.age`). */
export class SchemaError extends Error {
  /** Where in the schema. */
  readonly path: string;
  /** What is wrong there. */
  readonly reason: string;

  /**
   * An error at one place of a schema.
   *
   * @param path where in the schema
   * @param reason what is wrong there
   */
  constructor(path: string, reason: string) {
    super(`${path}: ${reason}`);
    this.name = "SchemaError";
    this.path = path;
    this.reason = reason;
  }
}

// keywords that describe and do not constrain
const ANNOTATIONS = new Set(["title", "description", "default", "examples", "$schema", "$id"]);
const KEYWORDS = new Set([
  "type",
  "properties",
  "required",
  "additionalProperties",
  "items",
  "minItems",
  "maxItems",
  "enum",
  "const",
]);

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Compiles a JSON Schema into the reader's nodes. Supported: `type` (a name or a list),
 * `properties` (generated in their order; the others may be left out) with `required`,
 * `additionalProperties: false` (the default here: only listed keys), `items`, `minItems`,
 * `maxItems`, `enum`, `const`; `title`, `description`, `default`, `examples`, `$schema`, `$id`
 * are ignored. Anything else — `$ref`, `anyOf`, `pattern`, `format`, `minimum`, … — is refused
 * rather than left unenforced.
 *
 * @param schema the schema (`true` and `{}` allow any value)
 * @param path how errors name the schema's root
 * @returns the root node
 * @throws SchemaError naming the place and what is wrong
 */
export function compileSchema(schema: unknown, path = "schema"): SchemaNode {
  let count = 0;
  const walk = (s: unknown, p: string, depth: number): SchemaNode => {
    if (++count > MAX_NODES) throw new SchemaError(p, `more than ${MAX_NODES} sub-schemas`);
    if (depth > MAX_DEPTH) throw new SchemaError(p, `nested more than ${MAX_DEPTH} levels deep`);
    if (s === true) return ANY_VALUE;
    if (!isObject(s)) {
      throw new SchemaError(p, `expected a schema object, got ${JSON.stringify(s)}`);
    }
    for (const k of Object.keys(s)) {
      if (!KEYWORDS.has(k) && !ANNOTATIONS.has(k)) {
        throw new SchemaError(
          `${p}.${k}`,
          `unsupported keyword (supported: ${[...KEYWORDS].join(", ")})`,
        );
      }
    }
    let literals: Uint8Array[] | null = null;
    if ("const" in s) literals = [enc.encode(JSON.stringify(s.const))];
    if ("enum" in s) {
      if (!Array.isArray(s.enum) || !s.enum.length) {
        throw new SchemaError(`${p}.enum`, "expected a non-empty array");
      }
      const texts = [...new Set(s.enum.map((v) => JSON.stringify(v)))];
      literals = sortBytes(texts.map((t) => enc.encode(t)), (b) => b);
    }
    let types = 0;
    if (s.type !== undefined) {
      for (const t of Array.isArray(s.type) ? s.type : [s.type]) {
        const bit = typeof t === "string" ? TYPE_BITS[t] : undefined;
        if (!bit) {
          throw new SchemaError(
            `${p}.type`,
            `unknown type ${JSON.stringify(t)} (expected ${Object.keys(TYPE_BITS).join(", ")})`,
          );
        }
        types |= bit;
      }
    } else if ("properties" in s) types = OBJ;
    else if ("items" in s) types = ARR;
    else types = ALL;
    if (types & INT && types & NUM) types &= ~INT; // a number covers the integers
    const extra: { -readonly [K in keyof SchemaNode]?: SchemaNode[K] } = { literals };
    if (s.additionalProperties !== undefined && s.additionalProperties !== false) {
      throw new SchemaError(
        `${p}.additionalProperties`,
        "only false is supported: list every key in 'properties'",
      );
    }
    if ("properties" in s) {
      if (!isObject(s.properties)) {
        throw new SchemaError(`${p}.properties`, "expected an object of schemas");
      }
      const names = Object.keys(s.properties);
      if (names.length > MAX_PROPERTIES) {
        throw new SchemaError(
          `${p}.properties`,
          `${names.length} properties; at most ${MAX_PROPERTIES}`,
        );
      }
      const req = s.required ?? [];
      if (!Array.isArray(req) || req.some((r) => typeof r !== "string" || !names.includes(r))) {
        throw new SchemaError(`${p}.required`, "expected names listed in 'properties'");
      }
      const props = names.map((n) => ({
        node: walk((s.properties as Record<string, unknown>)[n], `${p}.properties.${n}`, depth + 1),
        required: req.includes(n),
      }));
      const keyBytes = names.map((n) => enc.encode(JSON.stringify(n)));
      extra.props = props;
      extra.requiredFrom = names.map((_, i) => props.slice(i).some((q) => q.required))
        .concat(false);
      extra.keys = names.map((_, i) => {
        const at: number[] = [];
        for (let j = i; j < names.length; j++) {
          at.push(j);
          if (props[j].required) break;
        }
        sortBytes(at, (j) => keyBytes[j]);
        return { texts: at.map((j) => keyBytes[j]), index: at };
      });
    } else if ("required" in s) {
      throw new SchemaError(`${p}.required`, "needs 'properties'");
    }
    if ("items" in s) extra.items = walk(s.items, `${p}.items`, depth + 1);
    for (const k of ["minItems", "maxItems"] as const) {
      if (!(k in s)) continue;
      const v = s[k];
      if (typeof v !== "number" || !Number.isInteger(v) || v < 0) {
        throw new SchemaError(`${p}.${k}`, "expected an integer ≥ 0");
      }
      extra[k] = v;
    }
    if ((extra.minItems ?? 0) > (extra.maxItems ?? Infinity)) {
      throw new SchemaError(`${p}.minItems`, "is more than maxItems");
    }
    return node(types, extra);
  };
  return walk(schema, path, 0);
}

// reader modes
const enum M {
  Start, // the root value must start (no whitespace before it)
  Value, // a value of `node` must start
  KeyOrEnd, // after '{'
  Key, // after ',' in an object
  KeyLit, // inside a key of a schema object (matching `choices`)
  Colon, // after a key
  ObjNext, // after a value in an object: ',' or '}'
  ValueOrEnd, // after '['
  ArrNext, // after a value in an array: ',' or ']'
  Str, // inside a string
  Esc, // after '\' in a string
  Hex, // inside \uXXXX
  Lit, // inside an enum / const value or true / false / null (matching `lits`)
  Minus,
  Zero,
  Int,
  Dot,
  Frac,
  E,
  ESign,
  Exp,
  Done,
}

/** An open array or object: its node, and the next property index or the elements so far. */
interface Frame {
  readonly node: SchemaNode;
  readonly obj: boolean;
  readonly next: number;
  readonly up: Frame | null;
  readonly depth: number;
}

const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46);
/** Whether b is JSON whitespace. */
export const isSpace = (b: number): boolean => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
/** The words a node may take, by its types: [none, booleans, null, both] (each sorted). */
const WORDS = [[], ["false", "true"], ["null"], ["false", "null", "true"]].map((w) =>
  w.map((x) => enc.encode(x))
);
const ESCAPES = new Set([0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74]);

/** Where a JSON value being read stands. */
export class JsonCursor {
  mode: M = M.Start;
  /** The node of the value that starts next (Value mode). */
  node: SchemaNode = ANY_VALUE;
  frame: Frame | null = null;
  isKey = false;
  int = false; // the number being read must be an integer
  hex = 0;
  utf8 = 0; // continuation bytes the current character still needs
  pos = 0; // bytes matched of a literal
  spaces = 0;
  // Lit / KeyLit: matching one of `lits` / `keys.texts` (a ChoiceState)
  lits: readonly Uint8Array[] = [];
  keys: KeyChoices | null = null;
  lo = 0;
  hi = 0;
  endable = false;

  /** Starts reading one value of `root`. */
  start(root: SchemaNode): void {
    this.mode = M.Start;
    this.node = root;
    this.frame = null;
    this.spaces = 0;
  }

  /** Whether the value is complete. */
  get done(): boolean {
    return this.mode === M.Done;
  }

  copyFrom(o: JsonCursor): void {
    this.mode = o.mode;
    this.node = o.node;
    this.frame = o.frame;
    this.isKey = o.isKey;
    this.int = o.int;
    this.hex = o.hex;
    this.utf8 = o.utf8;
    this.pos = o.pos;
    this.spaces = o.spaces;
    this.lits = o.lits;
    this.keys = o.keys;
    this.lo = o.lo;
    this.hi = o.hi;
    this.endable = o.endable;
  }

  /**
   * Takes one byte: true when taken, "again" when it ended a number or an enum value that could
   * have gone on (the byte then belongs to what follows: feed it again), false when refused (the
   * cursor is then undefined).
   */
  feed(b: number): boolean | "again" {
    const m = this.mode;
    const between = m === M.Value || m === M.KeyOrEnd || m === M.Key || m === M.Colon ||
      m === M.ObjNext || m === M.ValueOrEnd || m === M.ArrNext;
    if (between && isSpace(b)) {
      if (this.spaces >= 1) return false;
      this.spaces++;
      return true;
    }
    this.spaces = 0;
    switch (m) {
      case M.Start:
      case M.Value:
        return this.#value(b);
      case M.KeyOrEnd:
      case M.Key: {
        const f = this.frame!;
        if (b === 0x7d && m === M.KeyOrEnd) return this.#close(f);
        if (b !== 0x22) return false;
        if (f.node.props === null) {
          this.#string(true);
          return true;
        }
        const keys = f.node.keys[f.next];
        if (!keys) return false;
        this.mode = M.KeyLit;
        this.keys = keys;
        startChoice(this, keys.texts.length);
        return this.feed(b);
      }
      case M.KeyLit: {
        // keys are JSON strings: none is a prefix of another, so "end" never comes
        const k = this.keys!;
        if (stepChoice(k.texts, this, b) !== "took") return false;
        if (this.lo === this.hi) {
          const f = this.frame!, i = k.index[this.lo - 1];
          this.frame = { ...f, next: i + 1 };
          this.node = f.node.props![i].node;
          this.mode = M.Colon;
        }
        return true;
      }
      case M.Colon:
        if (b !== 0x3a) return false;
        if (this.frame!.node.props === null) this.node = ANY_VALUE;
        this.mode = M.Value;
        return true;
      case M.ObjNext: {
        const f = this.frame!;
        if (b === 0x2c) {
          if (f.node.props !== null && f.next >= f.node.props.length) return false;
          this.mode = M.Key;
          return true;
        }
        return b === 0x7d ? this.#close(f) : false;
      }
      case M.ValueOrEnd:
      case M.ArrNext: {
        const f = this.frame!;
        if (b === 0x5d) return f.next >= f.node.minItems ? this.#close(f) : false;
        if (m === M.ArrNext) {
          if (b !== 0x2c || f.next >= f.node.maxItems) return false;
          this.#element(f);
          return true;
        }
        if (f.next >= f.node.maxItems) return false;
        this.#element(f);
        return this.#value(b);
      }
      case M.Str:
        if (this.utf8 > 0) {
          if (b < 0x80 || b > 0xbf) return false;
          this.utf8--;
          return true;
        }
        if (b >= 0x80) {
          const n = utf8Length(b);
          this.utf8 = Math.max(0, n - 1);
          return n > 0;
        }
        if (b === 0x22) {
          if (this.isKey) this.mode = M.Colon;
          else this.#after();
          return true;
        }
        if (b === 0x5c) this.mode = M.Esc;
        return b >= 0x20; // control characters must be escaped
      case M.Esc:
        if (b === 0x75) {
          this.mode = M.Hex;
          this.hex = 0;
          return true;
        }
        this.mode = M.Str;
        return ESCAPES.has(b);
      case M.Hex:
        if (!isHex(b)) return false;
        if (++this.hex === 4) this.mode = M.Str;
        return true;
      case M.Lit: {
        const r = stepChoice(this.lits, this, b);
        if (r === "no") return false;
        if (r === "end") {
          this.#after(); // a value that is a prefix of another (1 and 10) ended before b
          return this.mode === M.Done ? false : "again";
        }
        if (this.lo === this.hi) this.#after();
        return true;
      }
      case M.Minus:
        if (b === 0x30) this.mode = M.Zero;
        else if (isDigit(b)) this.mode = M.Int;
        else return false;
        return true;
      case M.Zero:
      case M.Int:
        if (m === M.Int && isDigit(b)) return true;
        if (!this.int && b === 0x2e) this.mode = M.Dot;
        else if (!this.int && (b === 0x65 || b === 0x45)) this.mode = M.E;
        else return this.#endNumber();
        return true;
      case M.Dot:
        if (!isDigit(b)) return false;
        this.mode = M.Frac;
        return true;
      case M.Frac:
        if (isDigit(b)) return true;
        if (b === 0x65 || b === 0x45) {
          this.mode = M.E;
          return true;
        }
        return this.#endNumber();
      case M.E:
        if (b === 0x2b || b === 0x2d) this.mode = M.ESign;
        else if (isDigit(b)) this.mode = M.Exp;
        else return false;
        return true;
      case M.ESign:
        if (!isDigit(b)) return false;
        this.mode = M.Exp;
        return true;
      case M.Exp:
        return isDigit(b) ? true : this.#endNumber();
      case M.Done:
        return false;
    }
  }

  /** The first byte of a value of `this.node`. */
  #value(b: number): boolean {
    const n = this.node;
    if (n.literals) return this.#literal(n.literals, b);
    if (b === 0x7b || b === 0x5b) {
      const obj = b === 0x7b;
      if (!(n.types & (obj ? OBJ : ARR))) return false;
      const depth = (this.frame?.depth ?? 0) + 1;
      if (depth > MAX_DEPTH) return false;
      this.frame = { node: n, obj, next: 0, up: this.frame, depth };
      this.mode = obj ? M.KeyOrEnd : M.ValueOrEnd;
      return true;
    }
    if (b === 0x22) {
      if (!(n.types & STR)) return false;
      this.#string(false);
      return true;
    }
    if (b === 0x2d || isDigit(b)) {
      if (!(n.types & (NUM | INT))) return false;
      this.int = !(n.types & NUM);
      this.mode = b === 0x2d ? M.Minus : b === 0x30 ? M.Zero : M.Int;
      return true;
    }
    // true, false, null: the literal matcher, over the words the node's types allow
    const words = WORDS[(n.types & BOOL ? 1 : 0) | (n.types & NULL ? 2 : 0)];
    return words.length > 0 && this.#literal(words, b);
  }

  /** Starts matching one of `lits` (sorted) at byte b. */
  #literal(lits: readonly Uint8Array[], b: number): boolean {
    this.mode = M.Lit;
    this.lits = lits;
    startChoice(this, lits.length);
    return this.feed(b) === true;
  }

  #string(isKey: boolean): void {
    this.mode = M.Str;
    this.isKey = isKey;
    this.utf8 = 0;
  }

  /** The next element of array frame `f` starts. */
  #element(f: Frame): void {
    this.frame = { ...f, next: f.next + 1 };
    this.node = f.node.items;
    this.mode = M.Value;
  }

  /** Closes frame `f` if it may end here. */
  #close(f: Frame): boolean {
    if (f.obj && f.node.props !== null && f.node.requiredFrom[f.next]) return false;
    this.frame = f.up;
    this.#after();
    return true;
  }

  /** A value ended: where the reader goes next. */
  #after(): void {
    const f = this.frame;
    this.mode = f === null ? M.Done : f.obj ? M.ObjNext : M.ArrNext;
  }

  /** A number ended before this byte: inside a container the byte is read again after it. */
  #endNumber(): "again" | false {
    this.#after();
    return this.mode === M.Done ? false : "again";
  }
}
