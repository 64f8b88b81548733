// The GPT-2 pre-tokenizer, hand-written instead of a RegExp so that it is fast and so that `\s`
// means what it means in HF tokenizers (Rust, Oniguruma): Unicode White_Space, which includes U+0085
// and excludes U+FEFF (JavaScript's `\s` is the other way round). The pattern it implements:
//
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
//
// Every code point is a letter (L), a number (N), whitespace (S) or other (O), so the matches tile
// the text: scanning match after match from the start reproduces the regex's global matching.

const L = 1;
const N = 2;
const S = 3;
const O = 4;

const RE_L = /\p{L}/u;
const RE_N = /\p{N}/u;

/** Oniguruma's Unicode `\s` (the White_Space property). */
function isOnigSpace(cp: number): boolean {
  return (cp >= 0x09 && cp <= 0x0d) || cp === 0x20 || cp === 0x85 || cp === 0xa0 ||
    cp === 0x1680 || (cp >= 0x2000 && cp <= 0x200a) || cp === 0x2028 || cp === 0x2029 ||
    cp === 0x202f || cp === 0x205f || cp === 0x3000;
}

function classifySlow(cp: number): number {
  if (isOnigSpace(cp)) return S;
  const ch = String.fromCodePoint(cp);
  if (RE_L.test(ch)) return L;
  if (RE_N.test(ch)) return N;
  return O;
}

let bmpClass: Uint8Array | null = null;
const astralClass = new Map<number, number>();

function bmpTable(): Uint8Array {
  if (bmpClass) return bmpClass;
  const t = new Uint8Array(65536);
  for (let cp = 0; cp < 65536; cp++) {
    // Lone surrogates are "other" (they only appear in malformed strings).
    t[cp] = cp >= 0xd800 && cp <= 0xdfff ? O : classifySlow(cp);
  }
  bmpClass = t;
  return t;
}

function classAt(text: string, i: number, table: Uint8Array): number {
  const c = text.charCodeAt(i);
  if (c < 0xd800 || c > 0xdbff || i + 1 >= text.length) return table[c];
  const d = text.charCodeAt(i + 1);
  if (d < 0xdc00 || d > 0xdfff) return table[c];
  const cp = (c - 0xd800) * 0x400 + (d - 0xdc00) + 0x10000;
  let k = astralClass.get(cp);
  if (k === undefined) astralClass.set(cp, k = classifySlow(cp));
  return k;
}

/** UTF-16 length of the code point starting at `i`. */
function cpLen(text: string, i: number): number {
  const c = text.charCodeAt(i);
  if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
    const d = text.charCodeAt(i + 1);
    if (d >= 0xdc00 && d <= 0xdfff) return 2;
  }
  return 1;
}

/** End of the run of class `k` starting at `i` (UTF-16 index). */
function runEnd(text: string, i: number, k: number, table: Uint8Array): number {
  const n = text.length;
  while (i < n && classAt(text, i, table) === k) i += cpLen(text, i);
  return i;
}

const APOS = 0x27;
const SPACE = 0x20;

/** Length of a contraction (`'s`, `'t`, `'re`, `'ve`, `'m`, `'ll`, `'d`) at `i`, or 0. */
function contraction(text: string, i: number): number {
  const a = text.charCodeAt(i + 1);
  if (a === 0x73 || a === 0x74 || a === 0x6d || a === 0x64) return 2; // s t m d
  const b = text.charCodeAt(i + 2);
  if ((a === 0x72 && b === 0x65) || (a === 0x76 && b === 0x65) || (a === 0x6c && b === 0x6c)) {
    return 3; // re ve ll
  }
  return 0;
}

/**
 * Splits `text` the way the GPT-2 / HF ByteLevel pre-tokenizer does and calls `onPiece(start, end)`
 * for each piece, with UTF-16 offsets, in order. The pieces tile the text.
 *
 * @param text Any string (no added tokens inside; those are split out before).
 * @param onPiece Receives the `[start, end)` range of each piece.
 * @example
 * ```ts
 * import { splitGpt2 } from "./pretokenize.ts";
 * const pieces: string[] = [];
 * splitGpt2("I'm  here!", (s, e) => pieces.push("I'm  here!".slice(s, e)));
 * // pieces: ["I", "'m", " ", " here", "!"]
 * ```
 */
export function splitGpt2(text: string, onPiece: (start: number, end: number) => void): void {
  const table = bmpTable();
  const n = text.length;
  let i = 0;
  while (i < n) {
    const c = text.charCodeAt(i);
    if (c === APOS) {
      const k = contraction(text, i);
      if (k > 0) {
        onPiece(i, i + k);
        i += k;
        continue;
      }
    }
    let k = classAt(text, i, table);
    let start = i;
    let j = i;
    if (c === SPACE && i + 1 < n) {
      const next = classAt(text, i + 1, table);
      if (next !== S) { // " ?X+" with the optional space taken
        k = next;
        j = i + 1;
      }
    }
    if (k !== S) {
      const end = runEnd(text, j, k, table);
      onPiece(start, end);
      i = end;
      continue;
    }
    // Whitespace run: `\s+(?!\S)` keeps the last space for the next piece when a non-space follows,
    // unless the run is a single character, which `\s+` then takes whole.
    const end = runEnd(text, i, S, table);
    if (end < n) {
      const last = end - 1; // whitespace is all BMP, so one code unit each
      if (last > start) {
        onPiece(start, last);
        i = last;
        continue;
      }
    }
    onPiece(start, end);
    start = end;
    i = end;
  }
}

/**
 * Returns the GPT-2 pre-tokenization of `text` as strings (see {@link splitGpt2}).
 *
 * @param text Any string.
 * @returns The pieces, in order; joined they give back `text`.
 * @example
 * ```ts
 * import { pretokenize } from "./pretokenize.ts";
 * pretokenize("Hello world"); // ["Hello", " world"]
 * ```
 */
export function pretokenize(text: string): string[] {
  const out: string[] = [];
  splitGpt2(text, (s, e) => out.push(text.slice(s, e)));
  return out;
}
