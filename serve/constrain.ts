/**
 * Constrained decoding: a reply made to follow a shape — a JSON object (`response_format:
 * {"type": "json_object"}`), or tool calls (`tool_choice: "required"` or a named function) — by
 * masking, at every step, the tokens whose bytes cannot continue it. The shape is a sequence of
 * segments read byte by byte (literals, a choice of literals, one JSON object — its strings valid
 * UTF-8 —, any text up to a
 * terminator, optional whitespace), optionally repeated after a separator; end-of-sequence tokens
 * are allowed only where the shape may end. The mask is a (V) addend of 0 and −∞ for the logits,
 * so sampling, its filters and its seeds stay as they are.
 * @module
 */
// V = vocab size

/** One piece of a reply's shape. */
export type Segment =
  /** Exactly this text. */
  | { kind: "literal"; text: string }
  /** One of these texts. */
  | { kind: "oneOf"; texts: readonly string[] }
  /** One JSON object (any values inside; at most one whitespace byte in a row between tokens). */
  | { kind: "json" }
  /** Any text, up to and including `text` (a think block up to `</think>`). */
  | { kind: "until"; text: string }
  /** Up to {@linkcode MAX_SPACE} whitespace bytes. */
  | { kind: "space" };

/** A reply's shape: its segments, optionally repeated (`separator`, then segments `from`…). */
export interface ReplyShape {
  /** The segments, in order. */
  readonly segments: readonly Segment[];
  /** After the last segment the reply may go on with `separator` and segments `from`… again. */
  readonly repeat?: { readonly separator: string; readonly from: number };
}

/** Most whitespace bytes a `space` segment takes. */
export const MAX_SPACE = 2;
/** Deepest nesting of arrays and objects the JSON segment accepts. */
export const MAX_DEPTH = 32;

const enc = new TextEncoder();

// JSON lexer modes
const enum J {
  Start, // before the top-level '{'
  Value, // a value must start
  KeyOrEnd, // after '{'
  Key, // after ',' in an object
  Colon, // after a key
  ObjNext, // after a value in an object: ',' or '}'
  ValueOrEnd, // after '['
  ArrNext, // after a value in an array: ',' or ']'
  Str, // inside a string
  Esc, // after '\' in a string
  Hex, // inside \uXXXX
  Minus, // after '-'
  Zero, // after a leading 0
  Int, // integer digits
  Dot, // after '.'
  Frac, // fraction digits
  E, // after 'e' / 'E'
  ESign, // after the exponent's sign
  Exp, // exponent digits
  Word, // inside true / false / null
  Done,
}

const isDigit = (b: number) => b >= 0x30 && b <= 0x39;
const isHex = (b: number) => isDigit(b) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46);
const isSpace = (b: number) => b === 0x20 || b === 0x0a || b === 0x0d || b === 0x09;
const WORDS = [enc.encode("true"), enc.encode("false"), enc.encode("null")];

/** The bytes of a segment's texts, encoded once. */
type Compiled =
  | { kind: "literal"; bytes: Uint8Array }
  | { kind: "oneOf"; options: Uint8Array[] }
  | { kind: "json" }
  | { kind: "until"; bytes: Uint8Array }
  | { kind: "space" };

function compile(s: Segment): Compiled {
  switch (s.kind) {
    case "literal":
    case "until":
      if (!s.text) throw new Error(`A ${s.kind} segment needs a non-empty text`);
      return { kind: s.kind, bytes: enc.encode(s.text) };
    case "oneOf":
      if (!s.texts.length || s.texts.some((t) => !t)) {
        throw new Error("A oneOf segment needs at least one text, none empty");
      }
      return { kind: "oneOf", options: sortBytes([...new Set(s.texts)].map((t) => enc.encode(t))) };
    default:
      return s;
  }
}

/** Byte strings in lexicographic order (a prefix before its extensions). */
function sortBytes(list: Uint8Array[]): Uint8Array[] {
  return list.sort((a, b) => {
    for (let i = 0; i < Math.min(a.length, b.length); i++) if (a[i] !== b[i]) return a[i] - b[i];
    return a.length - b.length;
  });
}

/**
 * Where a reply stands in its shape. `feed(byte)` advances it or refuses; `copyFrom` makes the
 * scratch copies the mask tries tokens on.
 */
class Cursor {
  /** Segment index; `segs.length` = the shape is complete; -1 = inside the repeat separator. */
  seg = 0;
  /** Bytes matched in a literal / separator / until-terminator, or space bytes taken. */
  pos = 0;
  /** oneOf: the options [lo, hi) (sorted) still match. */
  lo = 0;
  hi = 0;
  /** oneOf: an option ended at the last byte while longer ones still match. */
  endable = false;
  // JSON segment
  mode = J.Start;
  stack = ""; // '{' and '[' of the open containers
  isKey = false; // the string being read is an object key
  hex = 0; // \u digits read
  utf8 = 0; // continuation bytes the current character still needs
  word = 0; // which of WORDS
  spaces = 0; // whitespace bytes in a row

  copyFrom(o: Cursor): void {
    this.seg = o.seg;
    this.pos = o.pos;
    this.lo = o.lo;
    this.hi = o.hi;
    this.endable = o.endable;
    this.mode = o.mode;
    this.stack = o.stack;
    this.isKey = o.isKey;
    this.hex = o.hex;
    this.utf8 = o.utf8;
    this.word = o.word;
    this.spaces = o.spaces;
  }
}

/**
 * A reply's shape over a vocabulary: which tokens may come next (`mask`), and the reply so far
 * (`accept`).
 */
export class ReplyConstraint {
  readonly #segs: Compiled[];
  readonly #sep: Uint8Array | null;
  readonly #from: number;
  readonly #vocab: VocabBytes;
  readonly #stopIds: readonly number[];
  readonly #cur = new Cursor();
  readonly #try = new Cursor();
  readonly #mask: Float32Array;

  /**
   * @param shape the reply's shape
   * @param vocab every token's bytes ({@linkcode vocabBytes})
   * @param stopIds end-of-sequence ids: allowed only where the shape may end
   */
  constructor(shape: ReplyShape, vocab: VocabBytes, stopIds: Iterable<number>) {
    if (!shape.segments.length) throw new Error("A reply shape needs at least one segment");
    this.#segs = shape.segments.map(compile);
    const r = shape.repeat;
    if (r && (!r.separator || r.from < 0 || r.from >= this.#segs.length)) {
      throw new Error(
        `Invalid repeat of a reply shape: separator ${JSON.stringify(r.separator)}, from ${r.from}`,
      );
    }
    this.#sep = r ? enc.encode(r.separator) : null;
    this.#from = r?.from ?? 0;
    this.#vocab = vocab;
    this.#stopIds = [...stopIds];
    this.#mask = new Float32Array(vocab.bytes.length);
    this.#enter(this.#cur, 0);
  }

  /** Whether the reply is complete and nothing more may follow (the job can end). */
  get done(): boolean {
    return this.#cur.seg === this.#segs.length && this.#sep === null;
  }

  /** Whether the reply may end here (end-of-sequence tokens are allowed). */
  get canEnd(): boolean {
    return this.#cur.seg === this.#segs.length;
  }

  /**
   * The (V) logit addend of the next step: 0 where a token may come next, −∞ elsewhere. The
   * array is reused by the next call.
   *
   * @returns the addend and how many tokens it allows
   */
  mask(): { addend: Float32Array; allowed: number } {
    const m = this.#mask.fill(-Infinity);
    let allowed = 0;
    const t = this.#try;
    for (let b = 0; b < 256; b++) {
      const ids = this.#vocab.byFirst[b];
      if (!ids.length) continue;
      t.copyFrom(this.#cur);
      if (!this.#feed(t, b)) continue;
      for (const id of ids) {
        const bytes = this.#vocab.bytes[id]!;
        t.copyFrom(this.#cur);
        let ok = true;
        for (let i = 0; i < bytes.length && ok; i++) ok = this.#feed(t, bytes[i]);
        if (ok) {
          m[id] = 0;
          allowed++;
        }
      }
    }
    if (this.canEnd) {
      for (const id of this.#stopIds) {
        if (id >= 0 && id < m.length && m[id] !== 0) {
          m[id] = 0;
          allowed++;
        }
      }
    }
    return { addend: m, allowed };
  }

  /**
   * Advances past a sampled token (an end-of-sequence id leaves it as it is).
   *
   * @param id the token
   * @throws Error when the token cannot continue the shape (a bug: the mask forbade it)
   */
  accept(id: number): void {
    if (this.#stopIds.includes(id)) return;
    const bytes = this.#vocab.bytes[id];
    if (!bytes) throw new Error(`Token ${id} cannot continue a constrained reply`);
    for (const b of bytes) {
      if (!this.#feed(this.#cur, b)) {
        throw new Error(`Token ${id} cannot continue a constrained reply at byte ${b}`);
      }
    }
  }

  /** Sets `c` at the start of segment `seg`. */
  #enter(c: Cursor, seg: number): void {
    c.seg = seg;
    c.pos = 0;
    const s = this.#segs[seg];
    if (!s) return;
    if (s.kind === "oneOf") {
      c.lo = 0;
      c.hi = s.options.length;
      c.endable = false;
    }
    if (s.kind === "json") {
      c.mode = J.Start;
      c.stack = "";
      c.spaces = 0;
    }
  }

  /** Feeds one byte to `c`; false (c then undefined) when the shape cannot take it. */
  #feed(c: Cursor, b: number): boolean {
    for (;;) {
      if (c.seg === -1) {
        // the repeat separator
        const sep = this.#sep!;
        if (sep[c.pos] !== b) return false;
        if (++c.pos === sep.length) this.#enter(c, this.#from);
        return true;
      }
      if (c.seg === this.#segs.length) {
        if (!this.#sep) return false;
        c.seg = -1;
        c.pos = 0;
        continue;
      }
      const s = this.#segs[c.seg];
      switch (s.kind) {
        case "literal":
          if (s.bytes[c.pos] !== b) return false;
          if (++c.pos === s.bytes.length) this.#enter(c, c.seg + 1);
          return true;
        case "oneOf": {
          // the options are sorted, so those still matching are a range [lo, hi), a text that
          // ends here first in it
          const o = s.options;
          let lo = c.lo, hi = c.hi;
          while (lo < hi && o[lo][c.pos] !== b) lo++;
          while (hi > lo && o[hi - 1][c.pos] !== b) hi--;
          if (lo === hi) {
            if (!c.endable) return false;
            // a text that is a prefix of another ended before this byte
            this.#enter(c, c.seg + 1);
            continue;
          }
          c.pos++;
          c.endable = o[lo].length === c.pos;
          if (c.endable) lo++;
          c.lo = lo;
          c.hi = hi;
          if (lo === hi) this.#enter(c, c.seg + 1);
          return true;
        }
        case "until":
          if (s.bytes[c.pos] === b) c.pos++;
          else c.pos = s.bytes[0] === b ? 1 : 0;
          if (c.pos === s.bytes.length) this.#enter(c, c.seg + 1);
          return true;
        case "space":
          if (isSpace(b) && c.pos < MAX_SPACE) {
            c.pos++;
            return true;
          }
          this.#enter(c, c.seg + 1);
          continue;
        case "json": {
          const r = feedJson(c, b);
          if (r === false) return false;
          if (c.mode === J.Done) this.#enter(c, c.seg + 1);
          if (r === "again") continue;
          return true;
        }
      }
    }
  }
}

/** A value ended: where the JSON reader goes next. */
function afterValue(c: Cursor): void {
  const top = c.stack.at(-1);
  c.mode = top === undefined ? J.Done : top === "{" ? J.ObjNext : J.ArrNext;
}

/** Opens a value at byte b; false when no value starts with it. */
function startValue(c: Cursor, b: number): boolean {
  if (b === 0x7b || b === 0x5b) {
    if (c.stack.length >= MAX_DEPTH) return false;
    c.stack += b === 0x7b ? "{" : "[";
    c.mode = b === 0x7b ? J.KeyOrEnd : J.ValueOrEnd;
  } else if (b === 0x22) {
    c.mode = J.Str;
    c.isKey = false;
    c.utf8 = 0;
  } else if (b === 0x2d) c.mode = J.Minus;
  else if (b === 0x30) c.mode = J.Zero;
  else if (isDigit(b)) c.mode = J.Int;
  else {
    const w = WORDS.findIndex((w) => w[0] === b);
    if (w < 0) return false;
    c.mode = J.Word;
    c.word = w;
    c.pos = 1;
  }
  return true;
}

/**
 * One byte of the JSON segment: true when taken, "again" when it ended a number (the byte then
 * belongs to what follows it), false when refused.
 */
function feedJson(c: Cursor, b: number): boolean | "again" {
  // whitespace between tokens: at most one byte in a row
  const between = c.mode === J.Value || c.mode === J.KeyOrEnd || c.mode === J.Key ||
    c.mode === J.Colon || c.mode === J.ObjNext || c.mode === J.ValueOrEnd || c.mode === J.ArrNext;
  if (between && isSpace(b)) {
    if (c.spaces >= 1) return false;
    c.spaces++;
    return true;
  }
  c.spaces = 0;
  switch (c.mode) {
    case J.Start:
      if (b !== 0x7b) return false;
      c.stack = "{";
      c.mode = J.KeyOrEnd;
      return true;
    case J.Value:
      return startValue(c, b);
    case J.KeyOrEnd:
    case J.Key:
      if (b === 0x7d && c.mode === J.KeyOrEnd) {
        c.stack = c.stack.slice(0, -1);
        afterValue(c);
        return true;
      }
      if (b !== 0x22) return false;
      c.mode = J.Str;
      c.isKey = true;
      c.utf8 = 0;
      return true;
    case J.Colon:
      if (b !== 0x3a) return false;
      c.mode = J.Value;
      return true;
    case J.ObjNext:
    case J.ArrNext: {
      const obj = c.mode === J.ObjNext;
      if (b === 0x2c) {
        c.mode = obj ? J.Key : J.Value;
        return true;
      }
      if (b !== (obj ? 0x7d : 0x5d)) return false;
      c.stack = c.stack.slice(0, -1);
      afterValue(c);
      return true;
    }
    case J.ValueOrEnd:
      if (b === 0x5d) {
        c.stack = c.stack.slice(0, -1);
        afterValue(c);
        return true;
      }
      return startValue(c, b);
    case J.Str:
      // UTF-8: a lead byte announces its continuation bytes; nothing else may break a character
      if (c.utf8 > 0) {
        if (b < 0x80 || b > 0xbf) return false;
        c.utf8--;
        return true;
      }
      if (b >= 0x80) {
        c.utf8 = b >= 0xc2 && b <= 0xdf
          ? 1
          : b >= 0xe0 && b <= 0xef
          ? 2
          : b >= 0xf0 && b <= 0xf4
          ? 3
          : -1;
        if (c.utf8 < 0) {
          c.utf8 = 0;
          return false;
        }
        return true;
      }
      if (b === 0x22) {
        if (c.isKey) c.mode = J.Colon;
        else afterValue(c);
        return true;
      }
      if (b === 0x5c) c.mode = J.Esc;
      return b >= 0x20; // control characters must be escaped
    case J.Esc:
      if (b === 0x75) {
        c.mode = J.Hex;
        c.hex = 0;
        return true;
      }
      c.mode = J.Str;
      return [0x22, 0x5c, 0x2f, 0x62, 0x66, 0x6e, 0x72, 0x74].includes(b);
    case J.Hex:
      if (!isHex(b)) return false;
      if (++c.hex === 4) c.mode = J.Str;
      return true;
    case J.Minus:
      if (b === 0x30) c.mode = J.Zero;
      else if (isDigit(b)) c.mode = J.Int;
      else return false;
      return true;
    case J.Zero:
    case J.Int:
      if (c.mode === J.Int && isDigit(b)) return true;
      if (b === 0x2e) c.mode = J.Dot;
      else if (b === 0x65 || b === 0x45) c.mode = J.E;
      else return endNumber(c);
      return true;
    case J.Dot:
      if (!isDigit(b)) return false;
      c.mode = J.Frac;
      return true;
    case J.Frac:
      if (isDigit(b)) return true;
      if (b === 0x65 || b === 0x45) {
        c.mode = J.E;
        return true;
      }
      return endNumber(c);
    case J.E:
      if (b === 0x2b || b === 0x2d) c.mode = J.ESign;
      else if (isDigit(b)) c.mode = J.Exp;
      else return false;
      return true;
    case J.ESign:
      if (!isDigit(b)) return false;
      c.mode = J.Exp;
      return true;
    case J.Exp:
      if (isDigit(b)) return true;
      return endNumber(c);
    case J.Word: {
      const w = WORDS[c.word];
      if (w[c.pos] !== b) return false;
      if (++c.pos === w.length) afterValue(c);
      return true;
    }
    case J.Done:
      return false;
  }
}

/** A number ended before this byte: inside a container the byte is read again after it. */
function endNumber(c: Cursor): "again" | false {
  afterValue(c);
  return c.mode === J.Done ? false : "again";
}

/** Every token's bytes, and the tokens grouped by their first byte. */
export interface VocabBytes {
  /** Per id: the bytes, or null for tokens a constrained reply never uses (special ones). */
  readonly bytes: readonly (Uint8Array | null)[];
  /** Per first byte: the ids whose bytes start with it. */
  readonly byFirst: readonly Int32Array[];
}

/**
 * The byte table of a vocabulary for {@linkcode ReplyConstraint}.
 *
 * @param size vocab size V
 * @param bytesOf a token's bytes (undefined for ids without any)
 * @param special ids that never appear inside a constrained reply (special tokens)
 * @returns the table
 */
export function vocabBytes(
  size: number,
  bytesOf: (id: number) => Uint8Array | undefined,
  special: ReadonlySet<number>,
): VocabBytes {
  const bytes: (Uint8Array | null)[] = [];
  const lists: number[][] = Array.from({ length: 256 }, () => []);
  for (let id = 0; id < size; id++) {
    const b = special.has(id) ? undefined : bytesOf(id);
    bytes.push(b && b.length ? b : null);
    if (b && b.length) lists[b[0]].push(id);
  }
  return { bytes, byFirst: lists.map((l) => Int32Array.from(l)) };
}
