/**
 * Constrained decoding: a reply made to follow a shape — a JSON object (`response_format`
 * `json_object`, or `json_schema` through `json_grammar.ts`), or tool calls (`tool_choice:
 * "required"` or a named function) — by masking, at every step, the tokens whose bytes cannot
 * continue it. The shape is a sequence of segments read byte by byte (literals, a choice of
 * literals, one JSON value, any text up to a terminator, optional whitespace), optionally repeated
 * after a separator; end-of-sequence tokens are allowed only where the shape may end. The mask is a (V) addend of 0 and −∞ for the logits,
 * so sampling, its filters and its seeds stay as they are.
 * @module
 */
// V = vocab size
import type { Tokenizer } from "./tokenizer.ts";
import {
  ANY_OBJECT,
  isSpace,
  JsonCursor,
  type SchemaNode,
  sortBytes,
  startChoice,
  stepChoice,
} from "./json_grammar.ts";

/** One piece of a reply's shape. */
export type Segment =
  /** Exactly this text. */
  | { kind: "literal"; text: string }
  /** One of these texts. */
  | { kind: "oneOf"; texts: readonly string[] }
  /** One JSON value of `schema` (default: any JSON object); see `json_grammar.ts`. */
  | { kind: "json"; schema?: SchemaNode }
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

const enc = new TextEncoder();

/** The bytes of a segment's texts, encoded once. */
type Compiled =
  | { kind: "literal"; bytes: Uint8Array }
  | { kind: "oneOf"; options: Uint8Array[] }
  | { kind: "json"; schema: SchemaNode }
  | { kind: "until"; bytes: Uint8Array; fail: Int32Array }
  | { kind: "space" };

function compile(s: Segment): Compiled {
  switch (s.kind) {
    case "literal":
    case "until": {
      if (!s.text) throw new Error(`A ${s.kind} segment needs a non-empty text`);
      const bytes = enc.encode(s.text);
      return s.kind === "literal"
        ? { kind: s.kind, bytes }
        : { kind: s.kind, bytes, fail: kmp(bytes) };
    }
    case "oneOf":
      if (!s.texts.length || s.texts.some((t) => !t)) {
        throw new Error("A oneOf segment needs at least one text, none empty");
      }
      return {
        kind: "oneOf",
        options: sortBytes([...new Set(s.texts)].map((t) => enc.encode(t)), (b) => b),
      };
    case "json":
      return { kind: "json", schema: s.schema ?? ANY_OBJECT };
    default:
      return s;
  }
}

/** fail[i]: the longest proper prefix of `t` that ends `t[0..i]` (Knuth–Morris–Pratt). */
function kmp(t: Uint8Array): Int32Array {
  const fail = new Int32Array(t.length);
  for (let i = 1, k = 0; i < t.length; i++) {
    while (k > 0 && t[i] !== t[k]) k = fail[k - 1];
    if (t[i] === t[k]) k++;
    fail[i] = k;
  }
  return fail;
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
  /** JSON segment. */
  readonly json = new JsonCursor();

  copyFrom(o: Cursor): void {
    this.seg = o.seg;
    this.pos = o.pos;
    this.lo = o.lo;
    this.hi = o.hi;
    this.endable = o.endable;
    this.json.copyFrom(o.json);
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
   * A constraint at the start of its shape.
   *
   * @param shape the reply's shape
   * @param vocab every token's bytes ({@linkcode vocabBytes}, {@linkcode tokenizerVocab})
   * @param stopIds end-of-sequence ids: allowed only where the shape may end
   * @throws Error when the shape is malformed (no segments, an empty text, a bad repeat)
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
    if (s.kind === "oneOf") startChoice(c, s.options.length);
    if (s.kind === "json") c.json.start(s.schema);
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
          const r = stepChoice(s.options, c, b);
          if (r === "no") return false;
          if (r === "end") {
            // a text that is a prefix of another ended before this byte
            this.#enter(c, c.seg + 1);
            continue;
          }
          if (c.lo === c.hi) this.#enter(c, c.seg + 1);
          return true;
        }
        case "until":
          // the longest prefix of the terminator the text now ends with (Knuth–Morris–Pratt)
          while (c.pos > 0 && s.bytes[c.pos] !== b) c.pos = s.fail[c.pos - 1];
          if (s.bytes[c.pos] === b) c.pos++;
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
          const r = c.json.feed(b);
          if (r === false) return false;
          if (r === "again") continue; // a number ended: the byte is the container's
          if (c.json.done) this.#enter(c, c.seg + 1);
          return true;
        }
      }
    }
  }
}

/** Every token's bytes, and the tokens grouped by their first byte. */
export interface VocabBytes {
  /** Per id: the bytes, or null for tokens a constrained reply never uses (special ones). */
  readonly bytes: readonly (Uint8Array | null)[];
  /** Per first byte: the ids whose bytes start with it. */
  readonly byFirst: readonly Int32Array[];
}

const VOCABS = new WeakMap<Tokenizer, Map<number, VocabBytes>>();

/**
 * A tokenizer's byte table for {@linkcode ReplyConstraint}, its special tokens left out (built
 * once per tokenizer and size).
 *
 * @param tok the tokenizer
 * @param size the model's vocab size V (default: the tokenizer's; ids beyond it have no bytes)
 * @returns the table
 * @example
 * ```ts
 * import { Tokenizer } from "./tokenizer.ts";
 * import { ReplyConstraint, tokenizerVocab } from "./constrain.ts";
 * const tok = await Tokenizer.fromFile("tokenizers/minimind-3/tokenizer.json");
 * const json = new ReplyConstraint({ segments: [{ kind: "json" }] }, tokenizerVocab(tok), [tok.eosId]);
 * json.mask().allowed; // the tokens that can start a JSON object
 * ```
 */
export function tokenizerVocab(tok: Tokenizer, size: number = tok.vocabSize): VocabBytes {
  let bySize = VOCABS.get(tok);
  if (!bySize) VOCABS.set(tok, bySize = new Map());
  let v = bySize.get(size);
  if (!v) bySize.set(size, v = vocabBytes(size, (id) => tok.tokenBytes(id), tok.specialIds));
  return v;
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
