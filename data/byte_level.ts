// GPT-2 byte-level alphabet: every byte 0..255 gets one printable code point, so any byte string
// is a plain string of "byte characters". Bytes 33–126, 161–172 and 174–255 map to themselves; the
// other 68 bytes map to U+0100 upward in byte order (space → "Ġ" U+0120, "\n" → "Ċ" U+010A).

/** Byte → its byte-level character, e.g. `BYTE_TO_CHAR[32] === "Ġ"`. */
export const BYTE_TO_CHAR: readonly string[] = buildByteToChar();

/** Byte-level character code point → byte, or -1 for code points outside the alphabet. */
export const CHAR_TO_BYTE: Int16Array = buildCharToByte();

function buildByteToChar(): string[] {
  const out = new Array<string>(256);
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
    out[b] = String.fromCharCode(printable ? b : 256 + n++);
  }
  return out;
}

function buildCharToByte(): Int16Array {
  const table = new Int16Array(512).fill(-1); // every byte-level code point is < 0x144
  for (let b = 0; b < 256; b++) table[BYTE_TO_CHAR[b].charCodeAt(0)] = b;
  return table;
}

/**
 * The 256 byte-level characters sorted by code point: the initial alphabet of a byte-level BPE
 * (HF's `ByteLevel.alphabet()`), in the order the trainer assigns ids.
 *
 * @returns A new array of 256 one-character strings.
 * @example
 * ```ts
 * import { byteLevelAlphabet } from "./byte_level.ts";
 * byteLevelAlphabet()[0]; // "!"
 * ```
 */
export function byteLevelAlphabet(): string[] {
  return [...BYTE_TO_CHAR].sort((a, b) => a.charCodeAt(0) - b.charCodeAt(0));
}

/**
 * Maps a byte-level token string back to its bytes. Returns `null` if any character is outside
 * the byte-level alphabet (HF's ByteLevel decoder then falls back to the token's UTF-8 bytes).
 *
 * @param token A vocabulary entry such as `"ĠHello"`.
 * @returns The raw bytes, or `null`.
 * @example
 * ```ts
 * import { tokenToBytes } from "./byte_level.ts";
 * tokenToBytes("Ġhi"); // Uint8Array [32, 104, 105]
 * ```
 */
export function tokenToBytes(token: string): Uint8Array | null {
  const out = new Uint8Array(token.length);
  for (let i = 0; i < token.length; i++) {
    const c = token.charCodeAt(i);
    const b = c < 512 ? CHAR_TO_BYTE[c] : -1;
    if (b < 0) return null;
    out[i] = b;
  }
  return out;
}

/**
 * Encodes raw bytes as a byte-level string (the inverse of {@link tokenToBytes}).
 *
 * @param bytes Raw bytes, e.g. UTF-8 of some text.
 * @returns One byte-level character per byte.
 * @example
 * ```ts
 * import { bytesToToken } from "./byte_level.ts";
 * bytesToToken(new TextEncoder().encode(" hi")); // "Ġhi"
 * ```
 */
export function bytesToToken(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += BYTE_TO_CHAR[bytes[i]];
  return s;
}
